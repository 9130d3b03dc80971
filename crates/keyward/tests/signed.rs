//! The signed scheme (SPEC §5) end to end.

mod common;

use common::Env;
use keyward::{Actor, NewKey, NewSigning, Request};
use keyward_core::Code;
use keyward_core::credentials::SignedHeaders;
use keyward_core::signature::{NoncePolicy, sign_hex};
use zeroize::Zeroizing;

/// A key with a signing identity for user 96.
fn signing_spec(policy: NoncePolicy) -> NewKey {
    NewKey {
        name: "exchange".into(),
        signing: Some(NewSigning { user_id: "96".into(), nonce_policy: policy }),
        ..NewKey::default()
    }
}

fn signing_key(env: &Env, policy: NoncePolicy) -> keyward::CreatedKey {
    env.key_with(signing_spec(policy))
}

fn headers(k: &keyward::CreatedKey, nonce: &str) -> SignedHeaders {
    let s = k.signing.as_ref().unwrap();
    let secret = keyward_core::signature::ApiSecret::new(s.api_secret.as_bytes().to_vec());
    SignedHeaders {
        api_key: Zeroizing::new(k.token.expose().to_owned()),
        signature: sign_hex(&secret, nonce, "96", k.token.expose()),
        user_id: "96".into(),
        nonce: nonce.into(),
    }
}

fn code(r: Result<keyward::Session, Box<keyward_core::Verdict>>) -> Code {
    match r {
        Ok(_) => Code::Valid,
        Err(v) => v.code,
    }
}

#[test]
fn flow_replay_and_sessions() {
    let env = Env::new();
    let e = &env.engine;
    let k = signing_key(&env, NoncePolicy::Monotonic);
    let s = k.signing.as_ref().unwrap();
    assert_eq!((s.user_id.as_str(), s.nonce, s.api_secret.len()), ("96", 1, 64));
    assert!(!format!("{s:?}").contains(s.api_secret.as_str()), "secret redacted");

    let session = e.authenticate_user(&headers(&k, "1000"), None).unwrap();
    assert_eq!(session.key_id, k.info.id);
    assert_eq!(session.expires_at, common::T0.plus(24 * 3_600_000));
    assert!(session.token.expose().starts_with("kw_session_"));
    // The session verifies like the key.
    let v = e.verify_session(session.token.expose(), &Request::default());
    assert_eq!((v.code, v.key_id), (Code::Valid, Some(k.info.id)));

    // Replay and lower nonces are refused; higher ones pass.
    assert_eq!(code(e.authenticate_user(&headers(&k, "1000"), None)), Code::NonceReused);
    assert_eq!(code(e.authenticate_user(&headers(&k, "999"), None)), Code::NonceReused);
    assert_eq!(code(e.authenticate_user(&headers(&k, "1001"), None)), Code::Valid);
    assert_eq!(code(e.authenticate_user(&headers(&k, "01002"), None)), Code::Malformed);

    // Wrong signature, wrong user, uppercase hex.
    let mut bad = headers(&k, "2000");
    bad.signature = bad.signature.replace('a', "b").replace('1', "2");
    assert_eq!(code(e.authenticate_user(&bad, None)), Code::InvalidSignature);
    let mut upper = headers(&k, "2001");
    upper.signature = upper.signature.to_uppercase();
    assert_eq!(code(e.authenticate_user(&upper, None)), Code::Valid);
    let mut other_user = headers(&k, "2002");
    other_user.user_id = "97".into();
    assert_eq!(code(e.authenticate_user(&other_user, None)), Code::InvalidSignature);
    // A refused attempt did not move the high-water mark.
    assert_eq!(code(e.authenticate_user(&headers(&k, "2002"), None)), Code::Valid);

    // The high-water mark survives a restart.
    let env = env.reopen();
    let e = &env.engine;
    assert_eq!(code(e.authenticate_user(&headers(&k, "2002"), None)), Code::NonceReused);
    assert_eq!(code(e.authenticate_user(&headers(&k, "2003"), None)), Code::Valid);
    assert_eq!(e.verify_session(session.token.expose(), &Request::default()).code, Code::Valid, "sessions persist");

    // Session expiry and logout.
    env.clock.advance(24 * 3_600_000);
    assert_eq!(e.verify_session(session.token.expose(), &Request::default()).code, Code::Expired);
    let fresh = e.authenticate_user(&headers(&k, "3000"), None).unwrap();
    assert!(e.end_session(fresh.token.expose()).unwrap());
    assert_eq!(e.verify_session(fresh.token.expose(), &Request::default()).code, Code::NotFound);
    assert!(!e.end_session(fresh.token.expose()).unwrap());

    // Revoking the key refuses its sessions and its signatures.
    let s2 = e.authenticate_user(&headers(&k, "3001"), None).unwrap();
    e.revoke_key(k.info.id, &Actor::Admin).unwrap();
    assert_eq!(e.verify_session(s2.token.expose(), &Request::default()).code, Code::Revoked);
    assert_eq!(code(e.authenticate_user(&headers(&k, "3002"), None)), Code::Revoked);
}

#[test]
fn rotation_resets_the_nonce_and_the_secret() {
    let env = Env::new();
    let e = &env.engine;
    let k = signing_key(&env, NoncePolicy::Monotonic);
    assert_eq!(code(e.authenticate_user(&headers(&k, "500"), None)), Code::Valid);
    let rotated = e.rotate_key(k.info.id, 0, &Actor::Admin).unwrap();
    assert_ne!(rotated.signing.as_ref().unwrap().api_secret, k.signing.as_ref().unwrap().api_secret);
    assert_eq!(code(e.authenticate_user(&headers(&rotated, "1"), None)), Code::Valid, "nonce reset on rotation");
    assert_eq!(code(e.authenticate_user(&headers(&k, "501"), None)), Code::Expired, "no grace: old key expired");
}

