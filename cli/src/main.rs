//! `mpconn`: the command-line face of the library: a server that prints what it gets, a client
//! that sends, the standard benchmarks, and a stress tester with many concurrent clients.

mod bench;
mod clean;
mod exit;
mod interrupt;
mod keys;
mod listen;
mod literal;
mod logging;
mod negative;
mod send;
mod show;
mod stress;
mod work;

use std::time::Duration;

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use mpconn::Family;

#[derive(Parser)]
#[command(
    name = "mpconn",
    version,
    about = "Python multiprocessing.connection for Rust: servers, clients, benchmarks, stress tests",
    after_help = "Examples:\n  mpconn stress                               # 1,000 clients against an embedded server\n  mpconn listen localhost:6000 --authkey-env KEY --echo\n  mpconn send localhost:6000 --pickle \"{'a': (1, b'x')}\" --recv 1\n\nLogging: the library's diagnostics go to stderr: warnings by default, -v info, -vv debug,\n-vvv trace, -q errors only; RUST_LOG (env_logger syntax, e.g. RUST_LOG=mpconn=debug), when set,\nwins over -v and -q. Ctrl-C ends listen, bench and stress in order (stress and bench print\ntheir report; listen removes its socket file); a second Ctrl-C exits at once."
)]
struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (RUST_LOG, when set, wins).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,
    /// Log errors only (unless -v is given too); for `listen`, also print only the address line.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(flatten)]
    keys: keys::KeyArgs,
    #[command(subcommand)]
    command: Cmd,
}

fn parse_family(s: &str) -> Result<Family, String> {
    s.parse::<Family>().map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| c.is_ascii_alphabetic()).map_or((s, "s"), |i| s.split_at(i));
    let v: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a duration (like 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s or m)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Subcommand)]
