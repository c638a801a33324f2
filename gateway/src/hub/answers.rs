//! Answers to publishes that another node numbers: a publisher that asked for an
//! acknowledgement gets it once Redis has given the message its offset, through its worker's
//! queue of answers ([`Hub::answer`], [`Hub::take_answers`]).
//!
//! A [`Ticket`] travels with the publish; whoever ends up with it answers it, and a ticket
//! dropped unanswered (the publish was dropped before it reached Redis: the link was down, the
//! queue was cleared) answers [`Answer::Lost`] by itself, so no publisher waits for ever.

use super::Hub;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

/// Who waits for what became of a publish: a connection of a worker (its id as the worker
/// keeps it) and the id its acknowledgement carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerTo {
    /// The worker of the connection.
    pub worker: usize,
    /// The connection, as the worker names it.
    pub conn: u64,
    /// The id of the publish, for the acknowledgement.
    pub id: i64,
}

/// What became of a publish that someone waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Numbered, kept and published: its offset, and the epoch of the topic's history.
    Numbered {
        /// The message's offset.
        offset: u64,
        /// The epoch the offset belongs to.
        epoch: Arc<str>,
    },
    /// Taken for delivery, its position not known: an answer without one, or the link broke
    /// after it was sent and before Redis answered (it may or may not have been kept).
    Accepted,
    /// Not kept: Redis refused it, or it was dropped before it was sent.
    Lost,
}

/// The right, and the duty, to answer one publish. Dropped unanswered, it answers
/// [`Answer::Lost`].
#[derive(Debug)]
pub struct Ticket {
    to: Option<AnswerTo>,
    hub: Weak<Hub>,
}

impl Ticket {
    /// A ticket that answers `to` through `hub`.
    pub fn new(hub: &Arc<Hub>, to: AnswerTo) -> Ticket {
        Ticket {
            to: Some(to),
            hub: Arc::downgrade(hub),
        }
    }

    /// Answers the publish.
    pub fn answer(mut self, answer: Answer) {
        self.send(answer);
    }

    /// Takes the ticket back unanswered: the publish did not go, and whoever made the
    /// ticket answers the publisher itself.
    pub fn cancel(mut self) {
        self.to = None;
    }

    fn send(&mut self, answer: Answer) {
        if let (Some(to), Some(hub)) = (self.to.take(), self.hub.upgrade()) {
            hub.answer(to, answer);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.send(Answer::Lost);
    }
}

impl Hub {
    /// Queues `answer` for the worker of `to`, waking it if its queue of answers was empty.
    pub fn answer(&self, to: AnswerTo, answer: Answer) {
        let Some(inbox) = self.inboxes.get(to.worker) else {
            return;
        };
        inbox.answers.push((to, answer));
        if inbox.answers_pending.fetch_add(1, Ordering::AcqRel) == 0 {
            inbox.wake();
        }
    }

    /// Takes every answer waiting for worker `w`, in order, and hands each to `f`. After it
    /// returns, the next answer wakes the worker again.
    pub fn take_answers(&self, w: usize, mut f: impl FnMut(AnswerTo, Answer)) {
        let inbox = &self.inboxes[w];
        loop {
            let n = inbox.answers_pending.load(Ordering::Acquire);
            if n == 0 {
                return;
            }
            for _ in 0..n {
                // counted answers were pushed before they were counted
                let (to, answer) = inbox.answers.pop().expect("a counted answer is queued");
                f(to, answer);
            }
            if inbox.answers_pending.fetch_sub(n, Ordering::AcqRel) == n {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Wake;
    use std::sync::atomic::AtomicUsize;

    struct Count(Arc<AtomicUsize>);
    impl Wake for Count {
        fn wake(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn hub() -> (Arc<Hub>, Arc<AtomicUsize>) {
        let wakes = Arc::new(AtomicUsize::new(0));
        let hub = Hub::new(vec![
            Box::new(Count(Arc::new(AtomicUsize::new(0)))) as Box<dyn Wake>,
            Box::new(Count(wakes.clone())),
        ]);
        (Arc::new(hub), wakes)
    }

    fn to(id: i64) -> AnswerTo {
        AnswerTo {
            worker: 1,
            conn: 7,
            id,
        }
    }

    #[test]
    fn a_ticket_answers_once_and_a_dropped_one_answers_lost() {
        let (hub, wakes) = hub();
        let numbered = Answer::Numbered {
            offset: 5,
            epoch: Arc::from("e1"),
        };
        Ticket::new(&hub, to(1)).answer(numbered.clone());
        drop(Ticket::new(&hub, to(2)));
        Ticket::new(&hub, to(3)).answer(Answer::Accepted);
        Ticket::new(&hub, to(9)).cancel(); // taken back: no answer
        assert_eq!(
            wakes.load(Ordering::Relaxed),
            1,
            "woken when the queue filled"
        );
        let mut got = Vec::new();
        hub.take_answers(1, |to, a| got.push((to.id, a)));
        assert_eq!(
            got,
            vec![(1, numbered), (2, Answer::Lost), (3, Answer::Accepted)],
            "in order, each once"
        );
        hub.take_answers(1, |_, _| panic!("taken already"));
        hub.take_answers(0, |_, _| panic!("not this worker's"));
        Ticket::new(&hub, to(4)).answer(Answer::Accepted);
        assert_eq!(wakes.load(Ordering::Relaxed), 2, "woken again once emptied");
    }

    #[test]
    fn a_ticket_outliving_its_hub_answers_nobody() {
        let (hub, _) = hub();
        let t = Ticket::new(&hub, to(1));
        drop(hub);
        drop(t); // no hub to answer through: nothing happens
    }
}
