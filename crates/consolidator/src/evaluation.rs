//! Scoring reviews against known bugs: which reported findings point at an expected bug,
//! and which expected bugs some finding points at. `deep-review eval` runs a line-up over
//! a set of cases and sums these into precision, recall and F1 per agent and for the
//! consolidated report.

use std::collections::BTreeSet;

use deep_review_protocol::{Location, Report};
use serde::{Deserialize, Serialize};

/// A bug a case is known to contain: where the fix changed the code, or, for a benchmark
/// that gives none (the Martian Code Review Bench's golden comments), only what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedBug {
    /// Repository-relative path of the file with the bug; absent when only the
    /// description says where it is, and findings are then matched by what they say.
    #[serde(default)]
    pub path: Option<String>,
    /// First line of the buggy code (head side); absent when the bug is the whole file's.
    #[serde(default)]
    pub start_line: Option<u32>,
    /// Last line, inclusive; absent means `start_line`.
    #[serde(default)]
    pub end_line: Option<u32>,
    /// Other line ranges (`[[first, last]]`, inclusive, same file) where the same bug
    /// shows: where a length is read unchecked and where it is used, say. A finding at
    /// any of them finds the bug.
    #[serde(default)]
    pub other_lines: Vec<[u32; 2]>,
    /// What is wrong: for people reading the results, and what a finding must say when
    /// the bug has no path.
    pub description: String,
    /// The bug's kind. When it is about tests or documentation (`testing`, `test_gap`,
    /// `documentation`, `doc_defect`), findings of those kinds may match it; otherwise
    /// they never do (see [`about_the_process`]).
    #[serde(default)]
    pub category: Option<String>,
    /// Left out of the score by the scoring profile (a style nit under the default
    /// profile): a finding that matches only such bugs is neither rewarded nor counted
    /// against its agent.
    #[serde(skip)]
    pub excluded: bool,
    /// The findings (by [`finding_key`]) a judge model said describe this bug, when one
    /// judged it: then this decides for a bug without a path instead of [`describes`].
    #[serde(skip)]
    pub judged: Option<BTreeSet<String>>,
}

/// What identifies a finding's text to a judge's verdict: its title and body.
pub fn finding_key(title: &str, body: &str) -> String {
    format!("{title}\n{body}")
}

