//! GitHub-flavoured Markdown that reads like the seed reports and fits a PR comment: the
//! appendix is collapsed in `<details>` blocks.

use deep_review_protocol::{
    AgentRetro, AttributedNote, ConsolidatedFinding, Report, Scope, Severity,
};

use crate::format_duration;
use crate::render::{
    fence, grouping_lines, observations_by_kind, put, put_line, retro_metrics, table_cell,
};

/// Renders `report` as Markdown.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    put_line!(
        out,
        "## Executive summary\n\n{}\n",
        report.executive_summary
    );
    for notice in &report.notices {
        put_line!(out, "> **Note.** {}\n", single_line(notice));
    }
    if report.partial {
        put_line!(
            out,
            "> **Partial report.** Some agents delivered no result before the deadline; see *Agents that did not complete*.\n"
        );
    }
    for severity in Severity::MOST_SEVERE_FIRST {
        findings_section(&mut out, report, severity);
    }
    design_observations(&mut out, report);
    notes_section(
        &mut out,
        report,
        "Testing assessment",
        "Coverage gaps, ranked by risk:",
        &report.testing_gaps,
        "No testing gaps reported.",
    );
    notes_section(
        &mut out,
        report,
        "Documentation assessment",
        "",
        &report.documentation_notes,
        "No documentation issues reported.",
    );
    notes_section(
        &mut out,
        report,
        "Acknowledged limitations",
        "Known and accepted; do not re-suggest:",
        &report.acknowledged_limitations,
        "None.",
    );
    failed_agents(&mut out, report);
    omitted(&mut out, report);
    retro(&mut out, report);
    process_notes(&mut out, report);
    appendix(&mut out, report);
    out
}

