use super::*;
use crate::test_support::git;
use deep_review_protocol::{Location, ReviewJob, Source};

fn evidence(exit_code: Option<i32>, output: &str) -> RunEvidence {
    RunEvidence {
        exit_code,
        stopped_by: None,
        output: output.to_string(),
        duration: Duration::from_millis(5),
    }
}

fn reproduction(path: &str, fails_with: &str) -> Reproduction {
    Reproduction {
        path: path.to_string(),
        content: "test\n".to_string(),
        fails_with: fails_with.to_string(),
    }
}

fn finding(severity: Severity, path: &str) -> Finding {
    Finding {
        id: None,
        severity,
        title: format!("a problem in {path}"),
        body: String::new(),
        category: None,
        tag: None,
        locations: vec![Location {
            path: path.to_string(),
            start_line: Some(1),
            end_line: None,
        }],
        code_excerpt: None,
        fix: None,
        confidence: None,
        verification: None,
        reproduction: None,
    }
}

#[test]
fn a_reproduction_confirms_only_by_failing_as_announced() {
    let proposed = reproduction("tests/repro.sh", "BUG: total overflows");
    let cases = [
        (
            evidence(Some(0), "1 passed"),
            VerificationOutcome::Refuted,
            "passes",
        ),
        (
            evidence(Some(1), "assertion failed: BUG: total overflows\n"),
            VerificationOutcome::Confirmed,
            "fails at the head commit (exit 1)",
        ),
        (
            evidence(Some(101), "error[E0425]: cannot find value `x`"),
            VerificationOutcome::Inconclusive,
            "without printing",
        ),
        (
            evidence(None, ""),
            VerificationOutcome::Inconclusive,
            "without an exit code",
        ),
        (
            RunEvidence {
                stopped_by: Some("the 5m time limit".to_string()),
                ..evidence(None, "BUG: total overflows")
            },
            VerificationOutcome::Inconclusive,
            "stopped by the 5m time limit",
        ),
    ];
    for (run, outcome, reason) in cases {
        let (judged, because) = judge_reproduction(&run, &proposed);
        assert_eq!(judged, outcome, "{run:?}: {because}");
        assert!(because.contains(reason), "{because}");
        assert!(because.contains("tests/repro.sh"), "{because}");
    }
}

#[test]
fn the_repository_check_confirms_only_a_finding_its_failure_names() {
    let in_cart = finding(Severity::Critical, "src/cart.py");
    let failing = evidence(
        Some(1),
        "FAILED tests/test_cart.py::test_total - src/cart.py:12: OverflowError",
    );
    assert_eq!(
        judge_repository_check(&failing, &in_cart).0,
        VerificationOutcome::Confirmed
    );
    let elsewhere = finding(Severity::Critical, "src/payment.py");
    let (outcome, reason) = judge_repository_check(&failing, &elsewhere);
    assert_eq!(outcome, VerificationOutcome::Inconclusive);
    assert!(
        reason.contains("does not name `src/payment.py`"),
        "{reason}"
    );
    let (outcome, reason) = judge_repository_check(&evidence(Some(0), "ok"), &in_cart);
    assert_eq!(
        outcome,
        VerificationOutcome::Inconclusive,
        "a passing suite refutes nothing"
    );
    assert!(reason.contains("does not exercise"), "{reason}");
}

#[test]
fn the_workers_evidence_replaces_the_agents_unless_it_settles_nothing() {
    let mut claimed = finding(Severity::Important, "a.rs");
    claimed.verification = Some(Verification::by_agent(
        "read the caller",
        "",
        VerificationOutcome::Confirmed,
    ));
    let inconclusive = Verification {
        sandbox: Some("local".into()),
        ..Verification::by_agent("make check", "", VerificationOutcome::Inconclusive)
    };
    record(&mut claimed, inconclusive.clone());
    assert_eq!(
        claimed.verification.as_ref().unwrap().command,
        "read the caller"
    );
    let refuted = Verification {
        outcome: VerificationOutcome::Refuted,
        ..inconclusive.clone()
    };
    record(&mut claimed, refuted.clone());
    assert_eq!(claimed.verification, Some(refuted));
    let mut unclaimed = finding(Severity::Important, "a.rs");
    record(&mut unclaimed, inconclusive.clone());
    assert_eq!(unclaimed.verification, Some(inconclusive));
}

/// A repository whose head has `check.sh` (the repository's check) and `src/cart.sh`.
struct Fixture {
    _directory: tempfile::TempDir,
    root: std::path::PathBuf,
    base: String,
    head: String,
}

