//! keyward-loadgen: drives verifications at full speed for a fixed time and
//! prints throughput and latency percentiles, one line per scenario and
//! thread count:
//!
//! ```text
//! peer=keyward op=verify_valid keys=10000 threads=1 ops_per_s=2012345 p50_us=0.431 p99_us=0.902
//! ```
//!
//! `http_verify_valid_under_writes` adds one field, the writer's rate:
//!
//! ```text
//! peer=keyward op=http_verify_valid_under_writes keys=10000 threads=16 ops_per_s=20247 p50_us=728.063 p99_us=2426.879 writes_per_s=702
//! ```
//!
//! `revocation_propagation` prints two lines of its own, in milliseconds:
//!
//! ```text
//! peer=keyward op=key_creation_propagation rounds=200 p50_ms=0.412 p99_ms=1.318
//! peer=keyward op=revocation_propagation rounds=200 p50_ms=0.398 p99_ms=1.207
//! ```
//!
//! Before the in-process scenarios on the redb file, once the keys exist, the
//! engine is closed and opened again over that file, and a snapshot is
//! exported; two lines give the time of each, the keys in the engine, and
//! the process's resident memory after it (RSS, 10^6 bytes):
//!
//! ```text
//! peer=keyward op=open keys=1000000 secs=1.21 rss_mb=812
//! peer=keyward op=snapshot_export keys=1000000 secs=0.83 bytes=104000123 rss_mb=1050
//! ```
//!
//! With `--store redis://HOST:PORT/DB` the scenarios run twice in one run,
//! first on a temporary redb file, then on that Redis, and every line ends
//! with ` store=redb` or ` store=redis`.
//!
//! Only those lines go to stdout; progress and per-run tallies (refusals,
//! unexpected verdicts, errors) go to stderr as lines starting with `#`.
//!
//! `http_verify_valid` and `http_verify_valid_under_writes` run the `keyward`
//! binary (package keyward-cli) as a server on loopback; build it first, in
//! the same profile and target directory:
//! `cargo build --release -p keyward-cli -p keyward-benches`.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use keyward::{Actor, Engine, LimitSync, NewKey, Request};
use keyward_benches::http::{self, Client, KeyWriter, Server};
use keyward_benches::store::{self as redis_store, PATTERN, Written};
use keyward_benches::{Fixture, plain_key, rate_limited_key, unknown_token, unreachable_rate_limit};
use keyward_core::{Code, WorkspaceId};

/// Load generator for keyward: verification throughput and latency.
///
/// Creates --keys keys in a temporary database, then runs each in-process
/// scenario for --seconds with each thread count, every thread calling as
/// fast as it can with a key drawn uniformly at random from its key set.
/// Prints one line per run on stdout:
///
/// peer=keyward op=<op> keys=<N> threads=<T> ops_per_s=<n> p50_us=<n> p99_us=<n>
///
/// http_verify_valid runs once, with --connections threads: it creates --keys
/// keys in a second database (`keyward init`, then the engine in this
/// process), starts `keyward serve --listen 127.0.0.1:0` on it, and every
/// thread sends `POST /v1/verify` requests one after the other on its own
/// keep-alive HTTP/1.1 connection. An answer counts only if it is 200 with
/// "valid":true. The server is stopped (SIGTERM) at the end. It needs the
/// keyward binary: `cargo build --release -p keyward-cli` first.
///
/// http_verify_valid_under_writes is http_verify_valid (same database, a
/// server of its own, same --connections verify threads) plus one more
/// thread on its own keep-alive connection that, for the same --seconds,
/// creates a key (`POST /v1/api-keys`, body {"name":"w"}) and revokes it
/// (`POST /v1/api-keys/{id}/revoke`) as fast as it can, authenticated as the
/// root key `keyward init --json` printed. Its line adds writes_per_s: the
/// writer's successful creates plus revokes (each one fsynced commit) per
/// second of its run; the verify figures cover the verify threads only.
/// Both HTTP scenarios are in the default run; to run just the two, side by
/// side: --op http_verify_valid,http_verify_valid_under_writes.
///
/// http_gateway_forward (not in the default run) serves the same database
/// with a tool `fwd` whose upstream is a server in this process on a free
/// loopback port that answers every call at once (`200 ok`, a thread per
/// connection); every thread sends `POST /api/v2/fwd` with a key as bearer
/// on its own keep-alive connection. An answer counts only if it is the
/// upstream's `200 ok`: the figures are admission plus forwarding (header
/// rewriting, the pooled upstream connection, the streamed bodies).
///
/// revocation_propagation (not in the default run without --store) has two
/// nodes: node A creates a key, and the time from the start of that call
/// until node B verifies it as VALID is one sample of key_creation_propagation
/// (B looks from the moment A's call returns); then B verifies the token in a
/// tight loop on a thread of its own while A revokes it, and the time from
/// the start of A's call until B first refuses it is one sample of
/// revocation_propagation. --rounds such rounds, one key each. On redb B is
/// A itself (a redb file admits one engine), so the figures are the time of
/// the committed (fsynced) call; on --store B is a second engine on the same
/// Redis, which learns of A's changes through the change stream.
///
/// --store redis://HOST:PORT/DB runs the in-process scenarios on a temporary
/// redb file first, then on that Redis (node A: the engine that creates the
/// keys), and appends store=redb or store=redis to every line. By default it
/// runs verify_valid, verify_valid_ratelimited_exact (every call charged in
/// Redis: one round trip) and revocation_propagation. The Redis must hold no
/// keyward data ({keyward}:* keys): the load generator refuses one that does,
/// unless --store-flush is given, which deletes those keys first. After the
/// run it deletes the {keyward}:* keys if they hold exactly what the run
/// wrote (one workspace, the keys it created), and otherwise leaves them and
/// says so.
///
/// Latency: with --batch 1 (the default) every call is timed on its own,
/// between two Instant::now() reads, so each figure includes about one clock
/// read (~20-50 ns here). The call's token is copied into a reused buffer
/// before the first read, as a server has it in its request buffer. With
/// --batch N, N calls are timed together and their mean is recorded N times:
/// less timer overhead, but outliers within a batch are averaged away.
/// Per-thread HDR histograms (1 ns to 60 s, 3 significant digits) are merged.
///
/// ops_per_s is calls / wall time of the run, all threads together; it
/// includes this program's own work per call (picking and copying the token,
/// the clock reads).
#[derive(Debug, Parser)]
#[command(name = "keyward-loadgen", version, verbatim_doc_comment)]
struct Args {
    /// Keys in each key set (valid keys; rate-limited keys; unknown tokens).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    keys: u32,

