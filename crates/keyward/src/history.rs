//! Usage history: how many verifications of each key ended with each code,
//! per minute, hour and day.
//!
//! Verification counts in memory, per key (so a rotated key and its
//! successor keep their own history and last use, though they share
//! counters): a valid call is one compare-and-swap on a packed (minute,
//! count) word, a refused one a push under the key's history lock (a leaf).
//! The flusher takes the counts with the counters and the store adds each
//! minute's counts to that minute's, hour's and day's bucket, for the key and
//! for its workspace — so nothing is written on the hot path, and a crash
//! loses at most the calls of one flush interval, as for the counters.
//!
//! Buckets are kept [`Granularity::retention_ms`]: minutes 48 hours, hours
//! 30 days, days 400 days. Older ones are removed when a key's history is
//! next written (and with the key), so a key holds at most 2,880 + 720 + 400
//! buckets of each code it saw.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use keyward_core::{Code, UnixMillis};

use crate::writer::LeafGuard;

const MINUTE_MS: u64 = 60_000;

/// The width of a history bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Granularity {
    /// One minute; kept 48 hours.
    Minute,
    /// One hour; kept 30 days.
    Hour,
    /// One day (UTC); kept 400 days.
    Day,
}

impl Granularity {
    /// Every granularity, finest first.
    pub const ALL: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

    /// A bucket's width in milliseconds.
    pub const fn ms(self) -> u64 {
        match self {
            Granularity::Minute => MINUTE_MS,
            Granularity::Hour => 60 * MINUTE_MS,
            Granularity::Day => 24 * 60 * MINUTE_MS,
        }
    }

    /// How long buckets of this width are kept.
    pub const fn retention_ms(self) -> u64 {
        match self {
            Granularity::Minute => 48 * Granularity::Hour.ms(),
            Granularity::Hour => 30 * Granularity::Day.ms(),
            Granularity::Day => 400 * Granularity::Day.ms(),
        }
    }

    /// `minute`, `hour` or `day`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// The granularity named `text` (`minute`, `hour`, `day`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }

    /// The start of the bucket holding `t`.
    pub const fn start_of(self, t: u64) -> u64 {
        t - t % self.ms()
    }

    /// The range a history is shown over when none is asked for: up to
    /// now (included), from the start of the bucket an hour of minutes, a
    /// day of hours or 30 days of days earlier.
    pub const fn default_range(self, now: UnixMillis) -> (UnixMillis, UnixMillis) {
        let span = match self {
            Granularity::Minute => Granularity::Hour.ms(),
            Granularity::Hour => Granularity::Day.ms(),
            Granularity::Day => 30 * Granularity::Day.ms(),
        };
        let to = now.get().saturating_add(1);
        (UnixMillis(self.start_of(to.saturating_sub(span))), UnixMillis(to))
    }

    /// Its number in stored bucket keys.
    pub(crate) const fn tag(self) -> u8 {
        match self {
            Granularity::Minute => 0,
            Granularity::Hour => 1,
            Granularity::Day => 2,
        }
    }
}

/// One bucket of a history: the calls that started in it, by code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryBucket {
    /// The bucket's start.
    pub start: UnixMillis,
    /// Calls by verdict code, in [`Code::ALL`] order; codes never seen are left out.
    pub counts: Vec<(Code, u64)>,
}

/// Calls counted since a flush: (minute start, code, calls).
pub(crate) type Counted = Vec<(u64, Code, u64)>;

/// Calls of one subject (a key or a workspace) to add to its history: per
/// minute (its start), per code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HistoryDelta {
    /// A key id or a workspace id.
    pub subject: [u8; 16],
    /// (minute start, code, calls).
    pub counts: Vec<(u64, Code, u64)>,
    /// The flush's time: buckets older than their retention before it go.
    pub now: UnixMillis,
}

/// Adds `(start, code, n)` into `buckets`, kept sorted by start and code.
pub(crate) fn add(buckets: &mut Vec<HistoryBucket>, start: u64, code: Code, n: u64) {
    let at = match buckets.binary_search_by_key(&start, |b| b.start.get()) {
        Ok(i) => i,
        Err(i) => {
            buckets.insert(i, HistoryBucket { start: UnixMillis(start), counts: Vec::new() });
            i
        }
    };
    if let Some(b) = buckets.get_mut(at) {
        add_count(&mut b.counts, code, n);
    }
}

