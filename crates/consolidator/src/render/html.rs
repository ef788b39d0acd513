//! A self-contained HTML page: no external assets, anchors on every finding, a verdict
//! badge and a sortable findings table. Agent text is untrusted: Markdown is rendered with
//! raw HTML turned into plain text, and every other string is escaped.

use pulldown_cmark::{html::push_html, CowStr, Event, Options, Parser, Tag};

use deep_review_protocol::{
    AgentRetro, AttributedNote, ConsolidatedFinding, Report, Scope, Severity, Verdict,
};

use crate::format_duration;
use crate::render::{grouping_lines, observations_by_kind, put, put_line, retro_metrics};

const STYLE: &str = r#"
:root { --critical:#b42318; --important:#b54708; --suggestion:#175cd3; --merge:#067647; --border:#d0d5dd; --muted:#475467; }
* { box-sizing: border-box; }
body { font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color:#101828; margin:0; background:#f9fafb; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 64px; background:#fff; min-height:100vh; box-shadow: 0 0 0 1px var(--border); }
h1 { font-size: 26px; margin: 8px 0 16px; } h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid var(--border); padding-bottom: 6px; }
h3 { font-size: 16px; margin: 24px 0 8px; }
table { border-collapse: collapse; width: 100%; margin: 12px 0; font-size: 14px; }
th, td { border: 1px solid var(--border); padding: 6px 10px; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " ⇅"; color: var(--muted); font-size: 11px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
pre { background: #f2f4f7; padding: 10px 12px; overflow-x: auto; border-radius: 6px; }
.badge { display:inline-block; padding: 3px 12px; border-radius: 999px; color:#fff; font-weight:600; }
.badge.merge { background: var(--merge); } .badge.merge_with_fixes { background: var(--important); } .badge.rework { background: var(--critical); }
.severity { display:inline-block; padding: 1px 8px; border-radius: 4px; color:#fff; font-size: 12px; font-weight:600; }
.severity.critical { background: var(--critical); } .severity.important { background: var(--important); } .severity.suggestion { background: var(--suggestion); }
.finding { border: 1px solid var(--border); border-left: 4px solid var(--border); border-radius: 6px; padding: 4px 16px 12px; margin: 16px 0; }
.finding.critical { border-left-color: var(--critical); } .finding.important { border-left-color: var(--important); } .finding.suggestion { border-left-color: var(--suggestion); }
.facts { color: var(--muted); font-size: 14px; }
.agent { display:inline-block; background:#eef4ff; color:#3538cd; border-radius: 4px; padding: 0 6px; margin-right: 4px; font-size: 13px; }
.note { color: var(--muted); font-style: italic; }
.warning { background:#fffaeb; border:1px solid #fedf89; padding: 8px 12px; border-radius: 6px; }
a.anchor { color: inherit; text-decoration: none; } a.anchor:hover::after { content: " ¶"; color: var(--muted); }
details { border: 1px solid var(--border); border-radius: 6px; padding: 6px 12px; margin: 8px 0; }
summary { cursor: pointer; font-weight: 600; }
"#;

const SORT_SCRIPT: &str = r#"
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (header, column) {
    header.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = header.getAttribute('data-order') !== 'ascending';
      table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('data-order'); });
      header.setAttribute('data-order', ascending ? 'ascending' : 'descending');
      rows.sort(function (left, right) {
        var a = left.cells[column].getAttribute('data-sort') || left.cells[column].textContent;
        var b = right.cells[column].getAttribute('data-sort') || right.cells[column].textContent;
        var numeric = !isNaN(parseFloat(a)) && !isNaN(parseFloat(b));
        var order = numeric ? parseFloat(a) - parseFloat(b) : a.localeCompare(b);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"#;

/// Renders `report` as a standalone HTML page.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = format!("Deep Review: {}", crate::render::report_title(report));
    put_line!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
    );
    put_line!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    );
    put_line!(
        out,
        "<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>",
        escape(&title)
    );
    put_line!(out, "<h1>{}</h1>", escape(&title));
    header_table(&mut out, report);
    put_line!(
        out,
        "<h2 id=\"summary\">Executive summary</h2>\n<p>{}</p>",
        escape(&report.executive_summary)
    );
    for notice in &report.notices {
        put_line!(
            out,
            "<p class=\"warning\"><strong>Note.</strong> {}</p>",
            escape(notice)
        );
    }
    if report.partial {
        put_line!(out, "<p class=\"warning\"><strong>Partial report.</strong> Some agents delivered no result before the deadline; see <a href=\"#failed-agents\">agents that did not complete</a>.</p>");
    }
    findings_table(&mut out, report);
    for severity in Severity::MOST_SEVERE_FIRST {
        findings_section(&mut out, report, severity);
    }
    observations(&mut out, report);
    notes(
        &mut out,
        report,
        "testing",
        "Testing assessment",
        &report.testing_gaps,
        "No testing gaps reported.",
    );
    notes(
        &mut out,
        report,
        "documentation",
        "Documentation assessment",
        &report.documentation_notes,
        "No documentation issues reported.",
    );
    notes(
        &mut out,
        report,
        "limitations",
        "Acknowledged limitations",
        &report.acknowledged_limitations,
        "None.",
    );
    if !report.failed_agents.is_empty() {
        put_line!(
            out,
            "<h2 id=\"failed-agents\">Agents that did not complete</h2>\n<ul>"
        );
        for failed in &report.failed_agents {
            put_line!(
                out,
                "<li><strong>{}</strong> ({}): {}</li>",
                escape(&report.display_name(&failed.agent)),
                failed.status.map_or("no result", |status| status.label()),
                escape(&failed.reason)
            );
        }
        put_line!(out, "</ul>");
    }
    if !report.omitted_content.is_empty() {
        put_line!(out, "<h2 id=\"omitted\">Left out of the review</h2>\n<ul>");
        for item in &report.omitted_content {
            put_line!(out, "<li>{}</li>", escape(item));
        }
        put_line!(out, "</ul>");
    }
    retro(&mut out, report);
    process_notes(&mut out, report);
    appendix(&mut out, report);
    put_line!(
        out,
        "</main>\n<script>{SORT_SCRIPT}</script>\n</body>\n</html>"
    );
    out
}

fn header_table(out: &mut String, report: &Report) {
    let header = &report.header;
    put_line!(out, "<table class=\"header\">");
    let mut row = |name: &str, value: String| {
        if !value.is_empty() {
            put_line!(out, "<tr><th>{name}</th><td>{value}</td></tr>");
        }
    };
    row("Date", header.date.format("%Y-%m-%d %H:%M UTC").to_string());
    row(
        "Repository",
        header.repository.as_deref().map(escape).unwrap_or_default(),
    );
    if let Some(title) = &header.title {
        let label = header
            .pull_request_number
            .map_or(String::new(), |number| format!("#{number} — "));
        row(
            if header.pull_request_number.is_some() {
                "PR"
            } else {
                "Change"
            },
            format!("{label}{}", escape(title)),
        );
    }
    row("Round", header.round.to_string());
    row(
        "Author",
        header.author.as_deref().map(escape).unwrap_or_default(),
    );
    row(
        "Branch",
        header
            .branch
            .as_deref()
            .map(|branch| format!("<code>{}</code>", escape(branch)))
            .unwrap_or_default(),
    );
    row(
        "Commits",
        header
            .commits
            .iter()
            .map(|commit| {
                format!(
                    "<code>{}</code> {}",
                    escape(commit.sha.get(..7).unwrap_or(&commit.sha)),
                    escape(&commit.subject)
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
            .map(|sha| format!("<code>{}</code>", escape(sha)))
            .unwrap_or_default(),
    );
    row(
        "Reviewers",
        header
            .reviewers
            .iter()
            .map(|reviewer| {
                let details: Vec<&str> = [
                    Some(reviewer.runner.as_str()),
                    reviewer.model.as_deref(),
                    reviewer.effort.as_deref(),
                ]
                .into_iter()
                .flatten()
                .collect();
                format!(
                    "<span class=\"agent\">{}</span> {}",
                    escape(&reviewer.display_name),
                    escape(&details.join(", "))
                )
            })
            .collect::<Vec<_>>()
            .join("<br>"),
    );
    let verdict_class = match report.verdict.verdict {
        Verdict::Merge => "merge",
        Verdict::MergeWithFixes => "merge_with_fixes",
        Verdict::Rework => "rework",
        Verdict::Incomplete => "incomplete",
    };
    row(
        "Verdict",
        format!(
            "<span class=\"badge {verdict_class}\" id=\"verdict\">{}</span> {}",
            report.verdict.verdict.label(),
            escape(&report.verdict.reason)
        ),
    );
    row("Wall-clock time", format_duration(header.wall_clock_ms));
    put_line!(out, "</table>");
}

fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 0,
        Severity::Important => 1,
        Severity::Suggestion => 2,
    }
}

fn severity_class(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::Important => "important",
        Severity::Suggestion => "suggestion",
    }
}

fn findings_table(out: &mut String, report: &Report) {
    put_line!(out, "<h2 id=\"findings\">Findings</h2>");
    if report.findings.is_empty() {
        put_line!(out, "<p>No findings.</p>");
        return;
    }
    put_line!(out, "<table class=\"sortable\" id=\"findings-table\"><thead><tr><th>Id</th><th>Severity</th><th>Title</th><th>Location</th><th>Agents</th><th>Consensus</th></tr></thead><tbody>");
    for finding in &report.findings {
        let agents: Vec<String> = report
            .display_names(&finding.agents)
            .iter()
            .map(|name| escape(name))
            .collect();
        put_line!(
            out,
            "<tr><td data-sort=\"{rank}{id:0>4}\"><a href=\"#{id}\">{id}</a></td><td data-sort=\"{rank}\"><span class=\"severity {class}\">{label}</span></td><td>{title}</td><td><code>{location}</code></td><td>{agents}</td><td>{consensus}</td></tr>",
            rank = severity_rank(finding.severity),
            id = escape(&finding.id),
            class = severity_class(finding.severity),
            label = finding.severity.label(),
            title = escape(&finding.title),
            location = finding.locations.first().map(|location| escape(&location.to_string())).unwrap_or_default(),
            agents = agents.join(", "),
            consensus = finding.consensus,
        );
    }
    put_line!(out, "</tbody></table>");
}

fn findings_section(out: &mut String, report: &Report, severity: Severity) {
    let (anchor, heading) = match severity {
        Severity::Critical => ("critical", "Critical issues"),
        Severity::Important => ("important", "Important issues"),
        Severity::Suggestion => ("suggestions", "Suggestions"),
    };
    put_line!(out, "<h2 id=\"{anchor}\">{heading}</h2>");
    let findings: Vec<&ConsolidatedFinding> = report
        .findings
        .iter()
        .filter(|finding| finding.severity == severity)
        .collect();
    if findings.is_empty() {
        put_line!(out, "<p>None.</p>");
    }
    for finding in findings {
        finding_block(out, report, finding);
    }
}

fn finding_block(out: &mut String, report: &Report, finding: &ConsolidatedFinding) {
    let id = escape(&finding.id);
    put_line!(
        out,
        "<section class=\"finding {}\" id=\"{id}\">",
        severity_class(finding.severity)
    );
    put_line!(
        out,
        "<h3><a class=\"anchor\" href=\"#{id}\">{id}. {}</a></h3>",
        escape(&finding.title)
    );
    let agents = agent_badges(report, &finding.agents);
    let mut facts = vec![
        format!(
            "<span class=\"severity {}\">{}</span>",
            severity_class(finding.severity),
            finding.severity.label()
        ),
        agents,
    ];
    if let Some(tag) = finding.tag {
        facts.push(format!(
            "tag: <code>{}</code>",
            if tag == deep_review_protocol::Tag::Regression {
                "regression"
            } else {
                "gap"
            }
        ));
    }
    if let Some(category) = &finding.category {
        facts.push(format!("category: {}", escape(category)));
    }
    if finding.agents.len() > 1 {
        facts.push(format!("consensus: {}", finding.consensus));
    }
    put_line!(out, "<p class=\"facts\">{}</p>", facts.join(" · "));
    if !finding.locations.is_empty() {
        let locations: Vec<String> = finding
            .locations
            .iter()
            .map(|location| format!("<code>{}</code>", escape(&location.to_string())))
            .collect();
        put_line!(
            out,
            "<p><strong>Locations:</strong> {}</p>",
            locations.join(", ")
        );
    }
    put_line!(out, "{}", markdown_to_html(&finding.body));
    if let Some(excerpt) = &finding.code_excerpt {
        put_line!(out, "<pre><code>{}</code></pre>", escape(excerpt));
    }
    if let Some(fix) = &finding.fix {
        put_line!(out, "<h4>Fix</h4>\n{}", markdown_to_html(fix));
    }
    if let Some(verification) = &finding.verification {
        let outcome = serde_json::to_value(verification.outcome)
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
            .unwrap_or_default();
        put_line!(
            out,
            "<h4>Verification ({}; {})</h4>",
            escape(&outcome),
            escape(&verification.provenance())
        );
        if let Some(reason) = &verification.reason {
            put_line!(out, "<p>{}</p>", escape(reason));
        }
        put_line!(
            out,
            "<pre><code>{}</code></pre>",
            escape(&verification.command)
        );
        if !verification.output.trim().is_empty() {
            put_line!(
                out,
                "<pre><code>{}</code></pre>",
                escape(&verification.output)
            );
        }
    }
    if let Some(note) = &finding.severity_note {
        put_line!(out, "<p class=\"note\">Severity: {}</p>", escape(note));
    }
    for line in grouping_lines(report, finding) {
        put_line!(out, "<p class=\"note\">Grouped: {}</p>", escape(&line));
    }
    put_line!(out, "</section>");
}

fn observations(out: &mut String, report: &Report) {
    put_line!(out, "<h2 id=\"design\">Design observations</h2>");
    if report.design_observations.is_empty() {
        put_line!(out, "<p>None.</p>");
        return;
    }
    for (title, items) in observations_by_kind(report) {
        put_line!(out, "<h3>{title}</h3>\n<ol>");
        for observation in items {
            let scope = if observation.scope == Scope::InScope {
                "in-scope"
            } else {
                "future"
            };
            let agents = agent_badges(report, &observation.agents);
            put_line!(
                out,
                "<li><strong>{}</strong> ({scope}) {agents}{}</li>",
                escape(&observation.title),
                markdown_to_html(&observation.body)
            );
        }
        put_line!(out, "</ol>");
    }
}

fn notes(
    out: &mut String,
    report: &Report,
    anchor: &str,
    heading: &str,
    items: &[AttributedNote],
    empty: &str,
) {
    put_line!(out, "<h2 id=\"{anchor}\">{heading}</h2>");
    if items.is_empty() {
        put_line!(out, "<p>{empty}</p>");
        return;
    }
    put_line!(out, "<ul>");
    for item in items {
        let agents = agent_badges(report, &item.agents);
        put_line!(out, "<li>{} {agents}</li>", inline_markdown(&item.text));
    }
    put_line!(out, "</ul>");
}

fn retro(out: &mut String, report: &Report) {
    put_line!(out, "<h2 id=\"retro\">Agent performance retro</h2>");
    for row in &report.retro {
        put_line!(
            out,
            "<h3>{}</h3>\n<p>{}</p>",
            escape(&row.display_name),
            escape(&row.narrative)
        );
    }
    let rows: Vec<&AgentRetro> = report
        .retro
        .iter()
        .chain(std::iter::once(&report.retro_totals))
        .collect();
    put!(out, "<table id=\"retro-table\"><thead><tr><th>Metric</th>");
    for row in &rows {
        put!(out, "<th>{}</th>", escape(&row.display_name));
    }
    put_line!(out, "</tr></thead><tbody>");
    for (name, value) in retro_metrics() {
        put!(out, "<tr><th>{name}</th>");
        for row in &rows {
            put!(out, "<td>{}</td>", escape(&value(row)));
        }
        put_line!(out, "</tr>");
    }
    put_line!(out, "</tbody></table>");
    if report.reconciliations.is_empty() {
        put_line!(out, "<p><strong>Reconciliation:</strong> no severity was changed and nothing was dropped.</p>");
    } else {
        put_line!(out, "<p><strong>Reconciliation:</strong></p>\n<ul>");
        for change in &report.reconciliations {
            let target = match (change.to, &change.consolidated_id) {
                (Some(to), Some(id)) => format!(
                    "{} → {} as <a href=\"#{}\">{}</a>",
                    change.from.label(),
                    to.label(),
                    escape(id),
                    escape(id)
                ),
                (Some(to), None) => format!("{} → {}", change.from.label(), to.label()),
                (None, _) => format!("{} → dropped", change.from.label()),
            };
            put_line!(
                out,
                "<li>{} {} “{}”: {target}, because {}.</li>",
                escape(&report.display_name(&change.agent)),
                escape(change.original_id.as_deref().unwrap_or("")),
                escape(&change.title),
                escape(&change.reason)
            );
        }
        put_line!(out, "</ul>");
    }
}

fn process_notes(out: &mut String, report: &Report) {
    if report.repo_context_updates.is_empty() && report.prompt_improvements.is_empty() {
        return;
    }
    put_line!(out, "<h2 id=\"process\">Review process notes</h2>");
    for (title, items) in [
        ("Repo context updates", &report.repo_context_updates),
        ("Prompt and skill improvements", &report.prompt_improvements),
    ] {
        if items.is_empty() {
            continue;
        }
        put_line!(out, "<h3>{title}</h3>\n<ul>");
        for item in items {
            put_line!(out, "<li>{}</li>", inline_markdown(&item.text));
        }
        put_line!(out, "</ul>");
    }
}

fn appendix(out: &mut String, report: &Report) {
    put_line!(
        out,
        "<h2 id=\"appendix\">Appendix: original agent output</h2>"
    );
    for result in &report.appendix {
        put_line!(
            out,
            "<details id=\"agent-{}\"><summary>{} — {}, {}</summary>",
            escape(&result.agent),
            escape(&report.display_name(&result.agent)),
            result.status.label(),
            format_duration(result.duration_ms)
        );
        if let Some(error) = &result.error {
            put_line!(out, "<p><strong>Error:</strong> {}</p>", escape(error));
        }
        put_line!(out, "<ul>");
        for finding in &result.findings {
            let locations: Vec<String> = finding
                .locations
                .iter()
                .map(|location| escape(&location.to_string()))
                .collect();
            put_line!(
                out,
                "<li><strong>{}</strong> <span class=\"severity {}\">{}</span> {} <code>{}</code></li>",
                escape(finding.id.as_deref().unwrap_or("-")),
                severity_class(finding.severity),
                finding.severity.label(),
                escape(&finding.title),
                locations.join(", ")
            );
        }
        put_line!(out, "</ul>");
        if let Some(raw) = &result.raw_output {
            put_line!(out, "<pre><code>{}</code></pre>", escape(raw));
        }
        put_line!(out, "</details>");
    }
}

/// Agent names as small badges.
fn agent_badges(report: &Report, agents: &[String]) -> String {
    report
        .display_names(agents)
        .iter()
        .map(|name| format!("<span class=\"agent\">{}</span>", escape(name)))
        .collect()
}

/// Renders one line of untrusted Markdown without the paragraph around it.
pub(crate) fn inline_markdown(markdown: &str) -> String {
    let html = markdown_to_html(markdown);
    let trimmed = html.trim_end();
    match trimmed
        .strip_prefix("<p>")
        .and_then(|inner| inner.strip_suffix("</p>"))
    {
        Some(inner) if !inner.contains("<p>") => inner.to_string(),
        _ => html,
    }
}

/// Renders untrusted Markdown: raw HTML in it is shown as text, never interpreted.
pub(crate) fn markdown_to_html(markdown: &str) -> String {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    )
    .map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut html = String::new();
    push_html(&mut html, parser);
    html
}

/// `url` when it is http(s), mailto or a fragment; otherwise `#`. Agents and PR authors write
/// the Markdown, and a `javascript:`, `vbscript:` or `data:` target would run in the
/// reader's browser (browsers also ignore tabs and newlines inside a scheme, so anything
/// not starting with an allowed prefix is refused rather than scanned for bad schemes).
fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim_start().to_ascii_lowercase();
    let allowed = ["http://", "https://", "mailto:", "#"]
        .iter()
        .any(|prefix| lower.starts_with(prefix));
    if allowed {
        url
    } else {
        CowStr::Borrowed("#")
    }
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + text.len() / 8);
    // Writing into a String cannot fail, so the error case is unreachable in practice.
    match pulldown_cmark_escape::escape_html(&mut escaped, text) {
        Ok(()) => escaped,
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_markdown_cannot_inject_html() {
        let html = markdown_to_html(
            "Look <script>alert(1)</script> **bold**\n\n<img src=x onerror=alert(1)>",
        );
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("<strong>bold</strong>"));
        assert_eq!(
            inline_markdown("Test `a.rs` <b>x</b>"),
            "Test <code>a.rs</code> &lt;b&gt;x&lt;/b&gt;"
        );
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn links_and_images_keep_only_safe_targets() {
        for target in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "java\tscript:alert(1)",
            " javascript:alert(1)",
            "vbscript:msgbox(1)",
            "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        ] {
            let html = markdown_to_html(&format!("[click](<{target}>) ![pixel](<{target}>)"));
            assert!(
                !html.to_ascii_lowercase().contains("script:") && !html.contains("data:"),
                "{target}: {html}"
            );
            assert!(html.contains("href=\"#\""), "{html}");
            assert!(html.contains("src=\"#\""), "{html}");
        }
        let html = markdown_to_html(
            "[docs](https://example.com/a) [mail](mailto:a@example.com) [here](#C1)",
        );
        assert!(html.contains("href=\"https://example.com/a\""), "{html}");
        assert!(html.contains("href=\"mailto:a@example.com\""), "{html}");
        assert!(html.contains("href=\"#C1\""), "{html}");
    }
}