    /// Seconds each run lasts.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    seconds: u64,

    /// Thread counts, comma-separated; every in-process scenario runs once
    /// with each (the http_* scenarios use --connections instead).
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2],
          value_parser = clap::value_parser!(u32).range(1..=1_024))]
    threads: Vec<u32>,

    /// Scenarios to run, comma-separated. By default, all but
    /// verify_valid_ratelimited_exact and revocation_propagation; with
    /// --store, verify_valid, verify_valid_ratelimited_exact and
    /// revocation_propagation.
    #[arg(long, value_enum, value_delimiter = ',')]
    op: Vec<Scenario>,

    /// Rate limit of the keys of verify_valid_ratelimited, in calls per second
    /// per key (GCRA, burst of the same size). Uniform load of 1-2 million
    /// calls per second over 10,000 keys offers each key 100-200 calls per
    /// second, so the default of 20/s refuses most of the calls, more with two
    /// threads than with one; the refused share is printed on stderr.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    rate_limit: u64,

    /// Calls timed together per latency sample (see above).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_024))]
    batch: u32,

    /// Directory in which the temporary database is created. By default, the
    /// system's temporary directory. Only key creation touches the disk
    /// during set-up (one fsync per key); a tmpfs such as /dev/shm makes it fast.
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Create the key sets in batches (`Engine::create_keys`, 10,000 keys
    /// per commit) instead of one commit per key. Either way the creation
    /// of the valid keys is reported on stdout: with --bulk as
    /// `op=bulk_create keys=N secs=S keys_per_s=R`, without it as
    /// `op=create keys=N secs=S keys_per_s=R` (the baseline).
    #[arg(long)]
    bulk: bool,

    /// http_verify_valid, http_verify_valid_under_writes: keep-alive
    /// connections sending verifications to the server, one thread each;
    /// printed as threads= (the writer's connection is not counted).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_024))]
    connections: u32,

    /// http_* scenarios: the keyward binary to serve with. By default,
    /// `keyward` in the directory of this executable (build it with
    /// `cargo build --release -p keyward-cli`).
    #[arg(long, value_name = "PATH")]
    keyward_bin: Option<PathBuf>,

    /// Also run the scenarios on this Redis store, after a temporary redb
    /// file, in the same run (see above). Only in-process scenarios.
    #[arg(long, value_name = "redis://HOST:PORT/DB")]
    store: Option<String>,

    /// With --store: delete the {keyward}:* keys the Redis holds before the
    /// run. Without it, a Redis that holds any is refused.
    #[arg(long, requires = "store")]
    store_flush: bool,

    /// revocation_propagation: keys created and revoked, one after the other.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rounds: u32,
}

/// What is measured. Each scenario names its operation, its key set and the
/// verdicts it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Scenario {
    /// Engine::verify of valid keys without limits.
    VerifyValid,
    /// Engine::verify of well-formed tokens that are not in the database.
    VerifyInvalid,
    /// Engine::verify of valid keys that carry a rate limit (--rate-limit).
    VerifyValidRatelimited,
    /// Engine::verify of valid keys with a rate limit no load reaches
    /// (10⁹/s): every call is charged, none refused. On Redis the charge is
    /// exact across nodes: one atomic round trip per call.
    VerifyValidRatelimitedExact,
    /// verify_valid_ratelimited_exact in a workspace that counts limits
    /// locally and reconciles every 100 ms (`LimitSync::Local`): on Redis,
    /// no round trip per call.
    VerifyValidRatelimitedLocal,
    /// Node A creates, then revokes a key; how long until node B follows.
    RevocationPropagation,
    /// POST /v1/verify of valid keys without limits, to a `keyward serve` on loopback.
    HttpVerifyValid,
    /// http_verify_valid while one more connection creates and revokes keys.
    HttpVerifyValidUnderWrites,
    /// POST /api/v2/fwd through `keyward serve` to an upstream in this
    /// process that answers at once: admission plus forwarding.
    HttpGatewayForward,
}

impl Scenario {
    /// Every scenario, in the order they run.
    const ALL: [Scenario; 9] = [
        Scenario::VerifyValid,
        Scenario::VerifyInvalid,
        Scenario::VerifyValidRatelimited,
        Scenario::VerifyValidRatelimitedExact,
        Scenario::VerifyValidRatelimitedLocal,
        Scenario::RevocationPropagation,
        Scenario::HttpVerifyValid,
        Scenario::HttpVerifyValidUnderWrites,
        Scenario::HttpGatewayForward,
    ];

    /// What runs without --op.
    const DEFAULT: [Scenario; 5] = [
        Scenario::VerifyValid,
        Scenario::VerifyInvalid,
        Scenario::VerifyValidRatelimited,
        Scenario::HttpVerifyValid,
        Scenario::HttpVerifyValidUnderWrites,
    ];

