//! The Chorus benchmarks: Chorus measured against a minimal baseline broadcast server
//! on the same machine, in the same run (SPEC §6). See docs/benchmarks.md. Run as
//! `chorus bench …` (the `chorus` binary calls [`run`]) or as the `chorus-bench`
//! binary; both take the same arguments ([`Cli`]).
//!
//! Layout: [`target`] starts the servers as child processes; [`baseline`] is the
//! baseline server; [`load`] is the load generator; [`scenarios`] are the measurements
//! ([`stream`]: streaming messages); [`report`] prints them.

mod baseline;
mod load;
mod report;
mod scenarios;
mod stream;
mod target;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use report::Row;
use target::{Kind, Launch, Target};

/// Which program this is: the baseline server is started by running this same program
/// again, and `chorus` is found from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The `chorus-bench` binary: `chorus` is the binary next to it.
    Standalone,
    /// `chorus bench`: `chorus` is this binary.
    Chorus,
}

impl Host {
    fn this_exe() -> PathBuf {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("chorus-bench"))
    }

    /// The program and arguments that run the baseline server (`… baseline-server`).
    fn baseline_command(self) -> (PathBuf, Vec<String>) {
        let mut args = Vec::new();
        if self == Self::Chorus {
            args.push("bench".to_owned());
        }
        args.push("baseline-server".to_owned());
        (Self::this_exe(), args)
    }

    fn default_chorus_bin(self) -> PathBuf {
        match self {
            Self::Chorus => Self::this_exe(),
            // Both come from `cargo build --release`.
            Self::Standalone => Self::this_exe()
                .parent()
                .map_or_else(|| PathBuf::from("chorus"), |dir| dir.join("chorus")),
        }
    }
}

/// The arguments of `chorus bench` and of `chorus-bench`.
#[derive(Parser)]
#[command(
    name = "chorus-bench",
    about = "Chorus benchmarks (fanout, idle, connect, send, resume, stream)",
    long_about = "Chorus benchmarks (fanout, idle, connect, send, resume, stream), measured against a \
                  minimal baseline broadcast server on the same machine (docs/benchmarks.md). \
                  Results: a table, then one JSON line per row."
)]
pub struct Cli {
    /// The chorus binary to run (default: `chorus bench` runs its own binary,
    /// `chorus-bench` the `chorus` next to it).
    #[arg(long, global = true)]
    chorus_bin: Option<PathBuf>,
    /// Print only the JSON lines (no table).
    #[arg(long, global = true)]
    json: bool,
    /// Which servers to measure.
    #[arg(long, global = true, value_enum, default_value_t = Which::Both)]
    target: Which,
    /// Extra arguments for `chorus serve` (repeatable), e.g. --server-arg=--queue-capacity=4096.
    #[arg(long = "server-arg", global = true, allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Connections per reader user in fanout, idle and connect: 1 (the default) makes
    /// every connection its own user, with its own token, memberships and presence,
    /// as in a reconnect storm; 50 is the sharing measured before round 2, session 5.
    #[arg(long, global = true, default_value_t = 1)]
    conns_per_user: usize,
    /// fanout and idle: measure Chorus twice, alternated — as configured, then with
    /// WebSocket compression (`--ws-compression`, clients offering `permessage-deflate`);
    /// rows `chorus` and `chorus+deflate`.
    #[arg(long, global = true)]
    deflate: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Both,
    Chorus,
    Baseline,
}

