//! gRPC ext_authz: Envoy's `envoy.service.auth.v3.Authorization/Check` on
//! `REVOKD_GRPC_LISTEN`, as Istio and Envoy's `grpc_service` call it. Each
//! check is answered by `/v1/auth`'s own decision ([`auth_decision`]),
//! translated: the same checks, metrics, headers and statuses.
//!
//! - Allowed: an OK status with `X-Auth-Subject` and `X-Auth-Token-Id` set
//!   on the upstream request, replacing every value the client sent (kept
//!   when empty). Not through `headers_to_remove`: Envoy applies it after
//!   the headers it sets, so it would remove revokd's own values too.
//! - Refused or undecidable: a denied status with the HTTP status, headers
//!   (`WWW-Authenticate`) and JSON body `/v1/auth` gives, which Envoy sends
//!   to the client as they are.

use std::sync::Arc;

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
    pb::{
        Authorization, AuthorizationServer, CheckRequest, CheckResponse, HeaderAppendAction,
        HttpStatusCode,
    },
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::check::{X_AUTH_SUBJECT, X_AUTH_TOKEN_ID, auth_decision};
use crate::read::checker::Checker;

/// The largest body `/v1/auth` answers with (its JSON errors are short).
const BODY_LIMIT: usize = 4096;

/// The `Authorization` service over the read path.
pub struct ExtAuthz {
    checker: Arc<Checker>,
}

impl ExtAuthz {
    /// The service answering with `checker`'s verdicts.
    pub fn new(checker: Arc<Checker>) -> Self {
        Self { checker }
    }

    /// Serves on `listener` until `stop` fires, then lets each connection
    /// finish its calls (HTTP/2 GOAWAY).
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken) -> anyhow::Result<()> {
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(
                AuthorizationServer::new(self),
                tonic::transport::server::TcpIncoming::from(listener),
                stop.cancelled_owned(),
            )
            .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let authorization = authorization(request.get_ref());
        let answer = auth_decision(&self.checker, authorization, "grpc ext_authz").await;
        Ok(tonic::Response::new(translate(answer).await))
    }
}

/// The client's `Authorization` header: from the header map Envoy sends by
/// default, else from the raw headers (`encode_raw_headers: true`).
fn authorization(request: &CheckRequest) -> Option<&str> {
    let name = header::AUTHORIZATION.as_str();
    let http = request
        .attributes
        .as_ref()?
        .request
        .as_ref()?
        .http
        .as_ref()?;
    if let Some(value) = http.headers.get(name) {
        return Some(value);
    }
    let raw = http.header_map.as_ref()?;
    raw.headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(&h.raw_value).ok())
}

/// `/v1/auth`'s answer as a `CheckResponse`.
async fn translate(answer: Response) -> CheckResponse {
    let (parts, body) = answer.into_parts();
    if parts.status == StatusCode::OK {
        let mut ok = OkHttpResponseBuilder::new();
        for name in [&X_AUTH_SUBJECT, &X_AUTH_TOKEN_ID] {
            let value = parts.headers.get(name).and_then(|v| v.to_str().ok());
            ok.add_header(
                name.as_str(),
                value.unwrap_or(""),
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                true,
            );
        }
        let mut response = CheckResponse::with_status(tonic::Status::ok(""));
        response.set_http_response(ok);
        return response;
    }
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let mut denied = DeniedHttpResponseBuilder::new();
    denied.set_http_status(http_status(parts.status));
    copy_headers(&parts.headers, &mut denied);
    denied.set_body(String::from_utf8_lossy(&body));
    let status = if parts.status == StatusCode::UNAUTHORIZED {
        tonic::Status::unauthenticated("token refused")
    } else {
        tonic::Status::unavailable("no store can answer")
    };
    let mut response = CheckResponse::with_status(status);
    response.set_http_response(denied);
    response
}

/// Every header of a refusal (`WWW-Authenticate`, `Content-Type`, ...).
fn copy_headers(headers: &HeaderMap, denied: &mut DeniedHttpResponseBuilder) {
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            denied.add_header(
                name.as_str(),
                value,
                Some(HeaderAppendAction::OverwriteIfExistsOrAdd),
                false,
            );
        }
    }
}

/// Envoy's enum for an HTTP status (`ServiceUnavailable` for one it lacks).
fn http_status(status: StatusCode) -> HttpStatusCode {
    HttpStatusCode::try_from(i32::from(status.as_u16()))
        .unwrap_or(HttpStatusCode::ServiceUnavailable)
}
