//! `source_ip` and `destination_ip`: the endpoint's address is one of the
//! values, an IP address (a /32 or /128) or a CIDR. An IPv4-mapped IPv6
//! address is IPv6: it is not in an IPv4 network.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{FilterError, Result, each};
use crate::v1 as pb;

/// The networks of the field.
pub(super) fn parse(field: &'static str, values: &[String]) -> Result<Vec<IpNet>> {
    each(values, |value| {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(IpNet::from(ip));
        }
        value
            .parse::<IpNet>()
            .map_err(|e| FilterError::invalid(field, value, format!("not an IP or CIDR: {e}")))
    })
}

/// Whether the endpoint's address is in one of `nets`; an absent endpoint or
/// an address that does not parse is in none.
pub(super) fn matches(nets: &[IpNet], endpoint: Option<&pb::Endpoint>) -> bool {
    nets.is_empty()
        || endpoint
            .and_then(|ep| ep.ip.parse::<IpAddr>().ok())
            .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, error, flow};
    use crate::v1 as pb;

    fn src(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            source_ip: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn dst(v: &[&str]) -> pb::FlowFilter {
        pb::FlowFilter {
            destination_ip: v.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn addresses_and_cidrs() {
        assert!(check(src(&["10.0.1.5"]), &flow()));
        assert!(check(src(&["10.0.1.0/24"]), &flow()));
        assert!(!check(src(&["10.0.2.0/24"]), &flow()));
        assert!(check(dst(&["192.168.0.0/16", "10.0.2.0/24"]), &flow()));
        assert!(!check(dst(&["fd00::/8"]), &flow()));
    }

    #[test]
    fn ipv6() {
        let mut flow = flow();
        flow.source.as_mut().unwrap().ip = "fd00::5".into();
        assert!(check(src(&["fd00::/8"]), &flow));
        assert!(!check(src(&["10.0.0.0/8"]), &flow));
    }

    #[test]
    fn invalid_values() {
        for bad in ["x' OR 1=1 --", "10.0.0.0/33", "10.0.0", ""] {
            let e = error(src(&[bad])).to_string();
            assert!(e.contains("source_ip"), "{e}");
        }
        assert!(error(dst(&["nope"])).to_string().contains("destination_ip"));
    }
}
