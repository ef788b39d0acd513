//! SARIF 2.1.0 (`report.sarif`): the consolidated findings as static-analysis results, for
//! GitHub code scanning and any other tool that ingests SARIF.
//!
//! One run, whose tool is deep-review. A rule is a finding category (`error-handling`,
//! `security`…), since agents report problems, not rule hits; each finding is one result
//! with its severity as the level (critical: `error`, important: `warning`, suggestion:
//! `note`), its locations, and a line-free fingerprint so a finding whose lines moved is
//! still the same alert. The agents that found it, the consensus, the tag and any
//! verification go in the result's properties. Agents that failed are tool execution
//! notifications, and a review that could not run says `executionSuccessful: false`.

use std::collections::BTreeMap;

use deep_review_protocol::{ConsolidatedFinding, Report, Severity, Verdict};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The rule of findings that name no category.
const GENERAL_RULE: &str = "general";

/// Renders `report` as a SARIF 2.1.0 log.
pub fn render(report: &Report) -> Result<String, serde_json::Error> {
    let mut rules: BTreeMap<String, Severity> = BTreeMap::new();
    for finding in &report.findings {
        let rule = rules.entry(rule_id(finding)).or_insert(finding.severity);
        // A rule's default level is that of its most severe finding.
        *rule = (*rule).max(finding.severity);
    }
    let rule_index: BTreeMap<&str, usize> = rules
        .keys()
        .enumerate()
        .map(|(index, id)| (id.as_str(), index))
        .collect();
    let rule_objects: Vec<Value> = rules
        .iter()
        .map(|(id, severity)| {
            json!({
                "id": id,
                "name": rule_name(id),
                "shortDescription": {"text": format!("Findings of the {id} kind, from deep-review's agents")},
                "defaultConfiguration": {"level": level(*severity)},
                "properties": {"tags": [id]},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|finding| {
            let id = rule_id(finding);
            result(finding, &id, rule_index.get(id.as_str()).copied())
        })
        .collect();
    let notifications: Vec<Value> = report
        .failed_agents
        .iter()
        .map(|failed| {
            json!({
                "level": "error",
                "message": {"text": format!("{} did not complete: {}", report.display_name(&failed.agent), failed.reason)},
                "descriptor": {"id": "agent-failed"},
            })
        })
        .collect();
    let mut run = json!({
        "tool": {"driver": {
            "name": "deep-review",
            "semanticVersion": env!("CARGO_PKG_VERSION"),
            "rules": rule_objects,
        }},
        "automationDetails": {"id": format!("deep-review/{}", report.review_id)},
        "invocations": [{
            "executionSuccessful": report.verdict.verdict != Verdict::Incomplete,
            "toolExecutionNotifications": notifications,
        }],
        "originalUriBaseIds": {"SRCROOT": {"description": {"text": "The root of the reviewed repository"}}},
        "results": results,
        "properties": {
            "verdict": report.verdict.verdict,
            "verdictReason": report.verdict.reason,
            "partial": report.partial,
        },
    });
    if let Some(sha) = &report.header.reviewed_sha {
        run["properties"]["reviewedSha"] = json!(sha);
    }
    serde_json::to_string_pretty(&json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [run],
    }))
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "error",
        Severity::Important => "warning",
        Severity::Suggestion => "note",
    }
}

/// The finding's category as a rule id: lower case, words joined by `-`.
fn rule_id(finding: &ConsolidatedFinding) -> String {
    let words: Vec<String> = finding
        .category
        .as_deref()
        .unwrap_or(GENERAL_RULE)
        .split(|character: char| !character.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if words.is_empty() {
        GENERAL_RULE.to_string()
    } else {
        words.join("-")
    }
}

/// `error-handling` → `ErrorHandling`, SARIF's style for rule names.
fn rule_name(id: &str) -> String {
    id.split('-')
        .map(|word| {
            let mut characters = word.chars();
            characters
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + characters.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn result(finding: &ConsolidatedFinding, rule: &str, rule_index: Option<usize>) -> Value {
    let locations: Vec<Value> = finding
        .locations
        .iter()
        .map(|location| {
            let mut physical = json!({
                "artifactLocation": {"uri": location.path, "uriBaseId": "SRCROOT"},
            });
            if let Some(start) = location.start_line.filter(|line| *line >= 1) {
                let end = location.end_line.unwrap_or(start).max(start);
                physical["region"] = json!({"startLine": start, "endLine": end});
            }
            json!({"physicalLocation": physical})
        })
        .collect();
    let text = if finding.body.trim().is_empty() {
        finding.title.clone()
    } else {
        format!("{}\n\n{}", finding.title, finding.body.trim())
    };
    let mut result = json!({
        "ruleId": rule,
        "level": level(finding.severity),
        "message": {"text": text},
        "locations": locations,
        "partialFingerprints": {"deepReviewFinding/v1": fingerprint(finding)},
        "properties": {
            "reportId": finding.id,
            "severity": finding.severity,
            "agents": finding.agents,
            "consensus": finding.consensus,
        },
    });
    if let Some(index) = rule_index {
        result["ruleIndex"] = json!(index);
    }
    if let Some(tag) = finding.tag {
        result["properties"]["tag"] = json!(tag);
    }
    if let Some(verification) = &finding.verification {
        result["properties"]["verification"] = json!(verification);
    }
    if let Some(fix) = &finding.fix {
        result["properties"]["fix"] = json!(fix);
    }
    result
}

/// The same problem in the same file keeps its fingerprint when its lines move: the first
/// location's path and the title, normalised.
fn fingerprint(finding: &ConsolidatedFinding) -> String {
    let path = finding
        .locations
        .first()
        .map(|location| location.path.as_str())
        .unwrap_or("");
    let title: Vec<String> = finding
        .title
        .split_whitespace()
        .map(str::to_lowercase)
        .collect();
    let digest = Sha256::digest(format!("{path}\n{}", title.join(" ")).as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consolidated(title: &str, severity: Severity) -> ConsolidatedFinding {
        ConsolidatedFinding {
            id: "I1".to_string(),
            severity,
            title: title.to_string(),
            body: String::new(),
            category: None,
            tag: None,
            locations: Vec::new(),
            code_excerpt: None,
            fix: None,
            agents: vec!["builtin".to_string()],
            consensus: 1,
            verification: None,
            originals: Vec::new(),
            severity_note: None,
            grouping: Vec::new(),
        }
    }

    #[test]
    fn categories_become_rule_ids_and_names() {
        let mut finding = ConsolidatedFinding {
            category: Some("Error handling".to_string()),
            ..consolidated("Swallowed error", Severity::Important)
        };
        assert_eq!(rule_id(&finding), "error-handling");
        assert_eq!(rule_name("error-handling"), "ErrorHandling");
        finding.category = Some("  ".to_string());
        assert_eq!(rule_id(&finding), GENERAL_RULE);
    }

    #[test]
    fn a_finding_keeps_its_fingerprint_when_its_lines_move() {
        let mut finding = consolidated("Swallowed  error", Severity::Critical);
        finding.locations = vec![deep_review_protocol::Location::lines("a.py", 3, 4)];
        let before = fingerprint(&finding);
        finding.locations = vec![deep_review_protocol::Location::lines("a.py", 30, 31)];
        finding.title = "swallowed error".to_string();
        assert_eq!(fingerprint(&finding), before);
        finding.locations = vec![deep_review_protocol::Location::lines("b.py", 3, 4)];
        assert_ne!(fingerprint(&finding), before);
    }
}
