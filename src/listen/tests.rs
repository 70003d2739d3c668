use super::*;

fn notification(channel: &[u8]) -> Bytes {
    let mut b = vec![backend_tag()];
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&[0, 0, 0, 1]);
    b.extend_from_slice(channel);
    b.extend_from_slice(b"\0payload\0");
    Bytes::from(b)
}

fn backend_tag() -> u8 {
    crate::protocol::backend::NOTIFICATION_RESPONSE
}

#[test]
fn the_first_client_starts_the_connection_and_others_wait_for_it() {
    let hub = Hub::default();
    let (j, rx) = hub.join(1, b"a");
    assert!(matches!(j, Joined::Start(..)) && rx.is_some());
    // The second channel goes to the same (starting) connection.
    let (j2, rx2) = hub.join(1, b"b");
    assert!(matches!(j2, Joined::Wait(_)) && rx2.is_none());
    // Another client's channel: its answer comes after the first LISTEN.
    let (j3, rx3) = hub.join(2, b"a");
    assert!(matches!(j3, Joined::Wait(_)) && rx3.is_some());
    // Its own again: nothing to ask.
    assert!(matches!(hub.join(2, b"a").0, Joined::Ready));
    assert_eq!(hub.counts(), (2, 2));
    drop(j);
}

#[test]
fn notifications_reach_only_the_channels_clients() {
    let hub = Hub::default();
    let (_j, rx1) = hub.join(1, b"a");
    let (_j2, rx2) = hub.join(2, b"b");
    let (mut rx1, mut rx2) = (rx1.unwrap(), rx2.unwrap());
    hub.deliver(b"a", &notification(b"a"));
    assert!(matches!(rx1.try_recv(), Ok(Delivery::Notification(_))));
    assert!(rx2.try_recv().is_err());
}

#[test]
fn a_client_that_falls_behind_is_dropped_with_word_of_it() {
    let hub = Hub::default();
    let (_j, rx) = hub.join(1, b"a");
    let mut rx = rx.unwrap();
    for _ in 0..QUEUE + 10 {
        hub.deliver(b"a", &notification(b"a"));
    }
    let mut got = Vec::new();
    while let Ok(d) = rx.try_recv() {
        got.push(d);
    }
    assert_eq!(got.len(), QUEUE);
    assert!(matches!(got.last(), Some(Delivery::Overflow)));
    assert_eq!(hub.counts(), (0, 0));
}

#[test]
fn leaving_the_last_channel_forgets_the_client() {
    let hub = Hub::default();
    let (_j, _rx) = hub.join(1, b"a");
    let (_j2, _) = hub.join(1, b"b");
    assert!(hub.leave(1, Some(b"a")));
    assert!(!hub.leave(1, Some(b"b")));
    assert_eq!(hub.counts(), (0, 0));
    assert!(hub.end_if_unused());
}

#[test]
fn a_lost_connection_tells_every_client() {
    let hub = Hub::default();
    let (_j, rx) = hub.join(1, b"a");
    let mut rx = rx.unwrap();
    hub.fail("gone");
    assert!(matches!(rx.try_recv(), Ok(Delivery::Lost(_))));
    assert!(hub.flush().is_none());
}

#[test]
fn a_client_may_listen_on_so_many_channels_and_no_more() {
    let hub = Hub::default();
    for i in 0..MAX_CHANNELS {
        let (j, _) = hub.join(1, format!("c{i}").as_bytes());
        assert!(!matches!(j, Joined::TooMany), "{i}");
    }
    assert!(matches!(hub.join(1, b"one more").0, Joined::TooMany));
    // One it has already is no new channel.
    assert!(matches!(hub.join(1, b"c0").0, Joined::Ready));
    // Others are not limited by it.
    assert!(!matches!(hub.join(2, b"one more").0, Joined::TooMany));
    assert_eq!(hub.counts(), (MAX_CHANNELS + 1, 2));
}
