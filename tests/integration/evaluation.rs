//! `deep-review eval` over the cases shipped in `evaluation/cases`: the builtin reviewer's
//! score is a tracked figure (docs/benchmarks.md), and a broken case is named.

use crate::util::{deep_review, expect_success};

#[test]
fn the_builtin_reviewers_score_on_the_shipped_cases_is_the_tracked_figure() {
    let cases = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("evaluation/cases");
    let directory = tempfile::tempdir().unwrap();
    let json = directory.path().join("scores.json");
    // No configuration file: the default line-up, the builtin reviewer alone.
    let config = directory.path().join("deep-review.toml");
    std::fs::write(&config, "").unwrap();
    let stdout = expect_success(&deep_review(&[
        "--config",
        config.to_str().unwrap(),
        "eval",
        "--cases",
        cases.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(stdout.contains("consolidated report"), "{stdout}");
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let total = &scores["total"]["consolidated"];
    // Update docs/benchmarks.md together with these.
    assert_eq!(
        (
            total["findings"].as_u64(),
            total["matched_findings"].as_u64(),
            total["bugs"].as_u64(),
            total["found_bugs"].as_u64()
        ),
        (Some(8), Some(3), Some(5), Some(3)),
        "{total}"
    );
    let cases = scores["cases"].as_array().unwrap();
    let found = |name: &str| {
        cases
            .iter()
            .find(|case| case["case"] == name)
            .map(|case| case["consolidated"]["found_bugs"].as_u64())
    };
    // What a pattern matcher finds, and what it cannot: goto fail and an off-by-one.
    assert_eq!(found("swallowed-exception"), Some(Some(1)));
    assert_eq!(found("go-logged-error"), Some(Some(1)));
    assert_eq!(found("goto-fail"), Some(Some(0)));
    assert_eq!(found("off-by-one"), Some(Some(0)));
    assert_eq!(scores["total"]["agents"][0]["agent"], "builtin");
    assert_eq!(scores["total"]["agents"][0]["found_bugs"], 3);
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
}
