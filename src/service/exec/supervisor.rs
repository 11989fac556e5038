//! A running command's session between spawn and report: the events that arrive while it runs
//! (its output or the client's input ending, its exit, the timeouts, a shutdown) and what each
//! does to its process group.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::escapees::Escapees;
use super::input::InputEnd;
use super::server::CLOSE_LINGER;
use crate::engine::{ConnInfo, ProcessGroup};
use crate::wire::ErrorFrame;
use crate::wire::WireError;

/// How long a pty's output may take to end after its command exited. It ends at once when the
/// command leaves nothing behind; a background job still holding the terminal (one a shell
/// moved to its own process group, out of reach of the group kill) holds the session no
/// longer than this.
const PTY_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long pipe output may take to end after the command exited and its group was killed.
/// Only a process that left the group (`setsid cmd &`) and escaped the sweep
/// ([`super::escapees`]) can hold the pipes longer; the `exit` is sent after this even so,
/// with what the pipes hold by then.
const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_millis(300);

/// The tokens a supervisor fires at the output pump ([`super::pumps::pump_output`]).
pub(super) struct OutputSignals<'a> {
    /// Fired once the command exited: no more stdin will be taken to credit.
    pub(super) exited: &'a CancellationToken,
    /// Fired [`PTY_DRAIN_TIMEOUT`] after a pty's command exited, [`PIPE_DRAIN_TIMEOUT`] after
    /// a piped one did: stop waiting for its output.
    pub(super) stop: &'a CancellationToken,
}

/// What the session is waiting on while its command runs, and what has ended so far. The
/// group dies with the session however it ends.
pub(super) struct Supervisor<'a> {
    child: &'a mut Child,
    group: &'a ProcessGroup,
    /// What escaped the group: killed when the command exits.
    escapees: &'a Escapees,
    info: &'a ConnInfo,
    signals: OutputSignals<'a>,
    is_pty: bool,
    /// The server's timeout and the grace between its SIGTERM and SIGKILL, if it has one.
    limit: Option<(Duration, Duration)>,
    /// Where the timeout stands; `timer` fires at its next step.
    stage: TimeoutStage,
    timer: Pin<Box<Sleep>>,
    /// Armed when the command exits; see [`PTY_DRAIN_TIMEOUT`] and [`PIPE_DRAIN_TIMEOUT`].
    drain_timer: Pin<Box<Sleep>>,
    status: Option<io::Result<ExitStatus>>,
    output: Option<Result<(), WireError>>,
    client_error: Option<ErrorFrame>,
    input_done: bool,
    /// The client closed its side, or stopped reading for good: nothing more can be reported.
    client_gone: bool,
    terminating: bool,
}

/// The server's timeout, step by step: SIGTERM at the deadline, SIGKILL a grace later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeoutStage {
    /// No timeout, or not reached yet.
    Running,
    /// SIGTERM sent; SIGKILL when the timer fires.
    Terminated,
    /// SIGKILL sent.
    Killed,
}

/// How a supervised command came out.
pub(super) enum Outcome {
    /// The command exited and all its output was sent: report its status, or the client's
    /// protocol error if it made one.
    Finished {
        status: ExitStatus,
        client_error: Option<ErrorFrame>,
        /// The server's timeout, when it stopped the command.
        timed_out_after: Option<Duration>,
    },
    /// The client is gone, or the command's output could not be sent to the end.
    Abandoned,
}

impl<'a> Supervisor<'a> {
    /// Supervises `child`, which leads `group`, stopping it after `limit` if there is one:
    /// `(timeout, grace)`, SIGTERM at the timeout and SIGKILL a grace later.
    pub(super) fn new(
        child: &'a mut Child,
        group: &'a ProcessGroup,
        escapees: &'a Escapees,
        info: &'a ConnInfo,
        signals: OutputSignals<'a>,
        is_pty: bool,
        limit: Option<(Duration, Duration)>,
    ) -> Self {
        let deadline = limit.map(|(after, _)| Instant::now() + after);
        Supervisor {
            child,
            group,
            escapees,
            info,
            signals,
            is_pty,
            limit,
            stage: TimeoutStage::Running,
            timer: Box::pin(sleep_until(deadline.unwrap_or_else(far_future))),
            drain_timer: Box::pin(sleep_until(far_future())),
            status: None,
            output: None,
            client_error: None,
            input_done: false,
            client_gone: false,
            terminating: false,
        }
    }

