//! `POST /v1/revocations:batch`: up to [`MAX_BATCH_ITEMS`] revocations in
//! one request, as a JSON array or NDJSON (`Content-Type:
//! application/x-ndjson`, one item per line, blank lines skipped).
//!
//! Each item is what `POST /v1/revocations` accepts and is checked exactly
//! as there; a bad item gets its own error in `results` and the others are
//! still accepted. The accepted items go through the single path's
//! [`crate::write::submit::Submitter`] in chunks of [`BATCH_CHUNK`]: each
//! chunk is recorded in Postgres in one statement (or spooled), then queued
//! as one `revoke_batch` job, so the durability and degraded answers are
//! the single path's. Status: 202 (200 with `?wait=true` once every chunk
//! is applied; 504 if one is not in time); 400 with the same body when no
//! item is good; the status of a chunk's failure (503, 429) when it took
//! every good item down with it.

use axum::{
    Json,
    extract::{Query, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use revokd_jobs::{BATCH_CHUNK, Job, JobMeta, MAX_BATCH_ITEMS, RevokeBatch, RevokeItem};
use serde_json::{Value, json};

use super::{
    AppState,
    auth::WriteKey,
    error::ApiError,
    extract::read_limited,
    revoke::{RevocationRequest, WaitQuery, wait_flag},
};
use crate::write::{submit::Submitted, validate};

/// The route's path: Google's custom-method style (AIP-136).
pub const PATH: &str = "/v1/revocations:batch";

/// Largest batch body: 10,000 items of ~1 KiB (a signed JWT and its JSON).
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

/// Chunks of one request submitted at the same time (each is one Postgres
/// statement). One: with two, a request kept two Postgres backends busy
/// with its chunks, both cores of a small machine, and single revocations
/// waited for a core at every step. Measured with `bench/batch_path.sh`
/// paced at 20,000 items/s, three runs interleaved with two in flight: a
/// single revocation's p99 11.1–12.5 ms against 16.5–18.2 ms (another API
/// process 11.5–15.1 against 16.8–25.5 ms); unpaced, 1 M items were in both
/// stores after 19.9 s against 22.8 s.
const CHUNKS_IN_FLIGHT: usize = 1;

/// Items checked between two yields to the runtime (a few hundred µs).
const YIELD_EVERY: usize = 128;

/// One item's fate.
enum Item {
    Accepted(RevokeItem),
    Refused(ApiError),
}

pub(super) async fn batch(
    State(state): State<AppState>,
    WriteKey(key): WriteKey,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let wait = wait_flag(query)?;
    let ndjson = is_ndjson(&request);
    let body = read_limited(request, &state, BODY_LIMIT).await?;
    let values = off_runtime(move || {
        if ndjson {
            Ok(lines(&body))
        } else {
            array(&body)
        }
    })
    .await??;
    if values.is_empty() {
        return Err(bad("the batch is empty"));
    }
    if values.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::too_many_items(MAX_BATCH_ITEMS));
    }
    let mut items = Vec::with_capacity(values.len());
    for (n, value) in values.into_iter().enumerate() {
        // Checking 10,000 items takes tens of milliseconds of CPU with no
        // await that waits: without a yield, the checks and revocations
        // queued on this runtime thread would wait that long behind it.
        if n % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
        items.push(item(&state, &key, value).await?);
    }
    let accepted: Vec<(usize, RevokeItem)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            Item::Accepted(item) => Some((i, item.clone())),
            Item::Refused(_) => None,
        })
        .collect();
    // Who asked, as every store records it (cleaned once for all items).
    let by = key.replace(char::is_control, "");
    let chunks: Vec<(Vec<usize>, RevokeBatch)> = accepted
        .chunks(BATCH_CHUNK)
        .map(|chunk| {
            let (index, items) = chunk.iter().cloned().unzip();
            let job = RevokeBatch {
                meta: JobMeta::now().by(by.clone()),
                items,
            };
            (index, job)
        })
        .collect();
    let submitter = &state.submitter;
    let outcomes: Vec<_> = futures::stream::iter(chunks)
        .map(|(index, job)| async move {
            let job_id = job.meta.job_id.clone();
            (index, job_id, submitter.revoke_batch(job, wait).await)
        })
        .buffered(CHUNKS_IN_FLIGHT)
        .collect()
        .await;
    off_runtime(move || answer(items, outcomes)).await
}

