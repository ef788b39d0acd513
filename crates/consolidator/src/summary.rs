//! Deterministic prose built from the report's structure: the executive summary and one
//! narrative per agent. They read on their own, and are the fallback whenever an LLM
//! rewrite is off or fails.

use deep_review_protocol::{AgentStatus, Report, Severity};

use crate::engine::join_names;
use crate::format_duration;

/// The executive summary of `report`.
pub fn executive_summary(report: &Report, description: Option<&str>) -> String {
    let header = &report.header;
    let mut sentences = Vec::new();
    let reviewers: Vec<String> = header
        .reviewers
        .iter()
        .map(|reviewer| reviewer.display_name.clone())
        .collect();
    let subject = match &header.title {
        Some(title) => format!("“{}”", title.trim()),
        None => "The change".to_string(),
    };
    let commits = match header.commits.len() {
        0 => String::new(),
        1 => " (1 commit)".to_string(),
        count => format!(" ({count} commits)"),
    };
    sentences.push(format!(
        "{subject}{commits} was reviewed by {} agent{}: {}.",
        reviewers.len(),
        if reviewers.len() == 1 { "" } else { "s" },
        join_names(&reviewers)
    ));
    if let Some(purpose) = description.and_then(first_paragraph) {
        sentences.push(format!("Its description says: “{purpose}”"));
    }
    sentences.push(format!(
        "Verdict: {} — {}.",
        report.verdict.verdict.label(),
        report.verdict.reason
    ));

    let total = report.findings.len();
    if total == 0 {
        sentences.push("No agent reported a finding that survived consolidation.".to_string());
    } else {
        let shared = report
            .findings
            .iter()
            .filter(|finding| finding.agents.len() > 1)
            .count();
        if reviewers.len() > 1 {
            sentences.push(format!(
                "Of {total} consolidated finding{}, {shared} {} reported by more than one agent and {} by a single agent.",
                if total == 1 { "" } else { "s" },
                if shared == 1 { "was" } else { "were" },
                total - shared
            ));
        }
        let top: Vec<String> = report
            .findings
            .iter()
            .filter(|finding| finding.severity >= Severity::Important)
            .take(3)
            .map(|finding| {
                let agents = report.display_names(&finding.agents);
                format!("{} {} ({})", finding.id, finding.title, join_names(&agents))
            })
            .collect();
        if !top.is_empty() {
            sentences.push(format!("Top findings: {}.", top.join("; ")));
        }
    }
    if !report.dropped_findings.is_empty() {
        sentences.push(format!(
            "{} finding{} dropped as false positive{}.",
            report.dropped_findings.len(),
            if report.dropped_findings.len() == 1 {
                " was"
            } else {
                "s were"
            },
            if report.dropped_findings.len() == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
    sentences.extend(report.notices.iter().cloned());
    for failed in &report.failed_agents {
        sentences.push(format!(
            "{} {}: {}.",
            report.display_name(&failed.agent),
            failed.status.map_or("did not report", status_phrase),
            failed.reason.trim_end_matches('.')
        ));
    }
    sentences.join(" ")
}

/// One narrative per row of `report.retro`, in the same order.
pub fn narratives(report: &Report) -> Vec<String> {
    report
        .retro
        .iter()
        .map(|row| {
            let agent = &row.agent;
            match row.status {
                None => return "Delivered no result before the deadline.".to_string(),
                Some(AgentStatus::Completed) => {}
                Some(status) => {
                    let reason = report
                        .failed_agents
                        .iter()
                        .find(|failed| &failed.agent == agent)
                        .map(|failed| failed.reason.clone())
                        .unwrap_or_default();
                    return format!("{} after {}: {reason}", capitalised(status_phrase(status)), format_duration(row.duration_ms));
                }
            }
            let mut sentences = Vec::new();
            let total = row.findings.total();
            if total == 0 {
                sentences.push("Reported no findings.".to_string());
            } else {
                sentences.push(format!(
                    "Reported {total} finding{} ({}).",
                    if total == 1 { "" } else { "s" },
                    row.findings
                ));
            }
            let unique: Vec<String> = report
                .findings
                .iter()
                .filter(|finding| finding.agents.len() == 1 && &finding.agents[0] == agent)
                .map(|finding| format!("{} {}", finding.id, finding.title))
                .collect();
            if !unique.is_empty() {
                sentences.push(format!("Unique contributions: {}.", unique.join("; ")));
            }
            let shared = report
                .findings
                .iter()
                .filter(|finding| finding.agents.len() > 1 && finding.agents.contains(agent))
                .count();
            if shared > 0 {
                sentences.push(format!(
                    "Agreed with other agents on {shared} finding{}.",
                    if shared == 1 { "" } else { "s" }
                ));
            }
            if !row.coverage_misses.is_empty() {
                sentences.push(format!(
                    "Marked {} as reviewed with no issues although a consolidated critical or important finding lies there.",
                    row.coverage_misses.iter().map(|path| format!("`{path}`")).collect::<Vec<_>>().join(", ")
                ));
            }
            let changes: Vec<String> = [
                (row.downgraded, "downgraded"),
                (row.upgraded, "upgraded"),
                (row.dropped, "dropped"),
            ]
            .iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, verb)| format!("{count} {verb}"))
            .collect();
            if !changes.is_empty() {
                sentences.push(format!("Consolidation changed its ratings: {}.", changes.join(", ")));
            }
            if row.false_positives > 0 {
                sentences.push(format!("{} false positive{}.", row.false_positives, if row.false_positives == 1 { "" } else { "s" }));
            }
            sentences.join(" ")
        })
        .collect()
}

fn status_phrase(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Completed => "completed",
        AgentStatus::Failed => "failed",
        AgentStatus::TimedOut => "timed out",
        AgentStatus::Cancelled => "was cancelled",
    }
}

