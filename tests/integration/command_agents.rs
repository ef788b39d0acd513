//! `command` agents that succeed, crash, hang or print garbage: the review always completes
//! and the report names what went wrong.

use deep_review_protocol::{AgentStatus, Severity};

use crate::util::{expect_success, fixture, read_report, review_known_problems};

fn agent_config(hang_seconds: &str) -> String {
    let script = |name: &str| fixture(&format!("agents/{name}")).display().to_string();
    format!(
        r#"
[[agents]]
name = "builtin"
runner = "builtin"
timeout = "1m"

[[agents]]
name = "good"
display_name = "Good Agent"
runner = "command"
command = ["{good}"]
timeout = "30s"

[[agents]]
name = "crashing"
runner = "command"
command = ["{failing}"]
timeout = "30s"

[[agents]]
name = "hanging"
runner = "command"
command = ["{hanging}", "{hang_seconds}"]
timeout = "2s"

[[agents]]
name = "garbage"
runner = "command"
command = ["{garbage}"]
timeout = "30s"
"#,
        good = script("good-agent.sh"),
        failing = script("failing-agent.sh"),
        hanging = script("hanging-agent.sh"),
        garbage = script("garbage-agent.sh"),
    )
}

fn sleeping_processes(marker: &str) -> usize {
    let output = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("sleep ") && line.contains(marker))
        .count()
}

/// An agent cannot read the worker's environment through `/proc`: it runs in its own PID
/// namespace, so it sees only its own processes (and the worker is non-dumpable where it
/// is not root).
#[test]
fn an_agent_cannot_read_the_workers_secrets_through_proc() {
    let out = tempfile::tempdir().unwrap();
    let config_directory = tempfile::tempdir().unwrap();
    let config_path = config_directory.path().join("deep-review.toml");
    std::fs::write(
        &config_path,
        format!(
            "[[agents]]\nname = \"snooping\"\nrunner = \"command\"\ncommand = [\"{}\"]\ntimeout = \"30s\"\n",
            fixture("agents/snooping-agent.sh").display()
        ),
    )
    .unwrap();
    let (_, output) = review_known_problems(
        out.path(),
        &["--config", config_path.to_str().unwrap()],
        &["--quiet"],
        &[("GITHUB_TOKEN", "ghp_must_not_reach_agents")],
    );
    expect_success(&output);
    let report = read_report(out.path());
    let snooped = &report.findings[0].title;
    assert!(snooped.starts_with("Snooped: nothing"), "{snooped}");
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(!markdown.contains("ghp_must_not_reach_agents"));
}

/// When every agent fails, nothing was reviewed: the verdict is Incomplete, never Merge, and
/// the exit code is 4 even with no --fail-on.
#[test]
fn a_review_whose_every_agent_failed_is_incomplete() {
    let out = tempfile::tempdir().unwrap();
    let config_directory = tempfile::tempdir().unwrap();
    let config_path = config_directory.path().join("deep-review.toml");
    std::fs::write(
        &config_path,
        agent_config(&format!("914.{}", std::process::id())),
    )
    .unwrap();
    let (_, output) = review_known_problems(
        out.path(),
        &["--config", config_path.to_str().unwrap()],
        &["--agent", "crashing", "--agent", "garbage", "--quiet"],
        &[],
    );
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let report = read_report(out.path());
    assert_eq!(
        report.verdict.verdict,
        deep_review_protocol::Verdict::Incomplete
    );
    assert!(
        report.verdict.reason.contains("no agent completed"),
        "{}",
        report.verdict.reason
    );
}

