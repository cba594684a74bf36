//! `chorus-bench`: the benchmarks as a binary of their own (`scripts/bench` runs it);
//! `chorus bench` runs the same code with the same arguments. See the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = chorus_bench::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(chorus_bench::run(cli, chorus_bench::Host::Standalone))
}
