//! The issuers tokens are accepted from, as configured: one from the `JWT_*`
//! settings, or several from `REVOKD_ISSUERS_FILE` (TOML `[[issuer]]`
//! tables). Each names where its keys come from, the `iss` it pins, and its
//! own audience, algorithms and leeway.

use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::keys::parse_algorithm;
use super::remote::Endpoint;
use super::{KeyError, KeySettings};

/// One trusted issuer, as configured.
#[derive(Debug, Clone)]
pub(super) struct IssuerSpec {
    /// The `iss` its tokens must carry (`None`: not checked; only for the
    /// one issuer of the `JWT_*` settings without `JWT_ISSUER`).
    pub iss: Option<String>,
    pub keys: KeySpec,
    /// The algorithm of a key that names none.
    pub algorithm: Option<Algorithm>,
    /// When set, the only algorithms accepted.
    pub allowed: Option<Vec<Algorithm>>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

/// Where an issuer's keys come from.
#[derive(Clone)]
pub(super) enum KeySpec {
    Secret(String),
    PublicKey(PathBuf),
    JwksFile(PathBuf),
    Remote(Endpoint),
}

impl std::fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret([redacted])"),
            Self::PublicKey(path) => f.debug_tuple("PublicKey").field(path).finish(),
            Self::JwksFile(path) => f.debug_tuple("JwksFile").field(path).finish(),
            Self::Remote(endpoint) => f.debug_tuple("Remote").field(endpoint).finish(),
        }
    }
}

/// Whether `settings` trust tokens whose `iss` is `iss`, as the
/// [`super::Verifier`] they build would (an issuer configured without
/// `JWT_ISSUER` takes any); an error when the settings configure no issuer.
/// For commands that name an issuer without building a verifier.
pub fn trusts_issuer(settings: &KeySettings, iss: &str) -> Result<bool, KeyError> {
    Ok(issuer_specs(settings)?
        .iter()
        .any(|spec| accepts(spec.iss.as_deref(), iss)))
}

/// Whether an issuer configured with `configured` (`None`: no `iss`
/// pinned) takes tokens whose `iss` is `iss`.
pub(super) fn accepts(configured: Option<&str>, iss: &str) -> bool {
    configured.is_none_or(|known| known == iss)
}

/// The issuers `settings` configure, at least one, with distinct `iss`.
pub(super) fn issuer_specs(settings: &KeySettings) -> Result<Vec<IssuerSpec>, KeyError> {
    // Several key settings at once are refused whichever they are.
    let local = match super::keys::Source::from_settings(settings) {
        Err(several @ KeyError::SeveralKeys(_)) => return Err(several),
        other => other,
    };
    let algorithm = settings
        .algorithm
        .as_deref()
        .map(parse_algorithm)
        .transpose()?;
    let one = |iss: Option<String>, keys: KeySpec| IssuerSpec {
        iss,
        keys,
        algorithm,
        allowed: None,
        audience: settings.audience.clone(),
        leeway_secs: settings.leeway_secs,
    };
    if let Some(path) = &settings.issuers_file {
        let clash = if settings.issuer.is_some() {
            Some("JWT_ISSUER cannot be combined with it: each [[issuer]] names its own")
        } else if settings.algorithm.is_some() {
            Some("JWT_ALGORITHM cannot be combined with it: use each [[issuer]]'s `algorithms`")
        } else {
            None
        };
        if let Some(reason) = clash {
            return Err(KeyError::IssuersFile {
                path: path.clone(),
                reason: reason.into(),
            });
        }
        return read_issuers_file(path, settings);
    }
    if let Some(issuer) = &settings.oidc_issuer {
        let issuer = check_url("JWT_OIDC_ISSUER", issuer)?;
        if settings
            .issuer
            .as_ref()
            .is_some_and(|pinned| *pinned != issuer)
        {
            return Err(KeyError::Remote {
                setting: "JWT_ISSUER".into(),
                reason: "differs from JWT_OIDC_ISSUER, which already pins `iss`".into(),
            });
        }
        let endpoint = Endpoint::Discovery(issuer.clone());
        return Ok(vec![one(Some(issuer), KeySpec::Remote(endpoint))]);
    }
    if let Some(url) = &settings.jwks_url {
        let url = check_url("JWT_JWKS_URL", url)?;
        // A key set may serve many issuers (one provider's tenants): the
        // `iss` to accept must be named.
        if settings.issuer.is_none() {
            return Err(KeyError::Remote {
                setting: "JWT_JWKS_URL".into(),
                reason: "needs JWT_ISSUER, the `iss` its tokens carry".into(),
            });
        }
        let keys = KeySpec::Remote(Endpoint::Jwks(url));
        return Ok(vec![one(settings.issuer.clone(), keys)]);
    }
    let keys = match local? {
        super::keys::Source::Secret(secret) => KeySpec::Secret(secret.to_owned()),
        super::keys::Source::PublicKey(path) => KeySpec::PublicKey(path.to_owned()),
        super::keys::Source::Jwks(path) => KeySpec::JwksFile(path.to_owned()),
    };
    Ok(vec![one(settings.issuer.clone(), keys)])
}