fn header(out: &mut String, report: &Report) {
    let header = &report.header;
    put_line!(
        out,
        "# Deep Review: {}\n",
        crate::render::report_title(report)
    );
    put_line!(out, "| | |\n|---|---|");
    let mut row = |name: &str, value: String| {
        if !value.is_empty() {
            put_line!(out, "| {name} | {value} |");
        }
    };
    row("Date", header.date.format("%Y-%m-%d %H:%M UTC").to_string());
    row(
        "Repository",
        header
            .repository
            .as_deref()
            .map(table_cell)
            .unwrap_or_default(),
    );
    match (header.pull_request_number, &header.title) {
        (Some(number), Some(pr_title)) => {
            row("PR", format!("#{number} — {}", table_cell(pr_title)))
        }
        (None, Some(change_title)) => row("Change", table_cell(change_title)),
        _ => {}
    }
    row("Round", header.round.to_string());
    row(
        "Author",
        header.author.as_deref().map(table_cell).unwrap_or_default(),
    );
    row(
        "Branch",
        header
            .branch
            .as_deref()
            .map(|branch| format!("`{}`", table_cell(branch)))
            .unwrap_or_default(),
    );
    row(
        "Commits",
        header
            .commits
            .iter()
            .map(|commit| {
                format!(
                    "`{}` {}",
                    short_sha(&commit.sha),
                    table_cell(&commit.subject)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>"),
    );
    row(
        "Reviewed SHA",
        header
            .reviewed_sha
            .as_deref()
            .map(|sha| format!("`{sha}`"))
            .unwrap_or_default(),
    );
    row(
        "Reviewers",
        header
            .reviewers
            .iter()
            .map(|reviewer| {
                let details: Vec<&str> = [reviewer.model.as_deref(), reviewer.effort.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                if details.is_empty() {
                    format!(
                        "{} ({})",
                        table_cell(&reviewer.display_name),
                        reviewer.runner
                    )
                } else {
                    format!(
                        "{} ({}, {})",
                        table_cell(&reviewer.display_name),
                        reviewer.runner,
                        table_cell(&details.join(", "))
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    row(
        "Verdict",
        format!(
            "**{}** — {}",
            report.verdict.verdict.label(),
            table_cell(&report.verdict.reason)
        ),
    );
    row("Wall-clock time", format_duration(header.wall_clock_ms));
    out.push('\n');
}

fn short_sha(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

fn findings_section(out: &mut String, report: &Report, severity: Severity) {
    let heading = match severity {
        Severity::Critical => "Critical issues",
        Severity::Important => "Important issues",
        Severity::Suggestion => "Suggestions",
    };
    put_line!(out, "## {heading}\n");
    let findings: Vec<&ConsolidatedFinding> = report
        .findings
        .iter()
        .filter(|finding| finding.severity == severity)
        .collect();
    if findings.is_empty() {
        put_line!(out, "None.\n");
        return;
    }
    for finding in findings {
        finding_block(out, report, finding);
    }
}

fn finding_block(out: &mut String, report: &Report, finding: &ConsolidatedFinding) {
    put_line!(
        out,
        "<a id=\"{}\"></a>\n### {}. {}\n",
        finding.id,
        finding.id,
        single_line(&finding.title)
    );
    let agents = report.display_names(&finding.agents);
    let mut facts = vec![format!("**Found by:** {}", agents.join(", "))];
    if finding.agents.len() > 1 {
        facts.push(format!("**Consensus:** {}", finding.consensus));
    }
    if let Some(tag) = finding.tag {
        facts.push(format!("**Tag:** `{}`", serde_plain(&tag)));
    }
    if let Some(category) = &finding.category {
        facts.push(format!("**Category:** {}", single_line(category)));
    }
    put_line!(out, "{}\n", facts.join(" · "));
    if !finding.locations.is_empty() {
        let locations: Vec<String> = finding
            .locations
            .iter()
            .map(|location| format!("`{location}`"))
            .collect();
        put_line!(out, "**Locations:** {}\n", locations.join(", "));
    }
    if !finding.body.trim().is_empty() {
        put_line!(out, "{}\n", finding.body.trim());
    }
    if let Some(excerpt) = &finding.code_excerpt {
        put_line!(out, "{}\n", fence(excerpt, ""));
    }
    if let Some(fix) = &finding.fix {
        put_line!(out, "**Fix**\n\n{}\n", fix.trim());
    }
    if let Some(verification) = &finding.verification {
        put_line!(
            out,
            "**Verification ({}; {}):**\n",
            serde_plain(&verification.outcome),
            verification.provenance()
        );
        if let Some(reason) = &verification.reason {
            put_line!(out, "{}\n", single_line(reason));
        }
        put_line!(out, "{}\n", fence(&verification.command, "sh"));
        if !verification.output.trim().is_empty() {
            put_line!(out, "{}\n", fence(&verification.output, ""));
        }
    }
    if let Some(note) = &finding.severity_note {
        put_line!(out, "*Severity:* {note}\n");
    }
    for line in grouping_lines(report, finding) {
        put_line!(out, "*Grouped:* {}\n", single_line(&line));
    }
}

fn design_observations(out: &mut String, report: &Report) {
    put_line!(out, "## Design observations\n");
    if report.design_observations.is_empty() {
        put_line!(out, "None.\n");
        return;
    }
    for (title, observations) in observations_by_kind(report) {
        put_line!(out, "### {title}\n");
        for (number, observation) in observations.iter().enumerate() {
            let scope = match observation.scope {
                Scope::InScope => "in-scope",
                Scope::Future => "future",
            };
            let agents = report.display_names(&observation.agents);
            put_line!(
                out,
                "{}. **{}** ({scope}) — {}\n",
                number + 1,
                single_line(&observation.title),
                agents.join(", ")
            );
            if !observation.body.trim().is_empty() {
                put_line!(out, "{}\n", indent(observation.body.trim(), "   "));
            }
        }
    }
}

fn notes_section(
    out: &mut String,
    report: &Report,
    heading: &str,
    intro: &str,
    notes: &[AttributedNote],
    empty: &str,
) {
    put_line!(out, "## {heading}\n");
    if notes.is_empty() {
        put_line!(out, "{empty}\n");
        return;
    }
    if !intro.is_empty() {
        put_line!(out, "{intro}\n");
    }
    note_list(out, report, notes);
}

/// `- text — *agents*` per note, then a blank line.
fn note_list(out: &mut String, report: &Report, notes: &[AttributedNote]) {
    for note in notes {
        let agents = report.display_names(&note.agents);
        if agents.is_empty() {
            put_line!(out, "- {}", single_line(&note.text));
        } else {
            put_line!(
                out,
                "- {} — *{}*",
                single_line(&note.text),
                agents.join(", ")
            );
        }
    }
    out.push('\n');
}

fn failed_agents(out: &mut String, report: &Report) {
    if report.failed_agents.is_empty() {
        return;
    }
    put_line!(out, "## Agents that did not complete\n");
    for failed in &report.failed_agents {
        let status = failed.status.map_or("no result", |status| status.label());
        put_line!(
            out,
            "- **{}** ({status}): {}",
            report.display_name(&failed.agent),
            single_line(&failed.reason)
        );
    }
    out.push('\n');
}

fn omitted(out: &mut String, report: &Report) {
    if report.omitted_content.is_empty() {
        return;
    }
    put_line!(out, "## Left out of the review\n");
    for item in &report.omitted_content {
        put_line!(out, "- {}", single_line(item));
    }
    out.push('\n');
}

fn retro(out: &mut String, report: &Report) {
    put_line!(out, "## Agent performance retro\n");
    for row in &report.retro {
        put_line!(out, "### {}\n\n{}\n", row.display_name, row.narrative);
    }
    put_line!(out, "### Summary\n");
    let rows: Vec<&AgentRetro> = report
        .retro
        .iter()
        .chain(std::iter::once(&report.retro_totals))
        .collect();
    put!(out, "| Metric |");
    for row in &rows {
        put!(out, " {} |", table_cell(&row.display_name));
    }
    put!(out, "\n|---|");
    for _ in &rows {
        put!(out, "---|");
    }
    out.push('\n');
    for (name, value) in retro_metrics() {
        put!(out, "| {name} |");
        for row in &rows {
            put!(out, " {} |", table_cell(&value(row)));
        }
        out.push('\n');
    }
    out.push('\n');
    if report.reconciliations.is_empty() {
        put_line!(
            out,
            "**Reconciliation:** no severity was changed and nothing was dropped.\n"
        );
    } else {
        put_line!(out, "**Reconciliation:**\n");
        for change in &report.reconciliations {
            let original = change
                .original_id
                .as_deref()
                .map(|id| format!(" {id}"))
                .unwrap_or_default();
            let target = match (change.to, &change.consolidated_id) {
                (Some(to), Some(id)) => format!("{} → {} as {id}", change.from.label(), to.label()),
                (Some(to), None) => format!("{} → {}", change.from.label(), to.label()),
                (None, _) => format!("{} → dropped", change.from.label()),
            };
            put_line!(
                out,
                "- {}{original} “{}”: {target}, because {}.",
                report.display_name(&change.agent),
                single_line(&change.title),
                change.reason
            );
        }
        out.push('\n');
    }
}

fn process_notes(out: &mut String, report: &Report) {
    if report.repo_context_updates.is_empty() && report.prompt_improvements.is_empty() {
        return;
    }
    put_line!(out, "## Review process notes\n");
    for (title, notes) in [
        ("Repo context updates", &report.repo_context_updates),
        ("Prompt and skill improvements", &report.prompt_improvements),
    ] {
        if notes.is_empty() {
            continue;
        }
        put_line!(out, "### {title}\n");
        note_list(out, report, notes);
    }
}

fn appendix(out: &mut String, report: &Report) {
    put_line!(out, "## Appendix: original agent output\n");
    for result in &report.appendix {
        let counts = {
            let mut counts = deep_review_protocol::SeverityCounts::default();
            for finding in &result.findings {
                counts.add(finding.severity);
            }
            counts
        };
        put_line!(
            out,
            "<details>\n<summary>{} — {}, {}, findings: {}</summary>\n",
            report.display_name(&result.agent),
            result.status.label(),
            format_duration(result.duration_ms),
            counts
        );
        if let Some(error) = &result.error {
            put_line!(out, "**Error:** {}\n", single_line(error));
        }
        for finding in &result.findings {
            let id = finding.id.as_deref().unwrap_or("-");
            let locations: Vec<String> = finding
                .locations
                .iter()
                .map(|location| format!("`{location}`"))
                .collect();
            put_line!(
                out,
                "- **{id}** [{}] {} {}",
                finding.severity.label(),
                single_line(&finding.title),
                locations.join(", ")
            );
        }
        if let Some(raw) = &result.raw_output {
            put_line!(out, "\nRaw output:\n\n{}\n", fence(raw, ""));
        }
        put_line!(out, "</details>\n");
    }
}

fn single_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|line| format!("{prefix}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The serde name of a unit enum variant (`regression`, `confirmed`…).
fn serde_plain<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}
