//! Conventions about paths in a repository.

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