fn head_of(root: &Path) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn fixture() -> Fixture {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path().to_path_buf();
    git(&root, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("src/cart.sh"),
        "total() { echo $(( $1 + $2 )); }\n",
    )
    .unwrap();
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "base"]);
    let base = head_of(&root);
    // The check runs every `tests/*.sh`, so a proposed test joins it by its path.
    std::fs::write(
        root.join("check.sh"),
        "set -e\nfor test in tests/*.sh; do [ -e \"$test\" ] || continue; echo \"running $test\"; sh \"$test\"; done\necho all passed\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("tests")).unwrap();
    std::fs::write(root.join("tests/existing.sh"), "true\n").unwrap();
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "head"]);
    let head = head_of(&root);
    Fixture {
        _directory: directory,
        root,
        base,
        head,
    }
}

async fn prepared(fixture: &Fixture, scratch: &Path) -> PreparedChange {
    let job = ReviewJob {
        source: Source::LocalRepo {
            path: fixture.root.display().to_string(),
            base: fixture.base.clone(),
            head: fixture.head.clone(),
        },
        ..crate::test_support::review_job()
    };
    let mirrors = deep_review_git::MirrorCache::new(scratch.join("mirrors"));
    PreparedChange::prepare(&job, scratch, false, &mirrors)
        .await
        .unwrap()
}

fn local() -> Option<LocalBackend> {
    match LocalBackend::new(&VerificationSettings::default()) {
        Ok(backend) => Some(backend),
        Err(error) => {
            // CI installs bubblewrap (scripts/services.sh); a bare machine says so loudly.
            eprintln!("*** SKIPPED: {error}");
            None
        }
    }
}

fn limits() -> RunLimits {
    RunLimits {
        timeout: Duration::from_secs(20),
        cpu_time: Duration::from_secs(20),
        memory_bytes: 512 * 1024 * 1024,
        output_bytes: 4096,
    }
}

async fn archive(fixture: &Fixture, scratch: &Path) -> std::path::PathBuf {
    let change = prepared(fixture, scratch).await;
    let archive = scratch.join("head.tar.gz");
    change.archive_head(&archive).await.unwrap().unwrap();
    archive
}

#[tokio::test]
async fn a_local_run_has_the_head_commit_and_the_test_but_no_network_nor_secrets() {
    let Some(backend) = local() else { return };
    let fixture = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let archive = archive(&fixture, scratch.path()).await;
    // What the sandbox must not reach: a port on the host, a file of the worker's in the
    // temporary directory, its environment, and a file an agent left in its checkout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "worker secret").unwrap();
    std::fs::write(fixture.root.join("left-by-agent.txt"), "uncommitted").unwrap();
    // SAFETY: no other test reads this variable.
    unsafe { std::env::set_var("DEEP_REVIEW_VERIFICATION_TEST_SECRET", "s3cret") };
    let command = format!(
        "ls; ls tests; cat tests/repro.sh; \
         cat {secret} 2>/dev/null && echo READ-SECRET; \
         env | grep -q s3cret && echo ENV-SECRET; \
         bash -c 'echo > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo NETWORK; \
         echo written > ../escape.txt; echo done",
        secret = secret.path().display()
    );
    let limits = limits();
    let run = VerificationRun {
        review_id: "r1",
        source_archive: &archive,
        extra_file: Some(("tests/repro.sh", "echo reproduction-content\n")),
        command: &command,
        limits: &limits,
    };
    let evidence = backend.run(run).await.unwrap();
    let output = &evidence.output;
    assert_eq!(evidence.exit_code, Some(0), "{output}");
    for expected in [
        "check.sh",
        "src",
        "existing.sh",
        "repro.sh",
        "echo reproduction-content",
        "done",
    ] {
        assert!(output.contains(expected), "{expected} in {output}");
    }
    for forbidden in ["left-by-agent.txt", "READ-SECRET", "ENV-SECRET", "NETWORK"] {
        assert!(!output.contains(forbidden), "{forbidden} in {output}");
    }
    // The same probe reaches the port from outside the sandbox.
    let outside = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("echo > /dev/tcp/127.0.0.1/{port}"))
        .status()
        .unwrap();
    assert!(outside.success(), "the probe works outside the sandbox");
}