    /// What runs with --store and without --op.
    const STORE_DEFAULT: [Scenario; 4] = [
        Scenario::VerifyValid,
        Scenario::VerifyValidRatelimitedExact,
        Scenario::VerifyValidRatelimitedLocal,
        Scenario::RevocationPropagation,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::VerifyValid => "verify_valid",
            Scenario::VerifyInvalid => "verify_invalid",
            Scenario::VerifyValidRatelimited => "verify_valid_ratelimited",
            Scenario::VerifyValidRatelimitedExact => "verify_valid_ratelimited_exact",
            Scenario::VerifyValidRatelimitedLocal => "verify_valid_ratelimited_local",
            Scenario::RevocationPropagation => "revocation_propagation",
            Scenario::HttpVerifyValid => "http_verify_valid",
            Scenario::HttpVerifyValidUnderWrites => "http_verify_valid_under_writes",
            Scenario::HttpGatewayForward => "http_gateway_forward",
        }
    }

    /// Whether the scenario runs against a `keyward serve` (needs the binary).
    fn over_http(self) -> bool {
        matches!(self, Scenario::HttpVerifyValid | Scenario::HttpVerifyValidUnderWrites | Scenario::HttpGatewayForward)
    }

    fn key_set(self) -> KeySet {
        match self {
            Scenario::VerifyValid => KeySet::Valid,
            Scenario::VerifyInvalid => KeySet::Unknown,
            Scenario::VerifyValidRatelimited => KeySet::RateLimited,
            Scenario::VerifyValidRatelimitedExact => KeySet::Charged,
            Scenario::VerifyValidRatelimitedLocal => KeySet::ChargedLocal,
            Scenario::RevocationPropagation => KeySet::PerRound,
            Scenario::HttpVerifyValid | Scenario::HttpVerifyValidUnderWrites | Scenario::HttpGatewayForward => {
                KeySet::Served
            }
        }
    }

    /// How a verdict counts: `Some(true)` passed, `Some(false)` refused as
    /// the scenario intends, `None` unexpected (a bug in the engine or here).
    fn classify(self, code: Code) -> Option<bool> {
        match (self, code) {
            (
                Scenario::VerifyValid
                | Scenario::VerifyValidRatelimited
                | Scenario::VerifyValidRatelimitedExact
                | Scenario::VerifyValidRatelimitedLocal
                | Scenario::HttpVerifyValid
                | Scenario::HttpVerifyValidUnderWrites
                | Scenario::HttpGatewayForward,
                Code::Valid,
            ) => Some(true),
            (Scenario::VerifyValidRatelimited, Code::RateLimited) => Some(false),
            (Scenario::VerifyInvalid, Code::NotFound) => Some(false),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeySet {
    Valid,
    Unknown,
    RateLimited,
    /// Valid keys with [`unreachable_rate_limit`]: charged, never refused.
    Charged,
    /// The same, in a workspace counting locally.
    ChargedLocal,
    /// None: the scenario creates a key per round.
    PerRound,
    /// Valid keys without limits in the database `keyward serve` serves.
    Served,
}

/// One thread's way of putting a call to the system under test.
trait Driver {
    /// Verifies `token` and returns the verdict's code, or an error when no
    /// verdict came back (a transport or protocol error).
    fn verify(&mut self, token: &str) -> io::Result<Code>;
}

/// Calls the engine in this process.
struct InProcess<'a> {
    engine: &'a Engine,
    req: Request<'a>,
}

impl Driver for InProcess<'_> {
    fn verify(&mut self, token: &str) -> io::Result<Code> {
        Ok(self.engine.verify(token, &self.req).code)
    }
}

/// `POST /v1/verify` on one keep-alive connection, one request at a time,
/// as a key allowed to verify (the root key).
struct OverHttp {
    client: Client,
    body: Vec<u8>,
    bearer: String,
}

impl OverHttp {
    fn connect(addr: SocketAddr, bearer: &str) -> io::Result<Self> {
        Ok(Self { client: Client::connect(addr)?, body: Vec::with_capacity(64), bearer: bearer.to_owned() })
    }
}

impl Driver for OverHttp {
    fn verify(&mut self, token: &str) -> io::Result<Code> {
        http::verify_body(token, &mut self.body)?;
        let r = self.client.post_json_bearer("/v1/verify", &self.bearer, &self.body)?;
        http::verify_verdict(r.status, r.body)
    }
}

/// `POST /api/v2/fwd` on one keep-alive connection with the key as bearer;
/// only the upstream's own `200 ok` counts as passed.
struct OverGateway {
    client: Client,
}

impl Driver for OverGateway {
    fn verify(&mut self, token: &str) -> io::Result<Code> {
        let r = self.client.post_json_bearer("/api/v2/fwd", token, b"{}")?;
        match (r.status, r.body) {
            (200, b"ok") => Ok(Code::Valid),
            (status, body) => Err(io::Error::other(format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()))),
        }
    }
}

/// xorshift64*: cheap, and good enough to pick keys uniformly.
struct Pick(u64);

impl Pick {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // Multiply-shift maps r to 0..n without a division.
        ((u128::from(r) * n as u128) >> 64) as usize
    }
}

