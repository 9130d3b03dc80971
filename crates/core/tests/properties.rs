//! Every parser returns `Err` rather than panicking, and every encoding
//! round-trips.

use hmac::{KeyInit, Mac};
use keyward_core::credentials::{self, tool_from_path};
use keyward_core::ip::{IpRule, IpRules, parse_cidr};
use keyward_core::limits::{Concurrency, Credits, RateLimit, Refill, RefillInterval};
use keyward_core::permission::Permission;
use keyward_core::policy::{decode_record, encode_record};
use keyward_core::signature::parse_decimal_nonce;
use keyward_core::snapshot::SnapshotError;
use keyward_core::{
    Code, KeyHash, KeyId, KeyPolicy, Limits, LocalVerifier, Prefix, Request, Snapshot, Token, ToolPolicy, UnixMillis,
    WorkspaceId, WorkspacePolicy, token,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

const SNAP_KEY: &[u8] = b"snapshot-key-for-tests-0123456789";

/// `frame` followed by its HMAC-SHA256 tag under [`SNAP_KEY`], as
/// `Snapshot::encode` writes it.
fn seal(frame: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SNAP_KEY).unwrap();
    mac.update(frame);
    [frame, &mac.finalize().into_bytes()[..]].concat()
}

fn arb_limits() -> impl Strategy<Value = Limits> {
    (
        proptest::option::of((1u64..1000, 1u64..100_000)),
        proptest::option::of(0u64..100_000),
        proptest::option::of(1u64..1000),
        proptest::option::of((1u32..10, 1u64..100_000)),
        proptest::option::of((0u64..1000, proptest::option::of((1u8..=31, 0u64..1000)))),
    )
        .prop_map(|(rate, cooldown_ms, daily, conc, credits)| Limits {
            rates: rate
                .map(|(limit, window_ms)| RateLimit { name: "default".into(), limit, window_ms, auto_apply: true })
                .into_iter()
                .collect(),
            cooldown_ms,
            daily,
            concurrency: conc.map(|(max, lease_ms)| Concurrency { max, lease_ms }),
            credits: credits.map(|(initial, refill)| Credits {
                initial,
                refill: refill.map(|(day, amount)| Refill { interval: RefillInterval::Monthly { day }, amount }),
            }),
        })
}

fn arb_key() -> impl Strategy<Value = KeyPolicy> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        "[a-z ]{1,20}",
        proptest::option::of(any::<u64>()),
        any::<bool>(),
        proptest::collection::vec("[a-z]{1,8}(:[a-z*]{1,4})?", 0..4),
        arb_limits(),
        any::<bool>(),
    )
        .prop_map(|(id, hash, name, expires, disabled, perms, limits, imported)| KeyPolicy {
            id: KeyId(id),
            workspace: WorkspaceId([1; 16]),
            hash: KeyHash(hash),
            name,
            revoked_at: None,
            expires_at: expires.map(UnixMillis),
            disabled,
            permissions: perms.iter().filter_map(|p| Permission::parse(p).ok()).collect(),
            ip_rules: IpRules(vec![IpRule::parse("allow", "10.0.0.0/8").unwrap()]),
            limits,
            tool_limits: vec![],
            tools: vec!["gl_ping".into()],
            meta: "{\"plan\":\"pro\"}".into(),
            imported,
        })
}

