//! Conventions about paths in a repository, and the path filters a repository configures.

use globset::{Glob, GlobSet, GlobSetBuilder};

/// Paths left out of a review: glob patterns as in `.gitignore`-style tools (`generated/**`,
/// `*.pb.go`). A pattern with no `/` matches the file name in any directory.
#[derive(Debug, Clone)]
pub struct PathFilter {
    patterns: Vec<String>,
    set: GlobSet,
}

/// A path filter pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("`{pattern}` is not a valid path pattern: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

impl PathFilter {
    /// A filter excluding every path that matches one of `patterns`.
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let error = |reason: String| PatternError {
                pattern: pattern.clone(),
                reason,
            };
            let trimmed = pattern.trim().trim_start_matches('/');
            if trimmed.is_empty() {
                return Err(error("it is empty".to_string()));
            }
            // Like .gitignore: a bare name (`*.lock`) matches in every directory.
            let effective = if trimmed.contains('/') {
                trimmed.to_string()
            } else {
                format!("**/{trimmed}")
            };
            builder.add(Glob::new(&effective).map_err(|glob| error(glob.kind().to_string()))?);
        }
        let set = builder.build().map_err(|glob| PatternError {
            pattern: patterns.join(", "),
            reason: glob.to_string(),
        })?;
        Ok(PathFilter {
            patterns: patterns.to_vec(),
            set,
        })
    }

    /// Whether `path` (repository-relative) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        !self.patterns.is_empty() && self.set.is_match(path)
    }

    /// `diff` without the sections of excluded files, and the paths that were left out.
    pub fn filter_diff(&self, diff: &str) -> (String, Vec<String>) {
        if self.patterns.is_empty() {
            return (diff.to_string(), Vec::new());
        }
        let mut kept = String::with_capacity(diff.len());
        let mut excluded = Vec::new();
        for section in crate::split_by_file(diff) {
            if self.excludes(&section.path) {
                excluded.push(section.path);
            } else {
                kept.push_str(section.text);
            }
        }
        (kept, excluded)
    }
}

/// Whether `path` is test or mock code by the usual conventions of common ecosystems.
pub fn is_test_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let in_test_directory = lower.split('/').rev().skip(1).any(|part| {
        matches!(
            part,
            "test"
                | "tests"
                | "__tests__"
                | "spec"
                | "testdata"
                | "fixtures"
                | "e2e"
                | "mock"
                | "mocks"
        )
    });
    in_test_directory
        || name.starts_with("test_")
        || name.starts_with("mock_")
        || name.contains("_test.")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name.contains("_spec.")
        || name == "tests.rs"
        || name == "conftest.py"
        || name.ends_with("test.java")
        || name.ends_with("tests.cs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths() {
        for path in [
            "tests/a.rs",
            "src/foo_test.go",
            "web/a.spec.ts",
            "test_x.py",
            "pkg/__tests__/a.js",
            "src/FooTest.java",
        ] {
            assert!(is_test_path(path), "{path}");
        }
        for path in [
            "src/lib.rs",
            "src/testing_utils.rs",
            "contest.py",
            "latest/a.go",
        ] {
            assert!(!is_test_path(path), "{path}");
        }
    }
}

#[cfg(test)]
mod filter_tests {
    use super::PathFilter;

    #[test]
    fn bare_names_match_anywhere_and_paths_match_from_the_root() {
        let filter =
            PathFilter::new(&["*.lock".to_string(), "generated/**".to_string()]).expect("valid");
        assert!(filter.excludes("Cargo.lock"));
        assert!(filter.excludes("web/yarn.lock"));
        assert!(filter.excludes("generated/api/client.rs"));
        assert!(!filter.excludes("src/generated/client.rs"));
        assert!(!filter.excludes("src/main.rs"));
    }

    #[test]
    fn filtering_a_diff_names_what_was_left_out() {
        let diff = "diff --git a/src/a.rs b/src/a.rs\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/generated/x.rs b/generated/x.rs\n--- a/generated/x.rs\n+++ b/generated/x.rs\n@@ -1 +1 @@\n-x\n+y\n";
        let filter = PathFilter::new(&["generated/**".to_string()]).expect("valid");
        let (kept, excluded) = filter.filter_diff(diff);
        assert_eq!(excluded, vec!["generated/x.rs".to_string()]);
        assert!(kept.contains("src/a.rs") && !kept.contains("generated"));
    }

    #[test]
    fn a_broken_pattern_is_named() {
        let error = PathFilter::new(&["src/[".to_string()]).expect_err("invalid");
        assert!(error.to_string().contains("src/["), "{error}");
    }
}