/// Counts behind precision and recall, summable over cases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    /// Findings reported, less those that matched only excluded bugs.
    pub findings: usize,
    /// Findings that point at an expected (counted) bug.
    pub matched_findings: usize,
    /// Expected bugs the scoring profile counts.
    pub bugs: usize,
    /// Counted bugs at least one finding points at.
    pub found_bugs: usize,
    /// Findings that matched only excluded bugs, and so count neither way.
    #[serde(default)]
    pub matched_excluded: usize,
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
        self.matched_excluded += other.matched_excluded;
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
/// that overlap once widened by `tolerance` lines. A bug without a path is never pointed
/// at; see [`describes`].
pub fn points_at(location: &Location, bug: &ExpectedBug, tolerance: u32) -> bool {
    let normalise = |path: &str| path.trim_start_matches("./").to_string();
    let Some(path) = &bug.path else {
        return false;
    };
    if normalise(&location.path) != normalise(path) {
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
    let end = location.end_line.unwrap_or(start).max(start);
    let bug_end = bug.end_line.unwrap_or(bug_start).max(bug_start);
    std::iter::once([bug_start, bug_end])
        .chain(bug.other_lines.iter().copied())
        .any(|[first, last]| {
            start.saturating_sub(tolerance) <= last.max(first)
                && first <= end.saturating_add(tolerance)
        })
}

/// Share of a description's words a finding must use to describe the same bug.
const SHARED_WORDS_WITH_AN_IDENTIFIER: f64 = 0.25;
/// The same, for a description that names no identifier a finding could repeat.
const SHARED_WORDS_WITHOUT_IDENTIFIERS: f64 = 0.5;

/// The code identifiers a description names: `get_item_key`, `OptimizedCursorPaginator`,
/// `client.sample_rate`, `hash()`, anything in backticks, and file names; lower-cased.
pub fn identifiers(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for quoted in text.split('`').skip(1).step_by(2) {
        let quoted = quoted.trim().trim_end_matches("()");
        if !quoted.is_empty() && quoted.len() <= 80 {
            found.insert(quoted.to_lowercase());
        }
    }
    for word in text.split_whitespace() {
        let word = word.trim_matches(|character: char| {
            !(character.is_alphanumeric() || character == '_' || character == ')')
        });
        let word = word.trim_end_matches("()").trim_end_matches(')');
        let inner_capital = word
            .char_indices()
            .skip(1)
            .any(|(_, character)| character.is_uppercase())
            && word.chars().any(char::is_lowercase);
        let code_like = word.contains('_')
            || inner_capital
            || (word.contains('.') && !word.ends_with('.') && word.len() > 3);
        if code_like && word.chars().any(char::is_alphabetic) {
            found.insert(word.to_lowercase());
        }
    }
    found
}

/// Whether a finding saying `text` (its title and body) describes `bug`, for a bug with no
/// path to point at. A lexical stand-in for a benchmark's judge, deliberately strict: the
/// finding must repeat an identifier the description names (or, where a finding's file is
/// named in the description, be in that file) and share a quarter of the description's
/// words; a description that names no identifier needs half of them.
pub fn describes(text: &str, locations: &[Location], bug: &ExpectedBug) -> bool {
    let wanted = crate::similarity::tokens(&bug.description);
    if wanted.is_empty() {
        return false;
    }
    let said = crate::similarity::tokens(text);
    let shared = wanted.intersection(&said).count() as f64 / wanted.len() as f64;
    let names = identifiers(&bug.description);
    if names.is_empty() {
        return shared >= SHARED_WORDS_WITHOUT_IDENTIFIERS;
    }
    let lower = text.to_lowercase();
    let repeats_a_name = names.iter().any(|name| lower.contains(name.as_str()));
    let in_a_named_file = locations.iter().any(|location| {
        let file = location
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&location.path)
            .to_lowercase();
        names.contains(&file)
    });
    (repeats_a_name || in_a_named_file) && shared >= SHARED_WORDS_WITH_AN_IDENTIFIER
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

/// A finding as scoring sees it: where it points, what kind it is and what it says.
#[derive(Debug, Clone, Copy)]
pub struct Reported<'a> {
    /// Its locations.
    pub locations: &'a [Location],
    /// Its category, if it names one.
    pub category: Option<&'a str>,
    /// Its title.
    pub title: &'a str,
    /// Its body.
    pub body: &'a str,
}

impl<'a> Reported<'a> {
    /// A finding at `locations` of `category`, saying nothing.
    pub fn of(locations: &'a [Location], category: Option<&'a str>) -> Self {
        Reported {
            locations,
            category,
            title: "",
            body: "",
        }
    }

    /// The same finding, saying `title` and `body`.
    pub fn saying(self, title: &'a str, body: &'a str) -> Self {
        Reported {
            title,
            body,
            ..self
        }
    }

    /// Whether it matches `bug`: a finding about the process matches only a bug about
    /// the process; then it must point at the bug, or describe it when the bug has no path.
    pub fn matches(&self, bug: &ExpectedBug, tolerance: u32) -> bool {
        if about_the_process(self.category) && !about_the_process(bug.category.as_deref()) {
            return false;
        }
        match &bug.path {
            Some(_) => self
                .locations
                .iter()
                .any(|location| points_at(location, bug, tolerance)),
            None => match &bug.judged {
                Some(accepted) => accepted.contains(&finding_key(self.title, self.body)),
                None => describes(&finding_key(self.title, self.body), self.locations, bug),
            },
        }
    }
}