proptest! {
    #[test]
    fn token_check_never_panics(s in "\\PC{0,80}") {
        let _ = token::check(&s);
        let _ = Token::parse(&s);
        let _ = Token::parse_foreign(&s);
    }

    #[test]
    fn generated_tokens_always_check(seed in any::<u64>(), prefix in "[a-z0-9]{1,7}(_[a-z0-9]{1,7})?") {
        let prefix = Prefix::parse(&prefix).unwrap();
        let t = Token::generate(&prefix, &mut StdRng::seed_from_u64(seed));
        prop_assert_eq!(token::check(t.expose()), Ok(()));
        // Any single-character change is caught (by charset, shape or checksum).
        let mut b = t.expose().as_bytes().to_vec();
        let i = b.len() - 1 - (seed as usize % 36);
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        prop_assert!(token::check(std::str::from_utf8(&b).unwrap()).is_err());
    }

    #[test]
    fn cidr_never_panics(s in "\\PC{0,60}") {
        let _ = parse_cidr(&s);
        let _ = IpRule::parse("allow", &s);
    }

    #[test]
    fn cidr_display_round_trips(a in any::<[u8; 4]>(), len in 0u8..=32) {
        let net = ipnet::Ipv4Net::new(a.into(), len).unwrap().trunc();
        let parsed = parse_cidr(&net.to_string()).unwrap();
        prop_assert_eq!(parsed, ipnet::IpNet::V4(net));
    }

    #[test]
    fn credentials_never_panic(h in proptest::collection::vec(
        (prop_oneof!["x-api-key", "authorization", "aptoken", "apikey", "signature", "userid", "nonce", "[a-z-]{1,10}"],
         proptest::collection::vec(any::<u8>(), 0..40)), 0..6)) {
        let _ = credentials::parse(h.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    }

    #[test]
    fn tool_paths_never_panic(s in "\\PC{0,80}") {
        let _ = tool_from_path(&s);
        let _ = keyward_core::path::gateway_tool(&s);
    }

    /// A canonical path is its own canonical form, and a target is refused
    /// only for an escaped `/` or `%`, or a dot segment.
    #[test]
    fn canonical_paths_are_stable(segs in proptest::collection::vec("[a-zA-Z0-9_.~-]{1,8}|%2[fF]|%25", 1..6)) {
        let target: String = segs.iter().map(|s| format!("/{s}")).collect();
        match keyward_core::path::canonical_path(&target) {
            Ok(p) => {
                prop_assert!(!target.to_ascii_lowercase().contains("%2f") && !target.contains("%25"));
                prop_assert_eq!(keyward_core::path::canonical_path(&p), Ok(p.clone()));
            }
            Err(e) => {
                let encoded = target.to_ascii_lowercase().contains("%2f") || target.contains("%25");
                prop_assert!(encoded || e == keyward_core::path::PathError::DotSegment, "{target}: {e}");
            }
        }
    }

    #[test]
    fn nonces(s in "\\PC{0,24}", n in any::<u64>()) {
        let _ = parse_decimal_nonce(&s);
        prop_assert_eq!(parse_decimal_nonce(&n.to_string()), Ok(n));
    }

    #[test]
    fn ids(s in "\\PC{0,30}", b in any::<[u8; 16]>()) {
        let _ = KeyId::parse(&s);
        prop_assert_eq!(KeyId::parse(&KeyId(b).to_string()), Ok(KeyId(b)));
        prop_assert_eq!(WorkspaceId::parse(&WorkspaceId(b).to_string()), Ok(WorkspaceId(b)));
    }

    #[test]
    fn permissions_never_panic(s in "\\PC{0,140}") {
        if let Ok(p) = Permission::parse(&s) {
            prop_assert_eq!(p.as_str(), s.as_str());
        }
    }

    #[test]
    fn records_round_trip(k in arb_key()) {
        let bytes = encode_record(&k);
        prop_assert_eq!(decode_record::<KeyPolicy>(&bytes), Ok(k));
    }

    #[test]
    fn records_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_record::<KeyPolicy>(&b);
        let _ = decode_record::<WorkspacePolicy>(&b);
        let _ = decode_record::<ToolPolicy>(&b);
    }

    #[test]
    fn snapshot_round_trips(keys in proptest::collection::vec(arb_key(), 0..8), t in any::<u64>()) {
        let snap = Snapshot { created_at: UnixMillis(t), workspaces: vec![], tools: vec![], keys };
        let bytes = snap.encode(SNAP_KEY).unwrap();
        prop_assert_eq!(Snapshot::decode(&bytes, SNAP_KEY), Ok(snap));
    }

    #[test]
    fn snapshot_decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300), valid_header in any::<bool>()) {
        let mut b = b;
        if valid_header && b.len() >= 48 {
            let body_len = (b.len() - 48) as u64;
            b[..6].copy_from_slice(b"KWSNAP");
            b[6..8].copy_from_slice(&1u16.to_le_bytes());
            b[8..16].copy_from_slice(&body_len.to_le_bytes());
        }
        prop_assert!(Snapshot::decode(&b, SNAP_KEY).is_err());
        // With its tag recomputed, a valid frame gets past the MAC to the body decoder.
        if b.len() >= 32 {
            let sealed = seal(&b[..b.len() - 32]);
            let got = Snapshot::decode(&sealed, SNAP_KEY);
            if valid_header && b.len() >= 48 {
                prop_assert!(matches!(got, Ok(_) | Err(SnapshotError::Corrupt)), "{:?}", got);
            }
        }
    }
}