/// What one thread measured.
struct Tally {
    hist: Histogram<u64>,
    calls: u64,
    passed: u64,
    refused: u64,
    unexpected: u64,
    /// Calls that returned no verdict (HTTP: connection or protocol errors).
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: new_histogram(),
            calls: 0,
            passed: 0,
            refused: 0,
            unexpected: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn error(&mut self, e: &io::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// What the writer thread of `http_verify_valid_under_writes` did.
struct Writes {
    /// Latency of each create and each revoke request, answered or not.
    hist: Histogram<u64>,
    created: u64,
    revoked: u64,
    /// Requests that did not get the expected answer (see [`KeyWriter`]).
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Writes {
    fn new() -> Self {
        Writes { hist: new_histogram(), created: 0, revoked: 0, errors: 0, first_error: None, elapsed: Duration::ZERO }
    }

    fn error(&mut self, e: &io::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn record(&mut self, took: Duration) {
        self.hist.saturating_record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1));
    }

    /// Successful writes: every create and every revoke is one commit.
    fn writes(&self) -> u64 {
        self.created + self.revoked
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits; `saturating_record` clamps outliers.
    // Invariant: constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// How a thread gets its driver (called in that thread, before the start).
type Connect<'a, D> = &'a (dyn Fn() -> io::Result<D> + Sync);

fn run_thread<D: Driver>(
    scenario: Scenario,
    connect: Connect<'_, D>,
    tokens: &[String],
    seed: u64,
    batch: u32,
    duration: Duration,
    start: &Barrier,
) -> Tally {
    let mut pick = Pick(seed | 1);
    let mut t = Tally::new();
    let driver = connect();
    // Each call's token is copied into a reused buffer before the clock
    // starts: a server has the token in its request buffer, hot in cache,
    // while reading one of N separately allocated strings at random would add
    // a cache miss that belongs to this program, not to the engine.
    let mut bufs: Vec<String> = (0..batch).map(|_| String::with_capacity(64)).collect();
    start.wait();
    let mut driver = match driver {
        Ok(d) => d,
        Err(e) => {
            t.error(&e);
            return t;
        }
    };
    let begin = Instant::now();
    let deadline = begin + duration;
    loop {
        for buf in &mut bufs {
            buf.clear();
            buf.push_str(&tokens[pick.below(tokens.len())]);
        }
        let t0 = Instant::now();
        for buf in &bufs {
            match driver.verify(buf).map(|code| scenario.classify(code)) {
                Ok(Some(true)) => t.passed += 1,
                Ok(Some(false)) => t.refused += 1,
                Ok(None) => t.unexpected += 1,
                Err(e) => t.error(&e),
            }
        }
        let t1 = Instant::now();
        let mean_ns = (t1 - t0).as_nanos() / u128::from(batch);
        t.hist.saturating_record_n(u64::try_from(mean_ns).unwrap_or(u64::MAX).max(1), u64::from(batch));
        t.calls += u64::from(batch);
        if t1 >= deadline {
            t.elapsed = t1 - begin;
            break;
        }
    }
    t
}

/// The writer thread of `http_verify_valid_under_writes`: connects, waits
/// for the common start, then creates and revokes one key after the other
/// until `duration` has passed.
fn run_writer(addr: SocketAddr, root_key: &str, duration: Duration, start: &Barrier) -> Writes {
    let mut w = Writes::new();
    let writer = KeyWriter::connect(addr, root_key);
    start.wait();
    let mut writer = match writer {
        Ok(x) => x,
        Err(e) => {
            w.error(&e);
            return w;
        }
    };
    let begin = Instant::now();
    let deadline = begin + duration;
    loop {
        let t0 = Instant::now();
        let created = writer.create();
        let mut t1 = Instant::now();
        w.record(t1 - t0);
        match created {
            Ok(id) => {
                w.created += 1;
                let revoked = writer.revoke(&id);
                let t2 = Instant::now();
                w.record(t2 - t1);
                t1 = t2;
                match revoked {
                    Ok(()) => w.revoked += 1,
                    Err(e) => w.error(&e),
                }
            }
            Err(e) => w.error(&e),
        }
        if t1 >= deadline {
            w.elapsed = t1 - begin;
            break;
        }
    }
    w
}

/// A job for one more thread beside a scenario's threads. It gets the
/// scenario's start barrier and must wait on it exactly once.
type Beside<'a> = &'a (dyn Fn(&Barrier) -> Writes + Sync);

/// Runs one scenario with `threads` threads, each with a driver from
/// `connect`, and merges what they measured. `beside`, if given, runs in one
/// more thread that starts at the same moment; its result is returned too.
fn run<D: Driver>(
    scenario: Scenario,
    connect: Connect<'_, D>,
    tokens: &[String],
    threads: u32,
    args: &Args,
    beside: Option<Beside<'_>>,
) -> (Tally, Option<Writes>) {
    let duration = Duration::from_secs(args.seconds);
    let start = Barrier::new(threads as usize + usize::from(beside.is_some()));
    let (tallies, side): (Vec<Tally>, Option<Writes>) = std::thread::scope(|s| {
        let start = &start;
        let side = beside.map(|f| s.spawn(move || f(start)));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(u64::from(i) + 1);
                s.spawn(move || run_thread(scenario, connect, tokens, seed, args.batch, duration, start))
            })
            .collect();
        let tallies = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        let side = side.map(|h| {
            h.join().unwrap_or_else(|_| {
                let mut w = Writes::new();
                w.error(&io::Error::other("the writer thread panicked"));
                w
            })
        });
        (tallies, side)
    });
    let mut all = Tally::new();
    if tallies.len() < threads as usize {
        all.error(&io::Error::other(format!("{} of {threads} threads panicked", threads as usize - tallies.len())));
    }
    for t in tallies {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = all.hist.add(&t.hist);
        all.calls += t.calls;
        all.passed += t.passed;
        all.refused += t.refused;
        all.unexpected += t.unexpected;
        all.errors += t.errors;
        if all.first_error.is_none() {
            all.first_error = t.first_error;
        }
        all.elapsed = all.elapsed.max(t.elapsed);
    }
    (all, side)
}

/// Serves the database of [`KeySet::Served`] with `keyward serve` on
/// loopback, runs `scenario` (`http_verify_valid` or
/// `http_verify_valid_under_writes`) against it with `--connections` verify
/// threads, plus the writer thread for the latter, and stops the server.
fn run_http(scenario: Scenario, served: &Served, args: &Args) -> Result<(Tally, Option<Writes>), String> {
    if scenario == Scenario::HttpGatewayForward {
        return run_gateway(served, args);
    }
    let mut server = Server::start(&served.keyward_bin, &served.db)?;
    eprintln!("# keyward serve (pid {}) listening on http://{}", server.id(), server.addr());
    let addr = server.addr();
    let connect = move || OverHttp::connect(addr, &served.root_key);
    let duration = Duration::from_secs(args.seconds);
    let writer = |start: &Barrier| run_writer(addr, &served.root_key, duration, start);
    let beside = (scenario == Scenario::HttpVerifyValidUnderWrites).then_some(&writer as Beside<'_>);
    let out = run(scenario, &connect, &served.tokens, args.connections, args, beside);
    let status = server.stop().map_err(|e| format!("cannot stop the server: {e}"))?;
    eprintln!("# keyward serve stopped ({status})");
    Ok(out)
}

/// `http_gateway_forward`: an upstream in this process, tool `fwd` of the
/// served database forwarding to it, `keyward serve` on that database, and
/// --connections threads calling the gateway.
fn run_gateway(served: &Served, args: &Args) -> Result<(Tally, Option<Writes>), String> {
    let upstream = http::Upstream::start().map_err(|e| format!("cannot start the upstream: {e}"))?;
    http::set_gateway_tool(&served.db, "fwd", &format!("http://{}", upstream.addr()))?;
    let mut server = Server::start(&served.keyward_bin, &served.db)?;
    eprintln!("# keyward serve (pid {}) forwarding to http://{}", server.id(), upstream.addr());
    let addr = server.addr();
    let connect = move || Client::connect(addr).map(|client| OverGateway { client });
    let out = run(Scenario::HttpGatewayForward, &connect, &served.tokens, args.connections, args, None);
    let status = server.stop().map_err(|e| format!("cannot stop the server: {e}"))?;
    eprintln!("# keyward serve stopped ({status})");
    Ok(out)
}

fn micros(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1_000.0)
}

/// The database the http_* scenarios serve, its root key and its keys.
struct Served {
    keyward_bin: PathBuf,
    db: PathBuf,
    root_key: String,
    tokens: Vec<String>,
}

/// Key sets, created only when a selected scenario needs them.
struct KeySets {
    valid: Vec<String>,
    unknown: Vec<String>,
    rate_limited: Vec<String>,
    charged: Vec<String>,
    charged_local: Vec<String>,
    /// The workspace of `charged_local`.
    local_ws: Option<keyward_core::WorkspaceId>,
    served: Option<Served>,
}

impl KeySets {
    fn build(
        fx: &Fixture,
        scenarios: &[Scenario],
        n: usize,
        rate_limit: u64,
        keyward_bin: Option<&Path>,
        bulk: bool,
        store: Label,
    ) -> Result<Self, String> {
        let needs = |set: KeySet| scenarios.iter().any(|s| s.key_set() == set);
        let make = |ws, spec: &dyn Fn(usize) -> NewKey| {
            if bulk { fx.tokens_bulk(ws, n, spec) } else { fx.tokens_in(ws, n, spec) }
        };
        let timed = |what: &str, f: &dyn Fn() -> keyward::Result<Vec<String>>| {
            let t0 = Instant::now();
            let out = f()?;
            eprintln!("# created {n} {what} in {:.1} s", t0.elapsed().as_secs_f64());
            Ok::<_, keyward::Error>(out)
        };
        let valid = if needs(KeySet::Valid) {
            let t0 = Instant::now();
            let made = timed("valid keys", &|| make(fx.ws, &|i| plain_key(format!("load-{i}"))))
                .map_err(|e| format!("cannot create keys: {e}"))?;
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "peer=keyward op={} keys={n} secs={secs:.2} keys_per_s={:.0}{}",
                if bulk { "bulk_create" } else { "create" },
                n as f64 / secs,
                suffix(store)
            );
            made
        } else {
            Vec::new()
        };
        let rate_limited = if needs(KeySet::RateLimited) {
            timed("rate-limited keys", &|| {
                make(fx.ws, &|i| rate_limited_key(format!("limited-{i}"), rate_limit, 1_000))
            })
            .map_err(|e| format!("cannot create keys: {e}"))?
        } else {
            Vec::new()
        };
        let charged = if needs(KeySet::Charged) {
            timed("keys with an unreachable rate limit", &|| {
                make(fx.ws, &|i| NewKey { limits: Some(unreachable_rate_limit()), ..plain_key(format!("charged-{i}")) })
            })
            .map_err(|e| format!("cannot create keys: {e}"))?
        } else {
            Vec::new()
        };
        let local_ws = if needs(KeySet::ChargedLocal) {
            let ws = fx.workspace_synced(LimitSync::Local { ms: 100 });
            Some(ws.map_err(|e| format!("cannot create a workspace: {e}"))?)
        } else {
            None
        };
        let charged_local = match local_ws {
            Some(ws) => timed("keys with an unreachable rate limit, counted locally", &|| {
                make(ws, &|i| NewKey { limits: Some(unreachable_rate_limit()), ..plain_key(format!("local-{i}")) })
            })
            .map_err(|e| format!("cannot create keys: {e}"))?,
            None => Vec::new(),
        };
        let unknown = if needs(KeySet::Unknown) { (0..n).map(|_| unknown_token()).collect() } else { Vec::new() };
        let served = match (keyward_bin, fx.dir()) {
            (Some(bin), Some(dir)) if needs(KeySet::Served) => {
                let db = dir.join("served.redb");
                let t0 = Instant::now();
                let http::Prepared { root_key, tokens } =
                    http::prepare_db(bin, &db, n, |i| plain_key(format!("http-{i}")))?;
                eprintln!(
                    "# created {n} valid keys for keyward serve in {} in {:.1} s",
                    db.display(),
                    t0.elapsed().as_secs_f64()
                );
                Some(Served { keyward_bin: bin.to_owned(), db, root_key, tokens })
            }
            _ => None,
        };
        Ok(Self { valid, unknown, rate_limited, charged, charged_local, local_ws, served })
    }

    fn get(&self, set: KeySet) -> &[String] {
        match set {
            KeySet::Valid => &self.valid,
            KeySet::Unknown => &self.unknown,
            KeySet::RateLimited => &self.rate_limited,
            KeySet::Charged => &self.charged,
            KeySet::ChargedLocal => &self.charged_local,
            KeySet::PerRound => &[],
            KeySet::Served => self.served.as_ref().map_or(&[], |s| &s.tokens),
        }
    }
}

/// The keyward binary the http_* scenarios serve with: `--keyward-bin`, or
/// `keyward` beside this executable. An error says how to build it.
fn keyward_bin(args: &Args) -> Result<PathBuf, String> {
    let bin = match &args.keyward_bin {
        Some(p) => p.clone(),
        None => http::default_keyward_bin().map_err(|e| format!("cannot locate this executable: {e}"))?,
    };
    if bin.is_file() {
        return Ok(bin);
    }
    Err(format!(
        "http_verify_valid and http_verify_valid_under_writes need the keyward server binary, and {} does not exist.\n\
         Build it first, with the same profile and target directory as the load generator:\n\
         \x20   cargo build --release -p keyward-cli -p keyward-benches\n\
         or pass --keyward-bin PATH, or leave those scenarios out (--op verify_valid,verify_invalid,...).",
        bin.display()
    ))
}

/// Prints the run's line on stdout and its tally on stderr (and the
/// writer's, if there was one); returns whether it went wrong (unexpected
/// verdicts or errors, or no successful write).
fn report(scenario: Scenario, keys: u32, threads: u32, t: &Tally, writes: Option<&Writes>, store: Label) -> bool {
    let secs = t.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let writes_per_s = |w: &Writes| w.writes() as f64 / w.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    println!(
        "peer=keyward op={} keys={} threads={} ops_per_s={:.0} p50_us={} p99_us={}{}{}",
        scenario.name(),
        keys,
        threads,
        t.calls as f64 / secs,
        micros(t.hist.value_at_quantile(0.50)),
        micros(t.hist.value_at_quantile(0.99)),
        writes.map(|w| format!(" writes_per_s={:.0}", writes_per_s(w))).unwrap_or_default(),
        suffix(store),
    );
    let share = |n: u64| 100.0 * n as f64 / t.calls.max(1) as f64;
    eprintln!(
        "# {}op={} threads={}: {} calls in {:.2} s, passed {:.1}%, refused {:.1}%, unexpected {}, errors {}",
        prefix(store),
        scenario.name(),
        threads,
        t.calls,
        secs,
        share(t.passed),
        share(t.refused),
        t.unexpected,
        t.errors,
    );
    if let Some(e) = &t.first_error {
        eprintln!("# {}op={} threads={}: first error: {e}", prefix(store), scenario.name(), threads);
    }
    let mut failed = t.unexpected > 0 || t.errors > 0 || t.calls == 0;
    if let Some(w) = writes {
        eprintln!(
            "# op={} writer: {} writes ({} keys created, {} revoked) in {:.2} s, {:.0} writes/s, \
             p50_us={} p99_us={} per request, errors {}",
            scenario.name(),
            w.writes(),
            w.created,
            w.revoked,
            w.elapsed.as_secs_f64(),
            writes_per_s(w),
            micros(w.hist.value_at_quantile(0.50)),
            micros(w.hist.value_at_quantile(0.99)),
            w.errors,
        );
        if let Some(e) = &w.first_error {
            eprintln!("# op={} writer: first error: {e}", scenario.name());
        }
        failed |= w.errors > 0 || w.writes() == 0;
    }
    failed
}

/// Which store a line's figures are of: `Some("redb")` or `Some("redis")`
/// with --store, `None` without it (the lines then keep their usual form).
type Label = Option<&'static str>;

/// The end of a stdout line: ` store=<label>`, or nothing.
fn suffix(store: Label) -> String {
    store.map(|s| format!(" store={s}")).unwrap_or_default()
}

/// The start of a `#` line's subject: `<label>: `, or nothing.
fn prefix(store: Label) -> String {
    store.map(|s| format!("{s}: ")).unwrap_or_default()
}

/// How long a round of revocation_propagation waits for node B to follow.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What revocation_propagation measured, per round.
struct Propagation {
    /// From the start of `create_key` on A until B answers `VALID`.
    created: Histogram<u64>,
    /// From the start of `revoke_key` on A until B first refuses.
    revoked: Histogram<u64>,
    /// `create_key` on A alone.
    create_call: Histogram<u64>,
    /// `revoke_key` on A alone.
    revoke_call: Histogram<u64>,
    /// B's verifications while it waited for the revocations.
    spins: u64,
    /// Verdicts on B that neither the old nor the new state of the key gives.
    unexpected: u64,
    /// Failed calls on A, rounds that timed out or a panicked thread.
    errors: u64,
    first_error: Option<String>,
}

impl Propagation {
    fn new() -> Self {
        Propagation {
            created: new_histogram(),
            revoked: new_histogram(),
            create_call: new_histogram(),
            revoke_call: new_histogram(),
            spins: 0,
            unexpected: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        self.note(e);
    }

    fn unexpected(&mut self, code: Code, what: &str) {
        self.unexpected += 1;
        self.note(format!("node B answered {code:?} for a key node A {what}"));
    }

    fn note(&mut self, e: String) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    /// Rounds measured in full.
    fn rounds(&self) -> u64 {
        self.revoked.len()
    }
}

fn record(hist: &mut Histogram<u64>, took: Duration) {
    hist.saturating_record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// Verifies `token` on `node` in a tight loop while the verdict is `old`,
/// from now until it changes, `stop` is set or [`PROPAGATION_TIMEOUT`]
/// passes. Returns the moment the new verdict came back, the verdict, and
/// how many calls were made.
fn wait_for_change(node: &Engine, token: &str, old: Code, stop: &AtomicBool) -> Result<(Instant, Code, u64), String> {
    let req = Request::default();
    let deadline = Instant::now() + PROPAGATION_TIMEOUT;
    let mut calls = 0;
    loop {
        let code = node.verify(token, &req).code;
        let now = Instant::now();
        calls += 1;
        if code != old {
            return Ok((now, code, calls));
        }
        if stop.load(Ordering::Relaxed) {
            return Err("stopped".into());
        }
        if now >= deadline {
            return Err(format!("node B still answered {old:?} after {} s", PROPAGATION_TIMEOUT.as_secs()));
        }
    }
}

/// revocation_propagation: `rounds` times, node `a` creates a key in `ws`
/// and node `b` waits until it verifies; then `b` verifies it in a tight
/// loop on a thread of its own while `a` revokes it. Stops at the first
/// failure (the rounds before it count).
fn run_propagation(a: &Engine, ws: WorkspaceId, b: &Engine, rounds: u32) -> Propagation {
    let mut p = Propagation::new();
    let never = AtomicBool::new(false);
    for i in 0..rounds {
        let t0 = Instant::now();
        let created = a.create_key(ws, plain_key(format!("propagation-{i}")), &Actor::Admin);
        let t1 = Instant::now();
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                p.error(format!("create_key on node A: {e}"));
                break;
            }
        };
        record(&mut p.create_call, t1 - t0);
        // B can only look once it has the token: from the moment A's call
        // returns. A key B learnt of before that is seen on its first call.
        let token = created.token.expose();
        match wait_for_change(b, token, Code::NotFound, &never) {
            Ok((at, Code::Valid, _)) => record(&mut p.created, at - t0),
            Ok((_, code, _)) => {
                p.unexpected(code, "created");
                break;
            }
            Err(e) => {
                p.error(format!("key creation: {e}"));
                break;
            }
        }
        let start = Barrier::new(2);
        let stop = AtomicBool::new(false);
        let (revoked, waited) = std::thread::scope(|s| {
            let spinner = s.spawn(|| {
                start.wait();
                wait_for_change(b, token, Code::Valid, &stop)
            });
            start.wait();
            let t0 = Instant::now();
            let revoked = a.revoke_key(created.info.id, &Actor::Admin);
            let t1 = Instant::now();
            if revoked.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let waited = spinner.join().unwrap_or_else(|_| Err("node B's thread panicked".into()));
            (revoked.map(|_| (t0, t1)), waited)
        });
        let (t0, t1) = match revoked {
            Ok(times) => times,
            Err(e) => {
                p.error(format!("revoke_key on node A: {e}"));
                break;
            }
        };
        record(&mut p.revoke_call, t1 - t0);
        match waited {
            Ok((at, Code::Revoked, calls)) => {
                // B may refuse before A's call returns (it is timed from
                // the call's start), never before the call began.
                record(&mut p.revoked, at.saturating_duration_since(t0));
                p.spins += calls;
            }
            Ok((_, code, _)) => {
                p.unexpected(code, "revoked");
                break;
            }
            Err(e) => {
                p.error(format!("revocation: {e}"));
                break;
            }
        }
    }
    p
}

fn millis(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1_000_000.0)
}

