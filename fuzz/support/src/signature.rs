//! The `signature` target: signed header sets, and the replay policies.

use keyward_core::credentials::{self, Credential};
use keyward_core::signature::{
    self, ApiSecret, MAX_NONCE_LEN, NoncePolicy, NonceState, parse_decimal_nonce, sign, sign_hex,
};
use keyward_core::{Code, UnixMillis};

use crate::FUZZ_EPOCH;
use crate::credentials::kept_as_sent;
use crate::input::{Input, flip_case, lossy};

/// Time steps and nonce choices after the header set, at most this many.
const MAX_NONCE_OPS: usize = 64;

/// `signature` target: signed header sets → parse + verify, and the replay
/// policies as a state machine.
///
/// Checks that [`keyward_core::signature::sign_hex`] output always verifies, in lower,
/// upper and mixed case, and that an altered one never does; that clean
/// header sets parse to exactly their values and verify; and that
/// `NonceState::check_and_accept` follows a plain model under `Monotonic` and
/// `Unique`, in particular that an accepted nonce is refused with
/// `NONCE_REUSED` within the window.
pub fn signature(data: &[u8]) {
    let mut input = Input::new(data);
    let secret = ApiSecret::new(input.short());
    let (raw_key, raw_user, raw_nonce) = (input.short(), input.short(), input.short());
    let sig_mode = input.u8();
    let sig_arg = input.u8();
    let junk_sig = if sig_mode >= 4 { input.short() } else { &[] };
    let layout = input.u8();
    let window_ms = u64::from(input.u32());
    let capacity = u32::from(input.u8());
    let start = FUZZ_EPOCH + u64::from(input.u32());

    // 1. Whatever sign_hex produces verifies, in any letter case; nothing else does.
    let (key, user, nonce) = (lossy(raw_key), lossy(raw_user), lossy(raw_nonce));
    let sig = sign_hex(&secret, &nonce, &user, &key);
    assert_eq!(sig, hex(&sign(&secret, &nonce, &user, &key)));
    assert!(sig.len() == 64 && sig.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{sig}");
    let upper = sig.to_ascii_uppercase();
    let mixed = flip_case(&sig, sig_arg);
    for s in [&sig, &upper, &mixed] {
        assert_eq!(signature::verify(&secret, &nonce, &user, &key, s), Ok(()), "{s}");
    }
    let mut altered = sig.clone().into_bytes();
    let at = usize::from(sig_arg) % altered.len();
    altered[at] = if altered[at] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap_or_default();
    assert_eq!(signature::verify(&secret, &nonce, &user, &key, &altered), Err(Code::InvalidSignature));
    assert_eq!(signature::verify(&secret, &nonce, &user, &key, &sig[..63]), Err(Code::InvalidSignature));
    assert_eq!(signature::verify(&secret, &format!("{nonce}0"), &user, &key, &sig), Err(Code::InvalidSignature));

    // 2. The header set, as a client sends it.
    let sig_value: &[u8] = match sig_mode {
        0 => sig.as_bytes(),
        1 => upper.as_bytes(),
        2 => mixed.as_bytes(),
        3 => altered.as_bytes(),
        _ => junk_sig,
    };
    let pad = |v: &[u8]| if layout & 1 == 0 { v.to_vec() } else { [b" \t".as_slice(), v, b" "].concat() };
    let mut headers: Vec<(&str, Vec<u8>)> = vec![
        ("APIKey", pad(raw_key)),
        ("Signature", pad(sig_value)),
        ("UserId", pad(raw_user)),
        ("Nonce", pad(raw_nonce)),
    ];
    if layout & 2 != 0 {
        headers.insert(1, ("Host", b"api.example.com".to_vec()));
    }
    if layout & 4 != 0 {
        headers.reverse();
    }
    let parsed = credentials::parse(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())));
    // Values that survive header cleaning unchanged are what the client signed.
    let clean = [raw_key, raw_user, raw_nonce].iter().all(|v| kept_as_sent(v));
    let header_nonce = match parsed {
        Ok(Credential::Signed(s)) => {
            let verdict = signature::verify(&secret, &s.nonce, &s.user_id, &s.api_key, &s.signature);
            if clean {
                assert_eq!((s.api_key.as_str(), s.user_id.as_str(), s.nonce.as_str()), (&*key, &*user, &*nonce));
                match sig_mode {
                    0..=2 => assert_eq!(verdict, Ok(())),
                    3 => assert_eq!(verdict, Err(Code::InvalidSignature)),
                    _ => {}
                }
            }
            s.nonce
        }
        Ok(other) => panic!("signed headers parsed as {}", other.kind()),
        Err(e) => {
            assert!(!clean || sig_mode >= 4, "clean signed headers refused: {e}");
            nonce.into_owned()
        }
    };

    // 3. Replay protection over a sequence of nonces.
    let unique = NoncePolicy::Unique { window_ms, capacity };
    let mut mono = NonceState::default();
    let mut uniq = NonceState::default();
    let mut high_water: Option<u64> = None;
    let mut accepted: Vec<(String, u64)> = Vec::new();
    let mut tried: Vec<String> = vec![header_nonce.clone()];
    let mut now = start;
    for _ in 0..MAX_NONCE_OPS {
        if input.is_empty() {
            break;
        }
        let sel = input.u8();
        now = now.saturating_add(u64::from(input.u16()) << (8 * ((sel >> 2) % 4)));
        let n: String = match sel % 4 {
            0 => header_nonce.clone(),
            1 => tried[usize::from(input.u8()) % tried.len()].clone(),
            2 => input.u64().to_string(),
            _ => lossy(input.short()).into_owned(),
        };
        tried.push(n.clone());
        step_monotonic(&mut mono, &mut high_water, &n, UnixMillis(now));
        step_unique(&mut uniq, &mut accepted, unique, &n, now);
    }
}

