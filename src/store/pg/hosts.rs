//! `DATABASE_URL` with several hosts, in libpq's syntax:
//! `postgres://user@h1:5432,h2:5433/db?target_session_attrs=read-write`.
//!
//! sqlx parses one host per URL, so the host list and
//! `target_session_attrs` are taken out here and every other part (user,
//! password, database, query parameters) is left to sqlx, parsed once and
//! copied to each host. Parsing is by hand, not by a URL parser: a list of
//! hosts is not a URL authority. A URL with one host and no
//! `target_session_attrs` is [`Parsed::Single`], given to sqlx untouched.
//!
//! Unlike libpq, several hosts without `target_session_attrs` mean
//! `read-write`: revokd writes, so a standby is never the one it wants.
//! Error messages name hosts and parameters, never the userinfo.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

/// What a server must be to be used (libpq's `target_session_attrs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAttrs {
    /// Any server that accepts the connection.
    Any,
    /// A server whose sessions are not read-only (`transaction_read_only`
    /// is `off`).
    ReadWrite,
    /// A server not in recovery (`pg_is_in_recovery()` is false).
    Primary,
}

impl SessionAttrs {
    /// A query answering whether the server connected to qualifies; `None`
    /// when any server does.
    pub fn check_sql(self) -> Option<&'static str> {
        match self {
            SessionAttrs::Any => None,
            SessionAttrs::ReadWrite => {
                Some("select current_setting('transaction_read_only') = 'off'")
            }
            SessionAttrs::Primary => Some("select not pg_is_in_recovery()"),
        }
    }

    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "any" => Ok(SessionAttrs::Any),
            "read-write" => Ok(SessionAttrs::ReadWrite),
            "primary" => Ok(SessionAttrs::Primary),
            "read-only" | "standby" | "prefer-standby" => Err(format!(
                "target_session_attrs={value} is not supported: revokd writes (use read-write, primary or any)"
            )),
            _ => Err(format!(
                "target_session_attrs must be any, read-write or primary, not {value:?}"
            )),
        }
    }
}

/// One host of the list.
#[derive(Clone, Debug)]
pub struct Host {
    /// `host:port`, for logs (no credentials).
    pub label: String,
    /// Every connect option of the URL, with this host and port.
    pub options: PgConnectOptions,
}

/// A parsed `DATABASE_URL`.
#[derive(Debug)]
pub enum Parsed {
    /// One host and no `target_session_attrs`: sqlx's own parse, as is.
    Single(Box<PgConnectOptions>),
    /// The hosts, in the URL's order, and what they must be.
    Several(Vec<Host>, SessionAttrs),
}

/// Parses `url` (see the module doc).
pub fn parse(url: &str) -> Result<Parsed, sqlx::Error> {
    let Some(scheme_end) = url.find("://") else {
        return PgConnectOptions::from_str(url).map(|o| Parsed::Single(Box::new(o)));
    };
    let start = scheme_end + 3;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_list) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let (query, fragment) = match query.and_then(|q| q.split_once('#')) {
        Some((query, fragment)) => (Some(query), Some(fragment)),
        None => (query, None),
    };
    let mut attrs = None;
    let mut kept = Vec::new();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        match pair.split_once('=') {
            Some(("target_session_attrs", value)) => {
                attrs = Some(SessionAttrs::parse(value).map_err(config)?);
            }
            _ => kept.push(pair),
        }
    }
    let several = host_list.contains(',');
    if !several && attrs.is_none() {
        return PgConnectOptions::from_str(url).map(|o| Parsed::Single(Box::new(o)));
    }
    if several
        && kept.iter().any(|pair| {
            matches!(
                pair.split_once('=').map_or(*pair, |(key, _)| key),
                "host" | "hostaddr" | "port"
            )
        })
    {
        return Err(config(
            "with several hosts, hosts and ports belong in the URL's host list, not in host, hostaddr or port parameters".into(),
        ));
    }
    let hosts = host_list
        .split(',')
        .map(split_host)
        .collect::<Result<Vec<_>, _>>()
        .map_err(config)?;
    // sqlx parses every other part once, from the URL with the first host
    // and no port, so that a host without a port gets sqlx's default.
    let mut base = format!("{}{userinfo}{}{path}", &url[..start], hosts[0].0);
    if !kept.is_empty() {
        base.push('?');
        base.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        base.push('#');
        base.push_str(fragment);
    }
    let options = PgConnectOptions::from_str(&base)?;
    let default_port = options.get_port();
    let hosts = hosts
        .into_iter()
        .map(|(name, port)| {
            let port = port.unwrap_or(default_port);
            // The brackets are the URL's, not the address's.
            let bare = name.trim_start_matches('[').trim_end_matches(']');
            Host {
                label: format!("{name}:{port}"),
                options: options.clone().host(bare).port(port),
            }
        })
        .collect();
    Ok(Parsed::Several(
        hosts,
        attrs.unwrap_or(SessionAttrs::ReadWrite),
    ))
}

