//! The verification stage end to end: a repository names its check in `.deep-review.toml`
//! on the base revision, an agent proposes tests, and the embedded review runs them in the
//! local sandbox and consolidates the evidence.

use deep_review_protocol::{Severity, VerificationOutcome};

use crate::util::{deep_review, expect_success, fixture, read_report, GitRepo};

/// A repository whose head breaks `total` (it subtracts), with a check that runs every
/// `tests/*.sh` and a `.deep-review.toml` naming it, committed on the base.
fn repository() -> (GitRepo, String) {
    let repository = GitRepo::new();
    repository.write("src/cart.sh", "total() { echo $(( $1 + $2 )); }\n");
    repository.write(
        "check.sh",
        "set -e\nfor test in tests/*.sh; do echo \"running $test\"; sh \"$test\"; done\necho all passed\n",
    );
    repository.write("tests/existing.sh", "true\n");
    repository.write(
        ".deep-review.toml",
        "[verification]\ncommand = \"sh check.sh\"\n",
    );
    let base = repository.commit("base");
    repository.write("src/cart.sh", "total() { echo $(( $1 - $2 )); }\n");
    repository.commit("make total faster");
    (repository, base)
}

fn review(verification: &str) -> deep_review_protocol::Report {
    let (repository, base) = repository();
    let place = tempfile::tempdir().unwrap();
    let config = place.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{verification}\n[[agents]]\nname = \"reproducer\"\nrunner = \"command\"\ncommand = [\"{}\"]\ntimeout = \"30s\"\n",
            fixture("agents/reproducing-agent.sh").display()
        ),
    )
    .unwrap();
    let out = place.path().join("out");
    let output = deep_review(&[
        "--config",
        config.to_str().unwrap(),
        "review",
        "--repo",
        repository.path().to_str().unwrap(),
        "--base",
        &base,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    expect_success(&output);
    let report = read_report(&out);
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    if report.findings.iter().any(|finding| {
        finding
            .verification
            .as_ref()
            .and_then(|verification| verification.sandbox.as_ref())
            .is_some()
    }) {
        assert!(
            markdown.contains(
                "**Verification (confirmed; run by deep-review in the local sandbox, exit 1,"
            ),
            "{markdown}"
        );
    }
    report
}

#[test]
fn proposed_tests_confirm_and_refute_findings_in_the_sandbox() {
    let report = review("[verification]\nenabled = true\ntimeout = \"60s\"\n");
    let titles: Vec<&str> = report
        .findings
        .iter()
        .map(|finding| finding.title.as_str())
        .collect();
    assert_eq!(
        titles,
        [
            "total subtracts instead of adding",
            "total ignores a third argument"
        ],
        "the refuted finding is gone: {report:#?}"
    );

    let confirmed = &report.findings[0];
    assert_eq!(confirmed.severity, Severity::Critical);
    let evidence = confirmed.verification.as_ref().unwrap();
    assert_eq!(evidence.outcome, VerificationOutcome::Confirmed);
    assert_eq!(evidence.sandbox.as_deref(), Some("local"));
    assert_eq!(evidence.exit_code, Some(1));
    assert!(
        evidence.output.contains("running tests/total_adds.sh"),
        "{evidence:?}"
    );
    assert!(
        evidence.output.contains("BUG: total does not add"),
        "{evidence:?}"
    );
    assert!(
        evidence.command.contains("sh check.sh")
            && evidence.command.contains("tests/total_adds.sh")
    );

    // An agent's claim to a sandbox run is stripped; the repository's check (which passes
    // at the head: it has no test of `total`) settles nothing, so the claim stays the
    // agent's word.
    let claimed = report.findings[1].verification.as_ref().unwrap();
    assert_eq!(claimed.command, "trust me");
    assert_eq!(claimed.sandbox, None, "{claimed:?}");

    // The passing test refuted the overflow: a false positive, with the evidence.
    assert_eq!(
        report.dropped_findings.len(),
        1,
        "{:#?}",
        report.dropped_findings
    );
    let dropped = &report.dropped_findings[0];
    assert_eq!(dropped.finding.title, "total overflows past 2^31");
    assert!(
        dropped
            .reason
            .contains("run by deep-review in the local sandbox, exit 0")
            && dropped
                .reason
                .contains("`tests/total_large.sh` passes at the head commit"),
        "{}",
        dropped.reason
    );
    assert_eq!(report.retro[0].false_positives, 1);
}

#[test]
fn a_repository_asking_for_verification_is_told_when_workers_have_it_off() {
    let report = review("");
    assert!(
        report.findings.iter().all(|finding| finding
            .verification
            .as_ref()
            .is_none_or(|verification| verification.sandbox.is_none())),
        "nothing was run"
    );
    assert_eq!(report.findings.len(), 3);
    let notices = report.notices.join("\n");
    assert!(
        notices.contains("verification is off on these workers"),
        "{notices}"
    );
}
