//! The versioned wire and report types of deep-review, shared by every component.
//!
//! This crate is pure data: serde types, their JSON Schema and strict parsing helpers that
//! name the failing field. It performs no I/O so every other crate (and any other tool that
//! writes agent results) can depend on it cheaply.

mod finding;
mod job;
mod parse;
mod report;
mod result;

pub use finding::{Finding, Location, Severity, Tag, Verification, VerificationOutcome};
pub use job::{
    AgentInput, AgentSpec, AgentTask, CommitSummary, PullRequestMetadata, ReviewJob,
    ReviewManifest, ReviewRequest, RunnerKind, Source,
};
pub use parse::{parse_agent_result, parse_json, ParseError};
pub use report::{
    AgentRetro, AttributedNote, ConsolidatedFinding, ConsolidatedObservation, DroppedFinding,
    FailedAgent, OriginalFinding, Reconciliation, Report, ReportHeader, ReviewerLine,
    SeverityCounts, Verdict, VerdictDecision,
};
pub use result::{
    AgentResult, AgentStatus, DesignObservation, FileReview, FileReviewStatus, ObservationKind,
    ProcessNotes, Scope, Usage,
};

/// The version of every message and report type in this crate. Bumped on any change a
/// reader of older data could misread; readers refuse versions newer than their own.
pub const SCHEMA_VERSION: u32 = 1;

pub(crate) fn default_schema_version() -> u32 {
    SCHEMA_VERSION
}

/// The JSON Schema of an [`AgentResult`], as written by agents and other tools.
pub fn agent_result_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(AgentResult)).unwrap_or_default()
}

/// The JSON Schema of a [`Report`].
pub fn report_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report)).unwrap_or_default()
}

/// The JSON Schema of an [`AgentTask`], as handed to `command` agents on stdin.
pub fn agent_task_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(AgentTask)).unwrap_or_default()
}