/// `host[:port]` or `[v6 address][:port]`.
fn split_host(entry: &str) -> Result<(&str, Option<u16>), String> {
    let (name, port) = if entry.starts_with('[') {
        let close = entry
            .find(']')
            .ok_or_else(|| format!("unclosed '[' in host {entry:?}"))?;
        let (name, after) = entry.split_at(close + 1);
        match after {
            "" => (name, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (name, Some(port)),
                None => return Err(format!("unexpected text after ']' in host {entry:?}")),
            },
        }
    } else {
        match entry.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (entry, None),
        }
    };
    if name.is_empty() || name == "[]" {
        return Err("an empty host in the host list".into());
    }
    if name.starts_with('/') || name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2f")) {
        return Err("a Unix-socket directory cannot be one of several hosts".into());
    }
    let port = match port {
        None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {port:?} of host {name:?}"))?,
        ),
    };
    Ok((name, port))
}

fn config(message: String) -> sqlx::Error {
    sqlx::Error::Configuration(message.into())
}

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions;

    use super::*;

    fn several(url: &str) -> (Vec<Host>, SessionAttrs) {
        match parse(url).unwrap() {
            Parsed::Several(hosts, attrs) => (hosts, attrs),
            Parsed::Single(_) => panic!("{url}: one host"),
        }
    }

    fn labels(hosts: &[Host]) -> Vec<&str> {
        hosts.iter().map(|h| h.label.as_str()).collect()
    }

    #[test]
    fn one_host_without_attributes_is_sqlx_s_own_parse() {
        let url = "postgres://app:pw@db:6000/revokd?sslmode=disable";
        let Parsed::Single(options) = parse(url).unwrap() else {
            panic!("several");
        };
        assert_eq!(options.get_host(), "db");
        assert_eq!(options.get_port(), 6000);
        assert_eq!(options.get_database(), Some("revokd"));
    }

    #[test]
    fn several_hosts_keep_their_order_ports_and_every_other_part() {
        let (hosts, attrs) = several(
            "postgres://app:p%40ss%2Cw@h1:5432,h2:5433,h3/revokd?sslmode=disable&application_name=x",
        );
        assert_eq!(labels(&hosts), ["h1:5432", "h2:5433", "h3:5432"]);
        assert_eq!(
            attrs,
            SessionAttrs::ReadWrite,
            "several hosts default to read-write"
        );
        for host in &hosts {
            assert_eq!(host.options.get_username(), "app");
            assert_eq!(host.options.get_database(), Some("revokd"));
            assert_eq!(host.options.get_application_name(), Some("x"));
            // The percent-decoded password reached sqlx: its URL shows it
            // encoded again.
            assert!(
                host.options
                    .to_url_lossy()
                    .as_str()
                    .contains("app:p%40ss%2Cw@"),
                "{}",
                host.options.to_url_lossy()
            );
        }
        assert_eq!(hosts[1].options.get_host(), "h2");
        assert_eq!(hosts[1].options.get_port(), 5433);
    }

    #[test]
    fn ipv6_hosts_lose_their_brackets_and_keep_their_ports() {
        let (hosts, _) = several("postgres://u@[::1]:5432,[fe80::2],127.0.0.1:7/db");
        assert_eq!(
            labels(&hosts),
            ["[::1]:5432", "[fe80::2]:5432", "127.0.0.1:7"]
        );
        assert_eq!(hosts[0].options.get_host(), "::1");
        assert_eq!(hosts[1].options.get_host(), "fe80::2");
    }

    #[test]
    fn target_session_attrs_are_read_and_removed_from_what_sqlx_sees() {
        for (value, attrs) in [
            ("any", SessionAttrs::Any),
            ("read-write", SessionAttrs::ReadWrite),
            ("primary", SessionAttrs::Primary),
        ] {
            let url = format!("postgres://u@h1,h2/db?sslmode=disable&target_session_attrs={value}");
            assert_eq!(several(&url).1, attrs);
            // One host with the attribute is probed too.
            let url = format!("postgres://u@h1/db?target_session_attrs={value}");
            let (hosts, got) = several(&url);
            assert_eq!((labels(&hosts), got), (vec!["h1:5432"], attrs));
        }
    }

    #[test]
    fn unsupported_or_malformed_lists_are_refused_without_the_password() {
        for url in [
            "postgres://u:hunter2@h1,h2/db?target_session_attrs=read-only",
            "postgres://u:hunter2@h1,h2/db?target_session_attrs=standby",
            "postgres://u:hunter2@h1,h2/db?target_session_attrs=bogus",
            "postgres://u:hunter2@h1,,h2/db",
            "postgres://u:hunter2@h1,/db",
            "postgres://u:hunter2@h1:x,h2/db",
            "postgres://u:hunter2@h1:0,h2/db",
            "postgres://u:hunter2@h1:70000,h2/db",
            "postgres://u:hunter2@[::1,h2/db",
            "postgres://u:hunter2@[::1]x,h2/db",
            "postgres://u:hunter2@[],h2/db",
            "postgres://u:hunter2@h1,h2/db?port=5433",
            "postgres://u:hunter2@h1,h2/db?host=h3",
            "postgres://u:hunter2@%2Fvar%2Frun%2Fpostgresql,h2/db",
        ] {
            let error = parse(url).expect_err(url).to_string();
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }

    #[test]
    fn odd_input_never_panics() {
        for url in [
            "",
            "://",
            "postgres://",
            "postgres://,",
            "postgres://@,",
            "postgres://[",
            "postgres://]:,",
            "postgres://h1,h2?",
            "postgres://h1,h2#",
            "postgres://h1,h2/?&&=&target_session_attrs",
            "postgres://é,ü/é?target_session_attrs=any",
            "postgres://h1,h2/db?target_session_attrs=",
        ] {
            let _ = parse(url);
        }
    }
}
