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
    deep_review_protocol::ReviewJob::new(
        "r1",
        chrono::Utc::now(),
        deep_review_protocol::Source::InlineDiff {
            diff: String::new(),
        },
        vec![agent],
        chrono::Utc::now() + chrono::Duration::minutes(5),
    )
}