/// Prints revocation_propagation's two lines on stdout and its tally on
/// stderr; returns whether it went wrong.
fn report_propagation(p: &Propagation, store: Label) -> bool {
    let line = |op: &str, h: &Histogram<u64>| {
        println!(
            "peer=keyward op={op} rounds={} p50_ms={} p99_ms={}{}",
            h.len(),
            millis(h.value_at_quantile(0.50)),
            millis(h.value_at_quantile(0.99)),
            suffix(store),
        );
    };
    line("key_creation_propagation", &p.created);
    line("revocation_propagation", &p.revoked);
    let call = |h: &Histogram<u64>| {
        format!("p50_ms={} p99_ms={}", millis(h.value_at_quantile(0.50)), millis(h.value_at_quantile(0.99)))
    };
    eprintln!(
        "# {}op=revocation_propagation: {} rounds; max_ms creation {} revocation {}; node A's create_key {}, \
         revoke_key {}; node B verified {:.0} times per revocation; unexpected {}, errors {}",
        prefix(store),
        p.rounds(),
        millis(p.created.max()),
        millis(p.revoked.max()),
        call(&p.create_call),
        call(&p.revoke_call),
        p.spins as f64 / p.rounds().max(1) as f64,
        p.unexpected,
        p.errors,
    );
    if let Some(e) = &p.first_error {
        eprintln!("# {}op=revocation_propagation: first error: {e}", prefix(store));
    }
    p.unexpected > 0 || p.errors > 0 || p.rounds() == 0
}

