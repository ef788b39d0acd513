//! `deep-review review` on real git repositories and diffs, builtin reviewer only.

use deep_review_protocol::{AgentResult, FileReviewStatus, Severity, Verdict};

use crate::util::{
    deep_review, deep_review_with, expect_success, read_report, review_known_problems, GitRepo,
};

/// (severity, location) of each consolidated finding whose title contains `needle`.
fn located(report: &deep_review_protocol::Report, needle: &str) -> Vec<(Severity, Vec<String>)> {
    report
        .findings
        .iter()
        .filter(|finding| finding.title.contains(needle))
        .map(|finding| {
            (
                finding.severity,
                finding.locations.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

#[test]
fn finds_known_problems_at_the_right_lines() {
    let out = tempfile::tempdir().unwrap();
    let (repository, output) = review_known_problems(out.path(), &[], &["--quiet"], &[]);
    let stdout = expect_success(&output);
    assert!(stdout.contains("Verdict: Rework"), "{stdout}");

    let report = read_report(out.path());
    assert_eq!(report.verdict.verdict, Verdict::Rework);
    assert_eq!(
        located(&report, "Secret"),
        vec![(
            Severity::Critical,
            vec!["config/settings.toml:2".to_string()]
        )]
    );
    assert_eq!(
        located(&report, "Merge-conflict"),
        vec![(
            Severity::Critical,
            vec![
                "docs/notes.md:3".into(),
                "docs/notes.md:5".into(),
                "docs/notes.md:7".into()
            ]
        )]
    );
    assert_eq!(
        located(&report, "empty handler"),
        vec![
            (Severity::Important, vec!["app/service.py:8-9".to_string()]),
            (Severity::Important, vec!["web/app.js:4-5".to_string()]),
        ]
    );
    assert_eq!(
        located(&report, "Debugger"),
        vec![(Severity::Important, vec!["app/service.py:10".to_string()])]
    );
    assert_eq!(
        located(&report, "logged but not returned"),
        vec![(Severity::Important, vec!["pkg/sync.go:4-6".to_string()])]
    );
    assert_eq!(
        located(&report, "unwrap"),
        vec![(Severity::Suggestion, vec!["src/lib.rs:3".to_string()])]
    );
    assert_eq!(
        located(&report, "TODO"),
        vec![(Severity::Suggestion, vec!["src/lib.rs:2".to_string()])]
    );
    assert_eq!(
        located(&report, "debug print"),
        vec![(Severity::Suggestion, vec!["web/app.js:6".to_string()])]
    );
    let untested = located(&report, "no test change");
    assert_eq!(untested.len(), 1);
    assert!(
        untested[0].1.contains(&"app/service.py:1".to_string()),
        "{untested:?}"
    );
    // The secret itself never reaches the report.
    let json = std::fs::read_to_string(out.path().join("report.json")).unwrap();
    assert!(!json.contains("AKIAQWERTYUIOPASDFGH"));
    assert!(json.contains("AKIA****"));

    // Header facts come from git.
    assert_eq!(report.header.commits.len(), 1);
    assert_eq!(
        report.header.title.as_deref(),
        Some("Add billing, parser, loader and sync")
    );
    assert_eq!(report.header.author.as_deref(), Some("Dev Eloper"));
    assert_eq!(report.header.branch.as_deref(), Some("main"));
    assert_eq!(
        report.header.reviewed_sha.as_deref(),
        Some(repository.git(&["rev-parse", "HEAD"]).trim())
    );

    // Every report file and the agent's own result are written.
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        markdown.contains("## Critical issues") && markdown.contains("### C1."),
        "{markdown}"
    );
    assert!(markdown.contains("## Agent performance retro"));
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("id=\"C1\"") && html.contains("class=\"badge rework\""));
    let agent: AgentResult = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("agents/builtin.json")).unwrap(),
    )
    .unwrap();
    assert!(!agent
        .files_reviewed
        .iter()
        .any(|file| file.path == "README.md"));
    assert!(agent
        .files_reviewed
        .iter()
        .all(|file| file.status == FileReviewStatus::HasFindings));
    assert!(out.path().join("review.json").is_file());
}

