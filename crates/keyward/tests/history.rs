//! Usage history: calls by verdict code per minute, hour and day, written
//! behind with the counters, pruned past each granularity's retention.

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use std::time::Duration;

use common::{Env, T0};
use keyward::{Actor, Engine, Error, Granularity, HistoryBucket, ManualClock, NewKey, NewWorkspace, Request};
use keyward_core::limits::RateLimit;
use keyward_core::{Code, Limits, UnixMillis};

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

fn bucket(start: u64, counts: &[(Code, u64)]) -> HistoryBucket {
    HistoryBucket { start: UnixMillis(start), counts: counts.to_vec() }
}

/// A key allowing 2 calls a minute.
fn limited(env: &Env, name: &str) -> keyward::CreatedKey {
    let limits = Limits {
        rates: vec![RateLimit { name: "default".into(), limit: 2, window_ms: MIN, auto_apply: true }],
        ..Limits::default()
    };
    env.key_with(NewKey { name: name.into(), limits: Some(limits), ..NewKey::default() })
}

fn calls(e: &Engine, token: &str, n: usize) {
    for _ in 0..n {
        e.verify(token, &Request::default());
    }
}

#[test]
fn calls_are_counted_by_code_in_minute_hour_and_day_buckets() {
    let env = Env::new();
    let k = limited(&env, "k");
    let other = env.key("other");
    // 10:00: 2 valid, 3 rate limited; 10:01: 1 valid; 11:30: 2 valid.
    calls(&env.engine, k.token.expose(), 5);
    env.clock.advance(MIN);
    calls(&env.engine, k.token.expose(), 1);
    env.clock.advance(89 * MIN);
    calls(&env.engine, k.token.expose(), 2);
    calls(&env.engine, other.token.expose(), 1);
    env.engine.flush().unwrap();

    let t = T0.get();
    let (from, to) = (UnixMillis(t - HOUR), UnixMillis(t + 2 * HOUR));
    let minutes = env.engine.key_history(k.info.id, Granularity::Minute, from, to).unwrap();
    assert_eq!(
        minutes,
        [
            bucket(t, &[(Code::Valid, 2), (Code::RateLimited, 3)]),
            bucket(t + MIN, &[(Code::Valid, 1)]),
            bucket(t + 90 * MIN, &[(Code::Valid, 2)]),
        ]
    );
    let hours = env.engine.key_history(k.info.id, Granularity::Hour, from, to).unwrap();
    assert_eq!(hours, [bucket(t, &[(Code::Valid, 3), (Code::RateLimited, 3)]), bucket(t + HOUR, &[(Code::Valid, 2)])]);
    let day_start = t - t % DAY;
    let days = env.engine.key_history(k.info.id, Granularity::Day, UnixMillis(day_start), UnixMillis(day_start + DAY));
    assert_eq!(days.unwrap(), [bucket(day_start, &[(Code::Valid, 5), (Code::RateLimited, 3)])]);
    // The workspace sums its keys (the other key's call too).
    let ws = env.engine.workspace_history(env.ws, Granularity::Hour, from, to).unwrap();
    assert_eq!(ws, [bucket(t, &[(Code::Valid, 3), (Code::RateLimited, 3)]), bucket(t + HOUR, &[(Code::Valid, 3)])]);
    // A range starting mid-bucket leaves that bucket out; `to` is exclusive.
    let part = env.engine.key_history(k.info.id, Granularity::Minute, UnixMillis(t + 1), UnixMillis(t + 90 * MIN));
    assert_eq!(part.unwrap(), [bucket(t + MIN, &[(Code::Valid, 1)])]);

    // Written once: a second flush adds nothing; more calls add to the bucket.
    env.engine.flush().unwrap();
    calls(&env.engine, k.token.expose(), 1);
    env.engine.flush().unwrap();
    let env = env.reopen();
    let hours = env.engine.key_history(k.info.id, Granularity::Hour, from, to).unwrap();
    assert_eq!(
        hours,
        [
            bucket(t, &[(Code::Valid, 3), (Code::RateLimited, 3)]),
            bucket(t + HOUR, &[(Code::Valid, 2), (Code::RateLimited, 1)])
        ]
    );
}

#[test]
fn old_buckets_are_pruned_and_a_deleted_key_s_history_goes_with_it() {
    let env = Env::new();
    let k = env.key("k");
    let t = T0.get();
    calls(&env.engine, k.token.expose(), 1);
    env.engine.flush().unwrap();
    // 48 hours and a minute later, a call: the first minute is past its
    // retention, its hour and day are not.
    env.clock.advance(48 * HOUR + MIN);
    calls(&env.engine, k.token.expose(), 1);
    env.engine.flush().unwrap();
    let now = t + 48 * HOUR + MIN;
    let minutes = |from: u64, to: u64| {
        env.engine.key_history(k.info.id, Granularity::Minute, UnixMillis(from), UnixMillis(to)).unwrap()
    };
    assert_eq!(minutes(t, t + 48 * HOUR), []);
    assert_eq!(minutes(now - HOUR, now + MIN), [bucket(now, &[(Code::Valid, 1)])]);
    let hours = env.engine.key_history(k.info.id, Granularity::Hour, UnixMillis(t), UnixMillis(now + 1));
    assert_eq!(hours.unwrap(), [bucket(t, &[(Code::Valid, 1)]), bucket(t + 48 * HOUR, &[(Code::Valid, 1)])]);

    env.engine.delete_key(k.info.id, &Actor::Admin).unwrap();
    assert!(matches!(
        env.engine.key_history(k.info.id, Granularity::Hour, UnixMillis(t), UnixMillis(now)),
        Err(Error::NotFound { .. })
    ));
    // The workspace keeps the calls its deleted keys made.
    let ws =
        env.engine.workspace_history(env.ws, Granularity::Day, UnixMillis(t - t % DAY), UnixMillis(now + 1)).unwrap();
    assert_eq!(
        ws.iter().map(|b| b.counts.clone()).collect::<Vec<_>>(),
        [vec![(Code::Valid, 1)], vec![(Code::Valid, 1)]]
    );
}