#[tokio::test]
async fn a_local_run_is_stopped_by_its_limits() {
    let Some(backend) = local() else { return };
    let fixture = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let archive = archive(&fixture, scratch.path()).await;
    let run = |command: &'static str, limits: RunLimits| {
        let archive = archive.clone();
        let backend = backend.clone();
        async move {
            backend
                .run(VerificationRun {
                    review_id: "r1",
                    source_archive: &archive,
                    extra_file: None,
                    command,
                    limits: &limits,
                })
                .await
                .unwrap()
        }
    };
    let clock = std::time::Instant::now();
    let slow = run(
        "echo started; sleep 30",
        RunLimits {
            timeout: Duration::from_secs(1),
            ..limits()
        },
    )
    .await;
    assert_eq!(
        slow.stopped_by.as_deref(),
        Some("the 1s time limit"),
        "{slow:?}"
    );
    assert!(
        clock.elapsed() < Duration::from_secs(15),
        "stopped at the limit, not at the end"
    );

    let hungry = run(
        "bash -c 'x=$(head -c 600000000 /dev/zero | tr \"\\0\" x); echo ${#x}' || echo could not allocate",
        RunLimits {
            memory_bytes: 256 * 1024 * 1024,
            ..limits()
        },
    )
    .await;
    assert!(hungry.output.contains("cannot allocate"), "{hungry:?}");
    assert!(hungry.output.contains("could not allocate"), "{hungry:?}");

    let spinning = run(
        "while :; do :; done",
        RunLimits {
            cpu_time: Duration::from_secs(1),
            ..limits()
        },
    )
    .await;
    assert_eq!(
        spinning.stopped_by.as_deref(),
        Some("the 1s CPU time limit"),
        "{spinning:?}"
    );

    let chatty = run(
        "i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done; exit 3",
        RunLimits {
            output_bytes: 1024,
            ..limits()
        },
    )
    .await;
    assert_eq!(chatty.exit_code, Some(3));
    assert!(chatty.output.len() < 1200, "{}", chatty.output.len());
    assert!(chatty.output.contains("line 19999"), "the end is kept");
    assert!(chatty
        .output
        .contains("bytes of output before this left out"));
}

/// A backend that records each run's command and extra file and answers a set evidence.
struct Scripted {
    runs: std::sync::Mutex<Vec<(String, Option<String>)>>,
    answer: fn(Option<&str>) -> Result<RunEvidence, VerificationError>,
}

#[async_trait]
impl VerificationBackend for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn run(&self, run: VerificationRun<'_>) -> Result<RunEvidence, VerificationError> {
        assert!(run.source_archive.is_file());
        self.runs.lock().unwrap().push((
            run.command.to_string(),
            run.extra_file.map(|(path, _)| path.to_string()),
        ));
        (self.answer)(run.extra_file.map(|(path, _)| path))
    }
}