#[test]
fn failing_agents_are_named_and_the_review_still_completes() {
    let out = tempfile::tempdir().unwrap();
    let config_directory = tempfile::tempdir().unwrap();
    let config_path = config_directory.path().join("deep-review.toml");
    // A sleep length unique to this test process, to find leftovers of its hanging agent.
    let hang_marker = format!("913.{}", std::process::id());
    std::fs::write(&config_path, agent_config(&hang_marker)).unwrap();

    let (repository, output) = review_known_problems(
        out.path(),
        &["--config", config_path.to_str().unwrap()],
        &[],
        &[("GITHUB_TOKEN", "ghp_must_not_reach_agents")],
    );
    let stdout = expect_success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Progress lines (not a terminal here) name each agent's outcome.
    assert!(stderr.contains("good: done in"), "{stderr}");
    assert!(stderr.contains("hanging: timed out after"), "{stderr}");
    assert!(
        stdout.contains("Agent crashing did not complete"),
        "{stdout}"
    );

    let report = read_report(out.path());
    let failure = |agent: &str| {
        report
            .failed_agents
            .iter()
            .find(|failed| failed.agent == agent)
            .cloned()
    };
    let crashing = failure("crashing").expect("crashing agent named");
    assert_eq!(crashing.status, Some(AgentStatus::Failed));
    assert!(
        crashing.reason.contains("exit status: 3")
            && crashing.reason.contains("model quota exceeded"),
        "{}",
        crashing.reason
    );
    let hanging = failure("hanging").expect("hanging agent named");
    assert_eq!(hanging.status, Some(AgentStatus::TimedOut));
    assert!(hanging.reason.contains("2s timeout"), "{}", hanging.reason);
    let garbage = failure("garbage").expect("garbage agent named");
    assert_eq!(garbage.status, Some(AgentStatus::Failed));
    assert!(
        garbage.reason.contains("not a valid agent result"),
        "{}",
        garbage.reason
    );
    assert!(failure("good").is_none() && failure("builtin").is_none());
    assert!(
        !report.partial,
        "every agent delivered a result, even if a failed one"
    );

    // Nothing the agents printed is lost.
    let raw = |agent: &str| {
        report
            .appendix
            .iter()
            .find(|result| result.agent == agent)
            .and_then(|result| result.raw_output.clone())
    };
    assert_eq!(
        raw("garbage").as_deref(),
        Some("Looks good to me! No issues found.\n")
    );
    assert_eq!(raw("crashing").as_deref(), Some("partial thoughts\n"));

    // The good agent's finding merges with the builtin's at the same place; the tie between
    // Critical and Important goes to the lower, and the change is recorded.
    let swallowed = report
        .findings
        .iter()
        .find(|finding| {
            finding
                .locations
                .iter()
                .any(|location| location.to_string() == "app/service.py:8-9")
        })
        .expect("swallowed exception reported");
    assert_eq!(
        swallowed.agents,
        vec!["builtin".to_string(), "good".to_string()]
    );
    assert_eq!(swallowed.severity, Severity::Important);
    assert!(swallowed
        .severity_note
        .as_deref()
        .unwrap_or("")
        .contains("Good Agent rated this Critical"));
    assert!(report
        .reconciliations
        .iter()
        .any(|change| change.agent == "good"
            && change.from == Severity::Critical
            && change.to == Some(Severity::Important)));

    // Retro: usage and tool calls from the agent, unique insight, coverage miss.
    let good = report.retro.iter().find(|row| row.agent == "good").unwrap();
    assert_eq!(good.input_tokens, 1200);
    assert_eq!(good.tool_calls.get("Read"), Some(&4));
    assert_eq!(
        good.unique_insights, 1,
        "the magic-number suggestion is the good agent's alone"
    );
    assert_eq!(good.downgraded, 1);
    assert_eq!(good.coverage_misses, vec!["web/app.js".to_string()]);
    assert_eq!(
        report
            .header
            .reviewers
            .iter()
            .find(|reviewer| reviewer.agent == "good")
            .unwrap()
            .model
            .as_deref(),
        Some("stand-in-1")
    );
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        markdown.contains("## Agents that did not complete"),
        "{markdown}"
    );
    assert!(markdown.contains("6 (Read 4, Bash 2)"), "{markdown}");

    // The hanging agent's child was killed with its process group; worktrees are gone.
    assert_eq!(
        sleeping_processes(&hang_marker),
        0,
        "the hanging agent's sleep outlived it"
    );
    let worktrees = repository.git(&["worktree", "list"]);
    assert_eq!(worktrees.lines().count(), 1, "{worktrees}");
}

/// In its sandbox an agent sees the system read-only and its own checkout, and nothing of
/// the worker's: not its home, not other reviews' checkouts in the scratch directory, not
/// the developer's working tree it was checked out from; and it can change none of them.
/// With only a PID namespace (`agent_isolation = "pid-namespace"`) it can do all of that,
/// which is what the sandbox is for.
#[test]
fn a_sandboxed_agent_sees_only_its_checkout() {
    let sandbox_works = std::process::Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--unshare-pid", "true"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        sandbox_works,
        "bubblewrap is needed for this test (scripts/services.sh installs it)"
    );
    let place = tempfile::tempdir().unwrap();
    let home = place.path().join("home");
    let scratch = place.path().join("scratch");
    let other_checkout = scratch.join("other-review-1234");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&other_checkout).unwrap();
    std::fs::write(home.join("credentials"), "home-secret").unwrap();
    std::fs::write(other_checkout.join("private.rs"), "other-review-secret").unwrap();

    let run = |isolation: &str| {
        let (repository, _) = crate::util::repository_with_known_problems();
        std::fs::write(
            repository.path().join("uncommitted.txt"),
            "working-tree-secret",
        )
        .unwrap();
        let config = place.path().join(format!("{isolation}.toml"));
        std::fs::write(
            &config,
            format!(
                "[review]\nagent_isolation = \"{isolation}\"\nscratch_directory = \"{scratch}\"\n\n\
                 [[agents]]\nname = \"file-snooping\"\nrunner = \"command\"\n\
                 command = [\"{agent}\", \"{home}/credentials\", \"{other}/private.rs\", \"{tree}/uncommitted.txt\", \
                 \"--write\", \"{home}/planted\", \"{tree}/planted\", \"{scratch}/planted\"]\ntimeout = \"30s\"\n",
                scratch = scratch.display(),
                agent = fixture("agents/file-snooping-agent.sh").display(),
                home = home.display(),
                other = other_checkout.display(),
                tree = repository.path().display(),
            ),
        )
        .unwrap();
        let out = place.path().join(format!("out-{isolation}"));
        let base = repository.git(&["rev-parse", "HEAD~1"]).trim().to_string();
        let output = crate::util::deep_review_with(
            &[
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
            ],
            &[("HOME", home.to_str().unwrap())],
            None,
        );
        expect_success(&output);
        let title = read_report(&out).findings[0].title.clone();
        let planted: Vec<bool> = [
            home.join("planted"),
            repository.path().join("planted"),
            scratch.join("planted"),
        ]
        .iter()
        .map(|path| path.exists())
        .collect();
        (title, planted)
    };

    // What a sandboxed agent writes outside its checkout lands in its own empty
    // filesystem, which goes with it: none of it reaches the worker's disk.
    let (title, planted) = run("sandbox");
    assert!(
        title.starts_with("Read: nothing;") && title.ends_with("own checkout: yes"),
        "the sandboxed agent got out: {title}"
    );
    assert_eq!(planted, vec![false, false, false], "{title}");

    let (title, planted) = run("pid-namespace");
    for secret in ["home-secret", "other-review-secret", "working-tree-secret"] {
        assert!(title.contains(secret), "{secret} in {title}");
    }
    assert_eq!(planted, vec![true, true, true]);
}