/// Scores `findings` against `bugs`; also says which bugs were found.
pub fn score(
    findings: &[Reported<'_>],
    bugs: &[ExpectedBug],
    tolerance: u32,
) -> (Score, Vec<bool>) {
    let mut found = vec![false; bugs.len()];
    let mut score = Score {
        bugs: bugs.iter().filter(|bug| !bug.excluded).count(),
        ..Score::default()
    };
    for finding in findings {
        let (mut counted, mut excluded) = (false, false);
        for (index, bug) in bugs.iter().enumerate() {
            if finding.matches(bug, tolerance) {
                found[index] = true;
                if bug.excluded {
                    excluded = true;
                } else {
                    counted = true;
                }
            }
        }
        if counted {
            score.findings += 1;
            score.matched_findings += 1;
        } else if excluded {
            score.matched_excluded += 1;
        } else {
            score.findings += 1;
        }
    }
    score.found_bugs = bugs
        .iter()
        .zip(&found)
        .filter(|(bug, found)| !bug.excluded && **found)
        .count();
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
        .map(|finding| {
            Reported::of(&finding.locations, finding.category.as_deref())
                .saying(&finding.title, &finding.body)
        })
        .collect();
    let (consolidated, _) = score(&consolidated, bugs, tolerance);
    let agents = report
        .appendix
        .iter()
        .map(|result| {
            let findings: Vec<Reported<'_>> = result
                .findings
                .iter()
                .map(|finding| {
                    Reported::of(&finding.locations, finding.category.as_deref())
                        .saying(&finding.title, &finding.body)
                })
                .collect();
            (result.agent.clone(), score(&findings, bugs, tolerance).0)
        })
        .collect();
    (consolidated, agents)
}

/// Which golden-comment categories of the Martian Code Review Bench a score counts, as
/// that benchmark's scoring profiles define them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoringProfile {
    /// bug, security, concurrency, data, api.
    Strict,
    /// Strict plus perf, test_gap and doc_defect: the benchmark's default.
    #[default]
    Core,
    /// Core plus style and speculative.
    All,
}

