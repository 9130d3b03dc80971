//! The signed scheme (SPEC §5): HMAC signature check beside signing (its
//! baseline: one HMAC-SHA256 each), and a whole `authenticate_user`, which
//! checks the signature and the nonce and commits the minted session.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keyward::{Engine, NewKey, NewSigning};
use keyward_benches::Fixture;
use keyward_core::credentials::SignedHeaders;
use keyward_core::signature::{self, ApiSecret, NoncePolicy, sign, sign_hex};

const MASTER_KEY: &[u8] = b"keyward-bench-master-key-0123456789abcdef";
const USER_ID: &str = "96";

fn signed(c: &mut Criterion) {
    let builder = Engine::builder()
        .master_key(MASTER_KEY)
        // The default (30 per minute) would refuse almost every iteration.
        .session_mint_limit(1_000_000_000, Duration::from_secs(1));
    let fx = Fixture::with(builder, None).expect("open bench database");
    let key = fx
        .key(NewKey {
            name: "signer".into(),
            signing: Some(NewSigning { user_id: USER_ID.into(), nonce_policy: NoncePolicy::Monotonic }),
            ..NewKey::default()
        })
        .expect("create signing key");
    let api_key = key.token.expose().to_owned();
    let secrets = key.signing.as_ref().expect("key has a signing identity");
    let secret = ApiSecret::new(secrets.api_secret.as_bytes().to_vec());

    let nonce = "1700000000000";
    let signature = sign_hex(&secret, nonce, USER_ID, &api_key);
    assert_eq!(signature::verify(&secret, nonce, USER_ID, &api_key, &signature), Ok(()));

    let mut g = c.benchmark_group("signed");
    g.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(3));
    g.bench_function("hmac_sign", |b| {
        b.iter(|| sign(black_box(&secret), black_box(nonce), black_box(USER_ID), black_box(&api_key)))
    });
    g.bench_function("signature_verify", |b| {
        b.iter(|| {
            signature::verify(
                black_box(&secret),
                black_box(nonce),
                black_box(USER_ID),
                black_box(&api_key),
                black_box(&signature),
            )
        })
    });

    // Monotonic nonces: each iteration signs the next one outside the timing.
    let mut next_nonce: u64 = 1_000;
    let mut headers = || {
        next_nonce += 1;
        let nonce = next_nonce.to_string();
        SignedHeaders {
            api_key: api_key.clone().into(),
            signature: sign_hex(&secret, &nonce, USER_ID, &api_key),
            user_id: USER_ID.into(),
            nonce,
        }
    };
    let first = fx.engine.authenticate_user(&headers(), None);
    assert!(first.is_ok(), "authenticate_user refused: {:?}", first.err());
    g.sample_size(20);
    g.bench_function("authenticate_user", |b| {
        b.iter_batched(
            &mut headers,
            |h| fx.engine.authenticate_user(&h, None).expect("authenticate_user refused"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, signed);
criterion_main!(benches);
