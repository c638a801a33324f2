//! Local pub/sub without sockets: a hub of two workers, one link to other nodes that the tests
//! drive by hand.

use super::acks::ACK_WAIT;
use super::*;
use crate::hub::{Uplink, Wake};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wsgate_core::frame::{OpCode, OutFrame};

struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

/// A link to other nodes that records what it is told.
#[derive(Default)]
struct Link {
    up: AtomicBool,
    published: Mutex<Vec<(String, Bytes)>>,
    interest: Mutex<Vec<(String, usize)>>,
}

impl Uplink for Link {
    fn publish(&self, topic: &Topic, frame: &wsgate_core::frame::OutFrame) {
        self.published
            .lock()
            .push((topic.name().to_string(), frame.payload().clone()));
    }
    fn interest_changed(&self, topic: Arc<Topic>) {
        self.interest
            .lock()
            .push((topic.name().to_string(), topic.subscribers()));
    }
    fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

fn hub(link: Option<Arc<Link>>) -> Arc<Hub> {
    let wakers: Vec<Box<dyn Wake>> = vec![Box::new(NoWake), Box::new(NoWake)];
    Arc::new(Hub::with_uplink(wakers, link.map(|l| l as Arc<dyn Uplink>)))
}

fn frame(text: &str) -> SharedFrame {
    OutFrame::new(OpCode::Text, Bytes::copy_from_slice(text.as_bytes())).into()
}

#[test]
fn subscribers_get_what_is_published_until_they_leave() {
    let hub = hub(None);
    let mut w0: PubSub<u32> = PubSub::new(0, hub.clone());
    let (mut a, mut b) = (Subscriptions::default(), Subscriptions::default());
    assert!(w0.subscribe(1, &mut a, "news"));
    assert!(!w0.subscribe(1, &mut a, "news"), "once");
    assert!(w0.subscribe(2, &mut b, "news"));
    assert!(w0.subscribe(2, &mut b, "sport"));
    let p = w0.publish("news", &frame("x"));
    let mut to: Vec<u32> = p.local.iter().copied().collect();
    to.sort();
    assert_eq!((to, p.on_node), (vec![1, 2], 2));
    assert!(w0.unsubscribe(1, &mut a, "news"));
    assert!(!w0.unsubscribe(1, &mut a, "news"));
    assert_eq!(a.len(), 0);
    assert_eq!(w0.publish("news", &frame("y")).local.len(), 1);
    w0.unsubscribe_all(2, &mut b);
    assert_eq!(b.len(), 0);
    assert!(w0.publish("sport", &frame("z")).local.is_empty());
    assert_eq!(hub.find("sport").map(|t| t.subscribers()), Some(0));
}

#[test]
fn other_workers_get_a_reference_and_the_registry_forgets_unused_topics() {
    let hub = hub(None);
    let mut w0: PubSub<u32> = PubSub::new(0, hub.clone());
    let mut w1: PubSub<u32> = PubSub::new(1, hub.clone());
    let mut s = Subscriptions::default();
    w1.subscribe(7, &mut s, "t");
    let f = frame("hello");
    assert!(w0.publish("t", &f).local.is_empty());
    assert_eq!(w0.publish("t", &f).on_node, 1);
    let mut got = Vec::new();
    hub.drain(1, |d| {
        assert!(w1.subscribers(d.topic.name()).unwrap().contains(&7));
        got.push(d.frame.plain().payload().as_ptr());
    });
    assert_eq!(
        got,
        vec![f.plain().payload().as_ptr(); 2],
        "the same bytes, twice"
    );
    assert_eq!(hub.drain(0, |_| {}), 0, "not to the publisher's own inbox");
    w1.unsubscribe_all(7, &mut s);
    // w0 still caches the topic for publishing; once it lets go, the registry forgets it
    w0.sweep();
    assert!(hub.find("t").is_none());
}

#[test]
fn the_link_hears_each_publish_and_each_change_of_interest() {
    let link = Arc::new(Link::default());
    let hub = hub(Some(link.clone()));
    let mut w0: PubSub<u32> = PubSub::new(0, hub.clone());
    let mut w1: PubSub<u32> = PubSub::new(1, hub.clone());
    let (mut a, mut b) = (Subscriptions::default(), Subscriptions::default());
    w0.subscribe(1, &mut a, "t");
    w1.subscribe(2, &mut b, "t");
    w0.publish("t", &frame("m"));
    w0.unsubscribe_all(1, &mut a);
    w1.unsubscribe_all(2, &mut b);
    assert_eq!(
        *link.interest.lock(),
        vec![("t".to_string(), 1), ("t".to_string(), 0)],
        "none to some, some to none: not every subscriber"
    );
    assert_eq!(
        *link.published.lock(),
        vec![("t".to_string(), Bytes::from_static(b"m"))]
    );
}

#[test]
fn a_subscribe_ack_waits_for_the_link_at_most_ack_wait() {
    let link = Arc::new(Link::default());
    let hub = hub(Some(link.clone()));
    let mut w0: PubSub<u32> = PubSub::new(0, hub.clone());
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    w0.subscribe(1, &mut s, "t");
    assert!(!w0.defer_ack(1, "t", 10, t0), "the link is down: no wait");
    link.up.store(true, Ordering::SeqCst);
    assert!(w0.defer_ack(1, "t", 11, t0));
    assert!(w0.due_acks(t0).is_empty());
    assert!(w0.next_ack_deadline(t0).is_some_and(|d| d <= t0 + ACK_WAIT));
    // confirmed: it goes
    hub.confirm_remote(&hub.find("t").unwrap());
    assert_eq!(w0.due_acks(t0), vec![(1, 11)]);
    assert_eq!(w0.next_ack_deadline(t0), None);
    assert!(!w0.defer_ack(1, "t", 12, t0), "already confirmed: no wait");
    // never confirmed: it goes after ACK_WAIT
    w0.subscribe(2, &mut s, "u");
    assert!(w0.defer_ack(2, "u", 13, t0));
    assert!(
        w0.due_acks(t0 + ACK_WAIT - Duration::from_millis(1))
            .is_empty()
    );
    assert_eq!(w0.due_acks(t0 + ACK_WAIT), vec![(2, 13)]);
    // the link goes down: everything held goes at once
    w0.subscribe(3, &mut s, "v");
    assert!(w0.defer_ack(3, "v", 14, t0));
    link.up.store(false, Ordering::SeqCst);
    assert_eq!(w0.due_acks(t0), vec![(3, 14)]);
}

#[test]
fn held_acknowledgements_are_bounded() {
    let link = Arc::new(Link::default());
    link.up.store(true, Ordering::SeqCst);
    let hub = hub(Some(link));
    let mut w0: PubSub<u32> = PubSub::new(0, hub);
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    w0.subscribe(1, &mut s, "t");
    for i in 0..acks::MAX_HELD {
        assert!(w0.defer_ack(1, "t", i as i64, t0));
    }
    assert!(!w0.defer_ack(1, "t", -1, t0), "full: acknowledged at once");
    assert_eq!(w0.acks_held(), acks::MAX_HELD);
    assert!(
        w0.due_acks(t0).is_empty(),
        "nothing confirmed, nothing late"
    );
    assert_eq!(w0.due_acks(t0 + ACK_WAIT).len(), acks::MAX_HELD);
    assert_eq!(w0.acks_held(), 0);
}
