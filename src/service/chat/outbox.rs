//! Fan-out without slow consumers: each client's bounded [`Outbox`] of shared [`Delivery`]s,
//! and the writer that drains it with one write per wakeup.
//!
//! A delivery is encoded at most once per protocol, however many clients receive it. Pushing
//! never waits: a client whose outbox passes its limits is marked overflowed, its queue is
//! freed at once, and its writer says why and ends the connection. Nobody else notices.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::messages::ServerMessage;
use crate::wire::encode_frame;

/// Default cap on messages queued for one client.
pub(crate) const MAX_QUEUED_MESSAGES: usize = 4096;
/// Default cap on bytes queued for one client (text plus [`DELIVERY_OVERHEAD_BYTES`] each).
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;
/// Bytes charged per delivery on top of its text: framing, names, timestamp.
pub const DELIVERY_OVERHEAD_BYTES: usize = 64;
/// How long an overflowed client gets to take its "you fell behind" message.
pub(crate) const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// One server message, shared by every client it goes to, with its encodings made on first use.
#[derive(Debug)]
pub struct Delivery {
    msg: ServerMessage,
    line: OnceLock<Bytes>,
    frame: OnceLock<Bytes>,
    json: OnceLock<Utf8Bytes>,
}

impl Delivery {
    /// Wraps `msg` for sharing.
    pub fn new(msg: ServerMessage) -> Arc<Delivery> {
        Arc::new(Delivery {
            msg,
            line: OnceLock::new(),
            frame: OnceLock::new(),
            json: OnceLock::new(),
        })
    }

    /// The message.
    pub fn message(&self) -> &ServerMessage {
        &self.msg
    }

    /// Its line-protocol form, newline included; encoded once.
    pub fn line(&self) -> &Bytes {
        self.line.get_or_init(|| {
            let mut line = self.msg.to_line();
            line.push('\n');
            Bytes::from(line)
        })
    }

    /// Its wire-v1 frame; encoded once. Text is capped well under the header limit, so the
    /// encoding cannot fail; if it ever did, the frame would be empty rather than corrupt.
    pub fn frame(&self) -> &Bytes {
        self.frame.get_or_init(|| {
            let mut buf = BytesMut::new();
            match encode_frame(&self.msg, &[], &mut buf) {
                Ok(()) => buf.freeze(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a chat frame");
                    Bytes::new()
                }
            }
        })
    }

    /// Its JSON form, a WebSocket text message's payload; encoded once. As with
    /// [`Delivery::frame`], a failure (which cannot happen) gives an empty text, not a corrupt one.
    pub fn json(&self) -> &Utf8Bytes {
        self.json
            .get_or_init(|| match serde_json::to_string(&self.msg) {
                Ok(json) => Utf8Bytes::from(json),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a chat message as JSON");
                    Utf8Bytes::from_static("")
                }
            })
    }

    fn cost(&self) -> usize {
        self.msg.text_len() + DELIVERY_OVERHEAD_BYTES
    }
}

/// Limits of one outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages queued.
    pub messages: usize,
    /// Most bytes queued.
    pub bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            messages: MAX_QUEUED_MESSAGES,
            bytes: MAX_QUEUED_BYTES,
        }
    }
}

/// Why an outbox stopped taking messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The connection is ending: send what is queued, then stop.
    Finished,
    /// The client fell behind past its limits: the queue was dropped.
    Overflowed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Arc<Delivery>>,
    bytes: usize,
    closed: Option<Closed>,
}

/// A client's bounded queue of outgoing messages.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    /// Fires on overflow, so a writer stuck on a client that does not read gives up too.
    overflow: CancellationToken,
    limits: QueueLimits,
}

