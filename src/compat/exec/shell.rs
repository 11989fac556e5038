//! `exec shell --compat DIALECT`: the lessons' client loop, every line over one connection, as
//! their servers expect (000 §6.2's dies when its client leaves, so a connection per line
//! would run one command).

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncWrite};

use super::client::{CompatError, Session};
use crate::compat::Dialect;
use crate::net::Addr;
use crate::service::exec::shell::{prompt_loop, write_local, LineEnd, LineIo, LineRunner, ShellIo};
use crate::text::escape_one_line;

/// Longest refusal text shown for a line.
const REFUSAL_CHARS: usize = 200;

impl LineRunner for Session {
    type Error = CompatError;

    fn local(error: std::io::Error) -> CompatError {
        CompatError::Local(error)
    }

    /// Interrupts are not forwarded: the lessons' protocols have no way to send one, so
    /// the loop is given none and Ctrl-C ends the client, as it ends the lessons'.
    async fn run_line<O, E>(
        &mut self,
        line: &str,
        io: &mut LineIo<'_, O, E>,
    ) -> Result<LineEnd, CompatError>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        match self.run(line, io.stdout).await {
            // The protocols carry no exit status.
            Ok(_) => Ok(LineEnd::Exited(0)),
            // Refused before anything was sent: the session goes on.
            Err(CompatError::InvalidCommand(why)) => {
                let text = format!("sockit: {}\n", escape_one_line(&why, REFUSAL_CHARS));
                write_local(io.stderr, text.as_bytes())
                    .await
                    .map_err(CompatError::Local)?;
                Ok(LineEnd::Exited(255))
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs each line of `io.input` on the compat exec server at `addr` over one connection,
/// until EOF or `exit [N]`; then closes the sending side and, in `raw`, writes the output that
/// still arrives. Returns N, else 0 (the lessons' protocols carry no exit status), or 255
/// after a line that could not be sent.
///
/// # Errors
/// [`CompatError`]: the server cannot be reached, or a reply is broken, late or in another
/// dialect (the connection is then out of step, so the session ends).
pub async fn shell<I, O, E>(
    addr: &Addr,
    dialect: Dialect,
    timeout: Duration,
    mut io: ShellIo<I, O, E>,
) -> Result<u8, CompatError>
where
    I: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut session = Session::connect(addr, dialect, timeout).await?;
    let code = prompt_loop(&mut session, &mut io).await?;
    session.finish(&mut io.stdout).await?;
    Ok(code)
}
