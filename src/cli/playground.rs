//! `transbordo playground`: serves the page until Ctrl-C or SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use crate::playground::{Playground, PlaygroundOptions, DEFAULT_PORT};

/// `transbordo playground` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct PlaygroundArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = DEFAULT_PORT, conflicts_with = "listen")]
    pub port: u16,
    /// Serve on exactly this address (e.g. `0.0.0.0:8930`). The page runs flows and plays
    /// providers without any authentication: only use an address beyond loopback on a
    /// network you trust.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
}

/// `transbordo playground`: serves until Ctrl-C or SIGTERM. Exit 1 when it cannot start.
pub async fn run_cli(args: PlaygroundArgs) -> ExitCode {
    let opts = match args.listen {
        Some(addr) => PlaygroundOptions {
            bind: addr,
            allow_non_loopback: true,
        },
        None => PlaygroundOptions {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)),
            allow_non_loopback: false,
        },
    };
    let pg = match Playground::start(opts).await {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if !pg.addr().ip().is_loopback() {
        eprintln!(
            "warning: the playground is reachable beyond this machine on {}; anyone who can \
             reach it can run flows and act as the agent",
            pg.addr()
        );
    }
    eprintln!(
        "transbordo playground: open {}/ (sandbox on {}, lifecycle service on {}; Ctrl-C \
         to stop)",
        pg.base_url(),
        pg.sandbox_url(),
        pg.service_url()
    );
    crate::service::shutdown_signal().await;
    pg.shutdown().await;
    ExitCode::SUCCESS
}
