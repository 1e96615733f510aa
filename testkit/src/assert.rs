//! Assertions and skips shared by test modules.

use serde_json::Value;

/// Asserts a `/v1/check` answer: 200 and `want`, which is `active` or the
/// reason; on failure, the whole answer and the caller's line.
#[track_caller]
pub fn assert_answer(answer: &(u16, Value), want: &str) {
    let (status, body) = answer;
    let got = match (&body["active"], &body["reason"]) {
        (Value::Bool(true), _) => "active",
        (_, Value::String(reason)) => reason.as_str(),
        _ => "(neither)",
    };
    assert_eq!(
        (*status, got),
        (200, want),
        "check answered {status} {body}"
    );
}

/// Reports that `what` (a gateway, a client library) is not installed:
/// the caller skips, but only on a developer machine. Under CI (`CI` set,
/// as CI services do) or when one of `required_by` is set (`.ci/run` sets
/// them) the test fails instead.
#[track_caller]
pub fn missing_program(what: &str, required_by: &[&str]) {
    let required = std::iter::once("CI")
        .chain(required_by.iter().copied())
        .find(|var| std::env::var_os(var).is_some());
    if let Some(var) = required {
        panic!("{what} is required ({var} is set) but not installed");
    }
    eprintln!("skipped: {what} not installed");
}