#[test]
fn bad_ranges_name_the_field() {
    let env = Env::new();
    let k = env.key("k");
    let t = T0;
    let invalid = |g, from: u64, to: u64| match env.engine.key_history(k.info.id, g, UnixMillis(from), UnixMillis(to)) {
        Err(Error::Invalid { field, message }) => (field, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(invalid(Granularity::Minute, t.get(), t.get()), ("from", "must be before to".into()));
    assert_eq!(
        invalid(Granularity::Minute, t.get() - 48 * HOUR - 1, t.get()),
        ("from", "minute buckets are kept 48 hours: ask for at most that span".into())
    );
    assert_eq!(
        invalid(Granularity::Hour, t.get() - 31 * DAY, t.get()),
        ("from", "hour buckets are kept 30 days: ask for at most that span".into())
    );
    assert!(env.engine.key_history(k.info.id, Granularity::Day, UnixMillis(t.get() - 400 * DAY), t).is_ok());
}

#[test]
fn a_rotated_key_and_its_successor_keep_their_own_last_use_and_history() {
    let env = Env::new();
    let old = env.key("k");
    calls(&env.engine, old.token.expose(), 1);
    env.clock.advance(1_000);
    let new = env.engine.rotate_key(old.info.id, 60_000, &Actor::Admin).unwrap();
    env.clock.advance(1_000);
    calls(&env.engine, new.token.expose(), 2);
    env.engine.flush().unwrap();
    assert_eq!(env.engine.key(old.info.id).unwrap().last_used_at, Some(T0));
    assert_eq!(env.engine.key(new.info.id).unwrap().last_used_at, Some(T0.plus(2_000)));
    let range = (UnixMillis(T0.get() - MIN), T0.plus(MIN));
    let of = |id| env.engine.key_history(id, Granularity::Minute, range.0, range.1).unwrap();
    assert_eq!(of(old.info.id), [bucket(T0.get(), &[(Code::Valid, 1)])]);
    assert_eq!(of(new.info.id), [bucket(T0.get(), &[(Code::Valid, 2)])]);
    // Both survive a reopen.
    let env = env.reopen();
    assert_eq!(env.engine.key(old.info.id).unwrap().last_used_at, Some(T0));
    assert_eq!(env.engine.key(new.info.id).unwrap().last_used_at, Some(T0.plus(2_000)));
}

#[test]
fn nodes_sharing_redis_add_their_calls_to_one_history() {
    let Some(redis) = redis_server::Redis::start() else { return };
    let clock = ManualClock::new(T0);
    let open = || {
        Engine::builder()
            .clock(clock.clone())
            .master_key(common::MASTER)
            .flush_interval(Duration::from_secs(3600))
            .open_redis(&redis.url())
            .unwrap()
    };
    let (a, b) = (open(), open());
    let ws = a.create_workspace(NewWorkspace::named("acme"), &Actor::Admin).unwrap().policy.id;
    let k = a.create_key(ws, NewKey { name: "k".into(), ..NewKey::default() }, &Actor::Admin).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.verify(k.token.expose(), &Request::default()).code != Code::Valid {
        assert!(std::time::Instant::now() < deadline, "b never saw the key");
        std::thread::sleep(Duration::from_millis(5));
    }
    // b's wait above made one valid call; two more on a, one more on b later.
    calls(&a, k.token.expose(), 2);
    clock.advance(5_000);
    calls(&b, k.token.expose(), 1);
    calls(&a, "kw_live_unknownunknownunknownunknownunknownunkn", 1);
    a.flush().unwrap();
    b.flush().unwrap();
    let range = (UnixMillis(T0.get() - MIN), T0.plus(MIN));
    for e in [&a, &b] {
        let h = e.key_history(k.info.id, Granularity::Minute, range.0, range.1).unwrap();
        assert_eq!(h, [bucket(T0.get(), &[(Code::Valid, 4)])]);
        let w = e.workspace_history(ws, Granularity::Day, UnixMillis(T0.get() - T0.get() % DAY), T0.plus(DAY)).unwrap();
        assert_eq!(w.iter().map(|b| b.counts.clone()).collect::<Vec<_>>(), [vec![(Code::Valid, 4)]]);
        // The latest use any node saw.
        assert_eq!(e.key(k.info.id).unwrap().last_used_at, Some(T0.plus(5_000)));
    }
}
