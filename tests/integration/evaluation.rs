//! `deep-review eval` over the cases shipped in `evaluation/`: the builtin reviewer's score
//! is a tracked figure (docs/benchmarks.md); cases built from patches; the Martian Code
//! Review Bench's golden comments; and broken cases named.

use crate::util::{deep_review, expect_success};

/// Runs `deep-review eval` with an empty configuration (the builtin reviewer alone) and
/// returns the JSON scores.
fn evaluate(cases: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let directory = tempfile::tempdir().unwrap();
    let json = directory.path().join("scores.json");
    let config = directory.path().join("deep-review.toml");
    std::fs::write(&config, "").unwrap();
    let mut arguments = vec![
        "--config",
        config.to_str().unwrap(),
        "eval",
        "--cases",
        cases.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    arguments.extend(extra);
    let stdout = expect_success(&deep_review(&arguments));
    assert!(stdout.contains("consolidated report"), "{stdout}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn counts(score: &serde_json::Value) -> (u64, u64, u64, u64) {
    let count = |name: &str| score[name].as_u64().unwrap_or(u64::MAX);
    (
        count("findings"),
        count("matched_findings"),
        count("bugs"),
        count("found_bugs"),
    )
}

fn found_in(scores: &serde_json::Value, name: &str) -> Option<u64> {
    scores["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|case| case["case"] == name)
        .and_then(|case| case["consolidated"]["found_bugs"].as_u64())
}

#[test]
fn the_builtin_reviewers_score_on_the_shipped_cases_is_the_tracked_figure() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Real bug-fix commits, each built as a repository from its base files and patch.
    let scores = evaluate(&root.join("evaluation/cases"), &[]);
    // Update docs/benchmarks.md together with these.
    assert_eq!(
        counts(&scores["total"]["consolidated"]),
        (6, 0, 7, 0),
        "{}",
        scores["total"]
    );
    assert_eq!(scores["cases"].as_array().unwrap().len(), 7);
    for case in [
        "debian-openssl-rng",
        "goto-fail",
        "heartbleed",
        "jdk-binary-search",
        "parity-multisig",
        "requests-auth-redirect",
        "rust-slice-repeat",
    ] {
        assert_eq!(
            found_in(&scores, case),
            Some(0),
            "a pattern matcher finds no {case}"
        );
    }
    assert_eq!(scores["total"]["agents"][0]["agent"], "builtin");

    // The patterns the builtin reviewer is made for.
    let scores = evaluate(&root.join("evaluation/patterns"), &[]);
    assert_eq!(
        counts(&scores["total"]["consolidated"]),
        (7, 3, 4, 3),
        "{}",
        scores["total"]
    );
    assert_eq!(found_in(&scores, "swallowed-exception"), Some(1));
    assert_eq!(found_in(&scores, "go-logged-error"), Some(1));
    assert_eq!(found_in(&scores, "leftover-breakpoint"), Some(1));
    assert_eq!(found_in(&scores, "off-by-one"), Some(0));
}

/// A case with a `base/` folder is reviewed as a repository: the base committed, the patch
/// applied with `git apply`; one whose patch does not apply is named.
#[test]
fn a_case_is_built_from_its_base_files_and_patch() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let copy = cases.path().join("requests-auth-redirect");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(root.join("evaluation/cases/requests-auth-redirect"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    evaluate(cases.path(), &["--out", out.path().to_str().unwrap()]);
    let job: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("requests-auth-redirect/review.json")).unwrap(),
    )
    .unwrap();
    let source = &job["source"];
    assert_eq!(source["kind"], "local-repo", "{job}");

    // A patch that does not fit its base.
    std::fs::write(copy.join("base/requests/sessions.py"), "# something else\n").unwrap();
    let output = deep_review(&["eval", "--cases", cases.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("requests-auth-redirect")
            && stderr.contains("does not apply"),
        "{stderr}"
    );
}

/// A folder holding `diffs/acme/billing/12.diff`: the swallowed-exception pattern as
/// the diff of pull request acme/billing#12.
fn billing_diff_on_disk() -> tempfile::TempDir {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let directory = tempfile::tempdir().unwrap();
    let diffs = directory.path().join("diffs/acme/billing");
    std::fs::create_dir_all(&diffs).unwrap();
    std::fs::copy(
        root.join("evaluation/patterns/swallowed-exception/change.diff"),
        diffs.join("12.diff"),
    )
    .unwrap();
    directory
}

/// The Martian Code Review Bench's golden comments: pull requests with the issues a human
/// found and no line. One diff is on disk, the other is read from GitHub (a local server
/// speaking its API); comments are matched by what findings say, and the scoring profile
/// decides which categories count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_comments_of_the_martian_bench_are_cases() {
    use crate::github_server::{GitHubStub, StubRepository, PLAIN_TOKEN};
    let directory = billing_diff_on_disk();
    let golden = serde_json::json!([
        {
            "pr_title": "Add BillingClient.charge",
            "url": "https://github.com/acme/billing/pull/12",
            "original_url": "https://github.com/upstream/billing/pull/3",
            "az_comment": "curators' notes are ignored",
            "comments": [
                {"comment": "In billing/client.py the `except Exception: pass` swallows every error of the charge, so a failed charge looks paid.",
                 "severity": "High", "category": "bug"},
                {"comment": "No test covers the new `BillingClient.charge` failure path in billing/client.py; add one.",
                 "severity": "Low", "category": "test_gap"},
                {"comment": "Retrying the charge after a timeout bills the customer twice.",
                 "severity": "Critical", "category": "bug"},
                {"comment": "The retry count 3 is a magic number; name it.",
                 "severity": "Low", "category": "style"}
            ]
        },
        {
            "pr_title": "Add billing",
            "url": "https://github.com/acme/widgets/pull/7",
            "comments": [
                {"comment": "charge() in app/service.py calls `breakpoint()`, so every request stops in the debugger or hangs waiting for one.",
                 "severity": "High"}
            ]
        }
    ]);
    let file = directory.path().join("golden.json");
    std::fs::write(&file, golden.to_string()).unwrap();

    let (repository, base) = crate::util::repository_with_known_problems();
    let head = repository.git(&["rev-parse", "HEAD"]).trim().to_string();
    let stub = GitHubStub::start().await;
    let pull = crate::github::stub_pull(&repository, &base, &head, "Add billing");
    stub.with(|state| {
        state.repositories.insert(
            "acme/widgets".to_string(),
            StubRepository {
                clone_url: repository.path().display().to_string(),
                archived: false,
                config: None,
                pulls: [(7, pull)].into_iter().collect(),
            },
        );
    });
    let config = directory.path().join("deep-review.toml");
    std::fs::write(&config, format!("[github]\napi_url = \"{}\"\n", stub.url)).unwrap();
    let run = |profile: &'static str| {
        let json = directory.path().join(format!("{profile}.json"));
        let arguments = [
            "eval".to_string(),
            "--cases".to_string(),
            file.display().to_string(),
            "--profile".to_string(),
            profile.to_string(),
            "--json".to_string(),
            json.display().to_string(),
        ];
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        let running = crate::github::deep_review_off_runtime(
            &config,
            &arguments,
            &[("GITHUB_TOKEN", PLAIN_TOKEN)],
        );
        async move {
            let output = running.await.unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(json).unwrap())
                .unwrap()
        }
    };
    let scores = run("core").await;
    assert_eq!(scores["profile"], "core");
    let case = |name: &str| {
        scores["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|case| case["case"] == name)
            .unwrap_or_else(|| panic!("no case {name}: {scores}"))
            .clone()
    };
    // The swallowed error and the missing test are found, the double charge is not, and
    // the style nit is left out of the score.
    let billing = case("acme/billing#12");
    assert_eq!(counts(&billing["consolidated"]), (2, 2, 3, 2), "{billing}");
    assert_eq!(billing["consolidated"]["matched_excluded"], 0);
    // Read from GitHub: the breakpoint is found by what the finding says.
    let widgets = case("acme/widgets#7");
    assert_eq!(widgets["consolidated"]["bugs"], 1, "{widgets}");
    assert_eq!(widgets["consolidated"]["found_bugs"], 1, "{widgets}");
    assert_eq!(
        widgets["consolidated"]["matched_findings"], 1,
        "only the breakpoint finding describes it: {widgets}"
    );

    // Under the strict profile a test gap counts neither way.
    let scores = run("strict").await;
    let billing = scores["cases"][0]["consolidated"].clone();
    assert_eq!(counts(&billing), (1, 1, 2, 1), "{billing}");
    assert_eq!(billing["matched_excluded"], 1);
}