/// Node B of revocation_propagation, opened when the scenario starts.
type NodeB<'a> = &'a dyn Fn() -> keyward::Result<Engine>;

/// Runs `scenarios` on `fx` (the http_* ones on the served database of
/// `sets`); returns whether any went wrong, and how many keys they created
/// on `fx` (revocation_propagation's).
fn run_scenarios(
    fx: &Fixture,
    sets: &KeySets,
    scenarios: &[Scenario],
    args: &Args,
    store: Label,
    node_b: NodeB<'_>,
) -> (bool, u64) {
    let mut failed = false;
    let mut created = 0;
    for &scenario in scenarios {
        if scenario.over_http() {
            let Some(served) = &sets.served else { continue };
            match run_http(scenario, served, args) {
                Ok((t, w)) => failed |= report(scenario, args.keys, args.connections, &t, w.as_ref(), store),
                Err(e) => {
                    eprintln!("keyward-loadgen: {}: {e}", scenario.name());
                    failed = true;
                }
            }
            continue;
        }
        if scenario == Scenario::RevocationPropagation {
            match node_b() {
                Ok(b) => {
                    let p = run_propagation(&fx.engine, fx.ws, &b, args.rounds);
                    created += p.create_call.len();
                    failed |= report_propagation(&p, store);
                }
                Err(e) => {
                    eprintln!("keyward-loadgen: {}: cannot open node B: {e}", scenario.name());
                    failed = true;
                }
            }
            continue;
        }
        let tokens = sets.get(scenario.key_set());
        let engine = &fx.engine;
        let connect = || Ok(InProcess { engine, req: Request::default() });
        for &threads in &args.threads {
            let (t, _) = run(scenario, &connect, tokens, threads, args, None);
            failed |= report(scenario, args.keys, threads, &t, None, store);
        }
    }
    (failed, created)
}

