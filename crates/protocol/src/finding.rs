use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How much a finding matters. Ordered from least to most severe so `max`/`min` work.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth doing, not worth blocking on.
    Suggestion,
    /// A real defect that should be fixed before merge.
    Important,
    /// Breaks correctness, security or data; must be fixed.
    Critical,
}

impl Severity {
    /// All severities, most severe first: the order the report lists them in.
    pub const MOST_SEVERE_FIRST: [Severity; 3] = [
        Severity::Critical,
        Severity::Important,
        Severity::Suggestion,
    ];

    /// The one-letter prefix used for consolidated ids (`C1`, `I2`, `S3`).
    pub fn letter(self) -> char {
        match self {
            Severity::Critical => 'C',
            Severity::Important => 'I',
            Severity::Suggestion => 'S',
        }
    }

    /// Human label, capitalised as in the report headings.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::Important => "Important",
            Severity::Suggestion => "Suggestion",
        }
    }

    /// One level lower, saturating at suggestion.
    pub fn lowered(self) -> Severity {
        match self {
            Severity::Critical => Severity::Important,
            _ => Severity::Suggestion,
        }
    }
}

/// Whether the change introduced the problem or carried an older pattern forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tag {
    /// Introduced by this change.
    Regression,
    /// A pre-existing pattern the change copies or carries forward.
    Gap,
}

/// A range of lines in one file of the reviewed tree (head side).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Location {
    /// Repository-relative path, `/`-separated.
    pub path: String,
    /// First line, 1-based. Absent when the finding is about the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_line: Option<u32>,
    /// Last line, inclusive. Absent means the same as `start_line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_line: Option<u32>,
}

impl Location {
    /// A location spanning `start..=end` in `path`.
    pub fn lines(path: impl Into<String>, start: u32, end: u32) -> Self {
        Location {
            path: path.into(),
            start_line: Some(start),
            end_line: Some(end.max(start)),
        }
    }

    /// The inclusive line span, when the location names lines.
    pub fn span(&self) -> Option<(u32, u32)> {
        let start = self.start_line?;
        Some((start, self.end_line.unwrap_or(start).max(start)))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.span() {
            Some((start, end)) if start == end => write!(formatter, "{}:{start}", self.path),
            Some((start, end)) => write!(formatter, "{}:{start}-{end}", self.path),
            None => formatter.write_str(&self.path),
        }
    }
}

/// What verification against a sandbox or cluster concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerificationOutcome {
    /// The run reproduced the problem.
    Confirmed,
    /// The run showed the problem does not occur.
    Refuted,
    /// The run neither reproduced nor excluded it.
    Inconclusive,
}

/// Evidence from running something to check a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verification {
    /// The command (or script) that was run.
    pub command: String,
    /// What it printed, as evidence for the reader.
    #[serde(default)]
    pub output: String,
    /// The conclusion drawn from the run.
    pub outcome: VerificationOutcome,
}

/// One problem reported by one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// The agent's own id for the finding (e.g. `I3`), kept so the retro can cite it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The agent's severity; consolidation may change it, with a reason.
    pub severity: Severity,
    /// One line naming the problem.
    pub title: String,
    /// Explanation in Markdown.
    #[serde(default)]
    pub body: String,
    /// A free-form area such as `error-handling`, `security`, `testing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Regression or pre-existing gap, when the agent determined it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    /// Where the problem lies; the first one is the primary location.
    #[serde(default)]
    pub locations: Vec<Location>,
    /// The relevant code, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_excerpt: Option<String>,
    /// The proposed fix, in Markdown (often a diff block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The agent's confidence from 0 to 1, when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Evidence from a verification run, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}
