//! The paths of topics with history: numbered publishes on a single node
//! ([`Hub::publish_at`]), and in a cluster the mirror of the stream that the other nodes number
//! (publishes handed to the uplink, numbered messages received, primings).

use super::{Hub, Topic};
use crate::history::{Arrival, Event};
use std::sync::Arc;
use std::time::Instant;
use wsgate_core::deflate::SharedFrame;
use wsgate_core::frame::{OpCode, OutFrame};
use wsgate_core::message;

impl Hub {
    /// Publishes to a topic with history: under the topic's lock, gives the message the next
    /// offset, makes its frame with it (`make`), keeps it in the history and pushes it to
    /// every worker that has subscribers, `from` included, so that every worker takes the
    /// topic's messages in offset order (the publishing worker takes its own from its inbox,
    /// after those published before). Returns the frame, its offset and the epoch; `None` for a topic
    /// without history (use [`publish`](Self::publish)).
    /// `make` may also give the frame for clients of the `wsgate.v2` subprotocol (a binary
    /// message with its offset in front); the history keeps the plain one.
    pub fn publish_at(
        &self,
        topic: &Arc<Topic>,
        now: Instant,
        make: impl FnOnce(u64) -> (SharedFrame, Option<SharedFrame>),
    ) -> Option<(SharedFrame, u64, Arc<str>)> {
        let mut stream = topic.history.as_ref()?.lock();
        let offset = stream.next_offset();
        let epoch = stream.epoch().clone();
        let (frame, v2) = make(offset);
        stream.push(frame.clone(), now);
        self.push_to_workers(usize::MAX, topic, &frame, offset, v2.as_ref());
        drop(stream);
        if let Some(uplink) = &self.uplink {
            uplink.publish(topic, frame.plain());
        }
        Some((frame, offset, epoch))
    }

    /// The frames of a message of offset `offset` on a topic with history: a text delivery
    /// with `"offset"` in it, or a binary one as it is and, for clients of the `wsgate.v2`
    /// subprotocol, with its offset in front.
    pub fn numbered(&self, frame: OutFrame, offset: u64) -> (SharedFrame, Option<SharedFrame>) {
        match frame.opcode() {
            OpCode::Text => {
                let numbered = message::text_delivery_with_offset(frame.payload(), offset);
                (self.share(numbered.unwrap_or(frame)), None)
            }
            _ => {
                let v2 = self.share(message::binary_delivery_at(frame.payload(), offset));
                (self.share(frame), Some(v2))
            }
        }
    }

    /// Whether `topic`'s messages are numbered by the other nodes' stream (a topic with
    /// history, in a cluster): publish them with
    /// [`publish_sequenced`](Self::publish_sequenced).
    pub fn is_sequenced(&self, topic: &Topic) -> bool {
        self.uplink.is_some() && topic.is_mirrored()
    }

    /// Hands a publish to a topic with history in a cluster to the uplink, which numbers it
    /// and brings it back (see [`Uplink::publish_sequenced`]), answering `ticket` with its
    /// offset. False: it could not be numbered now, and nobody gets it.
    ///
    /// [`Uplink::publish_sequenced`]: super::Uplink::publish_sequenced
    pub fn publish_sequenced(
        &self,
        topic: &Topic,
        frame: &OutFrame,
        ticket: Option<super::Ticket>,
    ) -> bool {
        self.uplink
            .as_ref()
            .is_some_and(|u| u.publish_sequenced(topic, frame, ticket))
    }

    /// A numbered message from the other nodes' stream, for the mirror of `topic`: what
    /// follows what the mirror has goes to every worker with subscribers, in order; a
    /// duplicate is dropped; a jump is held and the mirror primed again.
    pub fn receive_sequenced(&self, topic: &Arc<Topic>, offset: u64, epoch: &str, frame: OutFrame) {
        let Some(history) = topic.history.as_ref() else {
            return;
        };
        let now = Instant::now();
        let mut events = Vec::new();
        let mut stream = history.lock();
        let epoch = if **stream.epoch() == *epoch {
            stream.epoch().clone()
        } else {
            Arc::from(epoch)
        };
        let (frame, _) = self.numbered(frame, offset);
        let arrival = Arrival {
            offset,
            epoch,
            frame,
        };
        // a jump in a primed mirror asks for a priming; an unprimed one has one coming
        let was_primed = stream.is_primed();
        let resync = stream.append(arrival, now, &mut events) && was_primed;
        self.send_events(topic, events);
        drop(stream);
        if resync && let Some(uplink) = &self.uplink {
            uplink.resync(topic.clone());
        }
    }

