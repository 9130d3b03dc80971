//! The `ip_rules` target: CIDR and rule parsing, and `IpRules::permits`.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use keyward_core::ip::{IpRule, IpRuleError, IpRules, parse_cidr};

use crate::input::{Input, lossy};

const MAX_RULES: u8 = 8;
const MAX_ADDRS: usize = 8;

/// A CIDR text, and the network it must parse to when it is built well-formed.
fn read_cidr(input: &mut Input<'_>) -> (String, Option<IpNet>) {
    let sel = input.u8();
    match sel % 8 {
        // IPv4 network, host bits cleared.
        0 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            let len = input.u8() % 33;
            let net = Ipv4Net::new(addr, len).map(|n| n.trunc()).unwrap_or_default();
            (format!("{}/{}", net.addr(), len), Some(IpNet::V4(net)))
        }
        // IPv6 network, host bits cleared.
        1 => {
            let addr = Ipv6Addr::from(input.array::<16>());
            let len = input.u8() % 129;
            let net = Ipv6Net::new(addr, len).map(|n| n.trunc()).unwrap_or_default();
            let canonical = match net.addr().to_ipv4_mapped() {
                Some(v4) if len >= 96 => IpNet::V4(Ipv4Net::new(v4, len - 96).unwrap_or_default()),
                _ => IpNet::V6(net),
            };
            (format!("{}/{}", net.addr(), len), Some(canonical))
        }
        // IPv4-mapped IPv6 network: must become its IPv4 form.
        2 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            let len = input.u8() % 33;
            let net = Ipv4Net::new(addr, len).map(|n| n.trunc()).unwrap_or_default();
            (format!("::ffff:{}/{}", net.addr(), 96 + len), Some(IpNet::V4(net)))
        }
        // A bare address: one host.
        3 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            let net = Ipv4Net::new(addr, 32).unwrap_or_default();
            (addr.to_string(), Some(IpNet::V4(net)))
        }
        4 => {
            let addr = Ipv6Addr::from(input.array::<16>());
            let net = match addr.to_ipv4_mapped() {
                Some(v4) => IpNet::V4(Ipv4Net::new(v4, 32).unwrap_or_default()),
                None => IpNet::V6(Ipv6Net::new(addr, 128).unwrap_or_default()),
            };
            (addr.to_string(), Some(net))
        }
        // Possibly with host bits set.
        5 => {
            let addr = Ipv4Addr::from(input.array::<4>());
            (format!("{}/{}", addr, input.u8() % 40), None)
        }
        _ => (lossy(input.short()).into_owned(), None),
    }
}

fn read_addr(input: &mut Input<'_>) -> IpAddr {
    match input.u8() % 4 {
        0 => IpAddr::V4(Ipv4Addr::from(input.array::<4>())),
        1 => IpAddr::V6(Ipv6Addr::from(input.array::<16>())),
        2 => IpAddr::V6(Ipv4Addr::from(input.array::<4>()).to_ipv6_mapped()),
        // IPv4-compatible (deprecated) form: not mapped, stays IPv6.
        _ => IpAddr::V6(Ipv4Addr::from(input.array::<4>()).to_ipv6_compatible()),
    }
}

/// IPv4-mapped addresses decide as IPv4.
fn canonical_model(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `net` covers `ip`, by masking, without ipnet.
fn covers_model(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix_len())).unwrap_or(0);
            u32::from(a) & mask == u32::from(n.addr()) & mask
        }
        (IpNet::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(n.prefix_len())).unwrap_or(0);
            u128::from(a) & mask == u128::from(n.addr()) & mask
        }
        _ => false,
    }
}

fn check_cidr(text: &str, parsed: &Result<IpNet, IpRuleError>) {
    match parsed {
        Ok(net) => {
            assert_eq!(net.trunc(), *net, "host bits in {text:?}");
            assert_eq!(parse_cidr(&net.to_string()).as_ref(), Ok(net), "Display of {net} does not re-parse");
            if let IpNet::V6(v6) = net {
                assert!(v6.addr().to_ipv4_mapped().is_none() || v6.prefix_len() < 96, "not canonical: {net}");
            }
        }
        Err(IpRuleError::HostBits(_, suggestion)) => {
            assert!(parse_cidr(suggestion).is_ok(), "suggested {suggestion:?} for {text:?} does not parse");
        }
        Err(_) => {}
    }
}

