//! History upkeep: priming the mirrors of listened-to topics from their streams in Redis (the
//! PRIME script), and keeping their epochs alive there (PEXPIRE).

use super::{Bridge, LinkError};
use crate::cluster::scripts;
use crate::hub::Topic;
use redis::Value;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Bridge {
    /// Primes the mirrors of the topics whose subscription Redis confirmed (or whose offsets
    /// jumped) from their streams in Redis, then lets the subscribes that waited for them be
    /// answered.
    pub(super) fn prime_waiting(&mut self) -> Result<(), LinkError> {
        let mut waiting = Vec::new();
        while let Some(topic) = self.cluster.to_prime.pop() {
            topic.dequeue_priming();
            waiting.push(topic);
        }
        let mut waiting = waiting.into_iter();
        while let Some(topic) = waiting.next() {
            let result = self.prime(&topic);
            if result.is_err() {
                // the link failed: they are primed after the next connection's subscribes
                for rest in std::iter::once(topic).chain(waiting) {
                    self.hub.release(rest);
                }
                return result;
            }
            self.hub.release(topic);
        }
        Ok(())
    }

    fn prime(&mut self, topic: &Arc<Topic>) -> Result<(), LinkError> {
        if !self.wanted.contains_key(topic.name()) {
            return Ok(()); // no longer listened to: primed when it is again
        }
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        let channel = self.cluster.channel(topic.name());
        let Some((meta, stream)) = scripts::keys(&channel) else {
            unkeyed(topic.name());
            self.hub.confirm_remote(topic);
            return Ok(());
        };
        let (Some((last, epoch)), Some((_, ttl))) =
            (topic.history_position(), topic.history_limits())
        else {
            return Ok(());
        };
        let i = link.shard_of(channel.as_bytes());
        let shard = &mut link.shards[i];
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&shard.prime_sha)
            .arg(2)
            .arg(meta)
            .arg(stream)
            .arg(last)
            .arg(&*epoch)
            .arg(ttl.as_millis().max(1) as u64);
        let reply = shard.publisher.call(&cmd)?;
        match reply {
            Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK") => {
                self.cluster.prime_later(topic.clone());
                return Err(LinkError::Moved(format!("priming {:?}", &**topic.name())));
            }
            Value::ServerError(e) => {
                tracing::warn!(
                    "redis refused to read the history of {:?}: {e:?}",
                    &**topic.name()
                );
            }
            reply => match scripts::primed(reply) {
                Some(p) => {
                    if !self.hub.prime(topic, &p.epoch, p.last, p.messages) {
                        self.cluster.prime_later(topic.clone());
                    }
                }
                None => tracing::warn!(
                    "redis' history of {:?} is not wsgate's: left unread",
                    &**topic.name()
                ),
            },
        }
        // the subscribes that waited for the mirror are answered (from it when primed; a
        // mirror that could not be is refused by them as unavailable)
        self.hub.confirm_remote(topic);
        Ok(())
    }

    /// Keeps the epochs of the topics with history that this node listens to alive in Redis
    /// (their hash expires `ttl` after the last publish): a quiet topic with subscribers keeps
    /// its epoch, as on one node, instead of starting a new one, which would tell every
    /// subscriber of a gap. Each is refreshed every third of its ttl, at most once a second.
    pub(super) fn keep_epochs(&mut self) -> Result<(), LinkError> {
        let now = Instant::now();
        if now < self.next_keep_alive {
            return Ok(());
        }
        self.next_keep_alive = now + Duration::from_secs(1);
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        self.kept_alive
            .retain(|name, _| self.wanted.contains_key(name));
        let mut sent = vec![0usize; link.shards.len()];
        for (name, topic) in &self.wanted {
            let Some((_, ttl)) = topic.history_limits() else {
                continue;
            };
            if !topic.is_mirrored()
                || self
                    .kept_alive
                    .get(name)
                    .is_some_and(|at| now.duration_since(*at) < ttl / 3)
            {
                continue;
            }
            let channel = self.cluster.channel(name);
            let Some((meta, _)) = scripts::keys(&channel) else {
                continue;
            };
            let i = link.shard_of(channel.as_bytes());
            let mut cmd = redis::cmd("PEXPIRE");
            cmd.arg(meta).arg(ttl.as_millis().max(1) as u64);
            cmd.write_packed_command(&mut link.shards[i].batch);
            sent[i] += 1;
            self.kept_alive.insert(name.clone(), now);
        }
        for (shard, n) in link.shards.iter_mut().zip(sent) {
            if n == 0 {
                continue;
            }
            shard.publisher.stream.write_all(&shard.batch)?;
            shard.batch.clear();
            for _ in 0..n {
                if let Value::ServerError(e) = shard.publisher.read()?
                    && matches!(e.code(), "MOVED" | "ASK")
                {
                    return Err(LinkError::Moved("keeping an epoch alive".into()));
                }
            }
        }
        Ok(())
    }
}

/// Logs (once) a topic whose history cannot be kept in a Redis Cluster: its name has a `}` and
/// no hash tag, so no key can be named in its channel's slot.
pub(super) fn unkeyed(topic: &str) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::error!(
            "the history of topic {topic:?} cannot be kept in redis: a name with '}}' needs a \
             hash tag ({{tag}}) in a redis cluster; its publishes are dropped"
        );
    }
}
