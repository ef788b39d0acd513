//! The versioned wire and report types of deep-review, shared by every component.
//!
//! This crate is pure data: serde types, their JSON Schema and strict parsing helpers that
//! name the failing field. It performs no I/O so every other crate (and any other tool that
//! writes agent results) can depend on it cheaply.

mod finding;
mod job;
mod ledger;
mod parse;
mod report;
mod result;

pub use finding::{
    Finding, Location, Reproduction, Severity, Tag, Verification, VerificationOutcome,
};
pub use job::{
    AgentInput, AgentSpec, AgentTask, CommitSummary, PullRequestMetadata, RepositoryPolicy,
    ReviewJob, ReviewManifest, ReviewRequest, RunnerKind, SeverityRules, Source,
    VerificationPolicy,
};
pub use ledger::{AgentStats, LedgerEntry};
pub use parse::{parse_agent_result, parse_json, ParseError};
pub use report::{
    AgentRetro, AttributedNote, ConsolidatedFinding, ConsolidatedObservation, DroppedFinding,
    FailedAgent, GroupingEvidence, GroupingRule, OriginalFinding, Reconciliation, Report,
    ReportHeader, ReviewerLine, SeverityCounts, Verdict, VerdictDecision,
};
pub use result::{
    AgentResult, AgentStatus, DesignObservation, FileReview, FileReviewStatus, ObservationKind,
    OmittedFile, ProcessNotes, Scope, Usage,
};

/// The version of every message and report type in this crate. Bumped on any change a
/// reader of older data could misread; readers refuse versions newer than their own.
pub const SCHEMA_VERSION: u32 = 1;

/// `url` with its password (or, with no password, its whole user part, which is then often
/// a token: `https://TOKEN@host/…`) replaced by `***`, for logs, errors and reports.
pub fn redact_url(url: &str) -> String {
    match url.find("://") {
        Some(scheme_end) => {
            let authority_start = scheme_end + 3;
            let authority_end = url[authority_start..]
                .find(['/', '?', '#'])
                .map_or(url.len(), |end| authority_start + end);
            match url[authority_start..authority_end].rfind('@') {
                Some(at) => {
                    let credentials = &url[authority_start..authority_start + at];
                    let shown = match credentials.split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        None => "***".to_string(),
                    };
                    format!(
                        "{}{shown}{}",
                        &url[..authority_start],
                        &url[authority_start + at..]
                    )
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// `text` with the credentials of every URL in it redacted (see [`redact_url`]): for error
/// messages and command lines that quote a URL.
pub fn redact_urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(position) = rest.find("://") {
        // The URL starts at its scheme: letters, digits, `+`, `-` and `.` before `://`.
        let scheme_start = rest[..position]
            .rfind(|character: char| {
                !(character.is_ascii_alphanumeric() || "+-.".contains(character))
            })
            .map_or(0, |index| index + 1);
        let end = rest[position..]
            .find(|character: char| character.is_whitespace() || "'\"<>`".contains(character))
            .map_or(rest.len(), |end| position + end);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&redact_url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn default_schema_version() -> u32 {
    SCHEMA_VERSION
}

/// The JSON Schema of an [`AgentResult`], as written by agents and other tools.
pub fn agent_result_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(AgentResult)).unwrap_or_default()
}

/// Fields of an [`AgentResult`] that the worker fills in, not the agent.
const WORKER_OWNED_FIELDS: [&str; 12] = [
    "schema_version",
    "agent",
    "model",
    "effort",
    "status",
    "error",
    "started_at",
    "finished_at",
    "duration_ms",
    "usage",
    "raw_output",
    "omitted_files",
];

/// Fields of a finding's [`Verification`] that only deep-review's own verification runs
/// fill in: an agent reports a check it made by command, output and outcome.
const WORKER_OWNED_VERIFICATION_FIELDS: [&str; 4] =
    ["reason", "exit_code", "duration_ms", "sandbox"];

/// The JSON Schema of what a model answers: an [`AgentResult`] without the fields the
/// worker fills in, with every definition inlined (some providers' tool schemas cannot
/// follow `$ref`).
pub fn agent_answer_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator();
    let mut schema =
        serde_json::to_value(generator.into_root_schema_for::<AgentResult>()).unwrap_or_default();
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        object.remove("title");
        if let Some(properties) = object
            .get_mut("properties")
            .and_then(|properties| properties.as_object_mut())
        {
            for field in WORKER_OWNED_FIELDS {
                properties.remove(field);
            }
            let verification = properties
                .get_mut("findings")
                .and_then(|findings| findings.pointer_mut("/items/properties/verification"));
            // `Option<Verification>` inlines as `anyOf: [{…}, {type: null}]` or a plain
            // object, depending on schemars' settings: strip both shapes.
            if let Some(verification) = verification {
                let shapes: Vec<&mut serde_json::Value> = if verification
                    .get("anyOf")
                    .is_some_and(serde_json::Value::is_array)
                {
                    verification
                        .get_mut("anyOf")
                        .and_then(|any| any.as_array_mut())
                        .map(|any| any.iter_mut().collect())
                        .unwrap_or_default()
                } else {
                    vec![verification]
                };
                for shape in shapes {
                    if let Some(fields) = shape
                        .get_mut("properties")
                        .and_then(|fields| fields.as_object_mut())
                    {
                        for field in WORKER_OWNED_VERIFICATION_FIELDS {
                            fields.remove(field);
                        }
                    }
                }
            }
        }
        if let Some(required) = object
            .get_mut("required")
            .and_then(|required| required.as_array_mut())
        {
            required
                .retain(|field| !WORKER_OWNED_FIELDS.contains(&field.as_str().unwrap_or_default()));
        }
    }
    schema
}

/// The JSON Schema of a [`Report`].
pub fn report_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Report)).unwrap_or_default()
}