/// A rule is its CIDR with the action the text names, case-insensitively; an
/// unknown action is refused, echoing (the start of) what was sent.
fn check_rule(action: &str, parsed: &Result<IpNet, IpRuleError>, rule: &Result<IpRule, IpRuleError>) {
    let (allow, deny) = (action.eq_ignore_ascii_case("allow"), action.eq_ignore_ascii_case("deny"));
    match (rule, parsed) {
        (Ok(r), Ok(net)) => {
            assert_eq!(r.net(), *net);
            assert_eq!((matches!(r, IpRule::Allow(_)), matches!(r, IpRule::Deny(_))), (allow, deny), "{action:?}");
        }
        (Ok(r), Err(e)) => panic!("{r} from a CIDR refused with {e:?}"),
        (Err(IpRuleError::Action(shown)), _) => {
            assert!(!allow && !deny, "{action:?} refused");
            assert!(action.starts_with(shown.as_str()) && shown.chars().count() <= 16, "{shown:?} for {action:?}");
        }
        (Err(e), Ok(_)) => panic!("{e:?} for a valid CIDR and action {action:?}"),
        (Err(e), Err(cidr_error)) => assert_eq!(e, cidr_error, "a bad CIDR is reported as such"),
    }
}

/// `ip_rules` target: CIDR and rule parsing, and `IpRules::permits`.
///
/// Checks that parsed networks are canonical and survive `Display`, that
/// well-formed CIDRs parse to the expected network, and, against masking
/// arithmetic, that deny overrides allow, a non-empty allow list refuses what
/// it does not cover, IPv4-mapped IPv6 decides as IPv4, and rule order does not
/// matter.
pub fn ip_rules(data: &[u8]) {
    let mut input = Input::new(data);
    let mut rules = Vec::new();
    for _ in 0..input.u8() % (MAX_RULES + 1) {
        let action: Cow<'_, str> = match input.u8() {
            0 => "allow".into(),
            1 => "deny".into(),
            2 => "ALLOW".into(),
            3 => "Deny".into(),
            _ => lossy(input.short()),
        };
        let (cidr, want) = read_cidr(&mut input);
        let parsed = parse_cidr(&cidr);
        check_cidr(&cidr, &parsed);
        if let Some(want) = want {
            assert_eq!(parsed, Ok(want), "{cidr:?}");
        }
        let rule = IpRule::parse(&action, &cidr);
        check_rule(&action, &parsed, &rule);
        if let Ok(r) = rule {
            let shown = r.to_string();
            let (a, c) = shown.split_once(' ').unwrap_or_default();
            assert_eq!(IpRule::parse(a, c), Ok(r), "{shown:?} does not re-parse");
            rules.push(r);
        }
    }
    let rules = IpRules(rules);
    let reversed = IpRules(rules.0.iter().rev().copied().collect());
    assert_eq!(rules.permits(None), rules.is_empty(), "an unknown address passes only an empty rule set");
    for _ in 0..MAX_ADDRS {
        if input.is_empty() {
            break;
        }
        let ip = read_addr(&mut input);
        let got = rules.permits(Some(ip));
        let c = canonical_model(ip);
        let denied = rules.0.iter().any(|r| matches!(r, IpRule::Deny(n) if covers_model(n, c)));
        let allows: Vec<&IpNet> =
            rules.0.iter().filter_map(|r| if let IpRule::Allow(n) = r { Some(n) } else { None }).collect();
        let allowed = allows.is_empty() || allows.iter().any(|n| covers_model(n, c));
        if denied {
            assert!(!got, "deny must override allow: {ip} under {rules:?}");
        }
        if !allowed {
            assert!(!got, "{ip} is outside every allow rule of {rules:?}");
        }
        assert_eq!(got, allowed && !denied, "{ip} under {rules:?}");
        assert_eq!(reversed.permits(Some(ip)), got, "rule order changed the decision");
        match ip {
            IpAddr::V4(v4) => assert_eq!(rules.permits(Some(IpAddr::V6(v4.to_ipv6_mapped()))), got),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    assert_eq!(rules.permits(Some(IpAddr::V4(v4))), got, "{ip} decides as {v4}");
                }
            }
        }
    }
}