    /// Handles events until the command has exited and its output ended, or the client is
    /// gone. The pumps are dropped when it returns, which frees the connection for the report.
    pub(super) async fn watch(
        &mut self,
        pump_out: impl Future<Output = Result<(), WireError>>,
        pump_in: impl Future<Output = InputEnd>,
    ) {
        tokio::pin!(pump_out, pump_in);
        while self.running() {
            // The pumps are not cancel safe, so they are polled in place and dropped only at
            // the end. The rest are: waiting for the child, sleeps, and a cancellation.
            tokio::select! {
                res = &mut pump_out, if self.output.is_none() => self.output_ended(res),
                end = &mut pump_in, if !self.input_done => self.input_ended(end),
                res = self.child.wait(), if self.status.is_none() => self.child_exited(res),
                () = &mut self.drain_timer, if self.draining() => self.drain_timed_out(),
                () = &mut self.timer, if self.timer_armed() => self.deadline_passed(),
                () = self.info.shutdown.cancelled(), if !self.terminating => self.shutting_down(),
            }
        }
    }

    /// How the command came out. An abandoned one was killed already; it is reaped here
    /// (bounded), and kill_on_drop covers the rest.
    pub(super) async fn finish(self) -> Outcome {
        match (self.status, self.output) {
            (Some(Ok(status)), Some(Ok(()))) => Outcome::Finished {
                status,
                client_error: self.client_error,
                timed_out_after: match self.stage {
                    TimeoutStage::Running => None,
                    _ => self.limit.map(|(after, _)| after),
                },
            },
            _ => {
                // Reaping is prompt. Once the leader is reaped its id may be reused, so the
                // group is no longer signalled.
                if let Ok(Ok(_)) = timeout(CLOSE_LINGER, self.child.wait()).await {
                    self.group.disarm();
                }
                Outcome::Abandoned
            }
        }
    }

    fn running(&self) -> bool {
        !self.client_gone && (self.status.is_none() || self.output.is_none())
    }

    /// Whether the command exited and its output is still being waited for.
    fn draining(&self) -> bool {
        self.status.is_some() && !self.signals.stop.is_cancelled()
    }

    fn timer_armed(&self) -> bool {
        self.limit.is_some() && self.stage != TimeoutStage::Killed && self.status.is_none()
    }

    /// The output pump ended: all output sent, or the client can no longer be written to.
    fn output_ended(&mut self, res: Result<(), WireError>) {
        if res.is_err() {
            // The client stopped reading for good: it is gone.
            self.group.signal(Signal::SIGKILL);
            self.client_gone = true;
        }
        self.output = Some(res);
    }

    /// The client's side ended: it closed, or broke the protocol (reported at the end). The
    /// command does not outlive its client's input.
    fn input_ended(&mut self, end: InputEnd) {
        self.input_done = true;
        self.group.signal(Signal::SIGKILL);
        match end {
            InputEnd::Closed | InputEnd::HalfClosed => self.client_gone = true,
            InputEnd::Invalid(refusal) => self.client_error = Some(refusal),
        }
    }

    fn child_exited(&mut self, res: io::Result<ExitStatus>) {
        // Background processes left behind die with the command, so its output reaches EOF
        // and nothing outlives the session.
        self.group.signal(Signal::SIGKILL);
        self.group.disarm();
        // And so do those that left the group, which may hold the output pipes open.
        self.escapees.kill_all_soon();
        self.signals.exited.cancel();
        self.status = Some(res);
        let drain = if self.is_pty {
            PTY_DRAIN_TIMEOUT
        } else {
            PIPE_DRAIN_TIMEOUT
        };
        self.drain_timer.as_mut().reset(Instant::now() + drain);
    }

    fn drain_timed_out(&mut self) {
        self.signals.stop.cancel();
    }

    /// The timeout's next step: SIGTERM so the command can clean up, then SIGKILL after the
    /// grace for whatever is left of its group.
    fn deadline_passed(&mut self) {
        let grace = self.limit.map_or(Duration::ZERO, |(_, grace)| grace);
        match self.stage {
            TimeoutStage::Running => {
                self.stage = TimeoutStage::Terminated;
                self.group.signal(Signal::SIGTERM);
                self.timer.as_mut().reset(Instant::now() + grace);
            }
            TimeoutStage::Terminated | TimeoutStage::Killed => {
                self.stage = TimeoutStage::Killed;
                self.group.signal(Signal::SIGKILL);
            }
        }
    }

    fn shutting_down(&mut self) {
        self.terminating = true;
        self.group.signal(Signal::SIGTERM);
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}
