//! `readiness-bench`: the tools behind the benchmarks in `bench/` that `readiness simulate` (the
//! webhook load generator) does not cover: seeding a store with many users and logged events,
//! loading `GetUserReadiness`, measuring stream fan-out and catch-up, showing the query plans of
//! the hot paths, and a minimal echo server as the reference point for query throughput; and
//! `fake-argyle`, a local fake of Argyle's API for development.
//! Every command prints one JSON object on standard output (`fake-argyle` first prints its URLs).

#![allow(clippy::print_stdout)]

mod echo;
mod explain;
mod fake_argyle;
mod query;
mod seed;
mod stats;
mod streams;

use clap::{Parser, Subcommand};

/// Opens (and migrates) the store at `url` for a bench tool, with `connections` pooled.
async fn open_database(url: &str, connections: u32) -> anyhow::Result<readiness::store::Db> {
    let options = readiness::store::StoreOptions {
        url: url.to_owned(),
        max_connections: connections,
        connect_timeout: std::time::Duration::from_secs(30),
        sqlite_cache_kib: readiness::store::DEFAULT_SQLITE_CACHE_KIB,
    };
    Ok(readiness::store::connect(&options).await?.db().clone())
}

/// Benchmark tools for the readiness service.
#[derive(Debug, Parser)]
#[command(name = "readiness-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write users (1-3 accounts each) and logged report events straight into a store.
    Seed(seed::SeedArgs),
    /// Send `GetUserReadiness` for random seeded users from N concurrent streams.
    Query(query::QueryArgs),
    /// Write one seeded user's `GetUserReadiness` request as a gRPC frame (for h2load `-d`).
    Frame(query::FrameArgs),
    /// Open N `StreamReportEvents` subscribers, deliver reports.generated webhooks, and measure
    /// the time from each 2xx to the event on every subscriber.
    Fanout(streams::FanoutArgs),
    /// Replay the whole log to one `StreamReportEvents` subscriber and measure events/s.
    Catchup(streams::CatchupArgs),
    /// Print the query plans of the hot read and write paths.
    Explain(explain::ExplainArgs),
    /// Serve a canned `GetUserReadiness` answer and a 200 for webhooks: the reference point.
    Echo(echo::EchoArgs),
    /// Serve a fake of Argyle's API (webhooks, reports, documents) until Ctrl-C, and send the
    /// signed `reports.generated` for each generated report.
    FakeArgyle(fake_argyle::FakeArgyleArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(async {
        match cli.command {
            Command::Seed(args) => seed::run(args).await,
            Command::Query(args) => query::run(args).await,
            Command::Frame(args) => query::frame(args),
            Command::Fanout(args) => streams::fanout(args).await,
            Command::Catchup(args) => streams::catchup(args).await,
            Command::Explain(args) => explain::run(args).await,
            Command::Echo(args) => echo::run(args).await,
            Command::FakeArgyle(args) => fake_argyle::run(args).await,
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
