//! The committed seed corpus, `fuzz/corpus/<target>/seed-<name>`.

use std::net::Ipv6Addr;

use keyward_core::ip::{IpRule, IpRules};
use keyward_core::limits::{Concurrency, Credits, RateLimit, Refill, RefillInterval};
use keyward_core::permission::Permission;
use keyward_core::policy::encode_record;
use keyward_core::signature::{ApiSecret, sign_hex};
use keyward_core::time::DAY_MS;
use keyward_core::{
    KeyHash, KeyId, KeyPolicy, Limits, Prefix, Snapshot, Token, ToolPolicy, UnixMillis, WorkspaceId, WorkspacePolicy,
};

use crate::credentials::{SeedHeaders, write_headers};
use crate::input::Seed;
use crate::limits::{LimitsCase, LimitsOp, RATE_NAME};
use crate::rfc3339::{Fields, LAST_FOUR_DIGIT_YEAR};
use crate::rng::DetRng;
use crate::{FUZZ_EPOCH, FUZZ_SNAPSHOT_KEY};

pub(crate) fn sample_workspace(id: WorkspaceId) -> WorkspacePolicy {
    WorkspacePolicy {
        id,
        name: "acme".into(),
        api_access: true,
        prefix: Prefix::default_live(),
        ip_rules: IpRules::none(),
        default_limits: Limits::default(),
    }
}

/// Parses constants the seeds are built from.
pub(crate) fn must<T, E: core::fmt::Debug>(r: Result<T, E>) -> T {
    // Invariant: only called on literals that are valid by construction.
    #[allow(clippy::expect_used)]
    r.expect("seed literal is valid")
}

fn sample_snapshot(rng: &mut DetRng) -> (Snapshot, Token) {
    let prefix = must(Prefix::parse("sk_live"));
    let ws = WorkspacePolicy {
        id: WorkspaceId::generate(rng),
        name: "acme".into(),
        api_access: true,
        prefix: prefix.clone(),
        ip_rules: IpRules(vec![must(IpRule::parse("allow", "10.0.0.0/8")), must(IpRule::parse("deny", "10.9.0.0/16"))]),
        default_limits: Limits {
            rates: vec![RateLimit { name: "default".into(), limit: 100, window_ms: 60_000, auto_apply: true }],
            ..Limits::default()
        },
    };
    let tool = ToolPolicy {
        workspace: ws.id,
        name: "gl_ping".into(),
        enabled: true,
        permission: Some(must(Permission::parse("tools:gl_ping"))),
        limits: Limits { cooldown_ms: Some(10_000), daily: Some(50), ..Limits::default() },
    };
    let token = Token::generate(&prefix, rng);
    let key = KeyPolicy {
        id: KeyId::generate(rng),
        workspace: ws.id,
        hash: token.hash(),
        name: "ci".into(),
        revoked_at: None,
        expires_at: Some(UnixMillis(FUZZ_EPOCH + 30 * DAY_MS)),
        disabled: false,
        permissions: vec![must(Permission::parse("keys:read")), must(Permission::parse("tools:*"))],
        ip_rules: IpRules(vec![
            must(IpRule::parse("allow", "10.1.0.0/16")),
            must(IpRule::parse("allow", "2001:db8::/32")),
        ]),
        limits: Limits {
            rates: vec![
                RateLimit { name: "default".into(), limit: 10, window_ms: 1_000, auto_apply: true },
                RateLimit { name: "tokens".into(), limit: 10_000, window_ms: 60_000, auto_apply: false },
            ],
            cooldown_ms: None,
            daily: Some(1_000),
            concurrency: Some(Concurrency { max: 4, lease_ms: 30_000 }),
            credits: Some(Credits {
                initial: 500,
                refill: Some(Refill { interval: RefillInterval::Monthly { day: 31 }, amount: 1_000 }),
            }),
        },
        tool_limits: vec![("gl_ping".into(), Limits { daily: Some(5), ..Limits::default() })],
        tools: vec!["gl_ping".into()],
        meta: r#"{"team":"infra"}"#.into(),
        imported: false,
    };
    let revoked = KeyPolicy {
        id: KeyId::generate(rng),
        hash: KeyHash::of("legacy-key-123"),
        name: "old import".into(),
        revoked_at: Some(UnixMillis(FUZZ_EPOCH - DAY_MS)),
        expires_at: None,
        permissions: vec![],
        ip_rules: IpRules::none(),
        limits: Limits::default(),
        tool_limits: vec![],
        tools: vec![],
        meta: String::new(),
        imported: true,
        ..key.clone()
    };
    let snap = Snapshot {
        created_at: UnixMillis(FUZZ_EPOCH),
        workspaces: vec![ws],
        tools: vec![tool],
        keys: vec![key, revoked],
    };
    (snap, token)
}

