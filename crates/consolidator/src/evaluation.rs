//! Scoring reviews against known bugs: which reported findings point at an expected bug,
//! and which expected bugs some finding points at. `deep-review eval` runs a line-up over
//! a set of cases and sums these into precision, recall and F1 per agent and for the
//! consolidated report.

use deep_review_protocol::{Location, Report};
use serde::{Deserialize, Serialize};

/// A bug a case is known to contain, where the fix changed the code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedBug {
    /// Repository-relative path of the file with the bug.
    pub path: String,
    /// First line of the buggy code (head side); absent when the bug is the whole file's.
    #[serde(default)]
    pub start_line: Option<u32>,
    /// Last line, inclusive; absent means `start_line`.
    #[serde(default)]
    pub end_line: Option<u32>,
    /// What is wrong, for people reading the results.
    pub description: String,
    /// The bug's kind when it is itself about tests or documentation (`testing`,
    /// `documentation`); otherwise findings of those kinds never match it (see
    /// [`about_the_process`]).
    #[serde(default)]
    pub category: Option<String>,
}

/// Counts behind precision and recall, summable over cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    /// Findings reported.
    pub findings: usize,
    /// Findings that point at an expected bug.
    pub matched_findings: usize,
    /// Expected bugs.
    pub bugs: usize,
    /// Expected bugs at least one finding points at.
    pub found_bugs: usize,
}

impl Score {
    /// Matched findings over findings; 0 with no findings.
    pub fn precision(&self) -> f64 {
        ratio(self.matched_findings, self.findings)
    }

    /// Found bugs over bugs; 0 with no bugs.
    pub fn recall(&self) -> f64 {
        ratio(self.found_bugs, self.bugs)
    }

    /// The harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (precision, recall) = (self.precision(), self.recall());
        if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        }
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Score) {
        self.findings += other.findings;
        self.matched_findings += other.matched_findings;
        self.bugs += other.bugs;
        self.found_bugs += other.found_bugs;
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Whether `location` points at `bug`: the same file and, where both name lines, ranges
/// that overlap once widened by `tolerance` lines.
pub fn points_at(location: &Location, bug: &ExpectedBug, tolerance: u32) -> bool {
    let normalise = |path: &str| path.trim_start_matches("./").to_string();
    if normalise(&location.path) != normalise(&bug.path) {
        return false;
    }
    let Some(bug_start) = bug.start_line else {
        // A file-level bug: anything reported in the file points at it.
        return true;
    };
    // A finding about the whole file ("no test changed") names no buggy line.
    let Some(start) = location.start_line else {
        return false;
    };
    let bug_end = bug.end_line.unwrap_or(bug_start).max(bug_start);
    let end = location.end_line.unwrap_or(start).max(start);
    start.saturating_sub(tolerance) <= bug_end && bug_start <= end.saturating_add(tolerance)
}

/// Whether a finding of `category` is about how the change was made (no test changed,
/// no documentation) rather than about a defect: such findings sit on the change's first
/// lines, so by place alone they would "find" whatever bug is there.
pub fn about_the_process(category: Option<&str>) -> bool {
    category.is_some_and(|category| {
        let category = category.to_ascii_lowercase();
        category.contains("test") || category.contains("doc")
    })
}

/// A finding as scoring sees it: where it points and what kind it is.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    /// Its locations.
    pub locations: &'a [Location],
    /// Its category, if it names one.
    pub category: Option<&'a str>,
}

impl<'a> Reported<'a> {
    /// A finding at `locations` of `category`.
    pub fn of(locations: &'a [Location], category: Option<&'a str>) -> Self {
        Reported {
            locations,
            category,
        }
    }
}

