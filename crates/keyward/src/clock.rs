//! Where the engine gets the time. Injected so tests drive expiry, daily
//! rollover, refill and grace periods without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use keyward_core::UnixMillis;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix milliseconds (UTC).
    fn now(&self) -> UnixMillis;
}

/// The operating system's clock, read on every call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(system_nanos() / NANOS_PER_MS)
    }
}

const NANOS_PER_MS: u64 = 1_000_000;

/// How long [`CounterClock`] runs on the counter before it reads the
/// operating system's clock again.
const ANCHOR_EVERY_NS: u64 = 1_000_000_000;

/// A read of the system clock is taken as an anchor only if the counter
/// moved less than this around it (the thread was not preempted meanwhile).
const ANCHOR_WINDOW_NS: u64 = 100_000;

/// Unix time in nanoseconds; a clock before 1970 reads as the epoch rather
/// than panicking.
fn system_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos())))
}

/// The system clock, read through the CPU's time-stamp counter (via
/// `quanta`) and re-anchored to the operating system's clock every second.
/// The engine's default.
///
/// Reading the OS clock costs more than a fast verification's own decisions
/// on some machines (about 28 ns in a VM, against 10 ns for the counter),
/// and verification reads the time on every call. Between anchors the time
/// advances with the counter, whose frequency the OS calibrates: it stays
/// within a millisecond of [`SystemClock`], and follows any change to the
/// system time (an NTP step, say) within a second. Where the CPU has no
/// reliable counter, `quanta` falls back to the OS monotonic clock.
#[derive(Debug)]
pub struct CounterClock {
    counter: quanta::Clock,
    /// The counter's reading that counts as zero.
    origin: u64,
    /// Unix time in nanoseconds minus the counter's nanoseconds since `origin`.
    offset_ns: AtomicI64,
    /// Counter nanoseconds after which the next read anchors again.
    next_anchor_ns: AtomicU64,
    /// Nanoseconds between anchors.
    every_ns: u64,
}

impl CounterClock {
    /// A clock anchored now. The first one in a process calibrates the
    /// counter (under a millisecond).
    pub fn new() -> Self {
        Self::anchored_every(ANCHOR_EVERY_NS)
    }

    fn anchored_every(every_ns: u64) -> Self {
        let counter = quanta::Clock::new();
        let origin = counter.raw();
        let clock = Self { counter, origin, offset_ns: AtomicI64::new(0), next_anchor_ns: AtomicU64::new(0), every_ns };
        clock.anchor();
        clock
    }

    /// Counter nanoseconds since `origin`.
    fn elapsed_ns(&self) -> u64 {
        self.counter.delta_as_nanos(self.origin, self.counter.raw())
    }

    /// Reads the system clock between two counter reads and keeps the
    /// offset of the tightest of a few tries. Concurrent anchors are
    /// harmless: each stores a valid offset.
    fn anchor(&self) {
        let mut best: Option<(u64, i64, u64)> = None;
        for _ in 0..4 {
            let before = self.elapsed_ns();
            let wall = system_nanos();
            let after = self.elapsed_ns();
            let spread = after.saturating_sub(before);
            let mid = before + spread / 2;
            let offset = i64::try_from(i128::from(wall) - i128::from(mid)).unwrap_or(0);
            if best.is_none_or(|(s, _, _)| spread < s) {
                best = Some((spread, offset, after));
            }
            if spread < ANCHOR_WINDOW_NS {
                break;
            }
        }
        if let Some((_, offset, at)) = best {
            self.offset_ns.store(offset, Ordering::Relaxed);
            self.next_anchor_ns.store(at.saturating_add(self.every_ns), Ordering::Relaxed);
        }
    }
}

impl Default for CounterClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for CounterClock {
    fn now(&self) -> UnixMillis {
        let mut elapsed = self.elapsed_ns();
        if elapsed >= self.next_anchor_ns.load(Ordering::Relaxed) {
            self.anchor();
            elapsed = self.elapsed_ns();
        }
        let ns = i128::from(elapsed) + i128::from(self.offset_ns.load(Ordering::Relaxed));
        UnixMillis(u64::try_from(ns).unwrap_or(0) / NANOS_PER_MS)
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: UnixMillis) -> Self {
        Self(Arc::new(AtomicU64::new(start.get())))
    }

    /// Sets the time.
    pub fn set(&self, t: UnixMillis) {
        self.0.store(t.get(), Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix milliseconds from std, truncated.
    fn std_ms() -> u64 {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        d.as_secs() * 1000 + u64::from(d.subsec_millis())
    }

    /// `now` between two reads of std's clock, give or take `slack_ms`.
    fn agrees_with_std(clock: &dyn Clock, slack_ms: u64) {
        for _ in 0..10_000 {
            let before = std_ms();
            let now = clock.now().get();
            let after = std_ms();
            assert!(before.saturating_sub(slack_ms) <= now && now <= after + slack_ms, "{before} <= {now} <= {after}");
        }
    }

    #[test]
    fn system_clock_reads_the_os_clock() {
        agrees_with_std(&SystemClock, 0);
    }

    /// Within a millisecond of the OS clock, whether it runs on the counter
    /// or anchors on every read.
    #[test]
    fn counter_clock_stays_within_a_millisecond() {
        agrees_with_std(&CounterClock::new(), 1);
        agrees_with_std(&CounterClock::anchored_every(0), 1);
    }

    /// An anchor far from the truth (as after a step of the system time) is
    /// corrected at the next anchor.
    #[test]
    fn counter_clock_follows_a_changed_system_time() {
        let clock = CounterClock::anchored_every(0);
        clock.offset_ns.store(-3_600_000_000_000, Ordering::Relaxed);
        clock.next_anchor_ns.store(u64::MAX, Ordering::Relaxed);
        assert!(clock.now().get() + 3_599_000 < std_ms(), "runs on the stale anchor until the next one");
        clock.next_anchor_ns.store(0, Ordering::Relaxed);
        agrees_with_std(&clock, 1);
    }
}