/// `n` Redis keys, in words.
fn keys(n: usize) -> String {
    if n == 1 { "1 key".into() } else { format!("{n} keys") }
}

/// Before a --store run: refuses a Redis that holds keyward data, or with
/// --store-flush deletes it.
fn prepare_store(url: &str, flush: bool) -> Result<(), String> {
    let found = redis_store::keyward_keys(url).map_err(|e| format!("--store {e}"))?;
    if found.is_empty() {
        return Ok(());
    }
    if !flush {
        let some: Vec<&str> = found.iter().take(3).map(String::as_str).collect();
        return Err(format!(
            "--store {} already holds keyward data: {} matching {PATTERN} ({}{}).\n\
             The load generator needs a Redis without them. Point --store at another database \
             (redis://HOST:PORT/DB), or pass --store-flush to delete those keys (and only those) first.",
            redis_store::shown(url),
            keys(found.len()),
            some.join(", "),
            if found.len() > some.len() { ", …" } else { "" },
        ));
    }
    let n = redis_store::remove(url, &found).map_err(|e| format!("--store-flush {e}"))?;
    eprintln!("# --store-flush: deleted {} matching {PATTERN} from {}", keys(n as usize), redis_store::shown(url));
    Ok(())
}

/// The Redis half of a --store run: key sets created on node A, the
/// scenarios, node B for revocation_propagation; returns whether any went
/// wrong. Notes in `written` what it wrote, as far as it got. Engines are
/// closed when it returns.
fn run_on_redis(url: &str, scenarios: &[Scenario], args: &Args, written: &mut Option<Written>) -> Result<bool, String> {
    let fx = Fixture::redis(Engine::builder(), url)
        .map_err(|e| format!("cannot open --store {}: {e}", redis_store::shown(url)))?;
    eprintln!("# redis: store {} (node A)", redis_store::shown(url));
    // Until the key sets are complete the count is unknown, and stays 0:
    // no count of keys then matches, so nothing is deleted.
    *written = Some(Written { workspaces: vec![fx.ws], keys: 0 });
    let sets = KeySets::build(&fx, scenarios, args.keys as usize, args.rate_limit, None, args.bulk, Some("redis"))?;
    let workspaces: Vec<_> = std::iter::once(fx.ws).chain(sets.local_ws).collect();
    let mut keys = (sets.valid.len() + sets.rate_limited.len() + sets.charged.len() + sets.charged_local.len()) as u64;
    *written = Some(Written { workspaces: workspaces.clone(), keys });
    let node_b = || Engine::builder().open_redis(url);
    let (failed, created) = run_scenarios(&fx, &sets, scenarios, args, Some("redis"), &node_b);
    keys += created;
    *written = Some(Written { workspaces, keys });
    Ok(failed)
}