#[test]
fn fail_on_sets_the_exit_code() {
    let out = tempfile::tempdir().unwrap();
    let (_repository, output) =
        review_known_problems(out.path(), &[], &["--quiet", "--fail-on", "rework"], &[]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        out.path().join("report.md").is_file(),
        "the report is written even when failing on it"
    );
}

#[test]
fn clean_change_merges_and_defaults_to_the_head_commit() {
    let repository = GitRepo::new();
    repository.write("src/lib.rs", "pub fn one() -> u32 {\n    1\n}\n");
    repository.commit("first");
    repository.write(
        "src/lib.rs",
        "pub fn one() -> u32 {\n    1\n}\n\npub fn two() -> u32 {\n    2\n}\n",
    );
    repository.write(
        "tests/two.rs",
        "#[test]\nfn two() {\n    assert_eq!(my::two(), 2);\n}\n",
    );
    repository.commit("Add two");
    let out = tempfile::tempdir().unwrap();
    // Run from inside the repository, as a developer would (default --repo is `.`).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_deep-review"))
        .args(["review", "--out", out.path().to_str().unwrap(), "--quiet"])
        .current_dir(repository.path())
        .output()
        .unwrap();
    let stdout = expect_success(&output);
    assert!(
        stdout.contains("Verdict: Merge — no issues found"),
        "{stdout}"
    );
    let report = read_report(out.path());
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    assert_eq!(report.header.commits.len(), 1);
    assert_eq!(report.header.commits[0].subject, "Add two");
}

#[test]
fn root_commit_is_reviewed_against_the_empty_tree() {
    let repository = GitRepo::new();
    repository.write("a.js", "debugger;\n");
    repository.commit("only commit");
    let out = tempfile::tempdir().unwrap();
    expect_success(&deep_review(&[
        "review",
        "--repo",
        repository.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--quiet",
    ]));
    let report = read_report(out.path());
    assert_eq!(
        located(&report, "Debugger"),
        vec![(Severity::Important, vec!["a.js:1".to_string()])]
    );
}