impl Outbox {
    /// An empty outbox with these limits.
    pub fn new(limits: QueueLimits) -> Arc<Outbox> {
        Arc::new(Outbox {
            limits,
            ..Outbox::default()
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `delivery` without waiting; false if the outbox is closed or has just
    /// overflowed (and so closed).
    pub fn push(&self, delivery: Arc<Delivery>) -> bool {
        let mut state = self.lock();
        if state.closed.is_some() {
            return false;
        }
        let bytes = state.bytes + delivery.cost();
        if state.queue.len() >= self.limits.messages || bytes > self.limits.bytes {
            state.queue = VecDeque::new();
            state.bytes = 0;
            state.closed = Some(Closed::Overflowed);
            drop(state);
            self.overflow.cancel();
            self.wake.notify_one();
            return false;
        }
        state.bytes = bytes;
        state.queue.push_back(delivery);
        drop(state);
        self.wake.notify_one();
        true
    }

    /// Stops taking messages; with [`Closed::Finished`] what is queued is still written.
    pub fn close(&self, how: Closed) {
        let mut state = self.lock();
        state.closed.get_or_insert(how);
        drop(state);
        self.wake.notify_one();
    }

    /// Whether the outbox overflowed.
    pub(crate) fn overflowed(&self) -> bool {
        self.lock().closed == Some(Closed::Overflowed)
    }

    /// Waits until the outbox overflows (a writer blocked on a client that does not read
    /// gives up then).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn overflow_fired(&self) {
        self.overflow.cancelled().await;
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes everything queued now, without waiting.
    #[cfg(test)]
    pub(crate) fn take_queued(&self) -> Vec<Arc<Delivery>> {
        let mut state = self.lock();
        state.bytes = 0;
        state.queue.drain(..).collect()
    }

    /// Waits until something is queued and takes all of it, or returns why the outbox closed.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is taken until the call returns.
    pub(crate) async fn next_batch(&self, batch: &mut Vec<Arc<Delivery>>) -> Option<Closed> {
        loop {
            {
                let mut state = self.lock();
                if state.closed == Some(Closed::Overflowed) {
                    return Some(Closed::Overflowed);
                }
                if !state.queue.is_empty() {
                    batch.extend(state.queue.drain(..));
                    state.bytes = 0;
                    return None;
                }
                if let Some(closed) = state.closed {
                    return Some(closed);
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this await still wakes us.
            self.wake.notified().await;
        }
    }
}

/// Writes `outbox` to `writer` until it closes: each wakeup takes everything queued and sends
/// it as one concatenated buffer (a single write when the socket has room). On overflow, even
/// in the middle of a write to a client that stopped reading, the rest of that buffer and
/// `farewell` get [`FINAL_WRITE_TIMEOUT`], and the loop ends.
///
/// # Errors
/// Write errors: the client is gone.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    outbox: &Outbox,
    writer: &mut W,
    encode: fn(&Delivery) -> &Bytes,
    farewell: &Delivery,
) -> std::io::Result<Closed> {
    let mut batch = Vec::new();
    let mut buf = BytesMut::new();
    loop {
        let closed = outbox.next_batch(&mut batch).await;
        buf.clear();
        for delivery in batch.drain(..) {
            buf.extend_from_slice(encode(&delivery));
        }
        let mut pending = &buf[..];
        while !pending.is_empty() && closed.is_none() {
            // `write` is cancel safe: when overflow wins, nothing was half-written.
            tokio::select! {
                n = writer.write(pending) => match n? {
                    0 => return Err(std::io::ErrorKind::WriteZero.into()),
                    n => pending = &pending[n..],
                },
                () = outbox.overflow.cancelled() => break,
            }
        }
        if outbox.overflowed() {
            let last_words = async {
                writer.write_all(pending).await?;
                writer.write_all(encode(farewell)).await?;
                writer.shutdown().await
            };
            let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, last_words).await;
            return Ok(Closed::Overflowed);
        }
        if let Some(closed) = closed {
            let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, writer.shutdown()).await;
            return Ok(closed);
        }
        writer.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(text: &str) -> Arc<Delivery> {
        Delivery::new(ServerMessage::Notice {
            time: 0,
            room: None,
            text: text.into(),
        })
    }

    #[test]
    fn an_outbox_past_its_count_overflows_and_frees_its_queue() {
        let outbox = Outbox::new(QueueLimits {
            messages: 2,
            bytes: 1 << 20,
        });
        assert!(outbox.push(notice("a")));
        assert!(outbox.push(notice("b")));
        assert!(!outbox.push(notice("c")));
        assert!(outbox.overflowed());
        assert!(outbox.is_empty());
        assert!(!outbox.push(notice("d")));
    }

    #[test]
    fn an_outbox_past_its_bytes_overflows() {
        let outbox = Outbox::new(QueueLimits {
            messages: 100,
            bytes: 2 * DELIVERY_OVERHEAD_BYTES + 10,
        });
        assert!(outbox.push(notice("12345")));
        assert!(!outbox.push(notice("123456")));
        assert!(outbox.overflowed());
    }

    #[tokio::test]
    async fn the_writer_sends_everything_queued_in_one_write() {
        let outbox = Outbox::new(QueueLimits::default());
        for text in ["a", "b", "c"] {
            outbox.push(notice(text));
        }
        outbox.close(Closed::Finished);
        let mut out = Vec::new();
        let bye = notice("bye");
        let closed = write_loop(&outbox, &mut out, Delivery::line, &bye).await;
        assert_eq!(closed.ok(), Some(Closed::Finished));
        assert_eq!(out, b"*** a\n*** b\n*** c\n");
    }

    #[tokio::test]
    async fn an_overflowed_writer_says_goodbye_and_stops() {
        let outbox = Outbox::new(QueueLimits {
            messages: 1,
            bytes: 1 << 20,
        });
        outbox.push(notice("a"));
        outbox.push(notice("b"));
        let mut out = Vec::new();
        let bye = notice("too slow");
        let closed = write_loop(&outbox, &mut out, Delivery::line, &bye).await;
        assert_eq!(closed.ok(), Some(Closed::Overflowed));
        assert_eq!(out, b"*** too slow\n");
    }

    #[test]
    fn a_delivery_is_encoded_once_and_shared() {
        let d = notice("x");
        let (a, b) = (d.line().clone(), d.line().clone());
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert!(d.frame().len() > 4);
    }
}
