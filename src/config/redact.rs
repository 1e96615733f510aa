//! Secrets out of output: a URL setting is shown with its password (and its
//! query values, which may hold one) replaced by `***`, and an error about a
//! URL has every such part removed before it is printed or logged.
//!
//! Parsing is by hand, not by a URL parser: the input is exactly the text
//! that may not parse, and a malformed URL must not print its password.

use std::fmt::Display;

const MASK: &str = "***";

/// `url` for display: `scheme://user:***@host/path?key=***`. Text without a
/// password or query comes back unchanged.
pub fn url(url: &str) -> String {
    let (userinfo, _) = split_userinfo(url);
    let mut shown = match userinfo.and_then(|(start, end)| password_span(url, start, end)) {
        Some((from, to)) => format!("{}{MASK}{}", &url[..from], &url[to..]),
        None => url.to_owned(),
    };
    if let Some(q) = shown.find('?') {
        let (head, query) = shown.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={MASK}"),
                None => pair.to_owned(),
            })
            .collect();
        shown = format!("{head}{}", masked.join("&"));
    }
    shown
}

/// `message` (an error about the setting whose value is `url`) without any
/// secret part of `url`: its password, raw and percent-decoded, and its
/// query values.
pub fn scrub(message: &str, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    let (userinfo, _) = split_userinfo(url);
    if let Some((from, to)) = userinfo.and_then(|(start, end)| password_span(url, start, end)) {
        secrets.push(url[from..to].to_owned());
        secrets.push(percent_decode(&url[from..to]));
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((_, value)) = pair.split_once('=') {
                secrets.push(value.to_owned());
                secrets.push(percent_decode(value));
            }
        }
    }
    // Longest first, so a secret containing another is removed whole.
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    let mut message = message.replace(url, &self::url(url));
    for secret in &secrets {
        message = message.replace(secret.as_str(), MASK);
    }
    message
}

/// The error of a URL setting `name` that does not parse, scrubbed.
pub fn url_error(name: &str, url: &str, error: impl Display) -> anyhow::Error {
    anyhow::anyhow!("invalid {name}: {}", scrub(&format!("{error:#}"), url))
}

/// Byte range of the userinfo (`user:password`) before the authority's last
/// `@`, and the rest. The last `@`, so a password with a raw `@` is covered.
fn split_userinfo(url: &str) -> (Option<(usize, usize)>, usize) {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].rfind('@') {
        Some(at) => (Some((start, start + at)), start + at + 1),
        None => (None, start),
    }
}

/// Byte range of the password inside the userinfo `url[start..end]`.
fn password_span(url: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let colon = url[start..end].find(':')?;
    Some((start + colon + 1, end))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_query_values_are_masked_and_the_rest_kept() {
        assert_eq!(
            url("postgres://app:s3cr%40t@db:5432/revokd?sslmode=require"),
            "postgres://app:***@db:5432/revokd?sslmode=***"
        );
        assert_eq!(url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(url("redis://a:p@ss@h"), "redis://a:***@h");
        assert_eq!(
            url("postgres://postgres@127.0.0.1:5432/revokd"),
            "postgres://postgres@127.0.0.1:5432/revokd"
        );
        assert_eq!(url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            url("postgres://app:pw@h1:5432,[::1]:5433/revokd?target_session_attrs=read-write"),
            "postgres://app:***@h1:5432,[::1]:5433/revokd?target_session_attrs=***"
        );
    }

    #[test]
    fn errors_lose_every_secret_part_of_the_url() {
        let u = "redis://:p%40ss@h/0?protocol=tok3n";
        let message = format!("bad {u}: p@ss / p%40ss / value tok3n");
        let scrubbed = scrub(&message, u);
        assert!(
            !scrubbed.contains("p@ss")
                && !scrubbed.contains("p%40ss")
                && !scrubbed.contains("tok3n"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("redis://:***@h/0"), "{scrubbed}");
    }
}