#[test]
fn reviews_a_diff_from_a_file_and_from_stdin() {
    let diff = "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,1 +1,3 @@\n x = 1\n+try: go()\n+except: pass\n";
    let directory = tempfile::tempdir().unwrap();
    let diff_path = directory.path().join("change.diff");
    std::fs::write(&diff_path, diff).unwrap();
    for (source, stdin) in [(diff_path.to_str().unwrap(), None), ("-", Some(diff))] {
        let out = tempfile::tempdir().unwrap();
        expect_success(&deep_review_with(
            &[
                "review",
                "--diff",
                source,
                "--title",
                "Quick fix",
                "--out",
                out.path().to_str().unwrap(),
                "--quiet",
            ],
            &[],
            stdin,
        ));
        let report = read_report(out.path());
        assert_eq!(
            located(&report, "empty handler"),
            vec![(Severity::Important, vec!["app.py:3".to_string()])]
        );
        assert_eq!(report.header.title.as_deref(), Some("Quick fix"));
        assert_eq!(report.header.reviewed_sha, None);
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let repository = GitRepo::new();
    repository.write("a.txt", "x\n");
    repository.commit("first");
    let out = tempfile::tempdir().unwrap();
    let out_path = out.path().to_str().unwrap();

    let unknown_revision = deep_review(&[
        "review",
        "--repo",
        repository.path().to_str().unwrap(),
        "--base",
        "nope",
        "--out",
        out_path,
    ]);
    assert!(!unknown_revision.status.success());
    let stderr = String::from_utf8_lossy(&unknown_revision.stderr);
    assert!(stderr.contains("unknown revision `nope`"), "{stderr}");

    let not_a_repository = deep_review(&["review", "--repo", out_path, "--out", out_path]);
    assert!(String::from_utf8_lossy(&not_a_repository.stderr).contains("is not a git repository"));

    let empty_diff = deep_review_with(&["review", "--diff", "-", "--out", out_path], &[], Some(""));
    assert!(String::from_utf8_lossy(&empty_diff.stderr).contains("the diff is empty"));

    // Prose where a diff should be: nothing was reviewed, so the verdict is Incomplete and
    // the exit code says so, with or without --fail-on; never Merge.
    for fail_on in [&[][..], &["--fail-on", "rework"][..]] {
        let mut arguments = vec!["review", "--diff", "-", "--out", out_path, "--quiet"];
        arguments.extend(fail_on);
        let prose = deep_review_with(
            &arguments,
            &[],
            Some("Hi! This fixes the login bug, please have a look.\n"),
        );
        assert_eq!(prose.status.code(), Some(4), "{prose:?}");
        let report = read_report(out.path());
        assert_eq!(
            report.verdict.verdict,
            deep_review_protocol::Verdict::Incomplete
        );
        assert!(String::from_utf8_lossy(&prose.stdout).contains("Incomplete"));
        let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
        assert!(markdown.contains("Incomplete"), "{markdown}");
    }

    let unknown_agent = deep_review(&[
        "review",
        "--repo",
        repository.path().to_str().unwrap(),
        "--agent",
        "gpt",
        "--out",
        out_path,
    ]);
    assert!(String::from_utf8_lossy(&unknown_agent.stderr).contains("no agent named `gpt`"));
}

#[test]
fn repo_context_reaches_the_next_review_and_declined_items_are_acknowledged() {
    let repository = GitRepo::new();
    repository.write("a.txt", "one\n");
    repository.commit("first");
    repository.write("a.txt", "one\ntwo\n");
    repository.commit("second");
    let config_directory = tempfile::tempdir().unwrap();
    let config = config_directory.path().join("deep-review.toml");
    std::fs::write(
        &config,
        format!(
            "[[agents]]\nname = \"context\"\nrunner = \"command\"\ncommand = [\"{}\"]\ntimeout = \"30s\"\n",
            crate::util::fixture("agents/context-agent.sh").display()
        ),
    )
    .unwrap();
    let review = |declined: &[&str]| {
        let out = tempfile::tempdir().unwrap();
        let mut arguments = vec![
            "--config",
            config.to_str().unwrap(),
            "review",
            "--repo",
            repository.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--quiet",
        ];
        for item in declined {
            arguments.extend(["--declined", item]);
        }
        expect_success(&deep_review(&arguments));
        read_report(out.path())
    };
    let first = review(&[]);
    assert_eq!(first.documentation_notes[0].text, "no context");
    assert_eq!(
        first.repo_context_updates[0].text,
        "Mocks run in a single-user apiserver"
    );
    let second = review(&["Split the reconciler"]);
    assert_eq!(
        second.documentation_notes[0].text, "context seen",
        "the first review's update reached the agent"
    );
    assert_eq!(
        second.acknowledged_limitations[0].text,
        "Split the reconciler (declined in an earlier round; do not re-suggest)"
    );
    // Kept out of the work tree, in the git directory.
    assert!(repository
        .path()
        .join(".git/deep-review/repository-context.json")
        .is_file());
    assert!(repository.git(&["status", "--porcelain"]).is_empty());
}

/// The job file beside the report quotes the diff; a secret in it is masked as in the report.
#[test]
fn review_json_masks_secrets_as_the_report_does() {
    let secret = "AKIAZ7QW3RT5YU8IO2PL";
    let diff = format!(
        "diff --git a/config.toml b/config.toml\n--- a/config.toml\n+++ b/config.toml\n@@ -1,1 +1,2 @@\n x = 1\n+aws_access_key_id = \"{secret}\"\n"
    );
    let out = tempfile::tempdir().unwrap();
    let output = deep_review_with(
        &[
            "review",
            "--diff",
            "-",
            "--out",
            out.path().to_str().unwrap(),
            "--quiet",
        ],
        &[],
        Some(&diff),
    );
    assert!(
        output
            .status
            .code()
            .is_some_and(|code| code != 1 && code != 4),
        "{output:?}"
    );
    for file in ["review.json", "report.md", "report.html", "report.json"] {
        let text = std::fs::read_to_string(out.path().join(file)).unwrap();
        assert!(!text.contains(secret), "{file} shows the secret");
    }
    let job = std::fs::read_to_string(out.path().join("review.json")).unwrap();
    assert!(job.contains("AKIA****"), "{job}");
}

/// A diff with bytes that are not UTF-8 (a latin-1 file) is still reviewed, with the bytes
/// replaced and the file named, rather than refused whole.
#[test]
fn a_diff_that_is_not_utf8_is_reviewed_lossily() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("latin1.diff");
    let mut diff = b"diff --git a/caf\xe9.txt b/caf\xe9.txt\n--- a/caf\xe9.txt\n+++ b/caf\xe9.txt\n@@ -1 +1,2 @@\n x\n+caf\xe9 TODO: fix\n".to_vec();
    diff.extend(b"diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,1 +1,3 @@\n x = 1\n+try: go()\n+except: pass\n");
    std::fs::write(&path, diff).unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = deep_review(&[
        "review",
        "--diff",
        path.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("not UTF-8") && stderr.contains("caf\u{FFFD}.txt"),
        "{stderr}"
    );
    let report = read_report(out.path());
    assert_eq!(
        located(&report, "empty handler"),
        vec![(Severity::Important, vec!["app.py:3".to_string()])]
    );
}

/// Every embedded review adds its agents to the ledger file, and `agents stats` sums them,
/// per repository when asked.
#[test]
fn embedded_reviews_build_up_the_agent_ledger() {
    let directory = tempfile::tempdir().unwrap();
    let ledger = directory.path().join("ledger.jsonl");
    let ledger_variable = ("DEEP_REVIEW_REVIEW__LEDGER_FILE", ledger.to_str().unwrap());
    for (round, repository) in [(1, "acme/shop"), (2, "acme/shop"), (3, "acme/other")] {
        let out = directory.path().join(format!("out-{round}"));
        let (_repository, output) = review_known_problems(
            &out,
            &[],
            &["--repository", repository, "--quiet"],
            &[ledger_variable],
        );
        expect_success(&output);
    }
    let stats = |extra: &[&str]| -> serde_json::Value {
        let mut arguments = vec!["agents", "stats", "--json"];
        arguments.extend(extra);
        let stdout = expect_success(&crate::util::deep_review_with(
            &arguments,
            &[ledger_variable],
            None,
        ));
        serde_json::from_str(&stdout).unwrap()
    };
    let all = stats(&[]);
    assert_eq!(all[0]["agent"], "builtin", "{all}");
    assert_eq!(all[0]["reviews"], 3, "{all}");
    assert_eq!(all[0]["failure_rate"], 0.0);
    let shop = stats(&["--repository", "acme/shop"]);
    assert_eq!(shop[0]["reviews"], 2, "{shop}");
    let future = stats(&["--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(future, serde_json::json!([]));
    // The table names the columns an operator compares agents by.
    let table = expect_success(&crate::util::deep_review_with(
        &["agents", "stats"],
        &[ledger_variable],
        None,
    ));
    assert!(
        table.contains("$/confirmed") && table.contains("builtin"),
        "{table}"
    );
}

/// Writes twenty ledger entries of `agent` in `repository`, each a run that ended `status`
/// with two findings, `false_positives` of them wrong.
fn write_ledger(
    ledger: &std::path::Path,
    repository: &str,
    agent: &str,
    status: &str,
    false_positives: usize,
) {
    let lines: String = (0..20)
        .map(|index| {
            let entry = serde_json::json!({
                "review_id": format!("r-{index}"),
                "recorded_at": chrono::Utc::now().to_rfc3339(),
                "repository": repository,
                "agent": agent,
                "runner": "command",
                "status": status,
                "findings": {"critical": 0, "important": 2 * usize::from(status == "completed"), "suggestion": 0},
                "unique_insights": 0, "confirmed": 0, "false_positives": false_positives,
                "coverage_misses": 0, "input_tokens": 0, "output_tokens": 0,
                "duration_ms": 10,
            });
            format!("{entry}\n")
        })
        .collect();
    std::fs::write(ledger, lines).unwrap();
}

/// With `action = "demote"`, an agent whose findings keep being wrong in a repository still
/// runs there, but its severity votes do not count and what only it reports cannot block.
#[test]
fn the_lineup_policy_can_demote_an_agent_instead_of_leaving_it_out() {
    let directory = tempfile::tempdir().unwrap();
    let ledger = directory.path().join("ledger.jsonl");
    // Twenty reviews of `noisy` in acme/shop, each with both of its findings wrong.
    write_ledger(&ledger, "acme/shop", "noisy", "completed", 2);
    let config = directory.path().join("deep-review.toml");
    std::fs::write(
        &config,
        format!(
            "[[agents]]\nname = \"builtin\"\nrunner = \"builtin\"\n\n[[agents]]\nname = \"noisy\"\nrunner = \"command\"\ncommand = [\"{}\"]\n\n\
             [lineup_policy]\naction = \"demote\"\nmin_reviews = 10\nmax_false_positive_rate = 0.5\n",
            crate::util::fixture("agents/good-agent.sh").display(),
        ),
    )
    .unwrap();
    let out = directory.path().join("shop");
    let (_repository, output) = review_known_problems(
        &out,
        &["--config", config.to_str().unwrap()],
        &["--repository", "acme/shop", "--quiet"],
        &[("DEEP_REVIEW_REVIEW__LEDGER_FILE", ledger.to_str().unwrap())],
    );
    expect_success(&output);
    let report = read_report(&out);
    assert_eq!(report.retro.len(), 2, "a demoted agent still runs");
    assert!(
        report.notices.iter().any(|notice| notice
            .contains("noisy's findings are advisory in this review of acme/shop")
            && notice.contains("100% of its findings were false positives")),
        "{:?}",
        report.notices
    );
    // Its Critical agrees with the builtin reviewer, whose own rating decides.
    let builtin_rating = report
        .appendix
        .iter()
        .find(|result| result.agent == "builtin")
        .and_then(|result| {
            result.findings.iter().find(|finding| {
                finding.locations.iter().any(|location| {
                    location.path == "app/service.py" && location.start_line == Some(8)
                })
            })
        })
        .map(|finding| finding.severity)
        .expect("the builtin reviewer reports the swallowed error");
    let shared = report
        .findings
        .iter()
        .find(|finding| finding.agents.len() == 2)
        .unwrap_or_else(|| panic!("one finding of both: {:#?}", report.findings));
    assert_eq!(
        shared.severity, builtin_rating,
        "{:?}",
        shared.severity_note
    );
    // What only it reported can at most suggest.
    for finding in report
        .findings
        .iter()
        .filter(|finding| finding.agents == ["noisy"])
    {
        assert_eq!(finding.severity, deep_review_protocol::Severity::Suggestion);
    }
}

/// With a line-up policy, an agent whose record in the repository breaks a bound is left
/// out of its reviews, and the report says why; other repositories still get it.
#[test]
fn the_lineup_policy_leaves_out_an_agent_that_keeps_failing_in_a_repository() {
    let directory = tempfile::tempdir().unwrap();
    let ledger = directory.path().join("ledger.jsonl");
    // Twenty failed runs of `flaky` in acme/shop, none elsewhere.
    write_ledger(&ledger, "acme/shop", "flaky", "failed", 0);
    let config = directory.path().join("deep-review.toml");
    std::fs::write(
        &config,
        format!(
            "[[agents]]\nname = \"builtin\"\nrunner = \"builtin\"\n\n[[agents]]\nname = \"flaky\"\nrunner = \"command\"\ncommand = [\"{}\"]\n\n\
             [lineup_policy]\nmin_reviews = 10\nmax_failure_rate = 0.5\n",
            crate::util::fixture("agents/good-agent.sh").display(),
        ),
    )
    .unwrap();
    let review = |repository: &str| {
        let out = directory.path().join(repository.replace('/', "-"));
        let (_repository, output) = review_known_problems(
            &out,
            &["--config", config.to_str().unwrap()],
            &["--repository", repository, "--quiet"],
            &[("DEEP_REVIEW_REVIEW__LEDGER_FILE", ledger.to_str().unwrap())],
        );
        expect_success(&output);
        read_report(&out)
    };
    let shop = review("acme/shop");
    let agents: Vec<&str> = shop.retro.iter().map(|row| row.agent.as_str()).collect();
    assert_eq!(agents, vec!["builtin"], "{:?}", shop.notices);
    assert!(
        shop.notices
            .iter()
            .any(|notice| notice.contains("flaky was left out")
                && notice
                    .contains("100% of runs over its last 20 reviews here, above the 50% bound")),
        "{:?}",
        shop.notices
    );
    let other = review("acme/other");
    assert_eq!(other.retro.len(), 2, "no record there, so no judgement");
}
