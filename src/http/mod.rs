//! The HTTP API (axum): one `router()` per module, merged here.

pub mod auth;
pub mod check;
pub mod error;
pub mod extract;
pub mod grpc;
pub mod ops;
pub mod probe;
pub mod refresh;
pub mod revoke;
pub mod revoke_batch;
pub mod server;
pub mod stats;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit};
use tower_http::trace::TraceLayer;

use crate::{
    config::Config,
    read::checker::Checker,
    read::refresh::RefreshChecker,
    store::{pg::Db, redis::DenyList},
    write::submit::Submitter,
};
use auth::KeyRing;

/// Shared state of every handler: one `Arc`, so a request clones one pointer.
pub type AppState = Arc<Shared>;

/// What [`AppState`] points to.
pub struct Shared {
    /// The read path.
    pub checker: Arc<Checker>,
    /// Redis deny-list (fast connection).
    pub deny: DenyList,
    /// Postgres record.
    pub db: Db,
    /// Keys that protect the check endpoints, when set.
    pub check_keys: Arc<KeyRing>,
    /// Keys of the write API.
    pub api_keys: Arc<KeyRing>,
    /// The write path.
    pub submitter: Arc<Submitter>,
    /// The queue's configuration (for stats).
    pub queue: apalis_redis::Config,
    /// Configuration.
    pub config: Arc<Config>,
    /// Lifetimes of what is stored.
    pub ttl: crate::store::TtlPolicy,
    /// What `/readyz` and `/metrics` report, refreshed at most once per interval.
    pub probe: Arc<crate::http::probe::Probe>,
}

impl Shared {
    /// The refresh-token read path over this state.
    pub fn refresh_checker(&self) -> RefreshChecker<'_> {
        RefreshChecker {
            checker: &self.checker,
            deny: &self.deny,
            db: &self.db,
            submitter: self.submitter.as_ref(),
            fail_mode: self.config.fail_mode,
            family_ttl: self.ttl.watermark(),
        }
    }
}

/// Every route, with the body limit and request tracing — except the
/// gateways' hot path `/v1/auth`, which reads no body and logs its own
/// failures, so a check pays for neither layer.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(check::router())
        .merge(ops::router())
        .merge(revoke::router())
        .merge(stats::router())
        .merge(refresh::router())
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        // Logs method, path and status only: never headers, bodies or the
        // query string, which carry tokens (`?token=`), at any level.
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        // Merged after the layers, which apply only to routes already added.
        .merge(check::auth_router())
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

/// The span of a request: method and path, never the query string (the
/// default span records the whole URI at debug level).
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        version = ?request.version(),
    )
}