#[tokio::test]
async fn serious_findings_are_verified_most_severe_first_within_the_cap() {
    let fixture = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let change = prepared(&fixture, scratch.path()).await;
    let backend = Arc::new(Scripted {
        runs: std::sync::Mutex::new(Vec::new()),
        answer: |extra| {
            Ok(match extra {
                Some("tests/passes.sh") => evidence(Some(0), "all passed"),
                Some(_) => evidence(Some(1), "BUG: negative total"),
                None => evidence(Some(1), "src/cart.sh: line 1: syntax error"),
            })
        },
    });
    let settings = VerificationSettings {
        enabled: true,
        max_findings: 4,
        ..VerificationSettings::default()
    };
    let verifier = Verifier::with_backend(settings, backend.clone());
    let with = |severity, path: &str, proposed: Option<Reproduction>| Finding {
        reproduction: proposed,
        ..finding(severity, path)
    };
    let mut findings = vec![
        with(Severity::Suggestion, "src/cart.sh", None),
        with(
            Severity::Important,
            "src/cart.sh",
            Some(reproduction("tests/fails.sh", "BUG: negative total")),
        ),
        with(
            Severity::Critical,
            "src/cart.sh",
            Some(reproduction("tests/passes.sh", "BUG")),
        ),
        with(Severity::Important, "src/cart.sh", None),
        with(Severity::Important, "src/other.sh", None),
        with(
            Severity::Important,
            "src/cart.sh",
            Some(reproduction("tests/existing.sh", "BUG")),
        ),
        with(
            Severity::Important,
            "src/cart.sh",
            Some(reproduction("../outside.sh", "BUG")),
        ),
    ];
    let policy = VerificationPolicy {
        command: "sh check.sh".to_string(),
        reproductions: true,
    };
    verifier.verify(&policy, "r1", &change, &mut findings).await;
    let outcome = |index: usize| {
        findings[index]
            .verification
            .as_ref()
            .map(|verification| verification.outcome)
    };
    assert_eq!(outcome(0), None, "below the least severity verified");
    assert_eq!(outcome(2), Some(VerificationOutcome::Refuted));
    assert_eq!(outcome(1), Some(VerificationOutcome::Confirmed));
    assert_eq!(
        outcome(3),
        Some(VerificationOutcome::Confirmed),
        "the check's failure names src/cart.sh"
    );
    assert_eq!(outcome(4), Some(VerificationOutcome::Inconclusive));
    assert_eq!(outcome(5), None, "past the cap of four");
    let confirmed = findings[1].verification.as_ref().unwrap();
    assert_eq!(confirmed.exit_code, Some(1));
    assert_eq!(confirmed.sandbox.as_deref(), Some("scripted"));
    assert!(
        confirmed.command.contains("sh check.sh") && confirmed.command.contains("tests/fails.sh")
    );
    assert!(confirmed.duration_ms.is_some());
    let runs = backend.runs.lock().unwrap().clone();
    assert_eq!(
        runs.iter().map(|(_, extra)| extra.as_deref()).collect::<Vec<_>>(),
        [Some("tests/passes.sh"), Some("tests/fails.sh"), None],
        "the critical finding first, and the repository's check run once for both findings without a test"
    );

    // Tests that cannot be added are named, not run.
    let mut refused = vec![
        with(
            Severity::Important,
            "src/cart.sh",
            Some(reproduction("tests/existing.sh", "BUG")),
        ),
        with(
            Severity::Important,
            "src/cart.sh",
            Some(reproduction("../outside.sh", "BUG")),
        ),
        with(
            Severity::Important,
            "src/cart.sh",
            Some(reproduction(".git/hooks/x", "BUG")),
        ),
        with(
            Severity::Important,
            "src/cart.sh",
            Some(reproduction("tests/new.sh", "  ")),
        ),
    ];
    let runs_before = backend.runs.lock().unwrap().len();
    let verifier = Verifier::with_backend(
        VerificationSettings {
            enabled: true,
            max_findings: 10,
            ..VerificationSettings::default()
        },
        backend.clone(),
    );
    verifier.verify(&policy, "r1", &change, &mut refused).await;
    assert_eq!(backend.runs.lock().unwrap().len(), runs_before);
    let reasons: Vec<String> = refused
        .iter()
        .map(|finding| {
            finding
                .verification
                .as_ref()
                .unwrap()
                .reason
                .clone()
                .unwrap()
        })
        .collect();
    assert!(
        reasons[0].contains("already exists at the head commit"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("must be relative, without `..`"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("lies in `.git`"), "{reasons:?}");
    assert!(reasons[3].contains("no `fails_with`"), "{reasons:?}");
}

#[tokio::test]
async fn the_local_backend_confirms_and_refutes_for_real() {
    let Some(backend) = local() else { return };
    let fixture = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let change = prepared(&fixture, scratch.path()).await;
    let verifier = Verifier::with_backend(
        VerificationSettings {
            enabled: true,
            ..VerificationSettings::default()
        },
        Arc::new(backend),
    );
    let overflow = Reproduction {
        path: "tests/negative.sh".to_string(),
        content: ". src/cart.sh\n[ \"$(total 2 -3)\" -ge 0 ] || { echo 'BUG: negative total'; exit 1; }\n".to_string(),
        fails_with: "BUG: negative total".to_string(),
    };
    let sum = Reproduction {
        path: "tests/sum.sh".to_string(),
        content:
            ". src/cart.sh\n[ \"$(total 2 3)\" -eq 5 ] || { echo 'BUG: wrong sum'; exit 1; }\n"
                .to_string(),
        fails_with: "BUG: wrong sum".to_string(),
    };
    let mut findings = vec![
        Finding {
            reproduction: Some(overflow),
            ..finding(Severity::Critical, "src/cart.sh")
        },
        Finding {
            reproduction: Some(sum),
            ..finding(Severity::Important, "src/cart.sh")
        },
    ];
    let policy = VerificationPolicy {
        command: "sh check.sh".to_string(),
        reproductions: true,
    };
    verifier.verify(&policy, "r1", &change, &mut findings).await;
    let confirmed = findings[0].verification.as_ref().unwrap();
    assert_eq!(
        confirmed.outcome,
        VerificationOutcome::Confirmed,
        "{confirmed:?}"
    );
    assert!(
        confirmed.output.contains("running tests/negative.sh"),
        "{confirmed:?}"
    );
    assert_eq!(confirmed.sandbox.as_deref(), Some("local"));
    let refuted = findings[1].verification.as_ref().unwrap();
    assert_eq!(refuted.outcome, VerificationOutcome::Refuted, "{refuted:?}");
    assert!(refuted.output.contains("all passed"), "{refuted:?}");
}
