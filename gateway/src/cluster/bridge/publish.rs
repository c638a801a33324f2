//! Publishing: the pipelined batch of PUBLISHes (SPUBLISHes) and of history script calls
//! (EVALSHA) to each one's shard, and their replies and redirects.

use super::history::unkeyed;
use super::{Bridge, LinkError};
use crate::cluster::resp::write_bulk;
use crate::cluster::{Outgoing, envelope, scripts};
use crate::hub::Answer;
use redis::Value;
use std::io::{self, Write};
use std::sync::atomic::Ordering;

/// Publishes sent in one pipelined batch at most.
const BATCH: usize = 1024;
/// Payloads at least this large are written from their own buffer instead of being copied
/// into the batch.
const COPY_LIMIT: usize = 16 << 10;

impl Bridge {
    /// Sends up to [`BATCH`] waiting publishes (redirected ones first), pipelined to each
    /// one's shard, and reads the replies. Returns how many went.
    pub(super) fn publish_batch(&mut self) -> Result<usize, LinkError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(0);
        };
        let verb: &[u8] = if self.cluster.sharded {
            b"SPUBLISH"
        } else {
            b"PUBLISH"
        };
        let mut retry = std::mem::take(&mut self.retry).into_iter();
        let mut n = 0;
        let mut freed = 0;
        let result = (|| -> io::Result<()> {
            while n < BATCH {
                let o = match retry.next() {
                    Some(o) => o,
                    None => match self.cluster.outgoing.pop() {
                        Some(o) => {
                            freed += o.size;
                            o
                        }
                        None => break,
                    },
                };
                n += 1;
                let channel = self.cluster.channel(&o.topic);
                let i = link.shard_of(channel.as_bytes());
                let shard = &mut link.shards[i];
                let payload = o.frame.payload();
                let b = &mut shard.batch;
                if let Some((size, ttl)) = o.history {
                    let Some((meta, stream)) = scripts::keys(&channel) else {
                        unkeyed(&o.topic);
                        self.cluster
                            .stats
                            .dropped_history
                            .fetch_add(1, Ordering::Relaxed);
                        shard.unanswered.push(o);
                        // answered by nobody: a placeholder the reply loop skips
                        shard.batch.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
                        continue;
                    };
                    let head = envelope::sequenced_head(&self.cluster.node, &o.frame);
                    b.extend_from_slice(b"*11\r\n");
                    write_bulk(b, b"EVALSHA");
                    write_bulk(b, shard.publish_sha.as_bytes());
                    write_bulk(b, b"2");
                    write_bulk(b, meta.as_bytes());
                    write_bulk(b, stream.as_bytes());
                    write_bulk(b, &head);
                    b.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
                    let tail = [
                        size.to_string(),
                        ttl.as_millis().max(1).to_string(),
                        channel.clone(),
                        String::from(if self.cluster.sharded { "1" } else { "0" }),
                    ];
                    if payload.len() < COPY_LIMIT {
                        b.extend_from_slice(payload);
                    } else {
                        shard.publisher.stream.write_all(b)?;
                        b.clear();
                        shard.publisher.stream.write_all(payload)?;
                    }
                    b.extend_from_slice(b"\r\n");
                    for arg in &tail {
                        write_bulk(b, arg.as_bytes());
                    }
                    shard.unanswered.push(o);
                    continue;
                }
                let head = envelope::head(&self.cluster.node, &o.frame);
                b.extend_from_slice(b"*3\r\n");
                write_bulk(b, verb);
                write_bulk(b, channel.as_bytes());
                b.extend_from_slice(format!("${}\r\n", head.len() + payload.len()).as_bytes());
                b.extend_from_slice(&head);
                if payload.len() < COPY_LIMIT {
                    b.extend_from_slice(payload);
                } else {
                    // a large payload goes out from its own buffer, not copied
                    shard.publisher.stream.write_all(b)?;
                    b.clear();
                    shard.publisher.stream.write_all(payload)?;
                }
                b.extend_from_slice(b"\r\n");
                shard.unanswered.push(o);
            }
            Ok(())
        })();
        // what is left of the redirected ones (more than a batch) goes first next time
        let mut redirected: Vec<Outgoing> = retry.collect();
        let result = result.and_then(|()| {
            for shard in &mut link.shards {
                if shard.unanswered.is_empty() {
                    continue;
                }
                shard.publisher.stream.write_all(&shard.batch)?;
                shard.batch.clear();
                let mut refused = None;
                let mut waiting = std::mem::take(&mut shard.unanswered).into_iter();
                while let Some(mut o) = waiting.next() {
                    let reply = match shard.publisher.read() {
                        Ok(reply) => reply,
                        Err(e) => {
                            // the link broke before these answers: Redis may have kept them
                            accepted(std::iter::once(o).chain(waiting));
                            return Err(e);
                        }
                    };
                    match reply {
                        Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK") => {
                            redirected.push(o)
                        }
                        // a script that failed for its topic (and no other): counted, logged
                        Value::ServerError(e) if o.history.is_some() => {
                            self.cluster
                                .stats
                                .dropped_history
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                "redis did not keep a message of topic {:?}: {e:?}",
                                &*o.topic
                            );
                        }
                        Value::ServerError(e) => refused = Some(e),
                        // the script's answer: the offset Redis gave, and the epoch
                        reply => {
                            if let Some(ticket) = o.ticket.take() {
                                ticket.answer(scripts::published(&reply));
                            }
                        }
                    }
                    // a ticket left (a refused script, a placeholder) answers that it was lost
                }
                if let Some(e) = refused {
                    return Err(io::Error::other(format!(
                        "{}:{} refused a publish: {e:?}",
                        shard.addr.0, shard.addr.1
                    )));
                }
            }
            Ok(())
        });
        self.cluster
            .pending_bytes
            .fetch_sub(freed, Ordering::AcqRel);
        let stats = &self.cluster.stats;
        match result {
            Ok(()) if redirected.is_empty() => {
                stats.published.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Ok(()) => {
                let moved = redirected.len();
                stats
                    .published
                    .fetch_add((n - moved) as u64, Ordering::Relaxed);
                self.retry = redirected;
                Err(LinkError::Moved(format!("{moved} publishes redirected")))
            }
            Err(e) => {
                // what was written may or may not have been published: none is sent again
                stats
                    .dropped_redis_down
                    .fetch_add((n + redirected.len()) as u64, Ordering::Relaxed);
                for shard in &mut link.shards {
                    accepted(shard.unanswered.drain(..));
                    shard.batch.clear();
                }
                Err(LinkError::Io(e))
            }
        }
    }
}

/// Answers the publishers of `written`, publishes sent to Redis (or on their way) whose answers
/// the broken link will not bring: whether Redis kept them is not known, so each gets the
/// plain acknowledgement, as every publish did when it was answered at once (delivery across
/// nodes is at most once). Not `unavailable`: that says it was not kept, and a publisher that
/// sends it again might make a second copy.
fn accepted(written: impl Iterator<Item = Outgoing>) {
    for mut o in written {
        if let Some(ticket) = o.ticket.take() {
            ticket.answer(Answer::Accepted);
        }
    }
}
