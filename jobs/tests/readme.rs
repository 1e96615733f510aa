//! The README's job examples are the crate's wire format: every line of the
//! JSON block under "Job kinds and their JSON" decodes into a [`Job`], and
//! encoding that job gives the same JSON back, so the README cannot drift
//! from the serde definitions. Every kind is shown at least once.

use revokd_jobs::Job;
use serde_json::Value;

const README: &str = include_str!("../../README.md");

/// The JSON lines of the first ```json block after the job-kinds heading.
fn readme_examples() -> Vec<&'static str> {
    let section = README
        .split_once("### Job kinds and their JSON")
        .expect("README has the job-kinds section")
        .1;
    let block = section
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .expect("the section has a ```json block")
        .0;
    block.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn every_readme_example_is_a_job_that_encodes_back_to_itself() {
    for line in readme_examples() {
        let job: Job = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_ne!(job, Job::Unknown, "an unknown kind: {line}");
        let written: Value = serde_json::to_value(&job).expect("encodes");
        let shown: Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(
            written, shown,
            "the README shows another shape than serde writes"
        );
    }
}

/// Every kind a producer can send; [`Job::kind`] must spell each as the
/// `kind` tag does, and the README must show each.
const KINDS: [&str; 7] = [
    "revoke",
    "revoke_all",
    "revoke_issuer",
    "register_refresh",
    "revoke_family",
    "revoke_batch",
    "cleanup",
];

#[test]
fn readme_shows_every_job_kind() {
    let mut shown: Vec<&str> = readme_examples()
        .into_iter()
        .map(|line| {
            let job: Job = serde_json::from_str(line).expect("a job");
            let value: Value = serde_json::from_str(line).expect("JSON");
            assert_eq!(value["kind"].as_str(), Some(job.kind()), "{line}");
            job.kind()
        })
        .collect();
    shown.sort_unstable();
    shown.dedup();
    let mut kinds = KINDS.to_vec();
    kinds.sort_unstable();
    assert_eq!(shown, kinds);
}
