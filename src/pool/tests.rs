use super::*;
use std::time::{Duration, Instant};

fn limits(n: u32) -> Limits {
    Limits {
        pool_size: n,
        reserve_size: 0,
        reserve_timeout: Duration::from_secs(5),
        max_db: 0,
        max_user: 0,
        wait_timeout: Some(Duration::from_secs(5)),
        login_retry: Duration::from_secs(15),
    }
}

fn key() -> PoolKey {
    PoolKey {
        db: "d".into(),
        user: "u".into(),
    }
}

#[tokio::test]
async fn slots_are_bounded_and_freed_slots_go_to_waiters_in_order() {
    let pools = Pools::default();
    let p = pools.get(&key());
    let Grant::Slot(a) = p.checkout(limits(2)).await.unwrap() else {
        panic!()
    };
    let Grant::Slot(_b) = p.checkout(limits(2)).await.unwrap() else {
        panic!()
    };
    assert_eq!(p.counts().0, 2);
    // Two waiters queue up in order.
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..2 {
        let pc = p.clone();
        let tx = order_tx.clone();
        tasks.push(tokio::spawn(async move {
            let g = pc.checkout(limits(2)).await;
            tx.send(i).unwrap();
            g
        }));
        // Wait until the waiter is queued before starting the next one.
        while p.counts().2 < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    drop(a);
    assert_eq!(order_rx.recv().await, Some(0));
    let first = tasks.remove(0).await.unwrap().unwrap();
    assert!(matches!(first, Grant::Slot(_)));
    assert_eq!(p.counts().0, 2, "the freed slot moved, it was not lost");
    drop(first);
    assert_eq!(order_rx.recv().await, Some(1));
    let second = tasks.remove(0).await.unwrap().unwrap();
    drop(second);
    drop(_b);
    assert_eq!(p.counts().0, 0, "every slot given back");
}

#[tokio::test]
async fn wait_times_out() {
    let pools = Pools::default();
    let p = pools.get(&key());
    let _a = p.checkout(limits(1)).await.unwrap();
    let mut l = limits(1);
    l.wait_timeout = Some(Duration::from_millis(20));
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move { p.checkout(l).await.map(|_| ()) })
    };
    while p.counts().2 < 1 {
        tokio::task::yield_now().await;
    }
    // Not yet due: still waiting.
    p.expire_waiters(Instant::now());
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    p.expire_waiters(Instant::now() + Duration::from_secs(1));
    let e = waiter.await.unwrap().err().unwrap();
    assert_eq!(e.sqlstate(), "08P01");
    assert_eq!(e.to_string(), "query_wait_timeout");
    // The abandoned waiter does not swallow the next freed slot.
    drop(_a);
    assert_eq!(p.counts().0, 0);
    assert!(matches!(
        p.checkout(limits(1)).await.unwrap(),
        Grant::Slot(_)
    ));
}

#[tokio::test]
async fn reserve_pool_opens_after_reserve_timeout() {
    let pools = Pools::default();
    let p = pools.get(&key());
    let mut l = limits(1);
    l.reserve_size = 1;
    l.reserve_timeout = Duration::from_millis(30);
    let _a = p.checkout(l).await.unwrap();
    // The second checkout gets the reserve slot after waiting.
    let b = p.checkout(l).await.unwrap();
    assert!(matches!(b, Grant::Slot(_)));
    assert_eq!(p.counts().0, 2);
    // And no more than that.
    l.wait_timeout = Some(Duration::from_millis(100));
    let third = {
        let p = p.clone();
        tokio::spawn(async move { p.checkout(l).await.map(|_| ()) })
    };
    while p.counts().2 < 1 {
        tokio::task::yield_now().await;
    }
    p.expire_waiters(Instant::now() + Duration::from_secs(10));
    assert!(third.await.unwrap().is_err());
}

#[tokio::test]
async fn db_limit_spans_pools() {
    let pools = Pools::default();
    let p1 = pools.get(&key());
    let p2 = pools.get(&PoolKey {
        db: "d".into(),
        user: "other".into(),
    });
    let mut l = limits(5);
    l.max_db = 1;
    let a = p1.checkout(l).await.unwrap();
    let waiter = {
        let p2 = p2.clone();
        tokio::spawn(async move { p2.checkout(l).await.map(|_| ()) })
    };
    while p2.counts().2 < 1 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished());
    drop(a);
    waiter.await.unwrap().unwrap();
}

/// A failed login is kept for server_login_retry for the callers to weigh
/// (a new client fails at once, one that waited keeps waiting); checkout
/// itself still grants the slot.
#[tokio::test]
async fn login_failure_is_kept_for_server_login_retry() {
    let pools = Pools::default();
    let p = pools.get(&key());
    p.login_failed(&Error::ServerConnect {
        server: "127.0.0.1:1".into(),
        reason: "refused".into(),
        source: None,
    });
    let (e, _) = p.recent_failure(Duration::from_secs(60)).unwrap();
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    assert!(
        e.to_string().contains("server login has been failing"),
        "{e}"
    );
    assert!(p.recent_failure(Duration::ZERO).is_none());
    assert!(matches!(p.checkout(limits(2)).await, Ok(Grant::Slot(_))));
    p.forget_failure();
    assert!(p.recent_failure(Duration::from_secs(60)).is_none());
}