impl ScoringProfile {
    /// Whether a bug of `category` is left out of the score. Categories the benchmark
    /// does not name (and bugs without one) always count.
    pub fn excludes(self, category: Option<&str>) -> bool {
        let Some(category) = category.map(str::to_ascii_lowercase) else {
            return false;
        };
        let beyond_strict = ["perf", "test_gap", "doc_defect"];
        let beyond_core = ["style", "speculative"];
        match self {
            ScoringProfile::Strict => {
                beyond_strict.contains(&category.as_str())
                    || beyond_core.contains(&category.as_str())
            }
            ScoringProfile::Core => beyond_core.contains(&category.as_str()),
            ScoringProfile::All => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bug(path: &str, start: u32, end: u32) -> ExpectedBug {
        ExpectedBug {
            path: Some(path.to_string()),
            start_line: Some(start),
            end_line: Some(end),
            other_lines: Vec::new(),
            description: "bug".to_string(),
            category: None,
            excluded: false,
            judged: None,
        }
    }

    fn reported(locations: &[Location]) -> Reported<'_> {
        Reported::of(locations, None)
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
        let read_and_used = ExpectedBug {
            other_lines: vec![[40, 41]],
            ..bug("src/a.rs", 10, 12)
        };
        assert!(points_at(
            &Location::lines("src/a.rs", 41, 41),
            &read_and_used,
            0
        ));
        assert!(!points_at(
            &Location::lines("src/a.rs", 30, 30),
            &read_and_used,
            3
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
                found_bugs: 1,
                matched_excluded: 0,
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
        let no_test = Reported::of(&first_changed_line, Some("testing"));
        assert_eq!(score(&[no_test], &bugs, 3).0.found_bugs, 0);
        let missing_test_bug = [ExpectedBug {
            category: Some("testing".to_string()),
            ..bug("a.go", 13, 13)
        }];
        assert_eq!(score(&[no_test], &missing_test_bug, 3).0.found_bugs, 1);
    }

    /// Golden comments in the Martian Code Review Bench's style (written for these tests
    /// after the kind of issue it records), which name no line.
    fn golden(description: &str, category: Option<&str>) -> ExpectedBug {
        ExpectedBug {
            path: None,
            start_line: None,
            end_line: None,
            other_lines: Vec::new(),
            description: description.to_string(),
            category: category.map(str::to_string),
            excluded: false,
            judged: None,
        }
    }

    #[test]
    fn a_bug_without_a_path_is_found_by_what_a_finding_says() {
        let spawn = golden(
            "The flushers are started with get_context('spawn').Process, which makes them SpawnProcess objects; SpawnProcess does not derive from multiprocessing.Process on POSIX, so the isinstance test never holds and a hung flusher is never killed.",
            Some("bug"),
        );
        let anywhere = [Location::lines(
            "src/sentry/spans/consumers/process/flusher.py",
            120,
            121,
        )];
        let same = Reported::of(&anywhere, Some("correctness")).saying(
            "isinstance check against multiprocessing.Process is always false",
            "The flushers are started from the spawn context, so they are SpawnProcess objects and the isinstance check never matches: hung flusher processes are never killed.",
        );
        assert!(same.matches(&spawn, 0));
        // Same file, same words about processes, but another problem.
        let other = Reported::of(&anywhere, None).saying(
            "Flusher shutdown skips remaining processes",
            "Breaking out of the loop when the deadline elapsed leaves processes running.",
        );
        assert!(!other.matches(&spawn, 0));
        // A finding about tests never matches a bug that is not about tests.
        let about_tests = Reported::of(&anywhere, Some("testing")).saying(
            "No test for the isinstance check on SpawnProcess",
            "multiprocessing.Process subclass check untested; hung processes are never killed",
        );
        assert!(!about_tests.matches(&spawn, 0));

        let returned = golden(
            "Display values are added to the local config, yet the function hands back the untouched monitor.config, so the additions are lost.",
            Some("bug"),
        );
        let found = Reported::of(&anywhere, None).saying(
            "Returns monitor.config instead of the updated config",
            "The display values are added to `config`, but the function returns the original `monitor.config`, so callers never see them.",
        );
        assert!(found.matches(&returned, 0));
        let vague = Reported::of(&anywhere, None)
            .saying("Config handling looks fragile", "Consider a dataclass.");
        assert!(!vague.matches(&returned, 0));
    }

    #[test]
    fn identifiers_are_what_code_would_name() {
        let names = identifiers(
            "OptimizedCursorPaginator.get_item_key calls math.floor on a `datetime`; see organization_auditlogs.py. Done.",
        );
        for expected in [
            "optimizedcursorpaginator.get_item_key",
            "math.floor",
            "datetime",
            "organization_auditlogs.py",
        ] {
            assert!(names.contains(expected), "{expected}: {names:?}");
        }
        assert!(!names.contains("done"), "{names:?}");
        assert!(identifiers("A plain sentence, nothing more.").is_empty());
    }

    #[test]
    fn the_scoring_profile_neither_rewards_nor_punishes_excluded_bugs() {
        let nit = ExpectedBug {
            excluded: ScoringProfile::Core.excludes(Some("style")),
            ..golden(
                "Every test repeats max_wait = 50; a named constant would read better.",
                Some("style"),
            )
        };
        assert!(nit.excluded);
        assert!(!ScoringProfile::Core.excludes(Some("test_gap")));
        assert!(ScoringProfile::Strict.excludes(Some("test_gap")));
        assert!(!ScoringProfile::Strict.excludes(None));
        assert!(!ScoringProfile::All.excludes(Some("speculative")));
        let real = bug("a.py", 5, 5);
        let here: [Location; 1] = [Location::lines("tests/test_queue.py", 40, 40)];
        let on_a = [Location::lines("a.py", 5, 5)];
        let findings = [
            Reported::of(&here, None).saying(
                "Extract max_wait = 50 into a constant",
                "The magic number 50 for max_wait is repeated in every test.",
            ),
            reported(&on_a),
        ];
        let (score, _) = score(&findings, &[nit, real], 0);
        assert_eq!(
            score,
            Score {
                findings: 1,
                matched_findings: 1,
                bugs: 1,
                found_bugs: 1,
                matched_excluded: 1,
            }
        );
    }
}
