//! The `sockit` binary: parse the command line, set up logging, run the library.

use std::io::IsTerminal;
use std::process::ExitCode;

mod cli;

use clap::{CommandFactory, FromArgMatches};
use cli::output::{eprint_line, init_logging, ColorWhen};
use cli::{error_line, run, with_tips, Cli, Failure};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Read first so that clap's own help and errors follow --color too.
    let args: Vec<_> = std::env::args_os().collect();
    let color = ColorWhen::from_args(args.iter().cloned());
    let cli = Cli::command()
        .color(color.for_clap())
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
        .unwrap_or_else(|e| with_tips(e, &args).exit());
    // A file-size limit (ulimit -f) must fail a write with EFBIG, reported as "no space",
    // rather than kill a file server mid-session.
    // SAFETY: setting a signal to SIG_IGN installs no handler code; done before any thread.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    let filter =
        EnvFilter::try_from_env("SOCKIT_LOG").unwrap_or_else(|_| EnvFilter::new(cli.log_level()));
    let _log = init_logging(filter, cli.color.enabled(std::io::stderr().is_terminal()));
    let runtime = if cli.single_threaded() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprint_line(&format!("sockit: cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // A blocking stdin read may still be parked; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprint_line(&format!("sockit: {}", error_line(&e)));
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprint_line(&format!("sockit: {}", error_line(&e)));
            ExitCode::from(1)
        }
        Err(Failure::Exit { code, error }) => {
            if let Some(e) = error {
                eprint_line(&format!("sockit: {}", error_line(&e)));
            }
            ExitCode::from(code)
        }
    }
}
