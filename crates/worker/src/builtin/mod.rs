//! The builtin reviewer: an offline static check of the diff's added lines.
//!
//! It needs no model, so the embedded mode produces a real report on any machine. Its rules
//! are deliberately narrow (high precision over recall) and calibrated:
//!
//! | rule | severity |
//! |---|---|
//! | secret (private key, cloud key, token) | critical (important in test files) |
//! | merge-conflict marker | critical |
//! | hard-coded credential assignment | important |
//! | swallowed error (empty catch, `except: pass`, error logged but not returned) | important |
//! | debugger statement (`debugger;`, `breakpoint()`, `pdb.set_trace()`) | important |
//! | `let _ =` on a call (a discarded `Result`) | suggestion |
//! | debug print (`dbg!`, `console.log`, `var_dump`) | suggestion |
//! | `unwrap()`/`expect()` in non-test Rust | suggestion |
//! | TODO/FIXME added | suggestion |
//! | source changed with no test change | suggestion |

mod rules;

pub use rules::mask_secrets;

use std::collections::BTreeMap;

use async_trait::async_trait;
use deep_review_git::{ChangeKind, FileDiff};
use deep_review_protocol::{
    AgentResult, AgentTask, FileReview, FileReviewStatus, Finding, Location, Severity, Tag,
};
use serde::{Deserialize, Serialize};

use crate::{AgentRunner, PreparedChange, RunnerError};
pub(crate) use rules::{FileUnderReview, Language, RuleHit};

/// Which rule families the builtin reviewer applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuiltinSettings {
    /// Report source changes that come with no test change.
    pub require_tests: bool,
    /// Report added TODO/FIXME comments.
    pub report_todos: bool,
    /// Report `unwrap()`/`expect()` in non-test Rust.
    pub report_unwrap: bool,
}

impl Default for BuiltinSettings {
    fn default() -> Self {
        BuiltinSettings {
            require_tests: true,
            report_todos: true,
            report_unwrap: true,
        }
    }
}

/// The offline static reviewer.
#[derive(Debug, Default)]
pub struct BuiltinRunner {
    settings: BuiltinSettings,
}

impl BuiltinRunner {
    /// A builtin reviewer with `settings`.
    pub fn new(settings: BuiltinSettings) -> Self {
        BuiltinRunner { settings }
    }

    /// Reviews parsed diff files; `head_files` holds full head-side contents where known
    /// (used to tell test modules apart in Rust files).
    pub fn review(
        &self,
        agent: &str,
        files: &[FileDiff],
        head_files: &BTreeMap<String, String>,
    ) -> AgentResult {
        let mut result = AgentResult::new(agent);
        let mut hits_by_file: Vec<(String, Vec<RuleHit>)> = Vec::new();
        let mut changed_source_files = Vec::new();
        let mut changed_test_files = 0usize;

        for file in files {
            let path = file.path().to_string();
            if let Some(reason) = skip_reason(file) {
                result.files_reviewed.push(FileReview {
                    path,
                    status: FileReviewStatus::Skipped,
                    reason: Some(reason),
                });
                continue;
            }
            let under_review =
                FileUnderReview::new(file, head_files.get(&path).map(String::as_str));
            // Rust keeps unit tests beside the code, so a file can change both.
            let (test_lines, product_lines): (Vec<u32>, Vec<u32>) = file
                .added_lines()
                .map(|(line, _)| line)
                .partition(|line| under_review.in_test_code(*line));
            if !test_lines.is_empty() {
                changed_test_files += 1;
            }
            if under_review.language.is_source() {
                if let Some(first) = product_lines.first() {
                    changed_source_files.push((path.clone(), *first));
                }
            }
            let hits = rules::check(&under_review, &self.settings);
            result.files_reviewed.push(FileReview {
                path: path.clone(),
                status: if hits.is_empty() {
                    FileReviewStatus::ReviewedNoIssues
                } else {
                    FileReviewStatus::HasFindings
                },
                reason: None,
            });
            hits_by_file.push((path, hits));
        }

        for (path, hits) in hits_by_file {
            result.findings.extend(group_hits(&path, hits));
        }

        if self.settings.require_tests
            && changed_test_files == 0
            && !changed_source_files.is_empty()
        {
            let listed: Vec<String> = changed_source_files
                .iter()
                .map(|(path, _)| format!("`{path}`"))
                .collect();
            result.findings.push(Finding {
                id: None,
                severity: Severity::Suggestion,
                title: "Source changed with no test change".to_string(),
                body: format!(
                    "The change modifies {} source file(s) ({}) but adds or changes no test. \
                     Add a test that exercises the new behaviour, or say in the PR why none is needed.",
                    changed_source_files.len(),
                    listed.join(", ")
                ),
                category: Some("testing".to_string()),
                tag: Some(Tag::Regression),
                locations: changed_source_files
                    .iter()
                    .map(|(path, line)| Location::lines(path.clone(), *line, *line))
                    .collect(),
                code_excerpt: None,
                fix: None,
                confidence: Some(0.6),
                verification: None,
                reproduction: None,
            });
            result.testing_gaps.push(format!(
                "No test accompanies the changes to {}.",
                listed.join(", ")
            ));
        }

        number_findings(&mut result.findings);
        result.raw_output = Some(format!(
            "builtin reviewer: {} file(s) in the diff, {} finding(s)",
            files.len(),
            result.findings.len()
        ));
        result
    }
}

