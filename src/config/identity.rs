//! Who this member is and where it can be reached.

use std::net::IpAddr;

use super::env::{Vars, parse_port, set};
use super::error::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Cluster name, shared by all members.
    pub(crate) scope: String,
    /// Member name: the host (pod) name, which the operator switches over by.
    pub(crate) name: String,
    pub(crate) pod_ip: IpAddr,
    pub(crate) pg_port: u16,
    pub(crate) api_port: u16,
    /// Host (name or address) advertised for PostgreSQL and the REST API.
    pub(crate) pg_connect_host: String,
    pub(crate) restapi_connect_host: String,
}

/// What the host says about itself, for when variables are silent.
pub trait HostFacts {
    fn hostname(&self) -> Option<String>;
    fn first_non_loopback_address(&self) -> Option<IpAddr>;
}

/// The running machine.
pub(crate) struct ThisHost;

impl HostFacts for ThisHost {
    fn hostname(&self) -> Option<String> {
        nix::unistd::gethostname().ok()?.into_string().ok()
    }

    fn first_non_loopback_address(&self) -> Option<IpAddr> {
        let addrs = nix::ifaddrs::getifaddrs().ok()?;
        let mut found: Vec<IpAddr> = addrs
            .filter_map(|ifa| {
                let addr = ifa.address?;
                let ip = addr
                    .as_sockaddr_in()
                    .map(|a| IpAddr::V4(a.ip()))
                    .or_else(|| addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))?;
                let link_local =
                    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
                (!ip.is_loopback() && !link_local).then_some(ip)
            })
            .collect();
        // IPv4 first: what a pod or a compose network hands out.
        found.sort_by_key(|ip| ip.is_ipv6());
        found.into_iter().next()
    }
}

impl Identity {
    pub(crate) fn from_vars(vars: &Vars, host: &dyn HostFacts) -> Result<Self, ConfigError> {
        let scope = set(&vars.scope).unwrap_or("dummy").to_owned();
        if scope
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
        {
            return Err(ConfigError::invalid(
                "SCOPE",
                &scope,
                "a cluster name cannot hold spaces or '/'",
            ));
        }
        let name = match set(&vars.hostname) {
            Some(name) => name.to_owned(),
            None => host.hostname().ok_or_else(|| {
                ConfigError::inconsistent("HOSTNAME", "not set and the host name cannot be read")
            })?,
        };
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::invalid(
                "HOSTNAME",
                &name,
                "a member name cannot hold spaces",
            ));
        }
        let pod_ip = match set(&vars.pod_ip) {
            Some(raw) => raw
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| ConfigError::invalid("POD_IP", raw, "not an IP address"))?,
            None => host.first_non_loopback_address().ok_or_else(|| {
                ConfigError::inconsistent(
                    "POD_IP",
                    "not set and the host has no non-loopback address",
                )
            })?,
        };
        let default_host = match pod_ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let connect_host = |var: &str, value: &Option<String>| match set(value) {
            Some(raw) if raw.contains(char::is_whitespace) => {
                Err(ConfigError::invalid(var, raw, "not a host name or address"))
            }
            Some(raw) => Ok(raw.to_owned()),
            None => Ok(default_host.clone()),
        };
        Ok(Identity {
            scope,
            name,
            pod_ip,
            pg_port: parse_port("PGPORT", &vars.pgport, 5432)?,
            api_port: parse_port("APIPORT", &vars.apiport, 8008)?,
            pg_connect_host: connect_host("PG_CONNECT_ADDRESS", &vars.pg_connect_address)?,
            restapi_connect_host: connect_host(
                "RESTAPI_CONNECT_ADDRESS",
                &vars.restapi_connect_address,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeHost;
    impl HostFacts for FakeHost {
        fn hostname(&self) -> Option<String> {
            Some("box".into())
        }
        fn first_non_loopback_address(&self) -> Option<IpAddr> {
            Some("192.0.2.7".parse().unwrap())
        }
    }

    fn identity(f: impl FnOnce(&mut Vars)) -> Result<Identity, ConfigError> {
        let mut vars = Vars::default();
        f(&mut vars);
        Identity::from_vars(&vars, &FakeHost)
    }

    #[test]
    fn defaults_come_from_the_host() {
        let id = identity(|_| {}).unwrap();
        assert_eq!(id.scope, "dummy");
        assert_eq!(id.name, "box");
        assert_eq!(id.pg_connect_host, "192.0.2.7");
        assert_eq!((id.pg_port, id.api_port), (5432, 8008));
    }

    #[test]
    fn variables_win() {
        let id = identity(|v| {
            v.hostname = Some("acid-test-1".into());
            v.pod_ip = Some("10.244.0.12".into());
            v.restapi_connect_address = Some("acid-test-1.acid".into());
            v.apiport = Some("9008".into());
        })
        .unwrap();
        assert_eq!(id.name, "acid-test-1");
        assert_eq!(id.pg_connect_host, "10.244.0.12");
        assert_eq!(id.restapi_connect_host, "acid-test-1.acid");
        assert_eq!(id.api_port, 9008);
    }

    #[test]
    fn ipv6_is_bracketed() {
        let id = identity(|v| v.pod_ip = Some("fd00::12".into())).unwrap();
        assert_eq!(id.pg_connect_host, "[fd00::12]");
    }

    #[test]
    fn bad_values() {
        let err = identity(|v| v.pod_ip = Some("10.0.0.300".into())).unwrap_err();
        assert_eq!(err.to_string(), "POD_IP=10.0.0.300: not an IP address");
        let err = identity(|v| v.scope = Some("a/b".into())).unwrap_err();
        assert!(err.to_string().starts_with("SCOPE=a/b:"));
        let err = identity(|v| v.apiport = Some("http".into())).unwrap_err();
        assert!(err.to_string().starts_with("APIPORT=http:"));
    }

    #[test]
    fn this_host_has_a_name() {
        assert!(ThisHost.hostname().is_some());
    }
}
