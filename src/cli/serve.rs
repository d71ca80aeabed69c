//! `transbordo serve` and `transbordo migrate`: the lifecycle service's commands.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::service::{serve, shutdown_signal, ServiceConfig};

/// `transbordo serve` arguments.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The service config (TOML; see examples/service.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Address to bind, instead of the config's `listen` (so replicas share one config).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
}

/// `transbordo migrate` arguments.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The service config whose `database` to migrate.
    #[arg(long)]
    pub config: PathBuf,
}

/// `transbordo migrate`: applies pending migrations to the config's database without
/// serving, then prints the applied versions. Exit 1 on a config or database error.
pub async fn migrate_cli(args: MigrateArgs) -> ExitCode {
    let config = match ServiceConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match config.database.migrate().await {
        Ok(applied) => {
            super::output::line(format_args!("{}: schema up to date", config.database));
            for (version, name) in applied {
                super::output::line(format_args!("  {version:04} {name}"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `transbordo serve`: exit 0 after a clean shutdown, 1 on a config, database or bind error.
pub async fn run_cli(args: ServeArgs) -> ExitCode {
    let mut config = match ServiceConfig::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(listen) = args.listen {
        if let Err(e) = config.set_listen(listen) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    match serve(config, shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "stopped with an error");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
