//! Configuration layers and their errors.

use crate::util::{deep_review, deep_review_with, expect_success};

#[test]
fn show_merges_file_and_environment() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("deep-review.toml");
    std::fs::write(
        &path,
        "[review]\nconcurrency = 7\n\n[output]\nformats = [\"json\"]\n",
    )
    .unwrap();
    let stdout = expect_success(&deep_review_with(
        &["--config", path.to_str().unwrap(), "config", "show"],
        &[("DEEP_REVIEW_REVIEW__DELIVERY_LIMIT", "9")],
        None,
    ));
    let shown: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(shown["review"]["concurrency"].as_integer(), Some(7));
    assert_eq!(shown["review"]["delivery_limit"].as_integer(), Some(9));
    assert_eq!(shown["output"]["formats"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        shown["agents"][0]["runner"].as_str(),
        Some("builtin"),
        "defaults fill the rest"
    );
}

#[test]
fn broken_configuration_is_named() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("deep-review.toml");
    std::fs::write(&path, "[review]\nconcurrency = \"many\"\n").unwrap();
    let output = deep_review(&["--config", path.to_str().unwrap(), "config", "show"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("concurrency"), "{stderr}");

    std::fs::write(&path, "[review]\nconcurency = 3\n").unwrap();
    let output = deep_review(&["--config", path.to_str().unwrap(), "config", "show"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("concurency"),
        "a misspelt key is an error: {stderr}"
    );

    std::fs::write(&path, "[github]\napp_idd = 3\n").unwrap();
    let output = deep_review(&["--config", path.to_str().unwrap(), "config", "show"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("app_idd"),
        "a misspelt GitHub key is an error: {stderr}"
    );

    // A GitHub table shows where secrets come from, never a secret.
    std::fs::write(
        &path,
        "[github]\napp_id = 3\nprivate_key_path = \"/secrets/app.pem\"\n",
    )
    .unwrap();
    let output = deep_review(&["--config", path.to_str().unwrap(), "config", "show"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("private_key_path = \"/secrets/app.pem\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhook_secret_env = \"GITHUB_WEBHOOK_SECRET\""),
        "{stdout}"
    );

    std::fs::write(&path, "[[agents]]\nname = \"x\"\nrunner = \"telepathy\"\n").unwrap();
    let output = deep_review(&["--config", path.to_str().unwrap(), "config", "show"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("telepathy"),
        "{stderr}"
    );

    let missing = deep_review(&[
        "--config",
        "/nonexistent/deep-review.toml",
        "config",
        "show",
    ]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
}

/// A setting the runner cannot honour is refused at start-up, naming the agent, rather
/// than accepted and ignored.
#[test]
fn settings_a_runner_would_ignore_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("deep-review.toml");
    let cases = [
        (
            "name = \"g\"\nrunner = \"gemini-cli\"\neffort = \"high\"\n",
            "agent `g` sets `effort`, which the gemini-cli runner has no way to pass on",
        ),
        (
            "name = \"c\"\nrunner = \"claude-code\"\neffort = \"extreme\"\n",
            "use one of low, medium, high, xhigh, max",
        ),
        (
            "name = \"b\"\nrunner = \"builtin\"\nbase_url = \"http://127.0.0.1:9\"\n",
            "agent `b` sets `base_url`",
        ),
    ];
    for (agent, expected) in cases {
        std::fs::write(&path, format!("[[agents]]\n{agent}")).unwrap();
        let output = deep_review(&["--config", path.to_str().unwrap(), "config", "show"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{agent}: {stderr}"
        );
    }
    std::fs::write(
        &path,
        "[[agents]]\nname = \"x\"\nrunner = \"codex\"\neffort = \"high\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
    )
    .unwrap();
    expect_success(&deep_review(&[
        "--config",
        path.to_str().unwrap(),
        "config",
        "show",
    ]));
}
