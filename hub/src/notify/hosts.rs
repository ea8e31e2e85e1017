//! Which hosts webhook and ntfy contacts may reach: the guard against a contact address
//! that turns the hub into a proxy into the ward's own network.
//!
//! A contact's address is typed by staff, so it is untrusted: without a guard a webhook
//! pointed at `http://10.0.0.5/admin` or the cloud metadata address would have the hub
//! post signed resident data wherever its own network reaches. The policy:
//!
//! - **No list** (the default): any host name, but only public addresses. An IP literal in
//!   the address is checked when the contact is created and at each delivery; a name is
//!   checked where it matters, on the addresses it resolves to at the moment of delivery
//!   (so a name that later points inside, DNS rebinding, is refused too).
//! - **A list** (`webhook_hosts`): only what it names — `hooks.example.org`,
//!   `*.example.org` (the domain and every name below it), an address or a network
//!   (`192.168.10.0/24`, `::1`). A listed name may resolve to any address: the operator
//!   vouched for it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Name(String),
    /// `*.example.org`: the domain itself and every name below it.
    Domain(String),
    Net(IpNet),
}

/// The hosts contacts may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    rules: Vec<Rule>,
}

impl HostPolicy {
    /// Parses a comma-separated list; empty or absent means "public addresses only".
    pub fn parse(list: &str) -> Result<HostPolicy, String> {
        let rules = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_rule)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostPolicy { rules })
    }

    /// Checks what can be known of a URL before resolving it: its scheme, and its host when
    /// the host is a name the list must name or an address.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http:// or https:// URL".into());
        }
        let host = url.host_str().ok_or("must name a host")?;
        match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => self.check_ip(ip),
            Err(_) => self.check_name(host),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), String> {
        if self.rules.is_empty() || self.names(name) {
            return Ok(());
        }
        Err(format!(
            "host {name} is not among the hosts an administrator allowed (webhook_hosts)"
        ))
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.admits(ip) {
            return Ok(());
        }
        Err(if self.rules.is_empty() {
            format!("address {ip} is not public; an administrator may allow it (webhook_hosts)")
        } else {
            format!("address {ip} is not among the hosts an administrator allowed (webhook_hosts)")
        })
    }

    /// Whether the list names this host name itself (so any address of it is fine).
    fn names(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|r| match r {
            Rule::Name(n) => *n == name,
            Rule::Domain(d) => name == *d || name.ends_with(&format!(".{d}")),
            Rule::Net(_) => false,
        })
    }

    /// Whether a connection to this address is allowed for a host the list does not name.
    fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.rules.is_empty() {
            return is_public(ip);
        }
        self.rules.iter().any(|r| match r {
            Rule::Net(net) => net.contains(&ip),
            _ => false,
        })
    }

    /// The addresses of `host` a delivery may connect to.
    fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
        if !self.rules.is_empty() && self.names(host) {
            return Ok(addrs);
        }
        let (kept, refused): (Vec<_>, Vec<_>) =
            addrs.into_iter().partition(|a| self.admits(a.ip()));
        match (kept.is_empty(), refused.first()) {
            (false, _) => Ok(kept),
            (true, Some(a)) => Err(format!(
                "host {host} resolves to {}, which is not allowed (webhook_hosts)",
                a.ip()
            )),
            (true, None) => Err(format!("host {host} has no address")),
        }
    }
}

fn parse_rule(s: &str) -> Result<Rule, String> {
    let bad = || {
        format!(
            "webhook_hosts entry {s:?} must be a host name, *.domain, an address or a network (a.b.c.d/n)"
        )
    };
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(Rule::Net(net.trunc()));
    }
    if let Ok(ip) = s.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(Rule::Net(IpNet::from(ip)));
    }
    let (wild, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(if wild {
        Rule::Domain(name)
    } else {
        Rule::Name(name)
    })
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is judged as the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses reachable on the public internet: not loopback, private, link-local (cloud
/// metadata lives there), shared (CGNAT), unique-local, unspecified, multicast, broadcast
/// or reserved for documentation and benchmarks.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// reqwest's name resolution for contact deliveries: the system's resolver, then the
/// policy on what it returned, so the check and the connection use the same addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: Arc<HostPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = policy.filter(&host, addrs).map_err(|e| {
                Box::new(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))
                    as Box<dyn std::error::Error + Send + Sync>
            })?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).expect("test URL")
    }

    fn sock(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().expect("test address"), 0)
    }

    #[test]
    fn without_a_list_only_public_addresses_pass() {
        let p = HostPolicy::default();
        assert!(p.check_url(&url("https://hooks.example.org/x")).is_ok());
        assert!(p.check_url(&url("https://203.0.113.0.example/x")).is_ok());
        assert!(p.check_url(&url("https://8.8.8.8/x")).is_ok());
        assert!(p.check_url(&url("https://[2606:4700::1111]/x")).is_ok());
        for inside in [
            "http://127.0.0.1:9/hook",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            let e = p.check_url(&url(inside)).expect_err(inside);
            assert!(e.contains("not public"), "{inside}: {e}");
        }
        assert!(p.check_url(&url("ftp://example.org/")).is_err());
    }

    #[test]
    fn a_name_is_judged_by_what_it_resolves_to() {
        let p = HostPolicy::default();
        assert_eq!(
            p.filter(
                "h.example.org",
                vec![sock("127.0.0.1"), sock("93.184.215.14")]
            ),
            Ok(vec![sock("93.184.215.14")])
        );
        let e = p
            .filter("rebind.example.org", vec![sock("10.0.0.5")])
            .expect_err("private only");
        assert!(e.contains("resolves to 10.0.0.5"), "{e}");
    }

    #[test]
    fn a_list_allows_only_what_it_names() -> Result<(), String> {
        let p = HostPolicy::parse("hooks.ward.local, *.example.org, 192.168.10.0/24, ::1")?;
        assert!(p.check_url(&url("https://hooks.ward.local/a")).is_ok());
        assert!(p.check_url(&url("https://HOOKS.ward.local./a")).is_ok());
        assert!(p.check_url(&url("https://example.org/a")).is_ok());
        assert!(p.check_url(&url("https://a.b.example.org/a")).is_ok());
        assert!(p.check_url(&url("http://192.168.10.7:8080/a")).is_ok());
        assert!(p.check_url(&url("http://[::1]:9/a")).is_ok());
        assert!(p.check_url(&url("https://badexample.org/a")).is_err());
        assert!(p.check_url(&url("https://hooks.example.com/a")).is_err());
        assert!(p.check_url(&url("http://192.168.11.7/a")).is_err());
        assert!(p.check_url(&url("http://8.8.8.8/a")).is_err());
        // A listed name may point inside; an unlisted one is held to the listed networks.
        assert!(p.filter("hooks.ward.local", vec![sock("10.9.9.9")]).is_ok());
        assert!(p.filter("x.other.org", vec![sock("192.168.10.3")]).is_ok());
        assert!(p.filter("x.other.org", vec![sock("10.9.9.9")]).is_err());
        Ok(())
    }

    #[test]
    fn bad_entries_are_refused_with_the_entry() {
        for bad in [
            "http://x.org",
            "a b",
            "*.",
            "-x.org",
            "10.0.0.0/33",
            "x..org",
        ] {
            let e = HostPolicy::parse(bad).expect_err(bad);
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(HostPolicy::parse(" , "), Ok(HostPolicy::default()));
    }
}
