//! The gRPC ext_authz service answers as `/v1/auth` does: called directly
//! here (Envoy calls it over the network in gateway.rs).

use std::{collections::HashMap, sync::Arc};

use envoy_types::{
    ext_authz::v3::pb::{
        Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpResponse,
    },
    pb::envoy::service::auth::v3::{AttributeContext, attribute_context},
};
use revokd::{http::grpc::ExtAuthz, store::pg::Db};
use tonic::Code;

use crate::helpers::{Options, TestApp, free_port, mint, test_config};

/// A check of a request carrying `authorization`.
fn request(authorization: Option<&str>) -> tonic::Request<CheckRequest> {
    let headers: HashMap<String, String> = authorization
        .map(|v| ("authorization".to_owned(), v.to_owned()))
        .into_iter()
        .collect();
    tonic::Request::new(CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "POST".into(),
                    path: "/orders?a=1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
}

/// The gRPC code, the HTTP status Envoy sends the client (200 when
/// allowed) and the headers revokd sets (on the upstream request when
/// allowed, on the client's response when not).
fn parts(response: CheckResponse) -> (Code, u16, HashMap<String, String>) {
    let code = Code::from(response.status.unwrap().code);
    let (status, headers) = match response.http_response.unwrap() {
        HttpResponse::OkResponse(ok) => {
            assert!(ok.headers.iter().all(|h| h.append_action
                == i32::from(HeaderAppendAction::OverwriteIfExistsOrAdd)
                && h.keep_empty_value));
            (200, ok.headers)
        }
        HttpResponse::DeniedResponse(denied) => (
            u16::try_from(denied.status.unwrap().code).unwrap(),
            denied.headers,
        ),
        HttpResponse::ErrorResponse(_) => panic!("no error response expected"),
    };
    let headers = headers
        .into_iter()
        .map(|h| h.header.unwrap())
        .map(|h| (h.key, h.value))
        .collect();
    (code, status, headers)
}

#[tokio::test]
async fn grpc_ext_authz_allows_active_tokens_with_the_headers_of_v1_auth_and_refuses_others() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let authz = ExtAuthz::new(Arc::clone(&app.checker_stats));
    let check = |authorization: Option<String>| {
        let authz = &authz;
        async move {
            let response = authz.check(request(authorization.as_deref())).await;
            parts(response.unwrap().into_inner())
        }
    };

    // The scheme in any case; the subject percent-encoded as /v1/auth does.
    let token = app.mint("josé");
    let (code, status, headers) = check(Some(format!("bEaReR {token}"))).await;
    assert_eq!((code, status), (Code::Ok, 200));
    assert_eq!(headers["x-auth-subject"], "jos%C3%A9");
    let http = app.http.get(app.url("/v1/auth")).bearer_auth(&token).send();
    let http = http.await.unwrap();
    assert_eq!(
        headers["x-auth-token-id"],
        http.headers()["x-auth-token-id"]
    );

    let (code, status, headers) = check(None).await;
    assert_eq!((code, status), (Code::Unauthenticated, 401));
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="revokd""#);
    let (code, status, headers) = check(Some("Basic YTpi".into())).await;
    assert_eq!((code, status), (Code::Unauthenticated, 401));
    assert_eq!(headers["www-authenticate"], r#"Bearer realm="revokd""#);

    let (code, status, headers) = check(Some("Bearer not-a-jwt".into())).await;
    assert_eq!((code, status), (Code::Unauthenticated, 401));
    assert!(headers["www-authenticate"].contains(r#"error="invalid_token""#));
}

#[tokio::test]
async fn grpc_ext_authz_fails_closed_with_503_when_no_store_answers() {
    let redis = format!("redis://127.0.0.1:{}", free_port());
    let pg = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let config = test_config("grpc-dead:", &redis, &pg, &[]);
    let db = Db::connect_lazy(&config.database_url).unwrap();
    let services = revokd::app::Services::with_db(config, db).unwrap();
    let authz = ExtAuthz::new(Arc::new(services.checker()));
    let bearer = format!("Bearer {}", mint("olga"));
    let response = authz.check(request(Some(&bearer))).await.unwrap();
    let (code, status, headers) = parts(response.into_inner());
    assert_eq!((code, status), (Code::Unavailable, 503), "as /v1/auth");
    assert_eq!(headers["content-type"], "application/json");
}