/// An http(s) URL, as given (trimmed).
fn check_url(setting: &str, url: &str) -> Result<String, KeyError> {
    let url = url.trim();
    let bad = |reason: &str| KeyError::Remote {
        setting: setting.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(bad("not an http(s) URL"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("the URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("the URL must not carry credentials"));
    }
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if parsed.scheme() == "http" && !loopback {
        tracing::warn!(
            setting,
            "keys are fetched over plain http: anyone on the path can swap them; use https"
        );
    }
    Ok(url.to_owned())
}

/// `REVOKD_ISSUERS_FILE`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuersFile {
    #[serde(default)]
    issuer: Vec<IssuerEntry>,
}

/// One `[[issuer]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerEntry {
    /// The `iss` its tokens carry (defaults to `oidc_issuer`).
    issuer: Option<String>,
    oidc_issuer: Option<String>,
    jwks_url: Option<String>,
    jwks_file: Option<PathBuf>,
    public_key_file: Option<PathBuf>,
    secret: Option<String>,
    audience: Option<String>,
    algorithms: Option<Vec<String>>,
    leeway_secs: Option<u64>,
}

fn read_issuers_file(path: &Path, settings: &KeySettings) -> Result<Vec<IssuerSpec>, KeyError> {
    let bad = |reason: String| KeyError::IssuersFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    // toml's message quotes the offending line, which may hold a secret:
    // say where, not what.
    let file: IssuersFile = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(String::new(), |span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            format!(" at line {line}")
        });
        bad(format!("not a valid [[issuer]] list{at}: {}", e.message()))
    })?;
    if file.issuer.is_empty() {
        return Err(bad("no [[issuer]] table".into()));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut specs: Vec<IssuerSpec> = Vec::with_capacity(file.issuer.len());
    for (index, entry) in file.issuer.into_iter().enumerate() {
        let name = format!("[[issuer]] #{}", index + 1);
        let spec = entry_spec(entry, base, settings, &name)
            .map_err(|reason| bad(format!("{name}: {reason}")))?;
        if specs.iter().any(|other| other.iss == spec.iss) {
            return Err(bad(format!(
                "{name}: issuer {:?} is listed twice",
                spec.iss.as_deref().unwrap_or_default()
            )));
        }
        specs.push(spec);
    }
    Ok(specs)
}

fn entry_spec(
    entry: IssuerEntry,
    base: &Path,
    settings: &KeySettings,
    name: &str,
) -> Result<IssuerSpec, String> {
    let resolve = |path: PathBuf| {
        if path.is_absolute() {
            path
        } else {
            base.join(path)
        }
    };
    let sources = [
        entry.oidc_issuer.is_some(),
        entry.jwks_url.is_some(),
        entry.jwks_file.is_some(),
        entry.public_key_file.is_some(),
        entry.secret.is_some(),
    ];
    if sources.iter().filter(|on| **on).count() != 1 {
        return Err(
            "set exactly one of oidc_issuer, jwks_url, jwks_file, public_key_file, secret".into(),
        );
    }
    let url = |url: &str| check_url(name, url).map_err(|e| e.to_string());
    let (iss, keys) = if let Some(oidc) = &entry.oidc_issuer {
        let oidc = url(oidc)?;
        if entry.issuer.as_ref().is_some_and(|iss| *iss != oidc) {
            return Err("issuer differs from oidc_issuer, which already pins `iss`".into());
        }
        (oidc.clone(), KeySpec::Remote(Endpoint::Discovery(oidc)))
    } else {
        let iss = entry
            .issuer
            .clone()
            .ok_or("`issuer` (the `iss` its tokens carry) is required")?;
        let keys = if let Some(jwks) = entry.jwks_url {
            KeySpec::Remote(Endpoint::Jwks(url(&jwks)?))
        } else if let Some(file) = entry.jwks_file {
            KeySpec::JwksFile(resolve(file))
        } else if let Some(file) = entry.public_key_file {
            KeySpec::PublicKey(resolve(file))
        } else if let Some(secret) = entry.secret {
            KeySpec::Secret(secret)
        } else {
            return Err("no key source".into());
        };
        (iss, keys)
    };
    if iss.is_empty() {
        return Err("`issuer` is empty".into());
    }
    let allowed = entry
        .algorithms
        .map(|names| {
            names
                .iter()
                .map(|n| parse_algorithm(n).map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    if allowed.as_ref().is_some_and(Vec::is_empty) {
        return Err("`algorithms` is empty".into());
    }
    Ok(IssuerSpec {
        iss: Some(iss),
        keys,
        algorithm: allowed.as_ref().and_then(|a| a.first().copied()),
        allowed,
        audience: entry.audience.or_else(|| settings.audience.clone()),
        leeway_secs: entry.leeway_secs.unwrap_or(settings.leeway_secs),
    })
}