enum Cmd {
    /// A reactor server that prints each connection event and each message (pickles as Python
    /// would print them, other bytes as bytes literals).
    #[command(
        after_help = "Example:\n  MPCONN_KEY='secret password' mpconn listen localhost:6000 --authkey-env MPCONN_KEY --echo"
    )]
    Listen {
        /// Where to listen (host:port, a Unix socket path, \0name); default: a fresh address.
        address: Option<String>,
        /// The family of the fresh address when none is given (unix or tcp).
        #[arg(long, value_parser = parse_family)]
        family: Option<Family>,
        /// Send every message back to its sender.
        #[arg(long)]
        echo: bool,
        /// Bytes the connections' buffers and the messages waiting to be printed may hold
        /// together (default 1 GiB); over it, connections reading large messages wait.
        #[arg(long)]
        memory_budget: Option<usize>,
        /// Serve with N reactor threads (0: one per core), each with its own connections: TCP
        /// on Linux through one SO_REUSEPORT socket per reactor, a Unix socket on Linux shared by
        /// all (EPOLLEXCLUSIVE), otherwise one acceptor thread handing connections to the
        /// least-loaded reactor. The memory budget is split evenly.
        #[arg(long)]
        reactors: Option<usize>,
    },
    /// Connects, sends messages, and prints replies. Exits non-zero when the listener did not
    /// accept the connection (wrong or missing key, wrong dialect).
    #[command(
        after_help = "Examples:\n  mpconn send localhost:6000 hello world --recv 2\n  mpconn send /tmp/sock --pickle \"{'a': {1, 2}, 'b': b'x', 3: (1, -2**100)}\" --recv 1\n  mpconn send localhost:6000 --pickle -1 --protocol 2\n  mpconn send rhel-host:6000 --authkey-env KEY --dialect legacy-sha256 hello\n\nWith --pickle each MESSAGE is a Python literal, parsed without evaluating anything: None, True,\nFalse, ints of any size (2**100 too), floats, str and bytes literals, lists, tuples, dicts, sets,\nset(), frozenset(...), bytearray(...). What is not a Python literal is read as JSON (--json: JSON\nonly): {\"$bytes\": \"<hex>\"} is bytes, {\"$tuple\": [...]} a tuple.\n\nThe pickle protocol is the one the handshake proved the peer reads (2 for a peer that may be a\nPython 2); --protocol chooses it.",
        allow_negative_numbers = true
    )]
    Send {
        /// Where to connect.
        address: String,
        /// The messages: text sent as UTF-8 bytes, or Python values with --pickle (a negative
        /// number or expression such as `-1.5` or `-2**100` needs no `--`).
        messages: Vec<String>,
        /// Send each message as a pickled Python value given as a Python literal (or JSON).
        #[arg(long)]
        pickle: bool,
        /// With --pickle (implied): the messages are JSON only.
        #[arg(long)]
        json: bool,
        /// The pickle protocol to write (2 to 5; default: what the handshake says the peer reads).
        #[arg(long)]
        protocol: Option<u8>,
        /// Replies to wait for and print.
        #[arg(long, default_value_t = 0)]
        recv: usize,
        /// Limit on connecting with the handshake, and on each whole reply.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
        /// Wait for the listener's #WELCOME# before sending our challenge, as Python's Client
        /// does (three round trips; by default it goes with our answer: two).
        #[arg(long)]
        no_early_challenge: bool,
    },
    /// Runs a standard workload of BENCH.md (server here, clients in other processes) and prints
    /// one JSON line per result.
    #[command(after_help = "Examples:\n  mpconn bench --workload W1 --family unix\n  mpconn bench --all")]
    Bench {
        /// The workload (W1 pipelined, W2 ping-pong, W3 bulk, W4 handshakes, W5 many clients).
        #[arg(long, value_enum, required_unless_present = "all")]
        workload: Option<bench::Workload>,
        /// Every workload on unix and tcp (W5 on unix).
        #[arg(long)]
        all: bool,
        /// unix or tcp.
        #[arg(long, default_value = "unix", value_parser = parse_family)]
        family: Family,
        /// Messages (W1, W2, W3) or connections (W4, W5); default as in BENCH.md.
        #[arg(long)]
        n: Option<usize>,
        /// Which face of the library serves.
        #[arg(long, value_enum, default_value = "reactor")]
        face: bench::Face,
        /// W4 client threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Serve with N sharded reactor threads (0: one per core) fed by --clients client
        /// processes (W1, W3, W4); the figure is the aggregate at the server.
        #[arg(long)]
        reactors: Option<usize>,
        /// With --reactors: client processes, each with its share of --n (default: the number
        /// of reactors).
        #[arg(long)]
        clients: Option<usize>,
        /// With --reactors: one acceptor thread hands each connection to the least-loaded
        /// reactor, instead of the kernel's spreading (SO_REUSEPORT for TCP, one shared socket
        /// for Unix on Linux); the impl name ends in "/acceptor".
        #[arg(long)]
        acceptor: bool,
        /// W4: the clients wait for the listener's #WELCOME# before sending their challenge,
        /// as Python's Client does (three round trips; by default mpconn's Client sends it with
        /// its answer: two).
        #[arg(long)]
        no_early_challenge: bool,
        #[arg(long, hide = true)]
        mark_last: bool,
        #[arg(long, hide = true, default_value = "server")]
        role: String,
        #[arg(long, hide = true)]
        addr: Option<String>,
    },
    /// Drives many concurrent authenticated clients against an echo server (verifying every
    /// echoed message: sequence, checksum) or a real Python service (`--request`, `--expect`);
    /// reports throughput, latency, errors, and the embedded server's memory per connection.
    /// Exits 3 on any error: a failed check, a lost, duplicated, reordered or corrupted echo, a
    /// connection error.
    #[command(
        after_help = "Examples:\n  mpconn stress                                     # embedded server, 1,000 clients\n  mpconn stress /tmp/sock --authkey-env KEY --clients 200 --duration 30s --rate 5000\n  mpconn stress localhost:6000 --authkey-env KEY --clients 50 --messages 200 \\\n      --request \"{'op': 'get', 'n': {seq}}\" --expect \"{'ok': True, 'n': {seq}}\" --json\n\nIn --request and --expect, {seq} (the request's number on its client, from 0) and {client} (the\nclient's number) are replaced in the text before it is parsed as a Python literal.\nWith --rate, latency counts from each request's intended send time (open loop; a stalled reply\ndelays the client's next request, and that delay is counted)."
    )]
    Stress {
        /// A server to test; default: an embedded echo server on a fresh Unix socket.
        address: Option<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Requests per client (default 1000; unlimited with --duration).
        #[arg(long)]
        messages: Option<u64>,
        /// Bytes per echo test message (at least 28; without --request).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Open loop: total requests per second over all clients, latency from each request's
        /// intended send time (default: closed loop, each client sends its next request when the
        /// reply to the last arrives).
        #[arg(long)]
        rate: Option<f64>,
        /// With --rate: grow the rate linearly from 0 over this long (10s, 500ms).
        #[arg(long, value_parser = parse_duration)]
        ramp: Option<Duration>,
        /// Stop sending after this long (10s, 500ms, 2m).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Probability (0 to 1) that a client hangs up after a reply and a new client takes its
        /// place: random disconnects and reconnects for soak runs.
        #[arg(long, default_value_t = 0.0)]
        churn: f64,
        /// A request: a Python literal (or JSON), pickled for the peer's Python; several are sent
        /// round robin. `{seq}` and `{client}` are replaced in the text. A negative number needs
        /// no `--`.
        #[arg(long = "request", value_name = "VALUE", allow_hyphen_values = true)]
        requests: Vec<String>,
        /// A request as raw bytes: hex digits, or @FILE.
        #[arg(long, value_name = "HEX|@FILE", conflicts_with = "requests")]
        request_bytes: Option<String>,
        /// How replies are checked: echo (equal to the request; the default without --request), any
        /// (the default with --request), or a Python literal the reply must equal (`{seq}`, `{client}` replaced as in --request).
        #[arg(long, value_name = "any|echo|VALUE", allow_hyphen_values = true)]
        expect: Option<String>,
        /// Print one JSON object with the results on stdout (the report lines go to stderr).
        #[arg(long)]
        json: bool,
        /// Write the latency histograms (one per second, microseconds) to FILE as an
        /// HdrHistogram interval log.
        #[arg(long, value_name = "FILE")]
        hdr_out: Option<std::path::PathBuf>,
        /// Reactor threads to spread the clients over.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Seed for the choices that are random (churn, open-loop phases): the same seed, the
        /// same choices.
        #[arg(long)]
        seed: Option<u64>,
        /// A reply not here this long after its request went out is a `timeout` error and ends
        /// that client (10s, 500ms, 2m).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// The command line's definition, each subcommand's `--help` ending with the exit codes.
fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in names {
        cmd = cmd.mut_subcommand(&name, |sub| {
            let before = sub.get_after_help().map(|h| format!("{h}\n\n")).unwrap_or_default();
            let after = format!("{before}{}", exit::help(Some(&name)));
            sub.after_help(after)
        });
    }
    let before = cmd.get_after_help().map(|h| format!("{h}\n\n")).unwrap_or_default();
    let after = format!("{before}{}", exit::help(None));
    cmd.after_help(after)
}

