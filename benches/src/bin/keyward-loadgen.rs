//! keyward-loadgen: drives verifications at full speed for a fixed time and
//! prints throughput and latency percentiles, one line per scenario and
//! thread count:
//!
//! ```text
//! peer=keyward op=verify_valid keys=10000 threads=1 ops_per_s=2012345 p50_us=0.431 p99_us=0.902
//! ```
//!
//! Only those lines go to stdout; progress and per-run tallies (refusals,
//! unexpected verdicts) go to stderr as lines starting with `#`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use keyward::{Engine, Request};
use keyward_benches::{Fixture, plain_key, rate_limited_key, unknown_token};
use keyward_core::Code;

/// Load generator for keyward: verification throughput and latency.
///
/// Creates --keys keys in a temporary database, then runs each scenario for
/// --seconds with each thread count, every thread calling as fast as it can
/// with a key drawn uniformly at random from its key set. Prints one line per
/// run on stdout:
///
/// peer=keyward op=<op> keys=<N> threads=<T> ops_per_s=<n> p50_us=<n> p99_us=<n>
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

    /// Thread counts, comma-separated; every scenario runs once with each.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2],
          value_parser = clap::value_parser!(u32).range(1..=1_024))]
    threads: Vec<u32>,

    /// Scenarios to run, comma-separated. By default, all of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    op: Vec<Scenario>,

    /// Rate limit of the keys of verify_valid_ratelimited, in calls per second
    /// per key (GCRA, burst of the same size). Uniform load of 0.5-1 million
    /// calls per second over 10,000 keys offers each key 50-100 calls per
    /// second, so the default of 20/s refuses about half of the calls with one
    /// thread and more with two; the refused share is printed on stderr.
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
}

/// What is measured. Each scenario names its operation, its key set and the
/// verdicts it expects.
///
/// Planned: `http_verify_valid`, `POST /v1/verify` of a `keyward serve` on
/// loopback. It becomes one more variant here whose `driver` returns an HTTP
/// client implementing [`Driver`]; key sets, histograms and output are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
// The variants spell the `op=` names; `http_verify_valid` will end the shared prefix.
#[allow(clippy::enum_variant_names)]
enum Scenario {
    /// Engine::verify of valid keys without limits.
    VerifyValid,
    /// Engine::verify of well-formed tokens that are not in the database.
    VerifyInvalid,
    /// Engine::verify of valid keys that carry a rate limit (--rate-limit).
    VerifyValidRatelimited,
}

impl Scenario {
    const ALL: [Scenario; 3] = [Scenario::VerifyValid, Scenario::VerifyInvalid, Scenario::VerifyValidRatelimited];

    fn name(self) -> &'static str {
        match self {
            Scenario::VerifyValid => "verify_valid",
            Scenario::VerifyInvalid => "verify_invalid",
            Scenario::VerifyValidRatelimited => "verify_valid_ratelimited",
        }
    }

    fn key_set(self) -> KeySet {
        match self {
            Scenario::VerifyValid => KeySet::Valid,
            Scenario::VerifyInvalid => KeySet::Unknown,
            Scenario::VerifyValidRatelimited => KeySet::RateLimited,
        }
    }

    /// How a verdict counts: `Some(true)` passed, `Some(false)` refused as
    /// the scenario intends, `None` unexpected (a bug in the engine or here).
    fn classify(self, code: Code) -> Option<bool> {
        match (self, code) {
            (Scenario::VerifyValid | Scenario::VerifyValidRatelimited, Code::Valid) => Some(true),
            (Scenario::VerifyValidRatelimited, Code::RateLimited) => Some(false),
            (Scenario::VerifyInvalid, Code::NotFound) => Some(false),
            _ => None,
        }
    }

    /// A driver for one thread. Every scenario so far calls the engine in
    /// this process; `http_verify_valid` will return its HTTP client here.
    fn driver(self, engine: &Engine) -> impl Driver + '_ {
        InProcess { engine, req: Request::default() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeySet {
    Valid,
    Unknown,
    RateLimited,
}

/// One thread's way of putting a call to the system under test.
trait Driver {
    /// Verifies `token` and returns the verdict's code.
    fn verify(&mut self, token: &str) -> Code;
}

/// Calls the engine in this process.
struct InProcess<'a> {
    engine: &'a Engine,
    req: Request<'a>,
}

