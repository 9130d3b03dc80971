//! IP rules (SPEC §2): allow/deny by CIDR, deny wins, an allow list is closed.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

/// Longest accepted CIDR text (the longest IPv6 form plus `/128`).
const MAX_CIDR_LEN: usize = 49;

/// Why a CIDR or rule could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpRuleError {
    /// Not an address or `address/prefix`.
    #[error("`{0}` is not a CIDR block")]
    Syntax(String),
    /// Bits are set after the prefix length, e.g. `10.0.0.1/8`.
    #[error("`{0}` has host bits set; did you mean `{1}`?")]
    HostBits(String, String),
    /// The action is neither `allow` nor `deny`.
    #[error("IP rule action must be `allow` or `deny`, not `{0}`")]
    Action(String),
}

/// One rule: an action and a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IpRule {
    /// Addresses in the network may pass (if no deny rule covers them).
    Allow(IpNet),
    /// Addresses in the network are refused.
    Deny(IpNet),
}

impl IpRule {
    /// Parses `action` (`allow`/`deny`, case-insensitive) and a CIDR.
    pub fn parse(action: &str, cidr: &str) -> Result<Self, IpRuleError> {
        let net = parse_cidr(cidr)?;
        if action.eq_ignore_ascii_case("allow") {
            Ok(Self::Allow(net))
        } else if action.eq_ignore_ascii_case("deny") {
            Ok(Self::Deny(net))
        } else {
            Err(IpRuleError::Action(action.chars().take(16).collect()))
        }
    }

    /// The rule's network.
    pub fn net(&self) -> IpNet {
        match *self {
            Self::Allow(n) | Self::Deny(n) => n,
        }
    }

    /// `"allow"` or `"deny"`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Allow(_) => "allow",
            Self::Deny(_) => "deny",
        }
    }
}

impl fmt::Display for IpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action(), self.net())
    }
}

/// Parses a CIDR block strictly.
///
/// A bare address means a single host (`/32` or `/128`). Host bits after the
/// prefix are refused rather than silently masked: `10.0.0.1/8` is a typo for
/// either `10.0.0.0/8` or `10.0.0.1/32`, and guessing wrong opens a hole.
/// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) become their IPv4 form,
/// matching how addresses are canonicalised.
pub fn parse_cidr(text: &str) -> Result<IpNet, IpRuleError> {
    let shown = || text.chars().take(MAX_CIDR_LEN).collect::<String>();
    if text.is_empty() || text.len() > MAX_CIDR_LEN {
        return Err(IpRuleError::Syntax(shown()));
    }
    // std's address parser is the strict one (no octal-looking `010`); ipnet
    // is only used for the network arithmetic.
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (text, None),
    };
    let addr = IpAddr::from_str(addr).map_err(|_| IpRuleError::Syntax(shown()))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        // The prefix length must be plain decimal: `/+8` and `/08` are refused.
        Some(l)
            if !l.is_empty()
                && l.len() <= 3
                && l.bytes().all(|b| b.is_ascii_digit())
                && !(l.len() > 1 && l.starts_with('0')) =>
        {
            l.parse::<u8>().map_err(|_| IpRuleError::Syntax(shown()))?
        }
        Some(_) => return Err(IpRuleError::Syntax(shown())),
    };
    let net = IpNet::new(addr, len).map_err(|_| IpRuleError::Syntax(shown()))?;
    if net.trunc() != net {
        return Err(IpRuleError::HostBits(shown(), net.trunc().to_string()));
    }
    Ok(canonical_net(net))
}

/// Whether a network is in the form [`parse_cidr`] produces: no host bits,
/// IPv4-mapped networks in their IPv4 form.
pub(crate) fn is_canonical(net: &IpNet) -> bool {
    net.trunc() == *net && canonical_net(*net) == *net
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}

/// The rules of one key or one workspace.
///
/// Empty means "allow all". Otherwise an address passes when no deny rule
/// covers it and, if there is at least one allow rule, some allow rule does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpRules(pub Vec<IpRule>);