/// The parsed command line (a usage error exits with 2, as clap does).
fn parse() -> Cli {
    let matches = command().get_matches_from(negative::mark(std::env::args_os()));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() {
    let cli = parse();
    logging::init(logging::level(cli.verbose, cli.quiet));
    let keys = cli.keys;
    let result = match cli.command {
        Cmd::Listen { address, family, echo, memory_budget, reactors } => {
            interrupt::install();
            listen::run(address, family, echo, memory_budget, reactors, cli.quiet, &keys)
        }
        Cmd::Send { address, messages, pickle, json, protocol, recv, timeout, no_early_challenge } => {
            let address = negative::unmark(address);
            let messages: Vec<String> = messages.into_iter().map(negative::unmark).collect();
            let args = send::SendArgs {
                address: &address,
                messages: &messages,
                pickle,
                json,
                protocol,
                recv,
                timeout,
                early_challenge: !no_early_challenge,
            };
            if let Err(m) = send::usage(&args) {
                usage_error(&m);
            }
            send::run(&args, &keys)
        }
        Cmd::Bench {
            workload,
            all,
            family,
            n,
            face,
            threads,
            reactors,
            clients,
            acceptor,
            no_early_challenge,
            mark_last,
            role,
            addr,
        } => {
            if role != "client" {
                interrupt::install();
            }
            let imp = match face {
                bench::Face::Reactor => "mpconn-reactor",
                bench::Face::Blocking => "mpconn-blocking",
                bench::Face::Async => "mpconn-async",
            };
            if all {
                run_all_benches(face, threads)
            } else {
                let workload = workload.unwrap_or(bench::Workload::W1);
                let clients = clients.unwrap_or_else(|| match reactors {
                    Some(0) => mpconn::reactor::available_shards(),
                    Some(r) => r,
                    None => 1,
                });
                let n = n.unwrap_or(workload.default_n());
                let early_challenge = !no_early_challenge;
                let args = bench::BenchArgs {
                    workload,
                    family,
                    n,
                    face,
                    threads,
                    reactors,
                    clients,
                    acceptor,
                    early_challenge,
                    mark_last,
                };
                if role == "client" {
                    bench::run_client(&args, addr.as_deref().unwrap_or_default(), imp)
                } else {
                    bench::run_server(&args)
                }
            }
        }
        Cmd::Stress {
            address,
            clients,
            messages,
            size,
            rate,
            ramp,
            duration,
            churn,
            requests,
            request_bytes,
            expect,
            json,
            hdr_out,
            threads,
            seed,
            timeout,
        } => {
            let args = stress::StressArgs {
                address,
                clients,
                messages,
                size,
                rate,
                duration,
                churn,
                keys,
                requests,
                request_bytes,
                expect,
                ramp,
                json,
                hdr_out,
                threads,
                seed,
                timeout,
            };
            if let Err(m) = stress::usage(&args) {
                usage_error(&m);
            }
            interrupt::install();
            match stress::run(args) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    eprintln!("mpconn: stress test failed: see the errors, integrity and descriptors lines");
                    std::process::exit(exit::STRESS_FOUND_ERRORS);
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = result {
        eprintln!("mpconn: {}", clean::text(&e.to_string()));
        std::process::exit(exit::RUNTIME);
    }
}

/// A malformed value found after clap's parsing: exits 2 (a usage error), as clap does.
fn usage_error(message: &str) -> ! {
    eprintln!("mpconn: {}", clean::text(message));
    std::process::exit(exit::USAGE)
}

fn run_all_benches(face: bench::Face, threads: usize) -> mpconn::Result<()> {
    use bench::Workload::*;
    // One reactor, one client process, each workload's default size.
    let run = |workload: bench::Workload, family: Family| {
        bench::run_server(&bench::BenchArgs {
            workload,
            family,
            n: workload.default_n(),
            face,
            threads,
            reactors: None,
            clients: 1,
            acceptor: false,
            early_challenge: true,
            mark_last: false,
        })
    };
    for workload in [W1, W2, W3, W4] {
        for family in [Family::Unix, Family::Inet] {
            run(workload, family)?;
            if interrupt::requested() {
                return Ok(());
            }
        }
    }
    if face == bench::Face::Reactor {
        run(W5, Family::Unix)?;
    }
    Ok(())
}
