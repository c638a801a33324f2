//! Subscriptions: the changes of this node's interest in topics, the SUBSCRIBEs and
//! UNSUBSCRIBEs that follow them, and the shard channels a Redis Cluster moved.

use super::{Bridge, Link, LinkError};
use std::io::{self, Write};
use std::sync::Arc;

/// Channels named in one SUBSCRIBE command at most.
const SUBSCRIBE_CHUNK: usize = 512;

impl Bridge {
    /// Takes every change of interest: returns the channels to subscribe to and to
    /// unsubscribe from.
    pub(super) fn take_interest(&mut self) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        while let Some(topic) = self.cluster.interest.pop() {
            let want = topic.subscribers() > 0;
            let name = topic.name().clone();
            match (want, self.wanted.contains_key(&name)) {
                (true, false) => {
                    topic.set_remote_ready(false);
                    self.wanted.insert(name.clone(), topic);
                    remove.retain(|n| *n != name);
                    add.push(name);
                }
                (false, true) => {
                    topic.set_remote_ready(false);
                    // nothing reaches the mirror now: it is primed again when listened to
                    self.hub().unprime(&topic);
                    if let Some(held) = self.wanted.remove(&name) {
                        self.hub().release(held);
                    }
                    self.hub().release(topic);
                    add.retain(|n| *n != name);
                    remove.push(name);
                }
                _ => self.hub().release(topic),
            }
        }
        (add, remove)
    }

    pub(super) fn subscribe_changes(
        &mut self,
        (add, remove): (Vec<Arc<str>>, Vec<Arc<str>>),
    ) -> Result<(), LinkError> {
        let Some(mut link) = self.link.take() else {
            return Ok(());
        };
        let result = self
            .send_subscriptions(&mut link, &add, true)
            .and_then(|()| self.send_subscriptions(&mut link, &remove, false));
        self.link = Some(link);
        Ok(result?)
    }

    /// SUBSCRIBEs to (or UNSUBSCRIBEs from) the channels of `topics`, each on its shard. In a
    /// Redis Cluster one command names one channel: a command's shard channels must share a slot.
    pub(super) fn send_subscriptions(
        &mut self,
        link: &mut Link,
        topics: &[Arc<str>],
        subscribe: bool,
    ) -> io::Result<()> {
        let verb = match (subscribe, self.cluster.sharded) {
            (true, false) => "SUBSCRIBE",
            (false, false) => "UNSUBSCRIBE",
            (true, true) => "SSUBSCRIBE",
            (false, true) => "SUNSUBSCRIBE",
        };
        let per_command = if link.slots.is_some() {
            1
        } else {
            SUBSCRIBE_CHUNK
        };
        let mut packed: Vec<Vec<u8>> = vec![Vec::new(); link.shards.len()];
        for chunk in topics.chunks(per_command) {
            let channels: Vec<String> = chunk.iter().map(|t| self.cluster.channel(t)).collect();
            if !subscribe && self.cluster.sharded {
                for c in &channels {
                    *self.unsubscribing.entry(c.as_bytes().to_vec()).or_default() += 1;
                }
            }
            let shard = link.shard_of(channels[0].as_bytes());
            let mut cmd = redis::cmd(verb);
            for c in &channels {
                cmd.arg(c);
            }
            cmd.write_packed_command(&mut packed[shard]);
        }
        for (shard, bytes) in link.shards.iter_mut().zip(packed) {
            if !bytes.is_empty() {
                shard.subscriber.write_all(&bytes)?;
            }
        }
        Ok(())
    }

    /// Looks at the shard channels Redis unsubscribed this node from: one the bridge did not
    /// ask to leave had its slot moved to another master, so the bridge reads the cluster's
    /// layout again and subscribes where the channel now lives.
    pub(super) fn check_unsubscribed(&mut self) -> Result<(), LinkError> {
        let mut moved = false;
        while let Some(channel) = self.cluster.unsubscribed.pop() {
            match self.unsubscribing.get_mut(&channel) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    self.unsubscribing.remove(&channel);
                }
                None => moved = true,
            }
        }
        if moved {
            self.unsubscribing.clear();
            return Err(LinkError::Moved(
                "a shard channel was unsubscribed by the cluster".into(),
            ));
        }
        Ok(())
    }
}
