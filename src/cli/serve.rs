//! `sockit serve`: a set of services from a TOML file or the embedded default.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::Failure;
use crate::server;
use crate::service::serve::{bind_all, ServeConfig, DEFAULT_CONFIG};

/// `sockit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML service set (see --print-config for the format).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the embedded default service set and exit.
    #[arg(long)]
    pub print_config: bool,
}

pub(super) async fn run_serve(args: ServeArgs) -> Result<(), Failure> {
    if args.print_config {
        print!("{DEFAULT_CONFIG}");
        return Ok(());
    }
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map_err(Failure::Usage)?,
        None => DEFAULT_CONFIG.to_string(),
    };
    let config = ServeConfig::parse(&text).map_err(|e| Failure::Usage(e.into()))?;
    let shutdown = server::shutdown_on_signals().context("cannot install signal handlers")?;
    let (banner, run) = bind_all(&config, shutdown)
        .await
        .map_err(|e| Failure::from(anyhow::Error::from(e)))?;
    for line in &banner {
        println!("{line}");
    }
    println!("serving {} services; Ctrl-C to stop", banner.len());
    run.await.map_err(|e| Failure::Runtime(e.into()))
}
