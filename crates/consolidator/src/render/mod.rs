//! Renderers: every output format is built from the one [`Report`] structure.

pub mod html;
pub mod markdown;
pub mod sarif;

use std::collections::BTreeMap;

use deep_review_protocol::{
    AgentRetro, ConsolidatedFinding, ConsolidatedObservation, GroupingRule, ObservationKind, Report,
};

/// Appends formatted text and a newline to a `String` (writing to a `String` cannot fail,
/// so this avoids discarding `fmt::Result`s).
macro_rules! put_line {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($argument:tt)*) => {{
        $out.push_str(&format!($($argument)*));
        $out.push('\n');
    }};
}

/// Appends formatted text to a `String`.
macro_rules! put {
    ($out:expr, $($argument:tt)*) => {
        $out.push_str(&format!($($argument)*))
    };
}

pub(crate) use {put, put_line};

/// One plain-text line per agent that joined `finding` after the first, saying why:
/// `Codex (F1) joined Claude's report: score 0.68 (merge at 0.45), same place: …`.
pub(crate) fn grouping_lines(report: &Report, finding: &ConsolidatedFinding) -> Vec<String> {
    finding
        .grouping
        .iter()
        .map(|evidence| {
            let original = evidence
                .original_id
                .as_ref()
                .map(|id| format!(" ({id})"))
                .unwrap_or_default();
            let rule = match evidence.rule {
                GroupingRule::SamePlace => "same place",
                GroupingRule::SameContent => "same content",
            };
            format!(
                "{}{original} joined {}'s report: score {:.2} (merge at {:.2}; mean over the group {:.2}), {rule}: {}",
                report.display_name(&evidence.agent),
                report.display_name(&evidence.matched_agent),
                evidence.score,
                evidence.threshold,
                evidence.group_mean,
                evidence.signals.join("; ")
            )
        })
        .collect()
}

/// Renders `report` as pretty JSON.
pub fn json(report: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(report)
}

/// What the report is about, for its title: `PR #309`, `owner/repo @ 1a2b3c4`, or the id.
pub(crate) fn report_title(report: &Report) -> String {
    let header = &report.header;
    let short_sha = header
        .reviewed_sha
        .as_deref()
        .map(|sha| sha.get(..7).unwrap_or(sha));
    match (
        header.pull_request_number,
        header.repository.as_deref(),
        short_sha,
    ) {
        (Some(number), Some(repository), _) => format!("{repository} PR #{number}"),
        (Some(number), None, _) => format!("PR #{number}"),
        (None, Some(repository), Some(sha)) => format!("{repository} @ {sha}"),
        _ => header
            .title
            .clone()
            .unwrap_or_else(|| report.review_id.clone()),
    }
}

/// Design observations grouped under "Concerns" and "Strengths", empty groups left out.
pub(crate) fn observations_by_kind(
    report: &Report,
) -> Vec<(&'static str, Vec<&ConsolidatedObservation>)> {
    [
        (ObservationKind::Concern, "Concerns"),
        (ObservationKind::Strength, "Strengths"),
    ]
    .into_iter()
    .map(|(kind, title)| {
        let observations = report
            .design_observations
            .iter()
            .filter(|observation| observation.kind == kind)
            .collect::<Vec<_>>();
        (title, observations)
    })
    .filter(|(_, observations)| !observations.is_empty())
    .collect()
}

/// A fenced code block that cannot be closed early by backticks inside `content`.
pub(crate) fn fence(content: &str, language: &str) -> String {
    let longest_run = content
        .split(|character| character != '`')
        .map(str::len)
        .max()
        .unwrap_or(0);
    let ticks = "`".repeat(longest_run.max(2) + 1);
    format!(
        "{ticks}{language}\n{}\n{ticks}",
        content.trim_end_matches('\n')
    )
}

/// Text made safe for one Markdown table cell.
pub(crate) fn table_cell(text: &str) -> String {
    text.replace('|', "\\|")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// How one retro row shows one metric.
pub(crate) type MetricValue = fn(&AgentRetro) -> String;

/// The rows of the retro summary table: a label and how to show one agent's value.
pub(crate) fn retro_metrics() -> Vec<(&'static str, MetricValue)> {
    vec![
        ("Status", |row| {
            row.status
                .map_or("—".to_string(), |status| status.label().to_string())
        }),
        ("Duration", |row| crate::format_duration(row.duration_ms)),
        ("Findings", |row| row.findings.to_string()),
        ("Tool calls", |row| tool_calls_text(&row.tool_calls)),
        ("Tokens (in / out)", |row| {
            format!("{} / {}", row.input_tokens, row.output_tokens)
        }),
        ("Cost", |row| {
            row.cost_usd.map_or("—".to_string(), format_cost)
        }),
        ("Design observations", |row| {
            row.design_observations.to_string()
        }),
        ("False positives", |row| row.false_positives.to_string()),
        ("Unique insights", |row| row.unique_insights.to_string()),
        ("Files reviewed", |row| row.files_reviewed.to_string()),
        ("Coverage misses", |row| {
            row.coverage_misses.len().to_string()
        }),
        ("Downgraded", |row| row.downgraded.to_string()),
        ("Upgraded", |row| row.upgraded.to_string()),
        ("Dropped", |row| row.dropped.to_string()),
    ]
}

/// `$1.25`, or `$0.0123` for sums under ten cents, where cents would round to nothing.
pub(crate) fn format_cost(cost: f64) -> String {
    if cost < 0.10 {
        format!("${cost:.4}")
    } else {
        format!("${cost:.2}")
    }
}

/// `30 (Read 18, Bash 11, Agent 1)`, busiest tool first; `—` when none.
pub(crate) fn tool_calls_text(tool_calls: &BTreeMap<String, u64>) -> String {
    let total: u64 = tool_calls.values().sum();
    if total == 0 {
        return "—".to_string();
    }
    let mut tools: Vec<(&String, &u64)> = tool_calls.iter().collect();
    tools.sort_by(|left, right| right.1.cmp(left.1).then(left.0.cmp(right.0)));
    let parts: Vec<String> = tools
        .iter()
        .map(|(tool, count)| format!("{tool} {count}"))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outgrow_backticks_inside() {
        assert_eq!(fence("a", "rs"), "```rs\na\n```");
        assert_eq!(fence("x ```` y", ""), "`````\nx ```` y\n`````");
    }

    #[test]
    fn tool_calls_busiest_first() {
        let calls = BTreeMap::from([
            ("Bash".to_string(), 11),
            ("Read".to_string(), 18),
            ("Agent".to_string(), 1),
        ]);
        assert_eq!(tool_calls_text(&calls), "30 (Read 18, Bash 11, Agent 1)");
        assert_eq!(tool_calls_text(&BTreeMap::new()), "—");
    }

    #[test]
    fn costs_keep_small_sums_visible() {
        assert_eq!(format_cost(0.0123), "$0.0123");
        assert_eq!(format_cost(1.254), "$1.25");
    }

    #[test]
    fn table_cells_escape_pipes_and_newlines() {
        assert_eq!(table_cell("a | b\nc"), "a \\| b c");
    }
}
