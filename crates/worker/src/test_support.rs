//! Helpers the unit tests share.

use std::path::Path;

/// Runs git in `directory` as a test author, and asserts it succeeded.
pub(crate) fn git(directory: &Path, arguments: &[&str]) {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(directory)
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(arguments)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {arguments:?}: {output:?}");
}

/// A review job of one builtin agent over an empty inline diff, for tests to adjust.
pub(crate) fn review_job() -> deep_review_protocol::ReviewJob {
    let agent = deep_review_protocol::AgentSpec::new(
        "builtin".to_string(),
        deep_review_protocol::RunnerKind::Builtin,
    );
    deep_review_protocol::ReviewJob {
        schema_version: deep_review_protocol::SCHEMA_VERSION,
        id: "r1".to_string(),
        created_at: chrono::Utc::now(),
        source: deep_review_protocol::Source::InlineDiff {
            diff: String::new(),
        },
        pull_request: Default::default(),
        round: 1,
        agents: vec![agent],
        deadline: chrono::Utc::now() + chrono::Duration::minutes(5),
        repository_context: Vec::new(),
        declined: Vec::new(),
        notices: Vec::new(),
        earlier_findings: Vec::new(),
        trace_context: Default::default(),
        policy: Default::default(),
        supersedes: None,
    }
}
