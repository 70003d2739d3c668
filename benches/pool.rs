//! Pool checkout and return under contention: T tasks on a 2-thread
//! runtime share a pool of 4 slots, each task taking a slot and dropping it
//! in a loop, so most checkouts queue as FIFO waiters and are handed a
//! freed slot. Reported per checkout + return.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tidepool::pool::{Grant, Limits, PoolKey, Pools};

fn limits() -> Limits {
    Limits {
        pool_size: 4,
        reserve_size: 0,
        reserve_timeout: Duration::from_secs(60),
        max_db: 0,
        max_user: 0,
        wait_timeout: Some(Duration::from_secs(60)),
        login_retry: Duration::from_secs(15),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("pool checkout+return, pool of 4");
    for tasks in [1usize, 4, 64, 1000] {
        g.bench_with_input(BenchmarkId::new("tasks", tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let pools = Pools::default();
                let pool = pools.get(&PoolKey {
                    db: "d".into(),
                    user: "u".into(),
                });
                let per_task = (iters as usize).div_ceil(tasks);
                rt.block_on(async {
                    let start = Instant::now();
                    let handles: Vec<_> = (0..tasks)
                        .map(|_| {
                            let pool = pool.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    match pool.checkout(limits()).await {
                                        Ok(Grant::Slot(s)) => drop(s),
                                        Ok(Grant::Server(_)) => unreachable!("no servers here"),
                                        Err(e) => panic!("checkout: {e}"),
                                    }
                                    // Let others run, as a client would
                                    // between transactions.
                                    tokio::task::yield_now().await;
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.expect("task");
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