impl IpRules {
    /// No rules: everything is allowed.
    pub const fn none() -> Self {
        Self(Vec::new())
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` passes these rules. An unknown address (`None`) passes only
    /// an empty rule set: with rules in place we fail closed.
    pub fn permits(&self, ip: Option<IpAddr>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(ip) = ip else { return false };
        let ip = ip.to_canonical();
        let mut has_allow = false;
        let mut allowed = false;
        for rule in &self.0 {
            match rule {
                IpRule::Deny(net) if contains(net, ip) => return false,
                IpRule::Allow(net) => {
                    has_allow = true;
                    allowed |= contains(net, ip);
                }
                IpRule::Deny(_) => {}
            }
        }
        !has_allow || allowed
    }
}

/// Whether `net` covers `ip`: the address bits under the prefix are the
/// network's. The same answer as ipnet's `contains`, in a mask and a compare
/// (the check runs on every verification of a key with rules).
fn contains(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(n.prefix_len())).unwrap_or(0);
            (u32::from(a) ^ u32::from(n.addr())) & mask == 0
        }
        (IpNet::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(n.prefix_len())).unwrap_or(0);
            (u128::from(a) ^ u128::from(n.addr())) & mask == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&str, &str)]) -> IpRules {
        IpRules(list.iter().map(|(a, c)| IpRule::parse(a, c).unwrap()).collect())
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn strict_parsing() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(parse_cidr("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("10.0.0.1/8"), Err(IpRuleError::HostBits("10.0.0.1/8".into(), "10.0.0.0/8".into())));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "/8",
            "10.0.0/8",
            "010.0.0.0/8",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0 /8",
            " 10.0.0.0/8",
            "10.0.0.0/8/8",
            "::/129",
            "host",
            "1.2.3.4.5",
        ] {
            assert!(matches!(parse_cidr(bad), Err(IpRuleError::Syntax(_))), "{bad:?}");
        }
        assert_eq!(IpRule::parse("permit", "10.0.0.0/8"), Err(IpRuleError::Action("permit".into())));
        assert!(matches!(IpRule::parse("DENY", "0.0.0.0/0"), Ok(IpRule::Deny(_))));
    }

    #[test]
    fn decision_table() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, bool);
        let cases: &[Case<'_>] = &[
            // No rules: allow all.
            (&[], "203.0.113.9", true),
            (&[], "::1", true),
            // Allow list is closed.
            (&[("allow", "10.0.0.0/8")], "10.9.8.7", true),
            (&[("allow", "10.0.0.0/8")], "11.0.0.1", false),
            // Deny overrides allow, in any order.
            (&[("allow", "10.0.0.0/8"), ("deny", "10.1.0.0/16")], "10.1.2.3", false),
            (&[("deny", "10.1.0.0/16"), ("allow", "10.0.0.0/8")], "10.1.2.3", false),
            (&[("allow", "10.0.0.0/8"), ("deny", "10.1.0.0/16")], "10.2.0.1", true),
            // Only deny rules: everything else passes.
            (&[("deny", "192.168.0.0/16")], "192.168.1.1", false),
            (&[("deny", "192.168.0.0/16")], "8.8.8.8", true),
            // IPv4-mapped IPv6 is matched as IPv4.
            (&[("allow", "10.0.0.0/8")], "::ffff:10.0.0.1", true),
            (&[("deny", "10.0.0.0/8")], "::ffff:10.0.0.1", false),
            (&[("allow", "::ffff:10.0.0.0/104")], "10.0.0.1", true),
            // ::1 is not 0.0.0.1.
            (&[("allow", "0.0.0.0/8")], "::1", false),
            (&[("deny", "0.0.0.0/8")], "::1", true),
            // IPv6 rules.
            (&[("allow", "2001:db8::/32")], "2001:db8::5", true),
            (&[("allow", "2001:db8::/32")], "2001:db9::5", false),
            (&[("allow", "0.0.0.0/0")], "2001:db8::5", false),
            (&[("allow", "::/0")], "10.0.0.1", false),
            (&[("allow", "::/0"), ("allow", "0.0.0.0/0")], "10.0.0.1", true),
        ];
        for (list, addr, want) in cases {
            assert_eq!(rules(list).permits(ip(addr)), *want, "{list:?} {addr}");
        }
    }

    #[test]
    fn unknown_address_fails_closed() {
        assert!(IpRules::none().permits(None));
        assert!(!rules(&[("deny", "10.0.0.0/8")]).permits(None));
        assert!(!rules(&[("allow", "0.0.0.0/0")]).permits(None));
    }

    mod props {
        use core::net::{Ipv4Addr, Ipv6Addr};

        use ipnet::Ipv6Net;
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// The mask compare answers as ipnet does, host bits in the rule or not.
            #[test]
            fn contains_matches_ipnet(
                net4 in any::<u32>(),
                len4 in 0u8..=32,
                bits4 in any::<u32>(),
                net6 in any::<u128>(),
                len6 in 0u8..=128,
                bits6 in any::<u128>(),
                near in any::<bool>(),
            ) {
                // Half the addresses share the network's top bits, so both answers occur.
                let a4 = Ipv4Addr::from(if near { net4 ^ (bits4 >> len4.min(31)) } else { bits4 });
                let a6 = Ipv6Addr::from(if near { net6 ^ (bits6 >> len6.min(127)) } else { bits6 });
                let v4 = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(net4), len4).unwrap());
                let v6 = IpNet::V6(Ipv6Net::new(Ipv6Addr::from(net6), len6).unwrap());
                for (n, a) in [(v4, IpAddr::V4(a4)), (v6, IpAddr::V6(a6))] {
                    prop_assert_eq!(contains(&n, a), n.contains(&a));
                    prop_assert_eq!(contains(&n.trunc(), a), n.trunc().contains(&a));
                }
                prop_assert!(!contains(&v4, IpAddr::V6(a6)));
                prop_assert!(!contains(&v6, IpAddr::V4(a4)));
            }
        }
    }
}