/// After a --store run: deletes the keyward data in the Redis if all of it
/// is what this run wrote (it held none when the run began); otherwise
/// leaves it and says so.
fn clean_store(url: &str, written: Option<&Written>) {
    let shown = redis_store::shown(url);
    let keep = |why: &str| {
        eprintln!(
            "keyward-loadgen: left the keys matching {PATTERN} in {shown} in place: {why}. \
             --store-flush deletes them before the next run."
        );
    };
    let found = match redis_store::keyward_keys(url) {
        Ok(found) if found.is_empty() => return,
        Ok(found) => found,
        Err(e) => return keep(&e),
    };
    let Some(written) = written else { return keep("this run did not get to open the store") };
    match redis_store::foreign(url, written) {
        Ok(None) => match redis_store::remove(url, &found) {
            Ok(n) => eprintln!("# redis: deleted the {} matching {PATTERN} this run wrote", keys(n as usize)),
            Err(e) => keep(&e),
        },
        Ok(Some(why)) => keep(&format!("they hold more than this run wrote ({why}); another client used this Redis")),
        Err(e) => keep(&e),
    }
}

/// Authenticates the snapshots `op=snapshot_export` makes (none is kept).
const SNAPSHOT_KEY: &[u8] = b"keyward-loadgen snapshot key, not a secret";

/// The process's resident set size, in 10^6 bytes (Linux; `None` elsewhere).
fn rss_mb() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // x86-64 and aarch64 Linux as built by default: 4 KiB pages.
    Some(pages * 4096 / 1_000_000)
}

fn rss_field() -> String {
    rss_mb().map(|mb| format!(" rss_mb={mb}")).unwrap_or_default()
}

/// Closes the fixture's engine and opens it again over its file
/// (`op=open`), then exports a snapshot of every key (`op=snapshot_export`).
fn open_and_export(fx: Fixture) -> Result<Fixture, String> {
    let (fx, took) =
        fx.reopen(Engine::builder().snapshot_key(SNAPSHOT_KEY)).map_err(|e| format!("cannot open again: {e}"))?;
    let keys = fx.engine.key_count();
    println!("peer=keyward op=open keys={keys} secs={:.2}{}", took.as_secs_f64(), rss_field());
    let t0 = Instant::now();
    let snapshot = fx.engine.export_snapshot().map_err(|e| format!("cannot export a snapshot: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    println!("peer=keyward op=snapshot_export keys={keys} secs={secs:.2} bytes={}{}", snapshot.len(), rss_field());
    drop(snapshot);
    Ok(fx)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let chosen = |s: &Scenario| {
        if !args.op.is_empty() {
            args.op.contains(s)
        } else if args.store.is_some() {
            Scenario::STORE_DEFAULT.contains(s)
        } else {
            Scenario::DEFAULT.contains(s)
        }
    };
    let scenarios: Vec<Scenario> = Scenario::ALL.into_iter().filter(chosen).collect();
    if let (Some(_), Some(s)) = (&args.store, scenarios.iter().find(|s| s.over_http())) {
        eprintln!(
            "keyward-loadgen: --store runs the in-process scenarios only, not {} (it serves a redb file); \
             leave it out of --op",
            s.name()
        );
        return ExitCode::from(2);
    }
    // Before any set-up: a missing server binary should not cost a minute of key creation first.
    let bin = if scenarios.iter().any(|s| s.over_http()) {
        match keyward_bin(&args) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("keyward-loadgen: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    // So is a Redis that cannot be used.
    if let Some(url) = &args.store
        && let Err(e) = prepare_store(url, args.store_flush)
    {
        eprintln!("keyward-loadgen: {e}");
        return ExitCode::from(2);
    }
    let store = args.store.as_ref().map(|_| "redb");

    let mut failed = {
        let fx = match Fixture::with(Engine::builder().snapshot_key(SNAPSHOT_KEY), args.dir.as_deref()) {
            Ok(fx) => fx,
            Err(e) => {
                eprintln!("keyward-loadgen: cannot open a temporary database: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(dir) = fx.dir() {
            eprintln!("# {}database in {}", prefix(store), dir.display());
        }
        let sets = match KeySets::build(
            &fx,
            &scenarios,
            args.keys as usize,
            args.rate_limit,
            bin.as_deref(),
            args.bulk,
            store,
        ) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keyward-loadgen: {e}");
                return ExitCode::from(2);
            }
        };
        let fx = match open_and_export(fx) {
            Ok(fx) => fx,
            Err(e) => {
                eprintln!("keyward-loadgen: {e}");
                return ExitCode::from(2);
            }
        };
        // On redb node B is node A: a redb file admits one engine.
        let node_b = || Ok(fx.engine.clone());
        run_scenarios(&fx, &sets, &scenarios, &args, store, &node_b).0
    };

    if let Some(url) = &args.store {
        let mut written = None;
        let outcome = run_on_redis(url, &scenarios, &args, &mut written);
        clean_store(url, written.as_ref());
        match outcome {
            Ok(f) => failed |= f,
            Err(e) => {
                eprintln!("keyward-loadgen: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if failed {
        eprintln!("keyward-loadgen: some calls failed or got verdicts the scenario does not expect (see # lines)");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
