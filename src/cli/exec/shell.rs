//! `exec shell`: the prompt loop, each line run on the exec server.

use std::io::IsTerminal;

use super::{fail, required_token, ExecShellArgs};
use crate::cli::Failure;
use sockit::service::exec;
use sockit::service::exec::shell::{LineForm, ShellIo};

pub(in crate::cli) async fn run_exec_shell(args: ExecShellArgs) -> Result<(), Failure> {
    let token = required_token(args.token_file.as_deref())?;
    let form = if args.words {
        LineForm::Words
    } else {
        LineForm::Shell
    };
    let io = ShellIo {
        input: tokio::io::BufReader::new(tokio::io::stdin()),
        stdout: tokio::io::stdout(),
        stderr: tokio::io::stderr(),
        // As sh: a prompt for a person at a terminal, none for lines piped in.
        prompt: std::io::stdin().is_terminal(),
        // Ctrl-C interrupts the remote command, not this loop.
        interrupts: Some(super::run::forward_interrupts().map_err(fail)?),
    };
    let code = exec::shell::shell(&args.addr, &exec::client_options(token), form, io)
        .await
        .map_err(|e| fail(e.into()))?;
    match code {
        0 => Ok(()),
        code => Err(Failure::Exit { code, error: None }),
    }
}