/// Adds `n` calls of `code` to `counts` (in [`Code::ALL`] order).
pub(crate) fn add_count(counts: &mut Vec<(Code, u64)>, code: Code, n: u64) {
    let rank = |c: Code| Code::ALL.iter().position(|x| *x == c).unwrap_or(usize::MAX);
    match counts.binary_search_by_key(&rank(code), |(c, _)| rank(*c)) {
        Ok(i) => {
            if let Some((_, count)) = counts.get_mut(i) {
                *count = count.saturating_add(n);
            }
        }
        Err(i) => counts.insert(i, (code, n)),
    }
}

/// One key's activity since the last flush, and its last valid call.
#[derive(Default)]
pub(crate) struct Activity {
    /// Last valid call of this key's own token, Unix ms; 0: never.
    pub last_used: AtomicU64,
    /// Valid calls in the current minute: minute number (since the epoch)
    /// in the high 32 bits, calls in the low 32.
    valid: AtomicU64,
    /// Everything else since the last flush: (minute number, code, calls).
    /// A leaf lock.
    other: Mutex<Vec<(u32, Code, u32)>>,
    /// Whether anything was counted since the last flush.
    pub dirty: AtomicBool,
}

impl Activity {
    /// An activity whose last valid call was at `last_used` (0: never).
    #[cfg(test)]
    pub(crate) fn new(last_used: u64) -> Self {
        Self { last_used: AtomicU64::new(last_used), ..Self::default() }
    }