/// Runs `work` — parsing or writing 10,000 items, ~10 ms of CPU — on the
/// blocking pool, not on a runtime thread that checks and revocations
/// share.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::unavailable("the batch could not be processed"))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", message)
}

fn is_ndjson(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let essence = value.to_str().unwrap_or_default().split(';').next();
    let essence = essence.unwrap_or_default().trim().to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl"
    )
}

/// NDJSON: one value per non-blank line; a line that is not JSON is its
/// item's error, not the batch's.
fn lines(body: &[u8]) -> Vec<Result<Value, ApiError>> {
    body.split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| serde_json::from_slice(line).map_err(|_| bad("the line is not a JSON object")))
        .collect()
}

/// A JSON array of items.
fn array(body: &[u8]) -> Result<Vec<Result<Value, ApiError>>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(values)) => Ok(values.into_iter().map(Ok).collect()),
        Ok(_) => Err(bad(
            "the body must be a JSON array of revocations (or NDJSON with Content-Type: application/x-ndjson)",
        )),
        // serde's messages can quote the input; say where, not what.
        Err(e) => Err(bad(format!(
            "the body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// One item, checked as `POST /v1/revocations` checks its body. An error
/// that is no fault of the item (the issuer's keys not loaded) ends the
/// whole request.
async fn item(
    state: &AppState,
    key: &str,
    value: Result<Value, ApiError>,
) -> Result<Item, ApiError> {
    let request = match value.map(serde_json::from_value::<RevocationRequest>) {
        Ok(Ok(request)) => request,
        Ok(Err(_)) => {
            return Ok(Item::Refused(bad(
                "the item is not an object with the fields of POST /v1/revocations",
            )));
        }
        Err(error) => return Ok(Item::Refused(error)),
    };
    let job = match request.into_job(state, key.to_owned()).await {
        Ok(job) => job,
        Err(error) if error.status.is_server_error() => return Err(error),
        Err(error) => return Ok(Item::Refused(error)),
    };
    match validate::request(&Job::Revoke(job)) {
        Ok(Job::Revoke(job)) => Ok(Item::Accepted(RevokeItem {
            token_id: job.token_id,
            subject: job.subject,
            expires_at: job.expires_at,
            reason: job.reason,
        })),
        Ok(_) => Ok(Item::Refused(bad("the item is not a revocation"))),
        Err(error) => Ok(Item::Refused(bad(error.to_string()))),
    }
}

type Outcome = (
    Vec<usize>,
    String,
    Result<Submitted, crate::write::submit::SubmitError>,
);

/// The answer: per-item results in order, counts, the chunks' job ids.
fn answer(items: Vec<Item>, outcomes: Vec<Outcome>) -> Response {
    let mut results: Vec<Value> = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Item::Accepted(item) => json!({ "index": index, "token_id": item.token_id }),
            Item::Refused(e) => json!({ "index": index, "error": e.code, "message": e.message }),
        })
        .collect();
    let (mut job_ids, mut failure, mut timed_out) = (Vec::new(), None::<ApiError>, false);
    let (mut degraded, mut spooled, mut all_applied) = (false, false, true);
    for (index, job_id, outcome) in outcomes {
        match outcome {
            Ok(submitted) => {
                job_ids.push(job_id);
                timed_out |= submitted == Submitted::TimedOut;
                degraded |= matches!(submitted, Submitted::Degraded | Submitted::Spooled);
                spooled |= submitted == Submitted::Spooled;
                all_applied &= submitted == Submitted::Applied;
            }
            Err(error) => {
                let error = ApiError::from(error);
                for i in index {
                    let entry = &mut results[i];
                    entry["error"] = json!(error.code);
                    entry["message"] = json!(error.message);
                    if let Some(entry) = entry.as_object_mut() {
                        entry.remove("token_id");
                    }
                }
                failure.get_or_insert(error);
            }
        }
    }
    let rejected = results.iter().filter(|r| r.get("error").is_some()).count();
    let accepted = results.len() - rejected;
    let mut body = json!({
        "job_ids": job_ids,
        "accepted": accepted,
        "rejected": rejected,
        "results": results,
    });
    if degraded {
        body["degraded"] = Value::Bool(true);
    }
    if spooled {
        body["spooled"] = Value::Bool(true);
    }
    let status = if accepted == 0 {
        let error = failure.unwrap_or_else(|| bad("no item of the batch can be revoked"));
        body["error"] = json!(error.code);
        body["message"] = json!(error.message);
        error.status
    } else if timed_out {
        body["error"] = json!("timeout");
        body["message"] = json!(
            "the batch is recorded and queued but was not applied to every store within REVOKD_WAIT_TIMEOUT"
        );
        StatusCode::GATEWAY_TIMEOUT
    } else if all_applied {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::submit::SubmitError;

    fn accepted(id: &str) -> Item {
        Item::Accepted(RevokeItem {
            token_id: id.into(),
            subject: None,
            expires_at: 1,
            reason: None,
        })
    }

    async fn body(items: Vec<Item>, outcomes: Vec<Outcome>) -> (u16, String) {
        let response = answer(items, outcomes);
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// The body byte for byte: per-item results in order (a refused item's
    /// own error, a failed chunk's error on each of its items), the job ids
    /// of the chunks taken, flags only when set.
    #[tokio::test]
    async fn the_answer_reports_each_item_in_order_with_its_chunks_fate() {
        let items = vec![
            accepted("a"),
            Item::Refused(bad("the item is bad")),
            accepted("b"),
            accepted("c"),
        ];
        let outcomes = vec![
            (vec![0, 2], "job-1".into(), Ok(Submitted::Degraded)),
            (vec![3], "job-2".into(), Err(SubmitError::Unavailable)),
        ];
        let (status, text) = body(items, outcomes).await;
        assert_eq!(status, 202);
        assert_eq!(
            text,
            concat!(
                r#"{"accepted":2,"degraded":true,"job_ids":["job-1"],"rejected":2,"results":["#,
                r#"{"index":0,"token_id":"a"},"#,
                r#"{"error":"invalid_request","index":1,"message":"the item is bad"},"#,
                r#"{"index":2,"token_id":"b"},"#,
                r#"{"error":"unavailable","index":3,"message":"neither Postgres nor the local spool can record the revocation"}]}"#
            )
        );
    }

    #[tokio::test]
    async fn the_answer_takes_its_status_from_the_chunks() {
        let failed = vec![(vec![0], "job-1".into(), Err(SubmitError::Unavailable))];
        let (status, text) = body(vec![accepted("a")], failed).await;
        assert_eq!(status, 503);
        assert_eq!(
            text,
            concat!(
                r#"{"accepted":0,"error":"unavailable","job_ids":[],"#,
                r#""message":"neither Postgres nor the local spool can record the revocation","rejected":1,"results":["#,
                r#"{"error":"unavailable","index":0,"message":"neither Postgres nor the local spool can record the revocation"}]}"#
            )
        );
        let (status, text) = body(vec![Item::Refused(bad("no"))], Vec::new()).await;
        assert_eq!(status, 400);
        assert_eq!(
            text,
            concat!(
                r#"{"accepted":0,"error":"invalid_request","job_ids":[],"#,
                r#""message":"no item of the batch can be revoked","rejected":1,"results":["#,
                r#"{"error":"invalid_request","index":0,"message":"no"}]}"#
            )
        );
        let timed_out = vec![(vec![0], "job-1".into(), Ok(Submitted::TimedOut))];
        let (status, text) = body(vec![accepted("a")], timed_out).await;
        assert_eq!(status, 504);
        assert!(text.starts_with(r#"{"accepted":1,"error":"timeout","job_ids":["job-1"],"message":"the batch is recorded"#), "{text}");
        let spooled = vec![(vec![0], "job-1".into(), Ok(Submitted::Spooled))];
        let (status, text) = body(vec![accepted("a")], spooled).await;
        assert_eq!(status, 202);
        assert!(
            text.ends_with(r#""spooled":true}"#) && text.contains(r#""degraded":true"#),
            "{text}"
        );
        let applied = vec![(vec![0], "job-1".into(), Ok(Submitted::Applied))];
        let (status, text) = body(vec![accepted("a")], applied).await;
        assert_eq!(status, 200);
        assert_eq!(
            text,
            r#"{"accepted":1,"job_ids":["job-1"],"rejected":0,"results":[{"index":0,"token_id":"a"}]}"#
        );
    }
}
