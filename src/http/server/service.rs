//! What hyper calls for each request: tells the connection's clock a request
//! is being served, refuses what can be judged from the head alone, and
//! hands the rest to the router.
//!
//! Refused from the head, in the JSON error shape, with `Connection: close`:
//! a declared `Content-Length` over 16 KiB (10 MiB on
//! `/v1/revocations:batch`; 413 at once, without waiting for
//! a body that may never come), a URI over 8 KiB (414), header fields over
//! 16 KiB in all (431). Heads hyper itself refuses (malformed: 400; over
//! [`super::HEAD_LIMIT`] or over 100 fields: 431) get hyper's empty answer.
//! Every check is O(1) but the header sum, a loop over a handful of fields:
//! nothing is allocated for a request without a body.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::atomic::Ordering,
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::future::Either;
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;
use tower::{ServiceExt, util::Oneshot};

use super::{body::TimedBody, deadline::Serving};
use crate::http::{error::ApiError, extract::BODY_LIMIT, revoke_batch};

/// Longest URI answered (414 beyond, in the JSON shape).
pub const URI_LIMIT: usize = 8 * 1024;

/// Most bytes of header fields (names and values) answered (431 beyond, in
/// the JSON shape, up to hyper's own limit).
pub const FIELDS_LIMIT: usize = 16 * 1024;

/// The router, as one connection's hyper service.
#[derive(Clone)]
pub(super) struct Connection {
    pub(super) router: Router,
    pub(super) serving: Serving,
    pub(super) body_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, Oneshot<Router, Request>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.serving.store(true, Ordering::Relaxed);
        if let Some(refusal) = refuse(&request) {
            return Either::Left(ready(Ok(close(refusal.into_response()))));
        }
        let request = if request.body().is_end_stream() {
            request.map(Body::new)
        } else {
            let deadline = Instant::now() + self.body_timeout;
            request.map(|body| Body::new(TimedBody::new(body, deadline)))
        };
        Either::Right(self.router.clone().oneshot(request))
    }
}

/// The answer to a request that can be judged from its head alone.
fn refuse(request: &Request<Incoming>) -> Option<ApiError> {
    // The bulk route takes larger bodies (see `crate::http::revoke_batch`).
    let limit = match request.uri().path() {
        revoke_batch::PATH => revoke_batch::BODY_LIMIT,
        _ => BODY_LIMIT,
    };
    if request.body().size_hint().lower() > limit as u64 {
        return Some(ApiError::too_large_for(limit));
    }
    let uri = request.uri();
    if uri.path().len() + uri.query().map_or(0, str::len) > URI_LIMIT {
        return Some(ApiError::uri_too_long());
    }
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (fields > FIELDS_LIMIT).then(ApiError::headers_too_large)
}

/// Ends the connection after `response`: the rest of the request was not read.
fn close(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
