//! Client subcommands (placeholder until the client crate lands).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ClientCommand {}

pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {}
}