    /// Counts one call at `now` that ended with `code`.
    pub(crate) fn record(&self, now: UnixMillis, code: Code) {
        let minute = u32::try_from(now.get() / MINUTE_MS).unwrap_or(u32::MAX);
        if code == Code::Valid {
            if self.last_used.load(Ordering::Relaxed) < now.get() {
                self.last_used.fetch_max(now.get(), Ordering::AcqRel);
            }
            let mut seen = self.valid.load(Ordering::Relaxed);
            loop {
                let (at, calls) = unpack(seen);
                let next = if at == minute && calls < u32::MAX { seen + 1 } else { pack(minute, 1) };
                match self.valid.compare_exchange_weak(seen, next, Ordering::AcqRel, Ordering::Relaxed) {
                    Ok(_) => {
                        if next == pack(minute, 1) && calls > 0 {
                            // A new minute (or a full count): the old one
                            // waits for the flush with the refusals.
                            self.push(at, Code::Valid, calls);
                        }
                        break;
                    }
                    Err(now_seen) => seen = now_seen,
                }
            }
        } else {
            self.push(minute, code, 1);
        }
        if !self.dirty.load(Ordering::Relaxed) {
            // Sequentially consistent with the flush queue's flag.
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    fn push(&self, minute: u32, code: Code, calls: u32) {
        let mut other = LeafGuard::lock(&self.other);
        match other.iter_mut().find(|(m, c, n)| *m == minute && *c == code && *n < u32::MAX - calls) {
            Some((_, _, n)) => *n += calls,
            None => other.push((minute, code, calls)),
        }
    }

    /// Takes what was counted: (minute start, code, calls).
    pub(crate) fn take(&self) -> Counted {
        let (minute, calls) = unpack(self.valid.swap(0, Ordering::AcqRel));
        let mut taken: Counted = std::mem::take(&mut *LeafGuard::lock(&self.other)).into_iter().map(expand).collect();
        if calls > 0 {
            taken.push(expand((minute, Code::Valid, calls)));
        }
        taken
    }

    /// Puts back what a failed flush took.
    pub(crate) fn restore(&self, taken: &[(u64, Code, u64)]) {
        let mut other = LeafGuard::lock(&self.other);
        for &(start, code, calls) in taken {
            let minute = u32::try_from(start / MINUTE_MS).unwrap_or(u32::MAX);
            other.push((minute, code, u32::try_from(calls).unwrap_or(u32::MAX)));
        }
        self.dirty.store(true, Ordering::SeqCst);
    }
}

const fn pack(minute: u32, calls: u32) -> u64 {
    ((minute as u64) << 32) | calls as u64
}

const fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

fn expand((minute, code, calls): (u32, Code, u32)) -> (u64, Code, u64) {
    (u64::from(minute) * MINUTE_MS, code, u64::from(calls))
}

/// Sums one flush's calls by subject: each key's own, and its workspace's
/// (every key's calls added).
pub(crate) fn merge_into(
    deltas: &mut HashMap<[u8; 16], HistoryDelta>,
    subject: [u8; 16],
    counts: &[(u64, Code, u64)],
    now: UnixMillis,
) {
    let delta = deltas.entry(subject).or_insert_with(|| HistoryDelta { subject, counts: Vec::new(), now });
    for &(start, code, n) in counts {
        match delta.counts.iter_mut().find(|(s, c, _)| *s == start && *c == code) {
            Some((_, _, total)) => *total = total.saturating_add(n),
            None => delta.counts.push((start, code, n)),
        }
    }
}

impl crate::Engine {
    /// A key's usage history: its own token's calls by verdict code, in
    /// buckets of `granularity` starting in `from..to`, oldest first;
    /// buckets without calls are left out. Calls reach the history when
    /// the counters are written behind (at most one flush interval later).
    pub fn key_history(
        &self,
        id: keyward_core::KeyId,
        granularity: Granularity,
        from: UnixMillis,
        to: UnixMillis,
    ) -> crate::Result<Vec<HistoryBucket>> {
        self.inner.key(id)?;
        self.history_of(id.0, granularity, from, to)
    }

    /// A workspace's usage history: the calls of all its keys (deleted
    /// ones included), as [`Engine::key_history`](crate::Engine::key_history).
    pub fn workspace_history(
        &self,
        ws: keyward_core::WorkspaceId,
        granularity: Granularity,
        from: UnixMillis,
        to: UnixMillis,
    ) -> crate::Result<Vec<HistoryBucket>> {
        self.inner.workspace(ws)?;
        self.history_of(ws.0, granularity, from, to)
    }

    fn history_of(
        &self,
        subject: [u8; 16],
        g: Granularity,
        from: UnixMillis,
        to: UnixMillis,
    ) -> crate::Result<Vec<HistoryBucket>> {
        if from >= to {
            return Err(crate::Error::invalid("from", "must be before to"));
        }
        if to.get() - from.get() > g.retention_ms() {
            let kept = match g {
                Granularity::Minute => "48 hours",
                Granularity::Hour => "30 days",
                Granularity::Day => "400 days",
            };
            return Err(crate::Error::invalid(
                "from",
                format!("{} buckets are kept {kept}: ask for at most that span", g.as_str()),
            ));
        }
        self.inner.writer.store().history(subject, g, from.get(), to.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_minute_and_code_and_takes_them_once() {
        let a = Activity::new(0);
        let t = 1_709_287_200_000; // 10:00:00
        for dt in [0, 1, 59_999] {
            a.record(UnixMillis(t + dt), Code::Valid);
        }
        a.record(UnixMillis(t + 60_000), Code::Valid);
        a.record(UnixMillis(t + 60_001), Code::RateLimited);
        a.record(UnixMillis(t + 60_002), Code::RateLimited);
        a.record(UnixMillis(t + 120_000), Code::Expired);
        assert_eq!(a.last_used.load(Ordering::Relaxed), t + 60_000);
        let mut taken = a.take();
        taken.sort_by_key(|(s, c, _)| (*s, *c as u8));
        assert_eq!(
            taken,
            [
                (t, Code::Valid, 3),
                (t + 60_000, Code::Valid, 1),
                (t + 60_000, Code::RateLimited, 2),
                (t + 120_000, Code::Expired, 1)
            ]
        );
        assert_eq!(a.take(), []);
        a.restore(&[(t, Code::Valid, 3)]);
        assert_eq!(a.take(), [(t, Code::Valid, 3)]);
    }

    #[test]
    fn buckets_stay_sorted_by_start_and_code() {
        let mut b = Vec::new();
        add(&mut b, 120, Code::RateLimited, 1);
        add(&mut b, 60, Code::Valid, 2);
        add(&mut b, 120, Code::Valid, 5);
        add(&mut b, 120, Code::RateLimited, 1);
        assert_eq!(
            b,
            [
                HistoryBucket { start: UnixMillis(60), counts: vec![(Code::Valid, 2)] },
                HistoryBucket { start: UnixMillis(120), counts: vec![(Code::Valid, 5), (Code::RateLimited, 2)] },
            ]
        );
        assert_eq!(Granularity::Hour.start_of(7_199_999), 3_600_000);
        assert_eq!(Granularity::parse("day"), Some(Granularity::Day));
        assert_eq!(Granularity::parse("week"), None);
        let now = UnixMillis(1_709_287_230_000); // 10:00:30
        assert_eq!(Granularity::Minute.default_range(now), (UnixMillis(1_709_283_600_000), UnixMillis(now.get() + 1)));
        assert_eq!(Granularity::Day.default_range(now).0, UnixMillis(1_706_659_200_000));
    }
}
