//! What the hub's tests share: wakers that count, hubs of such wakers, small frames, and
//! history rules.

use super::{HistoryRules, Hub, Wake};
use crate::history::Budget;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize as Count, Ordering};
use std::time::Duration;
use wsgate_core::deflate::SharedFrame;
use wsgate_core::frame::{OpCode, OutFrame};

/// A waker that counts its wakes.
pub(super) struct Counter(pub(super) Arc<Count>);
impl Wake for Counter {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A single-node hub of `n` workers, with the wake counts of each.
pub(super) fn hub(n: usize) -> (Hub, Vec<Arc<Count>>) {
    let counts: Vec<Arc<Count>> = (0..n).map(|_| Arc::new(Count::new(0))).collect();
    let wakers = counts
        .iter()
        .map(|c| Box::new(Counter(c.clone())) as Box<dyn Wake>)
        .collect();
    (Hub::new(wakers), counts)
}

/// A binary frame of `i` as four bytes.
pub(super) fn frame(i: u32) -> SharedFrame {
    OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(&i.to_be_bytes())).into()
}

/// Topics `chat.*` keep three messages for a minute.
pub(super) struct Rules;
impl HistoryRules for Rules {
    fn history_for(&self, topic: &str) -> Option<(usize, Duration)> {
        topic
            .starts_with("chat.")
            .then_some((3, Duration::from_secs(60)))
    }
}

/// A hub of `n` workers whose topics follow [`Rules`].
pub(super) fn history_hub(n: usize) -> Hub {
    hub(n)
        .0
        .with_history(Arc::new(Rules), Arc::new(Budget::new(1 << 20)))
}
