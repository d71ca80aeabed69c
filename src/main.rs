//! The `transbordo` command: see `transbordo --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    transbordo::cli::main().await
}
