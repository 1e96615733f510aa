//! A real OpenID provider for the tests: panva's `oidc-provider`, run by
//! node from `tests/idp/provider.mjs` (its packages: `npm ci --prefix
//! tests/idp`). It signs RFC 9068 access tokens (ES256) with keys kept in a
//! directory of its own, so a restart with another order of kids is a key
//! rotation, and it counts the requests to its JWKS endpoint.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{assert::missing_program, redis_server::free_port};

/// The IdP's program and its packages.
const IDP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/idp");

/// How long a start may take before the test fails.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running oidc-provider (`tests/idp/provider.mjs`), killed on drop.
///
/// Its issuer is `http://127.0.0.1:<port>` (no trailing slash, the `iss` of
/// its tokens); its one client is [`Idp::CLIENT_ID`] (confidential,
/// `client_credentials` only, HTTP Basic), and every access token is for
/// [`Idp::AUDIENCE`]: a JWT with header `typ: at+jwt`, `alg: ES256` and the
/// first kid, and claims `jti`, `sub` (the client id), `iat`, `exp` (10
/// minutes on), `scope` (`api`), `client_id`, `iss`, `aud`.
pub struct Idp {
    port: u16,
    issuer: String,
    /// The temp dir this Idp owns: `keys/` (one private JWK per kid) and
    /// `node.log` (the program's stdout and stderr, every start).
    dir: PathBuf,
    secret: String,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Idp {
    /// The client's id, which is also the tokens' `sub` and `client_id`.
    pub const CLIENT_ID: &str = "revokd-test";
    /// The tokens' `aud`: the one resource (API) of the IdP.
    pub const AUDIENCE: &str = "urn:revokd:api";

    /// Starts one on a free port signing with `kids` (the first signs; the
    /// others are only published), keys kept in a temp dir owned by this
    /// Idp so restarts reuse them. None (the test skips) when node or
    /// `tests/idp/node_modules` is missing, but a panic instead when `CI`
    /// or `REVOKD_REQUIRE_IDP` is set.
    pub async fn start(kids: &[&str]) -> Option<Idp> {
        let mut idp = Self::reserve()?;
        idp.restart(kids).await;
        Some(idp)
    }

    /// An Idp that is not running yet: a port reserved (nothing listens
    /// there until [`Idp::restart`]) and its temp dir, so that a test can
    /// start revokd before the IdP. None as for [`Idp::start`].
    pub fn reserve() -> Option<Idp> {
        if !installed() {
            return None;
        }
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("revokd-idp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("keys")).expect("idp temp dir");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        Some(Idp {
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            dir,
            secret: uuid::Uuid::new_v4().simple().to_string(),
            child: None,
            http,
        })
    }

    /// The issuer URL, `http://127.0.0.1:<port>` with no trailing slash:
    /// exactly the tokens' `iss` and discovery's `issuer`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JWKS URL, as discovery gives it (`<issuer>/jwks`; each start
    /// checks discovery still says so). Known before the IdP runs.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// The token endpoint, as discovery gives it (checked on each start).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// A fresh access token from the token endpoint (`client_credentials`,
    /// scope `api`, HTTP Basic client authentication).
    pub async fn access_token(&self) -> String {
        let response = self
            .http
            .post(self.token_url())
            .basic_auth(Self::CLIENT_ID, Some(&self.secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "api")])
            .send()
            .await
            .expect("idp token endpoint");
        let status = response.status();
        let body: Value = response.json().await.expect("idp token answer");
        assert_eq!(status, 200, "idp token endpoint answered {status} {body}");
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("idp token answer without access_token: {body}"))
            .to_owned()
    }

    /// How many requests the JWKS endpoint has had since the IdP last
    /// started (a restart counts from 0 again).
    pub async fn jwks_fetches(&self) -> u64 {
        let url = format!("{}/__test/jwks-fetches", self.issuer);
        let body: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("idp jwks-fetches")
            .json()
            .await
            .expect("idp jwks-fetches answer");
        body["count"].as_u64().expect("count")
    }

    /// kill -9, and reap it: the port is free again (the keys stay).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts it on the same port with `kids` in this order (the first
    /// signs): keys of kids seen before are reused from its dir, new kids
    /// get new keys. Returns once discovery answers; panics, with the
    /// program's output, when it does not within 20 s.
    pub async fn restart(&mut self, kids: &[&str]) {
        assert!(!kids.is_empty(), "an Idp needs at least one kid");
        self.stop();
        let log_path = self.dir.join("node.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("idp log");
        let child = Command::new("node")
            .arg(Path::new(IDP_DIR).join("provider.mjs"))
            .args(["--port", &self.port.to_string()])
            .arg("--keys-dir")
            .arg(self.dir.join("keys"))
            .args(["--kids", &kids.join(","), "--client-id", Self::CLIENT_ID])
            .args(["--resource", Self::AUDIENCE])
            // by the environment, not on the command line
            .env("IDP_CLIENT_SECRET", &self.secret)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("idp log"))
            .stderr(log)
            .spawn()
            .expect("node");
        self.child = Some(child);
        self.wait_ready(&log_path).await;
    }

    /// Waits until discovery answers, as this IdP.
    async fn wait_ready(&mut self, log_path: &Path) {
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer);
        let started = Instant::now();
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "idp exited ({status}) before answering:\n{}",
                    read_log(log_path)
                );
            }
            if let Ok(response) = self.http.get(&discovery).send().await
                && response.status() == 200
                && let Ok(body) = response.json::<Value>().await
            {
                assert_eq!(body["issuer"], self.issuer.as_str(), "idp discovery {body}");
                assert_eq!(body["jwks_uri"], self.jwks_url(), "idp discovery {body}");
                assert_eq!(
                    body["token_endpoint"],
                    self.token_url(),
                    "idp discovery {body}"
                );
                return;
            }
            if started.elapsed() > READY_WITHIN {
                self.stop();
                panic!(
                    "idp did not answer {discovery} within {READY_WITHIN:?}:\n{}",
                    read_log(log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether node and the IdP's packages are there; reports what is missing
/// (a skip, or a panic under CI / `REVOKD_REQUIRE_IDP`).
fn installed() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node {
        missing_program("node (for the test IdP)", &["REVOKD_REQUIRE_IDP"]);
        return false;
    }
    if !Path::new(IDP_DIR)
        .join("node_modules/oidc-provider/package.json")
        .exists()
    {
        missing_program(
            "oidc-provider (npm ci --prefix tests/idp)",
            &["REVOKD_REQUIRE_IDP"],
        );
        return false;
    }
    true
}

/// The program's output so far, for a failure message.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"))
}
