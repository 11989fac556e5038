//! `exec shell`: the prompt loop, each line run on the exec server.

use std::io::IsTerminal;

use super::{fail, required_token, ExecShellArgs};
use crate::cli::Failure;
use sockit::compat::exec as compat;
use sockit::service::exec;
use sockit::service::exec::shell::{LineForm, ShellIo};
use sockit::service::exec::SignalName;
use tokio::io::{BufReader, Stderr, Stdin, Stdout};
use tokio::sync::mpsc;

pub(in crate::cli) async fn run_exec_shell(args: ExecShellArgs) -> Result<(), Failure> {
    if let Some(dialect) = args.compat {
        let timeout = args.timeout.unwrap_or(compat::DEFAULT_CLIENT_TIMEOUT);
        let addr = args.addr.resolve().await.map_err(fail)?;
        let code = compat::shell(&addr, dialect.into(), timeout, shell_io(None))
            .await
            .map_err(|e| fail(e.into()))?;
        return exit_with(code);
    }
    let token = required_token(args.token_file.as_deref())?;
    let form = if args.words {
        LineForm::Words
    } else {
        LineForm::Shell
    };
    // Ctrl-C interrupts the remote command, not this loop.
    let interrupts = super::run::forward_interrupts().map_err(fail)?;
    let io = shell_io(Some(interrupts));
    let addr = args.addr.resolve().await.map_err(fail)?;
    let code = exec::shell::shell(&addr, &exec::client_options(token), form, io)
        .await
        .map_err(|e| fail(e.into()))?;
    exit_with(code)
}

/// Stdin's lines, stdout and stderr; a prompt only for a person at a terminal, as sh.
fn shell_io(
    interrupts: Option<mpsc::Receiver<SignalName>>,
) -> ShellIo<BufReader<Stdin>, Stdout, Stderr> {
    ShellIo {
        input: BufReader::new(tokio::io::stdin()),
        stdout: tokio::io::stdout(),
        stderr: tokio::io::stderr(),
        prompt: std::io::stdin().is_terminal(),
        interrupts,
    }
}

fn exit_with(code: u8) -> Result<(), Failure> {
    match code {
        0 => Ok(()),
        code => Err(Failure::Exit { code, error: None }),
    }
}