/// Scores `findings` against `bugs`; also says which bugs were found. A finding matches a
/// bug it points at, unless it is about the process and the bug is not.
pub fn score(
    findings: &[Reported<'_>],
    bugs: &[ExpectedBug],
    tolerance: u32,
) -> (Score, Vec<bool>) {
    let mut found = vec![false; bugs.len()];
    let mut matched_findings = 0;
    for finding in findings {
        let mut matched = false;
        for (index, bug) in bugs.iter().enumerate() {
            let kinds_agree =
                !about_the_process(finding.category) || about_the_process(bug.category.as_deref());
            if kinds_agree
                && finding
                    .locations
                    .iter()
                    .any(|location| points_at(location, bug, tolerance))
            {
                found[index] = true;
                matched = true;
            }
        }
        matched_findings += usize::from(matched);
    }
    let score = Score {
        findings: findings.len(),
        matched_findings,
        bugs: bugs.len(),
        found_bugs: found.iter().filter(|found| **found).count(),
    };
    (score, found)
}

/// The consolidated report's score, and each agent's from its own findings (as it
/// reported them, before consolidation), in the report's agent order.
pub fn score_report(
    report: &Report,
    bugs: &[ExpectedBug],
    tolerance: u32,
) -> (Score, Vec<(String, Score)>) {
    let consolidated: Vec<Reported<'_>> = report
        .findings
        .iter()
        .map(|finding| Reported::of(&finding.locations, finding.category.as_deref()))
        .collect();
    let (consolidated, _) = score(&consolidated, bugs, tolerance);
    let agents = report
        .appendix
        .iter()
        .map(|result| {
            let findings: Vec<Reported<'_>> = result
                .findings
                .iter()
                .map(|finding| Reported::of(&finding.locations, finding.category.as_deref()))
                .collect();
            (result.agent.clone(), score(&findings, bugs, tolerance).0)
        })
        .collect();
    (consolidated, agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bug(path: &str, start: u32, end: u32) -> ExpectedBug {
        ExpectedBug {
            path: path.to_string(),
            start_line: Some(start),
            end_line: Some(end),
            description: "bug".to_string(),
            category: None,
        }
    }

    fn reported(locations: &[Location]) -> Reported<'_> {
        Reported {
            locations,
            category: None,
        }
    }

    #[test]
    fn a_finding_points_at_a_bug_in_the_same_file_within_the_tolerance() {
        let expected = bug("src/a.rs", 10, 12);
        assert!(points_at(
            &Location::lines("src/a.rs", 12, 14),
            &expected,
            0
        ));
        assert!(points_at(
            &Location::lines("./src/a.rs", 15, 15),
            &expected,
            3
        ));
        assert!(!points_at(
            &Location::lines("src/a.rs", 16, 20),
            &expected,
            3
        ));
        assert!(!points_at(
            &Location::lines("src/b.rs", 10, 12),
            &expected,
            3
        ));
        let whole_file = Location {
            path: "src/a.rs".to_string(),
            start_line: None,
            end_line: None,
        };
        assert!(!points_at(&whole_file, &expected, 3), "names no buggy line");
        let file_level_bug = ExpectedBug {
            start_line: None,
            end_line: None,
            ..expected
        };
        assert!(points_at(
            &Location::lines("src/a.rs", 99, 99),
            &file_level_bug,
            0
        ));
    }

    #[test]
    fn precision_recall_and_f1_count_findings_and_bugs_separately() {
        let bugs = [bug("a.py", 5, 5), bug("b.py", 1, 2)];
        let on_a = [Location::lines("a.py", 5, 5)];
        let also_on_a = [Location::lines("a.py", 6, 6)];
        let elsewhere = [Location::lines("c.py", 1, 1)];
        let (score, found) = score(
            &[reported(&on_a), reported(&also_on_a), reported(&elsewhere)],
            &bugs,
            1,
        );
        assert_eq!(
            score,
            Score {
                findings: 3,
                matched_findings: 2,
                bugs: 2,
                found_bugs: 1
            }
        );
        assert_eq!(found, vec![true, false]);
        assert!((score.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((score.recall() - 0.5).abs() < 1e-12);
        assert!((score.f1() - 4.0 / 7.0).abs() < 1e-12);
        assert_eq!(Score::default().f1(), 0.0);
    }

    #[test]
    fn a_finding_about_missing_tests_does_not_find_the_bug_on_its_line() {
        let bugs = [bug("a.go", 13, 13)];
        let first_changed_line = [Location::lines("a.go", 13, 13)];
        let no_test = Reported {
            locations: &first_changed_line,
            category: Some("testing"),
        };
        assert_eq!(score(&[no_test], &bugs, 3).0.found_bugs, 0);
        let missing_test_bug = [ExpectedBug {
            category: Some("testing".to_string()),
            ..bug("a.go", 13, 13)
        }];
        assert_eq!(score(&[no_test], &missing_test_bug, 3).0.found_bugs, 1);
    }
}
