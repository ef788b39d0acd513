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