    /// Primes the mirror of `topic` with what the other nodes' stream has (`epoch`, its
    /// `last` offset, the messages after the mirror's last one as `(offset, frame without its
    /// offset)`): what the subscribers missed goes to them in order, or a gap notice. Returns
    /// false when the mirror needs another priming (an offset jumped among the messages
    /// that arrived meanwhile).
    pub fn prime(
        &self,
        topic: &Arc<Topic>,
        epoch: &str,
        last: u64,
        messages: Vec<(u64, OutFrame)>,
    ) -> bool {
        let Some(history) = topic.history.as_ref() else {
            return true;
        };
        let entries = messages
            .into_iter()
            .map(|(o, f)| (o, self.numbered(f, o).0))
            .collect();
        let mut events = Vec::new();
        let mut stream = history.lock();
        let again = stream.prime(epoch, last, entries, Instant::now(), &mut events);
        self.send_events(topic, events);
        !again
    }

    /// The mirror of `topic` stops following the other nodes' stream (this node stopped
    /// listening, or its link was replaced) until primed again.
    pub fn unprime(&self, topic: &Topic) {
        if let Some(history) = &topic.history {
            history.lock().unprime();
        }
    }

    /// Pushes what a mirror says its subscribers get to every worker with subscribers, in
    /// order. A gap notice is a delivery of offset 0 on a topic with history.
    fn send_events(&self, topic: &Arc<Topic>, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Message(offset, frame) => {
                    let v2 = (frame.plain().opcode() == OpCode::Binary).then(|| {
                        self.share(message::binary_delivery_at(frame.plain().payload(), offset))
                    });
                    self.push_to_workers(usize::MAX, topic, &frame, offset, v2.as_ref());
                }
                Event::Gap => {
                    let gap = self.share(message::gap_frame(topic.name()));
                    self.push_to_workers(usize::MAX, topic, &gap, 0, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Budget;
    use crate::hub::test_support::{Counter, Rules, frame, history_hub};
    use crate::hub::{Uplink, Wake};
    use bytes::Bytes;
    use std::sync::atomic::AtomicUsize as Count;

    /// An uplink that numbers nothing and counts the mirrors it is asked to prime again.
    #[derive(Default)]
    struct Resyncs(std::sync::Mutex<Vec<Arc<str>>>);
    impl Uplink for Resyncs {
        fn publish(&self, _: &Topic, _: &OutFrame) {}
        fn interest_changed(&self, _: Arc<Topic>) {}
        fn is_up(&self) -> bool {
            true
        }
        fn resync(&self, topic: Arc<Topic>) {
            self.0.lock().unwrap().push(topic.name().clone());
        }
    }

    fn text(data: &str) -> OutFrame {
        let body = format!(r#"{{"type":"message","topic":"chat.a","data":{data}}}"#);
        OutFrame::new(OpCode::Text, Bytes::from(body))
    }

    /// What worker `w` has in its inbox: `o3` for a delivery of offset 3 (its text checked),
    /// `gap` for a gap notice.
    fn taken(hub: &Hub, w: usize) -> Vec<String> {
        let mut got = Vec::new();
        hub.drain(w, |d| {
            let text = std::str::from_utf8(d.frame.plain().payload())
                .unwrap()
                .to_string();
            if d.offset == 0 {
                assert_eq!(text, r#"{"type":"gap","topic":"chat.a"}"#);
                got.push("gap".to_string());
            } else {
                let want = format!(r#""offset":{},"#, d.offset);
                assert!(text.contains(&want), "{text}");
                got.push(format!("o{}", d.offset));
            }
        });
        got
    }

    #[test]
    fn in_a_cluster_a_history_topic_mirrors_redis_numbers_in_order_and_tells_of_gaps() {
        let counts: Vec<Arc<Count>> = (0..2).map(|_| Arc::new(Count::new(0))).collect();
        let wakers = counts
            .iter()
            .map(|c| Box::new(Counter(c.clone())) as Box<dyn Wake>)
            .collect();
        let uplink = Arc::new(Resyncs::default());
        let hub = Hub::with_uplink(wakers, Some(uplink.clone()))
            .with_history(Arc::new(Rules), Arc::new(Budget::new(1 << 20)));
        let t = hub.topic("chat.a");
        assert!(hub.is_sequenced(&t) && !hub.is_sequenced(&hub.topic("news")));
        assert!(!t.history_primed() && !t.history_has_position());
        hub.subscribed(0, &t, true);
        hub.subscribed(1, &t, true);

        // arrivals before the priming are held; the priming keeps Redis' 1..=2 and sends what
        // follows them
        hub.receive_sequenced(&t, 3, "E", text("3"));
        assert!(taken(&hub, 0).is_empty());
        assert!(
            uplink.0.lock().unwrap().is_empty(),
            "a first priming is coming anyway"
        );
        assert!(hub.prime(&t, "E", 2, vec![(1, text("1")), (2, text("2"))]));
        assert_eq!(taken(&hub, 0), ["o3"]);
        assert_eq!(taken(&hub, 1), ["o3"]);
        assert_eq!(t.history_position().unwrap(), (3, Arc::from("E")));
        assert_eq!(
            t.recover(0, "E", Instant::now())
                .unwrap()
                .messages
                .unwrap()
                .len(),
            3
        );

        // a duplicate is dropped; a jump asks the uplink for a priming and is held
        hub.receive_sequenced(&t, 3, "E", text("3"));
        hub.receive_sequenced(&t, 6, "E", text("6"));
        assert!(taken(&hub, 0).is_empty());
        assert_eq!(*uplink.0.lock().unwrap(), [Arc::<str>::from("chat.a")]);
        assert!(!t.history_primed());
        assert!(hub.prime(&t, "E", 5, vec![(4, text("4")), (5, text("5"))]));
        assert_eq!(taken(&hub, 1), ["o4", "o5", "o6"]);

        // Redis lost the stream: a gap notice, then the new epoch's offsets
        hub.receive_sequenced(&t, 1, "F", text("1"));
        assert_eq!(taken(&hub, 0), ["o4", "o5", "o6", "gap", "o1"]);
        assert_eq!(t.history_position().unwrap(), (1, Arc::from("F")));

        // a publish goes to the uplink to be numbered; this one refuses it
        assert!(!hub.publish_sequenced(&t, &text("x"), None));
    }

    #[test]
    fn topics_matching_a_rule_number_their_messages_in_every_inbox_in_order() {
        let hub = Arc::new(history_hub(3));
        let t = hub.topic("chat.room");
        assert!(t.has_history() && !hub.topic("news").has_history());
        for w in 0..3 {
            hub.subscribed(w, &t, true);
        }
        // three publishers on three threads: every worker takes offsets 1..=300 in order
        std::thread::scope(|s| {
            for p in 0..3u32 {
                let (hub, t) = (hub.clone(), t.clone());
                s.spawn(move || {
                    for i in 0..100 {
                        hub.publish_at(&t, Instant::now(), |_| (frame(p * 1000 + i), None))
                            .unwrap();
                    }
                });
            }
        });
        for w in 0..3 {
            let mut offsets = Vec::new();
            hub.drain(w, |d| offsets.push(d.offset));
            assert_eq!(offsets, (1..=300).collect::<Vec<u64>>(), "worker {w}");
        }
        assert_eq!(t.position().unwrap().0, 300);
        assert!(
            hub.publish_at(&hub.topic("news"), Instant::now(), |_| (frame(0), None))
                .is_none()
        );
    }
}