#[test]
fn unique_nonce_policy() {
    let env = Env::new();
    let e = &env.engine;
    let k = signing_key(&env, NoncePolicy::Unique { window_ms: 60_000, capacity: 100 });
    assert_eq!(code(e.authenticate_user(&headers(&k, "f3a9c1"), None)), Code::Valid);
    assert_eq!(code(e.authenticate_user(&headers(&k, "0b77e2"), None)), Code::Valid, "any order");
    assert_eq!(code(e.authenticate_user(&headers(&k, "f3a9c1"), None)), Code::NonceReused);
    let env = env.reopen();
    let e = &env.engine;
    assert_eq!(code(e.authenticate_user(&headers(&k, "0b77e2"), None)), Code::NonceReused, "persisted");
    env.clock.advance(60_000);
    assert_eq!(code(e.authenticate_user(&headers(&k, "f3a9c1"), None)), Code::Valid, "window passed");
}

#[test]
fn session_minting_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let clock = keyward::ManualClock::new(common::T0);
    let e = keyward::Engine::builder()
        .clock(clock.clone())
        .master_key(common::MASTER)
        .session_mint_limit(3, std::time::Duration::from_secs(60))
        .open(dir.path().join("k.redb"))
        .unwrap();
    let ws = e.create_workspace(keyward::NewWorkspace::named("w"), &Actor::Admin).unwrap().policy.id;
    let k = e.create_key(ws, signing_spec(NoncePolicy::Monotonic), &Actor::Admin).unwrap();
    for n in 1..=3 {
        assert_eq!(code(e.authenticate_user(&headers(&k, &n.to_string()), None)), Code::Valid);
    }
    let r = e.authenticate_user(&headers(&k, "4"), None).unwrap_err();
    assert_eq!((r.code, r.retry_after_ms), (Code::RateLimited, Some(20_000)));
    // The refused attempt did not consume nonce 4.
    clock.advance(20_000);
    assert_eq!(code(e.authenticate_user(&headers(&k, "4"), None)), Code::Valid);
}

#[test]
fn no_master_key_no_signing() {
    let dir = tempfile::tempdir().unwrap();
    let e = keyward::Engine::open(dir.path().join("k.redb")).unwrap();
    let ws = e.create_workspace(keyward::NewWorkspace::named("w"), &Actor::Admin).unwrap().policy.id;
    let r = e.create_key(ws, signing_spec(NoncePolicy::Monotonic), &Actor::Admin);
    assert_eq!(r.unwrap_err(), keyward::Error::NoMasterKey);
}

#[test]
fn a_signing_key_is_no_bearer_key_unless_made_one() {
    let env = Env::new();
    let e = &env.engine;
    let k = signing_key(&env, NoncePolicy::Monotonic);
    assert!(!k.info.bearer);
    let token = k.token.expose();
    let req = Request::default();
    // Alone, the token is refused wherever a bearer credential is read.
    let v = e.verify(token, &req);
    assert_eq!((v.code, v.key_id, v.workspace_id), (Code::InvalidSignature, Some(k.info.id), Some(env.ws)));
    let cred = keyward_core::credentials::Credential::ApiKey(Zeroizing::new(token.to_owned()));
    assert_eq!(e.verify_credential(&cred, &req).code, Code::InvalidSignature);
    assert_eq!(e.verify_detailed(&cred, &req).verdict.code, Code::InvalidSignature);
    assert_eq!(e.acquire(&cred, &req).err().map(|v| v.code), Some(Code::InvalidSignature));
    let checks = keyward::Checks { workspace: Some(env.ws), ..Default::default() };
    let out = e.verify_with(token, &req, &checks);
    assert_eq!((out.verdict.code, out.key.is_none()), (Code::InvalidSignature, true));
    // A key of another workspace stays not found.
    let other = keyward::Checks { workspace: Some(keyward_core::WorkspaceId([7; 16])), ..Default::default() };
    assert_eq!(e.verify_with(token, &req, &other).verdict.code, Code::NotFound);
    // Nothing was counted against it.
    assert_eq!(e.key(k.info.id).unwrap().last_used_at, None);
    // Signed, it authenticates, and its session works as aptoken.
    let session = e.authenticate_user(&headers(&k, "5"), None).unwrap();
    assert_eq!(e.verify_session(session.token.expose(), &req).code, Code::Valid);

    // Made a bearer key too, the token alone passes; so does its rotation's.
    let both = env.key_with(NewKey { bearer: true, ..signing_spec(NoncePolicy::Monotonic) });
    assert!(both.info.bearer);
    assert_eq!(e.verify(both.token.expose(), &req).code, Code::Valid);
    let rotated = e.rotate_key(both.info.id, 0, &Actor::Admin).unwrap();
    assert!(rotated.info.bearer);
    assert_eq!(e.verify(rotated.token.expose(), &req).code, Code::Valid);
    let rotated = e.rotate_key(k.info.id, 0, &Actor::Admin).unwrap();
    assert_eq!(e.verify(rotated.token.expose(), &req).code, Code::InvalidSignature);
    // Keys without a signing identity are bearer keys; asking is an error.
    assert!(env.key("plain").info.bearer);
    let err = e.create_key(env.ws, NewKey { name: "b".into(), bearer: true, ..NewKey::default() }, &Actor::Admin);
    assert_eq!(
        err.err(),
        Some(keyward::Error::Invalid {
            field: "bearer",
            message: "only applies to a key with a signing identity".into()
        })
    );
    // The flag survives a reopen.
    let env = env.reopen();
    assert!(env.engine.key(both.info.id).unwrap().bearer);
    assert!(!env.engine.key(k.info.id).unwrap().bearer);
}