fn limits_seed(limits: Limits, start_ms: u64, ops: &[LimitsOp]) -> Vec<u8> {
    LimitsCase { limits, start: UnixMillis(FUZZ_EPOCH + start_ms), ops: ops.to_vec(), wide: false }.write()
}

fn call(dt_ms: u64, credits: u64) -> LimitsOp {
    LimitsOp::Call { dt_ms, credits, named: None }
}

/// The committed seed corpus: `(target, name, bytes)`, written to
/// `fuzz/corpus/<target>/seed-<name>`. Each is a small, meaningful case: a
/// real token, a real signed header set, a real encoded snapshot.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rng = DetRng::new(b"seeds");
    let (snap, token) = sample_snapshot(&mut rng);
    let tok = token.expose().as_bytes();

    // credentials
    let bearer = [b"Bearer ".as_slice(), tok].concat();
    let secret = ApiSecret::new(b"engine-test-secret".to_vec());
    let (api_key, user, nonce) = ("28c68ac3fcfafc3d4e8d653fe57e5baf", "96", "2247733562");
    let sig = sign_hex(&secret, nonce, user, api_key);
    let signed: [(&str, &[u8]); 5] = [
        ("Host", b"api.example.com"),
        ("APIKey", api_key.as_bytes()),
        ("Signature", sig.as_bytes()),
        ("UserId", user.as_bytes()),
        ("Nonce", nonce.as_bytes()),
    ];
    let header_seeds: [(&str, SeedHeaders<'_>); 5] = [
        ("x-api-key", &[("Host", b"api.example.com"), ("X-API-Key", tok)]),
        ("bearer", &[("Authorization", &bearer)]),
        ("aptoken", &[("aptoken", b"sess_2Yb5kQ9mZ1pXw8rT4uV7cD3eF6gH0jK")]),
        ("signed", &signed),
        ("conflict", &[("X-API-Key", tok), ("Authorization", &bearer), ("X-Forwarded-For", b"203.0.113.9")]),
    ];
    for (name, headers) in header_seeds {
        let mut s = Seed::default();
        write_headers(&mut s, headers);
        out.push(("credentials", name, s.into_bytes()));
    }

    // signature: the engine's test vector, then nonce sequences.
    let mut s = Seed::default();
    s.short(secret.expose()).short(api_key.as_bytes()).short(user.as_bytes()).short(nonce.as_bytes());
    s.u8(0).u8(0).u8(0).u32(600_000).u8(255).u32(0);
    s.u8(0).u16(10); // header nonce: accepted by both policies
    s.u8(0).u16(10); // header nonce again: reused
    s.u8(2).u16(10).u64(2_247_733_563); // the next decimal
    s.u8(3).u16(10).short(b"r4nd0m-n0nce"); // a random one: only `unique` takes it
    s.u8(1).u16(10).u8(4); // replay the random one
    out.push(("signature", "engine-vector", s.into_bytes()));
    let mut s = Seed::default();
    s.short(b"another secret").short(b"key_3hX9").short(b"1").short(b"a1");
    s.u8(1).u8(0x55).u8(0).u32(1_000).u8(2).u32(5);
    s.u8(0).u16(0); // a1 at t
    s.u8(3).u16(999).short(b"a1"); // still within the window
    s.u8(3).u16(1).short(b"a1"); // window over
    s.u8(3).u16(1).short(b"b2");
    s.u8(3).u16(1).short(b"c3"); // capacity 2: a1 falls out
    s.u8(3).u16(1).short(b"a1");
    out.push(("signature", "unique-window", s.into_bytes()));

    // token
    let seed = [7u8; 32];
    let generated = Token::generate(&Prefix::default_live(), &mut DetRng::new(&seed));
    let mut s = Seed::default();
    s.short(b"kw_live").raw(&seed).u16(12).u8(b'a').raw(generated.expose().as_bytes());
    out.push(("token", "kw_live", s.into_bytes()));
    let mut s = Seed::default();
    s.short(b"sk_test").raw(&[1; 32]).u16(3).u8(b'_').raw(b"legacy-key-123");
    out.push(("token", "foreign", s.into_bytes()));
    let mut s = Seed::default();
    s.short(b"sk_live").raw(&[9; 32]).u16(40).u8(0xe9).raw(tok);
    out.push(("token", "snapshot-token", s.into_bytes()));

    // ip_rules
    let mut s = Seed::default();
    s.u8(3);
    s.u8(0).u8(0).raw(&[10, 0, 0, 0]).u8(8); // allow 10.0.0.0/8
    s.u8(1).u8(0).raw(&[10, 1, 0, 0]).u8(16); // deny 10.1.0.0/16
    s.u8(2).u8(1).raw(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0).octets()).u8(32); // ALLOW 2001:db8::/32
    s.u8(0).raw(&[10, 1, 2, 3]).u8(0).raw(&[10, 2, 0, 1]).u8(2).raw(&[10, 0, 0, 1]);
    s.u8(1).raw(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 5).octets()).u8(0).raw(&[192, 0, 2, 1]);
    out.push(("ip_rules", "allow-deny", s.into_bytes()));
    let mut s = Seed::default();
    s.u8(4);
    s.u8(0).u8(2).raw(&[10, 0, 0, 0]).u8(8); // allow ::ffff:10.0.0.0/104
    s.u8(1).u8(4).raw(&Ipv6Addr::LOCALHOST.octets()); // deny ::1
    s.u8(4).short(b"permit").u8(6).short(b"10.0.0.0/8"); // bad action
    s.u8(0).u8(5).raw(&[10, 0, 0, 1]).u8(8); // host bits: 10.0.0.1/8
    s.u8(2).raw(&[10, 9, 9, 9]).u8(3).raw(&[0, 0, 0, 1]).u8(1).raw(&Ipv6Addr::LOCALHOST.octets());
    out.push(("ip_rules", "mapped", s.into_bytes()));

    // snapshot and records
    out.push(("snapshot", "full", must(snap.encode(FUZZ_SNAPSHOT_KEY))));
    out.push(("snapshot", "empty", must(Snapshot::default().encode(FUZZ_SNAPSHOT_KEY))));
    out.push(("snapshot", "record-key", encode_record(&snap.keys[0])));
    out.push(("snapshot", "record-workspace", encode_record(&snap.workspaces[0])));
    out.push(("snapshot", "record-tool", encode_record(&snap.tools[0])));

    // limits
    let rate3 = Limits {
        rates: vec![RateLimit { name: RATE_NAME.into(), limit: 3, window_ms: 1_000, auto_apply: true }],
        ..Limits::default()
    };
    let gcra = [call(0, 1), call(0, 1), call(0, 1), call(0, 1), call(333, 1), call(1, 1), call(332, 1), call(1, 1)];
    out.push(("limits", "gcra-3-per-second", limits_seed(rate3, 0, &gcra)));
    let daily = Limits { daily: Some(2), ..Limits::default() };
    let ops = [call(10, 1), call(10, 1), call(0, 0), call(DAY_MS - 21, 1), call(1, 1)];
    out.push(("limits", "daily-midnight", limits_seed(daily, 0, &ops)));
    let credits = Limits {
        credits: Some(Credits { initial: 3, refill: Some(Refill { interval: RefillInterval::Daily, amount: 5 }) }),
        ..Limits::default()
    };
    let ops = [call(1_000, 2), call(0, 2), call(0, 0), call(0, 1), call(0, 1), call(0, 0), call(DAY_MS, 1)];
    out.push(("limits", "credits-refill", limits_seed(credits, 0, &ops)));
    let conc = Limits { concurrency: Some(Concurrency { max: 2, lease_ms: 10_000 }), ..Limits::default() };
    let ops = [call(0, 1), call(100, 1), call(100, 1), LimitsOp::Release { nth: 0 }, call(100, 1), call(10_000, 1)];
    out.push(("limits", "concurrency", limits_seed(conc, 0, &ops)));
    let cooldown = Limits { cooldown_ms: Some(5_000), ..Limits::default() };
    let ops = [call(1_000, 1), call(1, 1), call(4_998, 0), call(1, 1)];
    out.push(("limits", "cooldown", limits_seed(cooldown, 0, &ops)));
    let all = Limits {
        rates: vec![RateLimit { name: RATE_NAME.into(), limit: 5, window_ms: 2_000, auto_apply: false }],
        cooldown_ms: Some(100),
        daily: Some(20),
        concurrency: Some(Concurrency { max: 3, lease_ms: 60_000 }),
        credits: Some(Credits { initial: 10, refill: Some(Refill { interval: RefillInterval::Daily, amount: 8 }) }),
    };
    let named = |dt_ms, ours, cost| LimitsOp::Call { dt_ms, credits: 1, named: Some((ours, cost)) };
    let ops = [
        named(0, true, 2),
        named(100, true, 3),
        named(100, true, 1),
        named(100, false, 1),
        call(50, 1),
        LimitsOp::Release { nth: 1 },
        call(60_000, 4),
        call(DAY_MS, 5),
    ];
    out.push(("limits", "everything", limits_seed(all, DAY_MS - 500, &ops)));

    // permission_query: a held-permissions byte, then the query.
    for (name, pick, query) in [
        ("precedence", 0b0000_0011, "a AND (b:read OR c.x) OR docs.read and admin"),
        ("wildcards", 0b0000_0100, "b:read AND b:* AND (c.x OR *)"),
        ("unclosed", 0xFF, "((a AND) OR"),
        ("too-deep", 0b0000_0001, "(((((((((((((((((a)))))))))))))))))"),
    ] {
        let mut s = Seed::default();
        s.u8(pick).raw(query.as_bytes());
        out.push(("permission_query", name, s.into_bytes()));
    }

    // rfc3339: an instant, a date-time field by field, then raw text.
    for (name, instant, fields, raw) in [
        (
            "offset",
            FUZZ_EPOCH,
            Fields {
                year: 2024,
                month: 3,
                day: 1,
                hour: 5,
                minute: 30,
                second: 0,
                frac_digits: 2,
                frac: 5,
                offset: Some((false, 4, 30)),
                lower: false,
            },
            "2024-03-01T10:00:00.123456789Z",
        ),
        (
            "leap-day",
            LAST_FOUR_DIGIT_YEAR,
            Fields {
                year: 2000,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 59,
                frac_digits: 9,
                frac: 999_999_999,
                offset: None,
                lower: true,
            },
            "1970-01-01T00:00:00+00:01",
        ),
        (
            "out-of-range",
            0,
            Fields {
                year: 2023,
                month: 2,
                day: 29,
                hour: 24,
                minute: 0,
                second: 60,
                frac_digits: 10,
                frac: 1,
                offset: Some((true, 24, 0)),
                lower: false,
            },
            "9999-12-31T23:59:59.999-23:59",
        ),
    ] {
        let mut s = Seed::default();
        s.u64(instant);
        fields.write(&mut s);
        s.raw(raw.as_bytes());
        out.push(("rfc3339", name, s.into_bytes()));
    }
    out
}