/// Without a diff on disk or a `[github]` table, nothing runs and every missing diff is
/// named with where to put it.
#[test]
fn a_golden_comment_without_a_diff_says_where_to_put_it() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("sentry.json");
    std::fs::write(
        &file,
        r#"[{"pr_title": "x", "url": "https://github.com/getsentry/sentry/pull/93824", "comments": [{"comment": "a bug", "severity": "High"}]}]"#,
    )
    .unwrap();
    let config = directory.path().join("deep-review.toml");
    std::fs::write(&config, "").unwrap();
    let output = deep_review(&[
        "--config",
        config.to_str().unwrap(),
        "eval",
        "--cases",
        directory.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("diffs/getsentry/sentry/93824.diff")
            && stderr.contains("https://github.com/getsentry/sentry/pull/93824.diff"),
        "{stderr}"
    );
    std::fs::write(&file, r#"{"not": "a list"}"#).unwrap();
    let output = deep_review(&[
        "--config",
        config.to_str().unwrap(),
        "eval",
        "--cases",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sentry.json is not a golden-comments file"),
        "{stderr}"
    );
}

#[test]
fn a_broken_case_is_named() {
    let cases = tempfile::tempdir().unwrap();
    let case = cases.path().join("broken");
    std::fs::create_dir_all(&case).unwrap();
    std::fs::write(case.join("case.toml"), "description = \"x\"\nbugz = []\n").unwrap();
    let output = deep_review(&["eval", "--cases", cases.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("broken/case.toml") && stderr.contains("bugz"),
        "{stderr}"
    );
    let empty = tempfile::tempdir().unwrap();
    let output = deep_review(&["eval", "--cases", empty.path().to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("holds no case"));
    let output = deep_review(&[
        "eval",
        "--cases",
        empty.path().to_str().unwrap(),
        "--judge",
        "builtin",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--judge builtin: the judge must use a model API runner"),
        "{stderr}"
    );
}

/// With `--judge`, a model (a local server speaking the Anthropic Messages API) decides
/// which findings describe the golden comments: it accepts a paraphrase the lexical match
/// misses, ids it makes up are ignored, and its tokens are counted. When it fails, the
/// case falls back to the lexical match and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_model_matches_golden_comments_by_meaning() {
    use crate::model_server::{anthropic, ModelServer, Scripted};
    let server = ModelServer::start(vec![anthropic::tool_use(
        "j1",
        "record_matches",
        serde_json::json!({"matches": [
            {"issue": 1, "findings": ["F1", "F7"]},
            {"issue": 2, "findings": []}
        ]}),
        500,
        40,
    )])
    .await;
    let directory = billing_diff_on_disk();
    let file = directory.path().join("golden.json");
    std::fs::write(
        &file,
        serde_json::json!([{
            "pr_title": "Add a billing client",
            "url": "https://github.com/acme/billing/pull/12",
            "comments": [
                {"comment": "A failed payment vanishes without a trace and the order is treated as settled.", "severity": "High", "category": "bug"},
                {"comment": "Retrying after a timeout bills twice.", "severity": "Critical", "category": "bug"}
            ]
        }])
        .to_string(),
    )
    .unwrap();
    let config = directory.path().join("deep-review.toml");
    let write_config = |url: &str| {
        std::fs::write(
            &config,
            format!(
                "[[agents]]\nname = \"builtin\"\nrunner = \"builtin\"\n\n[[agents]]\nname = \"judge\"\nrunner = \"anthropic\"\nmodel = \"claude-sonnet-4-5\"\nbase_url = \"{url}\"\napi_key_env = \"TEAM_ANTHROPIC_KEY\"\n\n[models]\nattempts = 1\n"
            ),
        )
        .unwrap();
    };
    write_config(&server.url);
    let run = |judge: bool| {
        let json = directory.path().join(format!("judge-{judge}.json"));
        let mut arguments = vec![
            "--config".to_string(),
            config.display().to_string(),
            "eval".to_string(),
            "--cases".to_string(),
            file.display().to_string(),
            "--agent".to_string(),
            "builtin".to_string(),
            "--json".to_string(),
            json.display().to_string(),
        ];
        if judge {
            arguments.extend(["--judge".to_string(), "judge".to_string()]);
        }
        tokio::task::spawn_blocking(move || {
            let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
            let output = crate::util::deep_review_with(
                &arguments,
                &[("TEAM_ANTHROPIC_KEY", "sk-test-judge")],
                None,
            );
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "{stderr}");
            let scores: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
            (scores, stderr)
        })
    };
    // The lexical match does not see the paraphrase.
    let (lexical, _) = run(false).await.unwrap();
    assert_eq!(counts(&lexical["cases"][0]["consolidated"]), (2, 0, 2, 0));
    assert!(lexical["judge"].is_null());

    let (judged, _) = run(true).await.unwrap();
    let case = &judged["cases"][0];
    assert_eq!(counts(&case["consolidated"]), (2, 1, 2, 1), "{case}");
    assert_eq!(counts(&case["agents"][0]), (2, 1, 2, 1), "{case}");
    assert!(
        case["matched_by"].as_str().unwrap().contains("judge model"),
        "{case}"
    );
    assert_eq!(judged["judge"]["requests"], 1);
    assert_eq!(judged["judge"]["failures"], 0);
    assert_eq!(judged["judge"]["input_tokens"], 500);
    assert_eq!(judged["judge"]["output_tokens"], 40);
    // One request, with both kinds of text fenced and the key only in its header.
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body = requests[0].body.to_string();
    assert!(
        body.contains("vanishes without a trace")
            && body.contains("Error swallowed by an empty handler"),
        "{body}"
    );
    assert!(body.contains("</data fence="), "{body}");
    assert!(!body.contains("sk-test-judge"));
    assert_eq!(
        requests[0]
            .headers
            .get("x-api-key")
            .and_then(|value| value.to_str().ok()),
        Some("sk-test-judge")
    );

    // A judge that fails leaves the case to the lexical match, and says so.
    let failing = ModelServer::start(vec![Scripted::error(400, "model not found")]).await;
    write_config(&failing.url);
    let (fallen_back, stderr) = run(true).await.unwrap();
    let case = &fallen_back["cases"][0];
    assert_eq!(counts(&case["consolidated"]), (2, 0, 2, 0), "{case}");
    assert!(
        case["matched_by"]
            .as_str()
            .unwrap()
            .contains("the judge failed")
            && stderr.contains("the judge failed"),
        "{case}\n{stderr}"
    );
    assert_eq!(fallen_back["judge"]["failures"], 1);
}