#[async_trait]
impl AgentRunner for BuiltinRunner {
    async fn run(
        &self,
        task: &AgentTask,
        change: &PreparedChange,
    ) -> Result<AgentResult, RunnerError> {
        let mut head_files = BTreeMap::new();
        for file in &change.files {
            let path = file.path();
            if Language::from_path(path) == Language::Rust && file.change != ChangeKind::Deleted {
                if let Some(content) = change.head_file(path).await {
                    head_files.insert(path.to_string(), content);
                }
            }
        }
        Ok(self.review(&task.agent.name, &change.files, &head_files))
    }
}

fn skip_reason(file: &FileDiff) -> Option<String> {
    let path = file.path();
    if file.binary {
        return Some("binary file".to_string());
    }
    if file.change == ChangeKind::Deleted {
        return Some("deleted: nothing added to review".to_string());
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    const LOCK_FILES: [&str; 8] = [
        "Cargo.lock",
        "package-lock.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "go.sum",
        "poetry.lock",
        "Gemfile.lock",
        "composer.lock",
    ];
    if LOCK_FILES.contains(&name) {
        return Some("generated lock file".to_string());
    }
    if path.starts_with("vendor/") || path.contains("/vendor/") || path.contains("node_modules/") {
        return Some("vendored code".to_string());
    }
    None
}

/// One finding per rule per file, listing every line it fired on.
fn group_hits(path: &str, hits: Vec<RuleHit>) -> Vec<Finding> {
    let mut grouped: BTreeMap<(std::cmp::Reverse<Severity>, &'static str), Vec<RuleHit>> =
        BTreeMap::new();
    for hit in hits {
        grouped
            .entry((std::cmp::Reverse(hit.severity), hit.rule.id))
            .or_default()
            .push(hit);
    }
    grouped
        .into_values()
        .filter_map(|mut hits| {
            hits.sort_by_key(|hit| hit.line);
            let first = hits.first()?.clone();
            let rule = first.rule;
            let places = hits.len();
            let title = if places == 1 {
                rule.title.to_string()
            } else {
                format!("{} ({places} places)", rule.title)
            };
            let lines: Vec<String> = hits.iter().map(|hit| hit.line.to_string()).collect();
            let excerpt = hits
                .iter()
                .flat_map(|hit| {
                    // A block hit spans consecutive head-side lines starting at `hit.line`.
                    (hit.line..)
                        .zip(hit.excerpt.lines())
                        .map(|(number, text)| format!("{number:>5} | {text}"))
                })
                .collect::<Vec<_>>()
                .join("\n");
            Some(Finding {
                id: None,
                severity: first.severity,
                title,
                body: format!(
                    "{} Seen in `{path}` at line{} {}.",
                    rule.explanation,
                    if places == 1 { "" } else { "s" },
                    lines.join(", ")
                ),
                category: Some(rule.category.to_string()),
                tag: Some(Tag::Regression),
                locations: hits
                    .iter()
                    .map(|hit| Location::lines(path, hit.line, hit.end_line))
                    .collect(),
                code_excerpt: Some(excerpt),
                fix: Some(rule.fix.to_string()),
                confidence: Some(rule.confidence),
                verification: None,
                reproduction: None,
            })
        })
        .collect()
}

/// Gives findings the agent-local ids `C1`, `I1`, `S1`… in severity order.
fn number_findings(findings: &mut [Finding]) {
    findings.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
    let mut next: BTreeMap<Severity, usize> = BTreeMap::new();
    for finding in findings.iter_mut() {
        let number = next.entry(finding.severity).or_insert(0);
        *number += 1;
        finding.id = Some(format!("{}{}", finding.severity.letter(), number));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_git::parse_unified_diff;

    fn review(diff: &str) -> AgentResult {
        BuiltinRunner::default().review("builtin", &parse_unified_diff(diff), &BTreeMap::new())
    }

    #[test]
    fn source_without_tests_is_reported_and_with_tests_is_not() {
        let untested =
            review("--- a/src/app.py\n+++ b/src/app.py\n@@ -1,1 +1,2 @@\n x = 1\n+y = 2\n");
        let finding = untested
            .findings
            .iter()
            .find(|finding| finding.title.contains("no test change"))
            .expect("untested change reported");
        assert_eq!(finding.locations[0].to_string(), "src/app.py:2");
        assert_eq!(untested.testing_gaps.len(), 1);

        let rust_with_unit_test = BuiltinRunner::default().review(
            "builtin",
            &parse_unified_diff(
                "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,2 +1,4 @@\n fn a() {}\n+fn b() {}\n #[cfg(test)]\n+fn t() { b() }\n",
            ),
            &BTreeMap::new(),
        );
        assert!(
            rust_with_unit_test.findings.is_empty(),
            "{:#?}",
            rust_with_unit_test.findings
        );

        let tested = review(
            "--- a/src/app.py\n+++ b/src/app.py\n@@ -1,1 +1,2 @@\n x = 1\n+y = 2\n\
             --- a/tests/test_app.py\n+++ b/tests/test_app.py\n@@ -1,1 +1,2 @@\n x = 1\n+assert y\n",
        );
        assert!(tested.findings.is_empty(), "{:#?}", tested.findings);
    }

    #[test]
    fn files_are_summarised_with_dispositions() {
        let result = review(
            "diff --git a/logo.png b/logo.png\nBinary files a/logo.png and b/logo.png differ\n\
             diff --git a/a.md b/a.md\n--- a/a.md\n+++ b/a.md\n@@ -1 +1,2 @@\n x\n+y\n\
             diff --git a/b.js b/b.js\n--- a/b.js\n+++ b/b.js\n@@ -1 +1,2 @@\n x\n+debugger;\n",
        );
        let status: Vec<_> = result
            .files_reviewed
            .iter()
            .map(|file| (file.path.as_str(), file.status))
            .collect();
        assert_eq!(
            status,
            vec![
                ("logo.png", FileReviewStatus::Skipped),
                ("a.md", FileReviewStatus::ReviewedNoIssues),
                ("b.js", FileReviewStatus::HasFindings),
            ]
        );
    }

    #[test]
    fn hits_of_one_rule_in_one_file_are_grouped_and_numbered() {
        let result = review(
            "--- a/a.js\n+++ b/a.js\n@@ -1 +1,4 @@\n x\n+console.log(1);\n+ok();\n+console.log(2);\n\
             --- a/a.test.js\n+++ b/a.test.js\n@@ -1 +1,2 @@\n x\n+it('x')\n",
        );
        assert_eq!(result.findings.len(), 1, "{:#?}", result.findings);
        let finding = &result.findings[0];
        assert_eq!(finding.id.as_deref(), Some("S1"));
        assert!(finding.title.contains("2 places"));
        let lines: Vec<String> = finding.locations.iter().map(ToString::to_string).collect();
        assert_eq!(lines, vec!["a.js:2", "a.js:4"]);
    }
}
