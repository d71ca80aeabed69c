//! Faithful local fakes of LivePerson, Zendesk and an agent platform (shim until merge).
#![allow(missing_docs)]
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {}
pub async fn run_cli(_a: SandboxArgs) -> std::process::ExitCode {
    std::process::ExitCode::from(2)
}