/// Lower-case hex, the plain way.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decimal u64 without sign or leading zero, the plain way.
fn decimal_model(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    let mut v: u128 = 0;
    for &d in b {
        v = v * 10 + u128::from(d - b'0');
        if v > u128::from(u64::MAX) {
            return None;
        }
    }
    u64::try_from(v).ok()
}

fn step_monotonic(state: &mut NonceState, high_water: &mut Option<u64>, n: &str, now: UnixMillis) {
    let p = NoncePolicy::Monotonic;
    let value = decimal_model(n);
    assert_eq!(parse_decimal_nonce(n).ok(), value, "{n:?}");
    let expect = match value {
        None => Err(Code::Malformed),
        Some(v) if high_water.is_some_and(|h| v <= h) => Err(Code::NonceReused),
        Some(_) => Ok(()),
    };
    let before = state.clone();
    assert_eq!(state.check(p, n, now), expect);
    assert_eq!(state.check_and_accept(p, n, now), expect, "{n:?} after {high_water:?}");
    if expect.is_ok() {
        *high_water = value;
        assert_eq!(state.high_water, value);
        assert_eq!(state.check_and_accept(p, n, now.plus(1)), Err(Code::NonceReused));
    } else {
        assert_eq!(*state, before, "a refused nonce changed the state");
    }
}

fn step_unique(state: &mut NonceState, accepted: &mut Vec<(String, u64)>, p: NoncePolicy, n: &str, now: u64) {
    let NoncePolicy::Unique { window_ms, capacity } = p else { return };
    let well_formed = (1..=MAX_NONCE_LEN).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_graphic());
    let last = accepted.iter().rposition(|(m, _)| m == n);
    let live = last.filter(|&j| now < accepted[j].1.saturating_add(window_ms));
    let before = state.clone();
    let got = state.check_and_accept(p, n, UnixMillis(now));
    match (well_formed, live) {
        (false, _) => assert_eq!(got, Err(Code::Malformed), "{n:?}"),
        (true, None) => assert_eq!(got, Ok(()), "{n:?} was not accepted within the window"),
        // Up to `capacity - 1` later nonces cannot push it out of the cache.
        (true, Some(j)) if accepted.len() - 1 - j < capacity.max(1) as usize => {
            assert_eq!(got, Err(Code::NonceReused), "{n:?} replayed within the window");
        }
        (true, Some(_)) => assert!(matches!(got, Ok(()) | Err(Code::NonceReused))),
    }
    if got.is_ok() {
        accepted.push((n.to_owned(), now));
        assert!(state.seen.len() <= capacity.max(1) as usize);
        let at = UnixMillis(now);
        if window_ms > 0 {
            assert_eq!(state.check(p, n, at), Err(Code::NonceReused));
            assert_eq!(state.check(p, n, at.plus(window_ms - 1)), Err(Code::NonceReused));
        }
        assert_eq!(state.check(p, n, at.plus(window_ms)), Ok(()), "window over");
    } else {
        assert_eq!(*state, before, "a refused nonce changed the state");
    }
}
