//! What both protocols do once a client is registered: rate-limit and dispatch its input, and
//! run its reader and its outbox writer side by side until either ends.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::broker::{Control, Member};
use super::messages::{ClientMessage, ServerMessage};
use super::outbox::{write_loop, Closed, Delivery, Outbox, QueueLimits};
use super::rate::{RateLimit, TokenBucket, Verdict};
use super::CLOSE_FLUSH_TIMEOUT;
use crate::wire::ErrorFrame;

/// How a registered client's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// It closed, or its stream failed.
    Closed,
    /// It said `/quit`.
    Quit,
    /// It broke the protocol (the error is already queued).
    Protocol,
    /// The server is shutting down.
    Shutdown,
}

/// A registered client's input side: its rate limit and its member handle.
pub(super) struct Dispatcher {
    pub member: Member,
    pub outbox: std::sync::Arc<Outbox>,
    bucket: TokenBucket,
}

impl Dispatcher {
    pub fn new(member: Member, outbox: std::sync::Arc<Outbox>, rate: RateLimit) -> Self {
        Dispatcher {
            member,
            outbox,
            bucket: TokenBucket::new(rate, Instant::now()),
        }
    }

    /// Handles one line or frame of input (or the refusal it turned into), after the rate
    /// limit: a line over it is dropped, with a notice the first time in a while.
    pub async fn input(&mut self, input: Result<ClientMessage, ErrorFrame>) -> Control {
        match self.bucket.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Drop => return Control::Continue,
            Verdict::DropAndNotify => {
                let notice = ErrorFrame::new("rate_limited", self.bucket.notice());
                self.outbox
                    .push(Delivery::new(ServerMessage::from(&notice)));
                return Control::Continue;
            }
        }
        match input {
            Ok(msg) => self.member.dispatch(msg).await,
            Err(refusal) => {
                self.outbox
                    .push(Delivery::new(ServerMessage::from(&refusal)));
                Control::Continue
            }
        }
    }
}

/// The error a client gets just before being dropped for falling behind.
pub(super) fn farewell(limits: QueueLimits) -> std::sync::Arc<Delivery> {
    Delivery::new(ServerMessage::error(
        "slow_consumer",
        format!(
            "disconnected: you fell behind by more than {} messages or {} bytes",
            limits.messages, limits.bytes
        ),
    ))
}

/// Runs `reading` (the client's input loop) and the outbox writer together; returns why
/// the client left. When the reader ends first, what is queued is still written (within
/// [`CLOSE_FLUSH_TIMEOUT`]); when the writer ends first (overflow, or the client is gone),
/// the reader is dropped.
pub(super) async fn pump<W: AsyncWrite + Unpin>(
    outbox: &Outbox,
    writer: &mut W,
    encode: fn(&Delivery) -> &Bytes,
    farewell: &Delivery,
    shutdown: &CancellationToken,
    reading: impl Future<Output = Ending>,
) -> &'static str {
    let writing = write_loop(outbox, writer, encode, farewell);
    pump_with(outbox, writing, shutdown, reading).await
}

/// [`pump`] with the writer given: `writing` drains `outbox` in the transport's own way (the
/// WebSocket bridge sends one message per delivery) and ends when it closes.
pub(super) async fn pump_with(
    outbox: &Outbox,
    writing: impl Future<Output = std::io::Result<Closed>>,
    shutdown: &CancellationToken,
    reading: impl Future<Output = Ending>,
) -> &'static str {
    tokio::pin!(writing, reading);
    let ending = tokio::select! {
        ending = &mut reading => Some(ending),
        _ = &mut writing => None,
        () = shutdown.cancelled() => {
            let bye = ErrorFrame::new("shutdown", "the server is shutting down");
            outbox.push(Delivery::new(ServerMessage::from(&bye)));
            Some(Ending::Shutdown)
        }
    };
    match ending {
        Some(ending) => {
            outbox.close(Closed::Finished);
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut writing).await;
            match ending {
                Ending::Quit => "quit",
                Ending::Protocol => "protocol error",
                Ending::Closed => "connection closed",
                Ending::Shutdown => "server shutting down",
            }
        }
        None if outbox.overflowed() => "too slow: disconnected",
        None => "connection lost",
    }
}

/// Writes `text` as one line straight to a line-protocol client (before it has an outbox).
pub(super) async fn write_line<W: AsyncWrite + Unpin>(
    writer: &mut W,
    msg: &ServerMessage,
) -> std::io::Result<()> {
    let mut line = msg.to_line();
    line.push('\n');
    writer.write_all(line.as_bytes()).await?;
    writer.flush().await
}