/// The JSON Schema of an [`AgentTask`], as handed to `command` agents on stdin.
pub fn agent_task_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(AgentTask)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_schema_leaves_worker_fields_out_and_inlines_definitions() {
        let schema = agent_answer_schema();
        let properties = schema["properties"].as_object().unwrap();
        assert!(properties.contains_key("findings"));
        assert!(properties.contains_key("files_reviewed"));
        for field in WORKER_OWNED_FIELDS {
            assert!(!properties.contains_key(field), "{field} is worker-owned");
        }
        let text = schema.to_string();
        assert!(
            !text.contains("$ref"),
            "definitions must be inlined: {text}"
        );
        assert!(
            !text.contains("\"agent\""),
            "agent is not required of a model"
        );
        // A finding's own fields are described inline.
        assert!(text.contains("severity"));
    }

    #[test]
    fn a_review_request_names_agents_and_cannot_define_one() {
        let named: ReviewRequest = serde_json::from_str(
            r#"{"source": {"kind": "inline-diff", "diff": "x"}, "agents": ["claude", "builtin"]}"#,
        )
        .unwrap();
        assert_eq!(named.agents, ["claude", "builtin"]);
        let defined = serde_json::from_str::<ReviewRequest>(
            r#"{"source": {"kind": "inline-diff", "diff": "x"}, "agents": [{"name": "x", "runner": "command", "command": ["/bin/sh"]}]}"#,
        )
        .unwrap_err();
        assert!(
            defined.to_string().contains("expected a string"),
            "{defined}"
        );
    }

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("https://ghp_token123@github.com/acme/shop.git"),
            "https://***@github.com/acme/shop.git"
        );
        assert_eq!(
            redact_url("https://github.com/acme/shop.git?x=a@b"),
            "https://github.com/acme/shop.git?x=a@b",
            "an @ after the host is not userinfo"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert_eq!(
            redact_urls_in(
                "git clone --bare -- https://x-access-token:ghs_abc@github.com/a/b.git /tmp/m failed: 'https://ghs_abc@github.com/a/b.git' not found"
            ),
            "git clone --bare -- https://x-access-token:***@github.com/a/b.git /tmp/m failed: 'https://***@github.com/a/b.git' not found"
        );
    }
}