#[derive(Subcommand)]
enum Scenario {
    /// N subscribers on one channel; messages sent flat out (closed loop) or at --rate.
    Fanout {
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        subs: Vec<usize>,
        /// Concurrent senders (HTTP clients for Chorus, sockets for the baseline); each
        /// sends in order, so per-sender order is checked at every subscriber.
        #[arg(long, default_value_t = 16)]
        senders: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Total messages per second (fixed offered load); omit for flat out.
        #[arg(long)]
        rate: Option<f64>,
        /// Flat out: messages each sender may have ahead of the probe subscriber.
        #[arg(long, default_value_t = 4)]
        window: u64,
        /// Chorus nodes sharing a Redis (started by the bench) and one database;
        /// subscribers are spread over them, messages are sent to the first.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// With --nodes > 1: the redis-server binary to start.
        #[arg(long, default_value = "/usr/bin/redis-server")]
        redis_server: PathBuf,
        /// With --nodes > 1: the shared database (default: a SQLite file).
        #[arg(long)]
        database_url: Option<String>,
        /// Baseline/Chorus pairs measured per subscriber count, alternated; with more
        /// than one, a `median` row gives the median of the pairs' ratios (a shared
        /// machine's speed drifts by ±15 % within minutes: one pair is one sample).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Before the first send, read every subscriber until it has heard nothing for
        /// this long (at most 20 s in all): the presence announcements of the users who
        /// just connected (a storm's, measured by `connect`) are then delivered before
        /// the clock starts, so the figures are of fanout in a steady state. 0: send as
        /// soon as all are connected (the storm's presence still in flight).
        #[arg(long, default_value_t = 1500)]
        settle_ms: u64,
    },
    /// Server RSS per idle authenticated, subscribed connection.
    Idle {
        #[arg(long, default_value_t = 5000)]
        conns: usize,
    },
    /// Time for N clients to connect, authenticate and get `hello`.
    Connect {
        #[arg(long, default_value_t = 10000)]
        conns: usize,
        /// Connections being opened at once.
        #[arg(long, default_value_t = scenarios::CONNECT_CONCURRENCY)]
        concurrency: usize,
        /// Measurements, each against a freshly started server.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Record Chorus with `perf record -g` while the connections open, into this
        /// file (the last round's, with --rounds).
        #[arg(long)]
        perf_out: Option<PathBuf>,
    },
    /// Persisted HTTP sends per second (Chorus only).
    Send {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Time to catch up on N missed events with subscribe-since (Chorus only).
    Resume {
        #[arg(long, default_value_t = 1000)]
        missed: u64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Restart the server process while the client is away; the client then resumes
        /// with its positions (and catches up over HTTP if the server did not recover).
        #[arg(long)]
        after_restart: bool,
    },
    /// Streaming messages: N streams appended to R times a second each, into one
    /// channel read by M subscribers (Chorus only). Each stream holds at most 16 KiB:
    /// rate × seconds is limited to about 680 appends.
    Stream {
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Appends per second per stream (each writer's socket may send twice this:
        /// the bench raises the server's --inbound-per-sec to fit).
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long, default_value_t = 1000)]
        subs: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The channel's roll-up window (default: the server's, 40 ms).
        #[arg(long)]
        rollup_ms: Option<u64>,
    },
    /// Run the baseline broadcast server (used by the other scenarios).
    #[command(hide = true)]
    BaselineServer {
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// Runs one benchmark command (on the caller's tokio runtime, multi-threaded).
pub async fn run(cli: Cli, host: Host) -> anyhow::Result<()> {
    if let Scenario::BaselineServer { listen } = cli.scenario {
        return baseline::serve(listen).await;
    }
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let launch = Launch {
        chorus_bin: cli
            .chorus_bin
            .clone()
            .unwrap_or_else(|| host.default_chorus_bin()),
        server_args: cli.server_args.clone(),
        baseline: host.baseline_command(),
        deflate: false,
    };
    // The launches measured for Chorus, in turn: as configured, and with compression.
    let mut chorus_launches = vec![launch.clone()];
    if cli.deflate {
        chorus_launches.push(launch.with_deflate());
    }
    let chorus_only = matches!(
        cli.scenario,
        Scenario::Send { .. } | Scenario::Resume { .. } | Scenario::Stream { .. }
    );
    let kinds: Vec<Kind> = match (cli.target, chorus_only) {
        (_, true) | (Which::Chorus, _) => vec![Kind::Chorus],
        (Which::Baseline, _) => vec![Kind::Baseline],
        (Which::Both, _) => vec![Kind::Baseline, Kind::Chorus],
    };
    let mut rows: Vec<Row> = Vec::new();
    match &cli.scenario {
        Scenario::Fanout {
            subs,
            senders,
            seconds,
            rate,
            window,
            nodes,
            redis_server,
            database_url,
            rounds,
            settle_ms,
        } => {
            let ratio_keys: &[(&str, &'static str)] = if rate.is_some() {
                // Fixed load: what differs is latency (both deliver what is offered).
                &[("p50_ms", "p50_ratio"), ("p99_ms", "p99_ratio")]
            } else {
                &[("events_per_sec", "ratio_vs_baseline")]
            };
            for &n in subs {
                let first_row = rows.len();
                for _ in 0..(*rounds).max(1) {
                    for (kind, launch) in variants(&kinds, &launch, &chorus_launches) {
                        let target = match kind {
                            Kind::Chorus if *nodes > 1 => {
                                let db = database_url.as_deref();
                                Target::start_cluster(launch, *nodes, redis_server, db).await?
                            }
                            _ => Target::start(kind, launch).await?,
                        };
                        let opts = scenarios::FanoutOpts {
                            subs: n,
                            senders: *senders,
                            duration: Duration::from_secs(*seconds),
                            rate: *rate,
                            window: *window,
                            conns_per_user: cli.conns_per_user,
                            settle: Duration::from_millis(*settle_ms),
                        };
                        rows.push(scenarios::fanout(&target, &opts).await?);
                        target.stop().await;
                    }
                    for &(key, ratio) in ratio_keys {
                        add_ratio(&mut rows, key, ratio);
                    }
                }
                let mut summary = Row::new("fanout", "median");
                summary.set("subs", n).set("rounds", *rounds);
                for &(_, ratio) in ratio_keys {
                    if let Some(m) =
                        median(rows[first_row..].iter().filter_map(|r| r.get_f64(ratio)))
                    {
                        summary.set(ratio, m);
                    }
                }
                // Only when there were pairs to compare (not with --target chorus).
                if *rounds > 1 && summary.fields.len() > 2 {
                    rows.push(summary);
                }
            }
        }
        Scenario::Idle { conns } => {
            for (kind, launch) in variants(&kinds, &launch, &chorus_launches) {
                let target = Target::start(kind, launch).await?;
                rows.push(scenarios::idle(&target, *conns, cli.conns_per_user).await?);
                target.stop().await;
            }
        }
        Scenario::Connect {
            conns,
            concurrency,
            rounds,
            perf_out,
        } => {
            for _ in 0..(*rounds).max(1) {
                for &kind in &kinds {
                    let target = Target::start(kind, &launch).await?;
                    let perf = perf_out.as_deref().filter(|_| kind == Kind::Chorus);
                    let row =
                        scenarios::connect(&target, *conns, *concurrency, cli.conns_per_user, perf);
                    rows.push(row.await?);
                    target.stop().await;
                }
                add_ratio(&mut rows, "seconds", "ratio_vs_baseline");
            }
        }
        Scenario::Send {
            concurrency,
            seconds,
        } => {
            let target = Target::start(Kind::Chorus, &launch).await?;
            rows.push(scenarios::send(&target, *concurrency, Duration::from_secs(*seconds)).await?);
            target.stop().await;
        }
        Scenario::Resume {
            missed,
            rounds,
            after_restart,
        } => {
            let mut target = Target::start(Kind::Chorus, &launch).await?;
            let row = if *after_restart {
                scenarios::resume_after_restart(&mut target, *missed, *rounds).await?
            } else {
                scenarios::resume(&target, *missed, *rounds).await?
            };
            rows.push(row);
            target.stop().await;
        }
        Scenario::Stream {
            streams,
            rate,
            subs,
            seconds,
            rollup_ms,
        } => {
            // One writer socket appends `rate` times a second, past the default limit
            // of 50 frames a second per connection.
            let mut launch = launch.clone();
            let per_sec = (rate * 2.0).ceil().max(50.0) as u64;
            launch.server_args.extend([
                format!("--inbound-per-sec={per_sec}"),
                format!("--inbound-burst={}", per_sec * 2),
            ]);
            let target = Target::start(Kind::Chorus, &launch).await?;
            let opts = stream::StreamOpts {
                streams: *streams,
                rate: *rate,
                subs: *subs,
                duration: Duration::from_secs(*seconds),
                rollup_ms: *rollup_ms,
            };
            rows.push(stream::stream(&target, &opts).await?);
            target.stop().await;
        }
        Scenario::BaselineServer { .. } => {}
    }
    let mut out = std::io::stdout().lock();
    report::print(&mut out, &rows, !cli.json)?;
    Ok(())
}

/// Each kind with its launch; Chorus once per launch (with `--deflate`, twice).
fn variants<'a>(
    kinds: &[Kind],
    launch: &'a Launch,
    chorus_launches: &'a [Launch],
) -> Vec<(Kind, &'a Launch)> {
    kinds
        .iter()
        .flat_map(|&kind| match kind {
            Kind::Chorus => chorus_launches
                .iter()
                .map(|l| (kind, l))
                .collect::<Vec<_>>(),
            Kind::Baseline => vec![(kind, launch)],
        })
        .collect()
}

/// When the last two rows are baseline then chorus, adds chorus/baseline of `key` as
/// `ratio`.
fn add_ratio(rows: &mut [Row], key: &str, ratio: &'static str) {
    let n = rows.len();
    if n < 2 || rows[n - 2].target != "baseline" || rows[n - 1].target != "chorus" {
        return;
    }
    if let (Some(base), Some(ours)) = (rows[n - 2].get_f64(key), rows[n - 1].get_f64(key))
        && base > 0.0
    {
        rows[n - 1].set(ratio, (ours / base * 100.0).round() / 100.0);
    }
}

/// The median of some values; `None` when there are none.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some(((values[mid - 1] + values[mid]) / 2.0 * 100.0).round() / 100.0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(super::median([0.9, 0.7, 0.8].into_iter()), Some(0.8));
        assert_eq!(super::median([0.9, 0.7, 0.8, 1.0].into_iter()), Some(0.85));
        assert_eq!(super::median(std::iter::empty()), None);
    }
}
