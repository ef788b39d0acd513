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
    /// Why the run means `outcome`, in one sentence, for the reader and the
    /// reconciliation notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The command's exit code; absent when a limit stopped it or the agent gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How long the run took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Where deep-review itself ran the check (`local` sandbox, `kubernetes` job). Absent
    /// when the agent reports a check of its own, which weighs as the agent's word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

impl Verification {
    /// Who ran the check and how it ended, for the report: "run by deep-review in the
    /// local sandbox, exit 1, 2.4 s", or "the agent's own check".
    pub fn provenance(&self) -> String {
        let Some(sandbox) = &self.sandbox else {
            return "the agent's own check".to_string();
        };
        let mut text = format!("run by deep-review in the {sandbox} sandbox");
        if let Some(code) = self.exit_code {
            text.push_str(&format!(", exit {code}"));
        }
        if let Some(milliseconds) = self.duration_ms {
            text.push_str(&format!(", {:.1} s", milliseconds as f64 / 1000.0));
        }
        text
    }

    /// An agent's own account of a check it made.
    pub fn by_agent(
        command: impl Into<String>,
        output: impl Into<String>,
        outcome: VerificationOutcome,
    ) -> Self {
        Verification {
            command: command.into(),
            output: output.into(),
            outcome,
            reason: None,
            exit_code: None,
            duration_ms: None,
            sandbox: None,
        }
    }
}

/// A test an agent proposes for its finding, which deep-review's verification stage runs
/// with the repository's verification command in a sandboxed copy of the head commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reproduction {
    /// Where the test file goes, relative to the repository root (for example
    /// `tests/overflow_repro.rs` or `pkg/cache/repro_test.go`); it must not exist at the
    /// head commit.
    pub path: String,
    /// The whole test file. It must pass when the problem is absent and fail while it is
    /// present.
    pub content: String,
    /// Text the run prints when the test fails because of the problem (its assertion
    /// message): a failure without it, such as a compile error, proves nothing.
    pub fails_with: String,
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
    /// A test that fails while the problem is present, when the review's verification
    /// stage accepts reproductions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reproduction: Option<Reproduction>,
}