impl Driver for InProcess<'_> {
    fn verify(&mut self, token: &str) -> Code {
        self.engine.verify(token, &self.req).code
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
    elapsed: Duration,
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant digits; `saturating_record` clamps outliers.
    // Invariant: constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn run_thread(
    scenario: Scenario,
    engine: &Engine,
    tokens: &[String],
    seed: u64,
    batch: u32,
    duration: Duration,
    start: &Barrier,
) -> Tally {
    let mut driver = scenario.driver(engine);
    let mut pick = Pick(seed | 1);
    let mut t =
        Tally { hist: new_histogram(), calls: 0, passed: 0, refused: 0, unexpected: 0, elapsed: Duration::ZERO };
    // Each call's token is copied into a reused buffer before the clock
    // starts: a server has the token in its request buffer, hot in cache,
    // while reading one of N separately allocated strings at random would add
    // a cache miss that belongs to this program, not to the engine.
    let mut bufs: Vec<String> = (0..batch).map(|_| String::with_capacity(64)).collect();
    start.wait();
    let begin = Instant::now();
    let deadline = begin + duration;
    loop {
        for buf in &mut bufs {
            buf.clear();
            buf.push_str(&tokens[pick.below(tokens.len())]);
        }
        let t0 = Instant::now();
        for buf in &bufs {
            match scenario.classify(driver.verify(buf)) {
                Some(true) => t.passed += 1,
                Some(false) => t.refused += 1,
                None => t.unexpected += 1,
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

/// Runs one scenario with `threads` threads and merges what they measured.
fn run(scenario: Scenario, engine: &Engine, tokens: &[String], threads: u32, args: &Args) -> Tally {
    let duration = Duration::from_secs(args.seconds);
    let start = Barrier::new(threads as usize);
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(u64::from(i) + 1);
                let start = &start;
                s.spawn(move || run_thread(scenario, engine, tokens, seed, args.batch, duration, start))
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut all =
        Tally { hist: new_histogram(), calls: 0, passed: 0, refused: 0, unexpected: 0, elapsed: Duration::ZERO };
    for t in tallies {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = all.hist.add(&t.hist);
        all.calls += t.calls;
        all.passed += t.passed;
        all.refused += t.refused;
        all.unexpected += t.unexpected;
        all.elapsed = all.elapsed.max(t.elapsed);
    }
    all
}

fn micros(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1_000.0)
}

/// Key sets, created only when a selected scenario needs them.
struct KeySets {
    valid: Vec<String>,
    unknown: Vec<String>,
    rate_limited: Vec<String>,
}

impl KeySets {
    fn build(fx: &Fixture, scenarios: &[Scenario], n: usize, rate_limit: u64) -> keyward::Result<Self> {
        let needs = |set: KeySet| scenarios.iter().any(|s| s.key_set() == set);
        let timed = |what: &str, f: &dyn Fn() -> keyward::Result<Vec<String>>| {
            let t0 = Instant::now();
            let out = f()?;
            eprintln!("# created {n} {what} in {:.1} s", t0.elapsed().as_secs_f64());
            Ok::<_, keyward::Error>(out)
        };
        let valid = if needs(KeySet::Valid) {
            timed("valid keys", &|| fx.tokens(n, |i| plain_key(format!("load-{i}"))))?
        } else {
            Vec::new()
        };
        let rate_limited = if needs(KeySet::RateLimited) {
            timed("rate-limited keys", &|| {
                fx.tokens(n, |i| rate_limited_key(format!("limited-{i}"), rate_limit, 1_000))
            })?
        } else {
            Vec::new()
        };
        let unknown = if needs(KeySet::Unknown) { (0..n).map(|_| unknown_token()).collect() } else { Vec::new() };
        Ok(Self { valid, unknown, rate_limited })
    }

    fn get(&self, set: KeySet) -> &[String] {
        match set {
            KeySet::Valid => &self.valid,
            KeySet::Unknown => &self.unknown,
            KeySet::RateLimited => &self.rate_limited,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scenarios: Vec<Scenario> =
        Scenario::ALL.into_iter().filter(|s| args.op.is_empty() || args.op.contains(s)).collect();
    let fx = match Fixture::with(Engine::builder(), args.dir.as_deref()) {
        Ok(fx) => fx,
        Err(e) => {
            eprintln!("keyward-loadgen: cannot open a temporary database: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("# database in {}", fx.dir().display());
    let sets = match KeySets::build(&fx, &scenarios, args.keys as usize, args.rate_limit) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyward-loadgen: cannot create keys: {e}");
            return ExitCode::from(2);
        }
    };

    let mut failed = false;
    for &scenario in &scenarios {
        let tokens = sets.get(scenario.key_set());
        for &threads in &args.threads {
            let t = run(scenario, &fx.engine, tokens, threads, &args);
            let secs = t.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
            println!(
                "peer=keyward op={} keys={} threads={} ops_per_s={:.0} p50_us={} p99_us={}",
                scenario.name(),
                args.keys,
                threads,
                t.calls as f64 / secs,
                micros(t.hist.value_at_quantile(0.50)),
                micros(t.hist.value_at_quantile(0.99)),
            );
            let share = |n: u64| 100.0 * n as f64 / t.calls.max(1) as f64;
            eprintln!(
                "# op={} threads={}: {} calls in {:.2} s, passed {:.1}%, refused {:.1}%, unexpected {}",
                scenario.name(),
                threads,
                t.calls,
                secs,
                share(t.passed),
                share(t.refused),
                t.unexpected,
            );
            failed |= t.unexpected > 0;
        }
    }
    if failed {
        eprintln!("keyward-loadgen: some verdicts were not the ones the scenario expects");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
