//! `mpconn`: the command-line face of the library. `mpconn bench` runs the standard workloads.

mod bench;

use clap::{Parser, Subcommand};
use mpconn::Family;

#[derive(Parser)]
#[command(
    name = "mpconn",
    version,
    about = "Python multiprocessing.connection for Rust: servers, clients, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a standard workload of BENCH.md (server here, client in a second process) and prints
    /// one JSON line per result.
    ///
    /// Example: mpconn bench --workload W1 --family unix
    Bench {
        /// The workload.
        #[arg(long, value_enum)]
        workload: bench::Workload,
        /// unix or tcp.
        #[arg(long, default_value = "unix", value_parser = parse_family)]
        family: Family,
        /// Messages (W1, W2, W3) or connections (W4); default as in BENCH.md.
        #[arg(long)]
        n: Option<usize>,
        /// Which face of the library serves.
        #[arg(long, value_enum, default_value = "reactor")]
        face: bench::Face,
        /// W4 client threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        #[arg(long, hide = true, default_value = "server")]
        role: String,
        #[arg(long, hide = true)]
        addr: Option<String>,
    },
}

fn parse_family(s: &str) -> Result<Family, String> {
    s.parse::<Family>().map_err(|e| e.to_string())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Bench {
            workload,
            family,
            n,
            face,
            threads,
            role,
            addr,
        } => {
            let args = bench::BenchArgs {
                workload,
                family,
                n: n.unwrap_or(workload.default_n()),
                face,
                threads,
            };
            let imp = match face {
                bench::Face::Reactor => "mpconn-reactor",
                bench::Face::Blocking => "mpconn-blocking",
            };
            if role == "client" {
                bench::run_client(&args, addr.as_deref().unwrap_or_default(), imp)
            } else {
                bench::run_server(&args)
            }
        }
    };
    if let Err(e) = result {
        eprintln!("mpconn: {e}");
        std::process::exit(1);
    }
}
