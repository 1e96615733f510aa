//! `deploy/compose.yaml` as the deployment test reads it: the services with
//! what compose would give them (YAML merge keys applied, `${VAR}`
//! interpolated, `env_file` and `environment` over the image's `ENV`), and
//! the root Dockerfile's entry point and environment. No engine: this is
//! the part of compose's model the test maps onto local processes.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The deployment directory, `deploy/`.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The compose file, read.
#[derive(Deserialize)]
pub struct Compose {
    pub services: BTreeMap<String, Service>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: BTreeMap<String, Value>,
}

/// One service, with the keys the test maps or checks.
#[derive(Deserialize)]
pub struct Service {
    pub image: Option<String>,
    pub build: Option<Value>,
    pub restart: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    pub env_file: Option<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, DependsOn>,
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub ports: Vec<String>,
}

#[derive(Deserialize)]
pub struct DependsOn {
    pub condition: String,
}

#[derive(Deserialize)]
pub struct Healthcheck {
    /// `["CMD", program, args...]` or `["CMD-SHELL", script]`.
    pub test: Vec<String>,
}

impl Compose {
    /// Reads `deploy/compose.yaml`, interpolating `${NAME}`,
    /// `${NAME:?message}` and `${NAME:-default}` from `vars` (a variable
    /// required and missing is a panic, as it is an error for compose).
    pub fn load(vars: &HashMap<&str, &str>) -> Compose {
        let path = deploy_dir().join("compose.yaml");
        let text = std::fs::read_to_string(&path).expect("deploy/compose.yaml");
        let mut value: Value = serde_yaml_ng::from_str(&text).expect("compose.yaml is YAML");
        value.apply_merge().expect("merge keys");
        interpolate_all(&mut value, vars);
        serde_yaml_ng::from_value(value).expect("compose.yaml's services")
    }

    /// The environment a service's process gets: the image's `ENV`, then
    /// its `env_file`, then its `environment`.
    pub fn environment(&self, name: &str, image: &Dockerfile) -> BTreeMap<String, String> {
        let service = &self.services[name];
        let mut env = image.env.clone();
        if let Some(file) = &service.env_file {
            env.extend(env_file(&deploy_dir().join(file)));
        }
        env.extend(service.environment.clone());
        env
    }

    /// The services whose command starts with `program`, by name.
    pub fn running<'a>(&'a self, program: &'a str) -> impl Iterator<Item = (&'a str, &'a Service)> {
        self.services
            .iter()
            .filter(move |(_, s)| s.command.first().map(String::as_str) == Some(program))
            .map(|(name, s)| (name.as_str(), s))
    }

    /// The revokd services (built from the Dockerfile) with their roles.
    pub fn revokd(&self) -> Vec<(&str, &Service, &str)> {
        self.services
            .iter()
            .filter(|(_, s)| s.build.is_some())
            .map(|(name, s)| {
                let roles = match s.command.iter().position(|a| a == "--roles") {
                    Some(i) => s.command[i + 1].as_str(),
                    None => "api,worker,scheduler",
                };
                (name.as_str(), s, roles)
            })
            .collect()
    }
}

impl Service {
    /// The host path bind-mounted at `target`, if any (relative to deploy/).
    pub fn mounted_at(&self, target: &str) -> Option<PathBuf> {
        self.volumes.iter().find_map(|v| {
            let mut parts = v.split(':');
            let (source, at) = (parts.next()?, parts.next()?);
            (at == target && source.starts_with('.')).then(|| deploy_dir().join(source))
        })
    }

    /// The named volume mounted at `target`, if any.
    pub fn volume_at(&self, target: &str) -> Option<&str> {
        self.volumes.iter().find_map(|v| {
            let mut parts = v.split(':');
            let (source, at) = (parts.next()?, parts.next()?);
            (at == target && !source.starts_with(['.', '/'])).then_some(source)
        })
    }
}

/// The root Dockerfile's last stage: its `ENTRYPOINT` and `ENV`.
pub struct Dockerfile {
    pub entrypoint: Vec<String>,
    pub env: BTreeMap<String, String>,
}

impl Dockerfile {
    pub fn load() -> Dockerfile {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
        let text = std::fs::read_to_string(path).expect("Dockerfile");
        let last = text.rsplit("\nFROM ").next().expect("a stage");
        let mut image = Dockerfile {
            entrypoint: Vec::new(),
            env: BTreeMap::new(),
        };
        for line in last.lines() {
            if let Some(json) = line.strip_prefix("ENTRYPOINT ") {
                image.entrypoint = serde_json::from_str(json).expect("ENTRYPOINT in exec form");
            } else if let Some(pairs) = line.strip_prefix("ENV ") {
                for pair in pairs.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV in KEY=VALUE form");
                    image.env.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        image
    }
}

/// An env file as compose reads it: `KEY=VALUE` lines, `#` comments.
fn env_file(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn interpolate_all(value: &mut Value, vars: &HashMap<&str, &str>) {
    match value {
        Value::String(s) => *s = interpolate(s, vars),
        Value::Sequence(items) => items.iter_mut().for_each(|v| interpolate_all(v, vars)),
        Value::Mapping(map) => map.values_mut().for_each(|v| interpolate_all(v, vars)),
        _ => {}
    }
}

/// `${NAME}`, `${NAME:?message}`, `${NAME:-default}` in `s`.
fn interpolate(s: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("a closing }");
        let expr = &rest[start + 2..end];
        let (name, default) = match (expr.split_once(":?"), expr.split_once(":-")) {
            (Some((name, message)), _) => (name, Err(message)),
            (None, Some((name, default))) => (name, Ok(default)),
            (None, None) => (expr, Ok("")),
        };
        match (vars.get(name), default) {
            (Some(value), _) => out.push_str(value),
            (None, Ok(default)) => out.push_str(default),
            (None, Err(message)) => panic!("compose needs {name}: {message}"),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}