fn capitalised(text: &str) -> String {
    let mut characters = text.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => String::new(),
    }
}

/// Longest excerpt of a PR description quoted in the summary, in characters.
const DESCRIPTION_EXCERPT: usize = 240;

/// The first prose paragraph of a PR description (headings, HTML comments and template
/// checklists skipped), whitespace collapsed and cut at a word near the limit.
fn first_paragraph(description: &str) -> Option<String> {
    let mut paragraph = Vec::new();
    let mut in_comment = false;
    for line in description.lines() {
        let trimmed = line.trim();
        if in_comment {
            in_comment = !trimmed.contains("-->");
            continue;
        }
        if trimmed.starts_with("<!--") {
            in_comment = !trimmed.contains("-->");
            continue;
        }
        let skipped = trimmed.starts_with('#')
            || trimmed.starts_with("- [")
            || trimmed.starts_with("* [")
            || trimmed.starts_with("```");
        if trimmed.is_empty() || skipped {
            if !paragraph.is_empty() {
                break;
            }
            continue;
        }
        paragraph.push(trimmed);
    }
    let text = paragraph.join(" ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return None;
    }
    if text.chars().count() <= DESCRIPTION_EXCERPT {
        return Some(text);
    }
    let cut: String = text.chars().take(DESCRIPTION_EXCERPT).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    Some(format!("{}…", cut.trim_end_matches([',', ';', ':'])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_prose_paragraph_of_a_description_is_quoted() {
        let description = "<!-- template: describe\nthe change -->\n## Summary\n\nAdds retries to the\n   billing client.\n\nMore detail.\n- [x] tests";
        assert_eq!(
            first_paragraph(description).as_deref(),
            Some("Adds retries to the billing client.")
        );
        assert_eq!(first_paragraph("## Only a heading\n- [ ] box"), None);
        let long = "word ".repeat(100);
        let excerpt = first_paragraph(&long).unwrap();
        assert!(
            excerpt.ends_with("word…") && excerpt.chars().count() <= 241,
            "{excerpt}"
        );
    }
}