#[test]
fn local_verifier_end_to_end() {
    let mut rng = StdRng::seed_from_u64(1);
    let ws = WorkspacePolicy {
        id: WorkspaceId([1; 16]),
        name: "acme".into(),
        api_access: true,
        prefix: Prefix::default_live(),
        ip_rules: IpRules::none(),
        default_limits: Limits::default(),
    };
    let token = Token::generate(&ws.prefix, &mut rng);
    let mut key = KeyPolicy {
        id: KeyId([2; 16]),
        workspace: ws.id,
        hash: token.hash(),
        name: "k".into(),
        revoked_at: None,
        expires_at: Some(UnixMillis(10_000)),
        disabled: false,
        permissions: vec![],
        ip_rules: IpRules::none(),
        limits: Limits { daily: Some(2), ..Limits::default() },
        tool_limits: vec![],
        tools: vec![],
        meta: String::new(),
        imported: false,
    };
    let foreign = "legacy_abc123";
    let mut imported = key.clone();
    imported.id = KeyId([3; 16]);
    imported.hash = KeyHash::of(foreign);
    imported.imported = true;
    imported.limits = Limits::default();
    key.tool_limits = vec![];
    let tool = ToolPolicy {
        workspace: ws.id,
        name: "gl_ping".into(),
        enabled: true,
        permission: None,
        limits: Limits::default(),
    };
    let snap =
        Snapshot { created_at: UnixMillis(0), workspaces: vec![ws], tools: vec![tool], keys: vec![key, imported] };
    let mut v = LocalVerifier::load(&snap.encode(SNAP_KEY).unwrap(), SNAP_KEY).unwrap();
    let at = |ms| Request { now: UnixMillis(ms), ..Request::default() };
    let t = token.expose();
    assert_eq!(v.verify(t, &at(0)).verdict.code, Code::Valid);
    assert_eq!(v.verify(t, &Request { tool: Some("nope"), ..at(0) }).verdict.code, Code::UnknownTool);
    assert_eq!(v.verify(t, &Request { tool: Some("gl_ping"), ..at(0) }).verdict.code, Code::Valid);
    assert_eq!(v.verify(t, &at(0)).verdict.code, Code::DailyLimit);
    assert_eq!(v.verify(t, &at(10_000)).verdict.code, Code::Expired);
    assert_eq!(v.verify(&t[..t.len() - 1], &at(0)).verdict.code, Code::Malformed);
    assert_eq!(v.verify(foreign, &at(0)).verdict.code, Code::Valid);
    assert_eq!(v.verify("legacy_unknown", &at(0)).verdict.code, Code::Malformed);
    let other = Token::generate(&Prefix::default_live(), &mut rng);
    assert_eq!(v.verify(other.expose(), &at(0)).verdict.code, Code::NotFound);
}
