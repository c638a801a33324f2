//! The node's drain: from serving to stopped, in four steps that only go forward.
//!
//! The server sets the state ([`DrainState::set`]) on SIGTERM and as the drain goes on; every
//! worker reads it each turn of its loop and acts on the change.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where the node is in its drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Serving normally.
    Running,
    /// SIGTERM received: `/readyz` answers 503 and upgrades are refused, so the load balancer
    /// stops sending new clients; open sessions go on.
    Draining,
    /// The drain grace has passed: every open session is closed with 1001.
    Closing,
    /// Every session is closed or the drain timeout has passed: the workers exit.
    Stopping,
}

impl Drain {
    /// Whether new WebSocket sessions are refused (and `/readyz` says 503).
    pub(crate) fn refuses_sessions(self) -> bool {
        self != Drain::Running
    }

    /// Whether open sessions are to be closed with 1001.
    pub(crate) fn closes_sessions(self) -> bool {
        matches!(self, Drain::Closing | Drain::Stopping)
    }

    /// Whether the workers (and the cluster link) must stop.
    pub(crate) fn is_stopping(self) -> bool {
        self == Drain::Stopping
    }

    fn from_u8(v: u8) -> Drain {
        match v {
            0 => Drain::Running,
            1 => Drain::Draining,
            2 => Drain::Closing,
            _ => Drain::Stopping,
        }
    }
}

/// The drain state, shared by the server and every worker.
#[derive(Debug)]
pub(crate) struct DrainState(AtomicU8);

impl DrainState {
    /// A node that is running.
    pub(crate) fn new() -> DrainState {
        DrainState(AtomicU8::new(Drain::Running as u8))
    }

    /// The state now.
    pub(crate) fn get(&self) -> Drain {
        Drain::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Moves to `state`; a drain never goes back, so an earlier state is ignored.
    pub(crate) fn set(&self, state: Drain) {
        self.0.fetch_max(state as u8, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_only_goes_forward() {
        let d = DrainState::new();
        assert_eq!(d.get(), Drain::Running);
        assert!(!d.get().refuses_sessions());
        d.set(Drain::Closing);
        d.set(Drain::Draining);
        assert_eq!(d.get(), Drain::Closing, "no way back");
        assert!(d.get().refuses_sessions() && d.get().closes_sessions());
        assert!(!d.get().is_stopping());
        d.set(Drain::Stopping);
        assert!(d.get().is_stopping());
        assert!(Drain::Draining.refuses_sessions() && !Drain::Draining.closes_sessions());
    }
}
