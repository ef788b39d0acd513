//! Adversarial grouping cases, written as models write findings: the same bug in very
//! different words and lengths, and different bugs in similar words a few lines apart. Each
//! case names the grouping a careful human reviewer would make.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use deep_review_consolidator::{consolidate, ConsolidationSettings};
use deep_review_protocol::{
    AgentResult, ConsolidatedFinding, Finding, GroupingRule, Location, Report, Severity,
};

mod support;
use support::manifest;

fn finding(
    id: &str,
    severity: Severity,
    title: &str,
    body: &str,
    locations: &[(&str, u32, u32)],
) -> Finding {
    Finding {
        id: Some(id.to_string()),
        severity,
        title: title.to_string(),
        body: body.to_string(),
        category: None,
        tag: None,
        locations: locations
            .iter()
            .map(|(path, start, end)| Location::lines(*path, *start, *end))
            .collect(),
        code_excerpt: None,
        fix: None,
        confidence: None,
        verification: None,
        reproduction: None,
    }
}

fn with_code(mut finding: Finding, code: &str) -> Finding {
    finding.code_excerpt = Some(code.to_string());
    finding
}

fn agent(name: &str, findings: Vec<Finding>) -> AgentResult {
    let mut result = AgentResult::new(name);
    result.findings = findings;
    result
}

fn run(results: Vec<AgentResult>) -> Report {
    let manifest = manifest(&results);
    consolidate(
        &manifest,
        results,
        &ConsolidationSettings::default(),
        manifest.job.created_at,
    )
}

/// Each consolidated finding as the sorted list of `agent:id` it holds.
fn groups(report: &Report) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = report
        .findings
        .iter()
        .map(|finding| {
            let mut members: Vec<String> = finding
                .originals
                .iter()
                .map(|original| {
                    format!(
                        "{}:{}",
                        original.agent,
                        original.finding.id.clone().unwrap_or_default()
                    )
                })
                .collect();
            members.sort();
            members
        })
        .collect();
    groups.sort();
    groups
}

fn expected(groups: &[&[&str]]) -> Vec<Vec<String>> {
    let mut expected: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            let mut members: Vec<String> = group.iter().map(|member| member.to_string()).collect();
            members.sort();
            members
        })
        .collect();
    expected.sort();
    expected
}

fn holding<'a>(report: &'a Report, member: &str) -> &'a ConsolidatedFinding {
    let (agent, id) = member.split_once(':').expect("agent:id");
    report
        .findings
        .iter()
        .find(|finding| {
            finding.originals.iter().any(|original| {
                original.agent == agent && original.finding.id.as_deref() == Some(id)
            })
        })
        .expect("a finding holds it")
}

/// Kind 1: a short paraphrase of a long description. Its lines lie inside the others'
/// range, and it shares only a handful of words with them.
#[test]
fn a_short_paraphrase_joins_the_long_descriptions_it_lies_inside() {
    let report = run(vec![
        agent(
            "claude",
            vec![finding(
                "I1",
                Severity::Important,
                "Readiness endpoint reports healthy before the HTTP listener is bound",
                "`serve()` flips the shared `READY` flag as soon as the configuration has been \
                 parsed, but the call to `TcpListener::bind` happens several statements later and \
                 can still fail (port in use, missing capability). During that window Kubernetes \
                 sees `/readyz` return 200, adds the pod to the Service endpoints and routes \
                 traffic to a process that is not accepting connections; if the bind then fails \
                 the pod exits and the rollout briefly drops requests. Move the flag update after \
                 the bind succeeds, or derive readiness from the listener itself.",
                &[("src/server/mod.rs", 40, 62)],
            )],
        ),
        agent(
            "codex",
            vec![finding(
                "F2",
                Severity::Important,
                "Pod can be marked ready while the socket is not yet accepting",
                "The readiness state is published from inside the startup sequence before the \
                 listening socket exists. A kubelet probe arriving in between succeeds, so the \
                 endpoint controller sends real traffic that is refused. The ordering should be: \
                 bind, spawn the accept loop, then publish readiness. A test that starts the \
                 server on an occupied port would catch this.",
                &[("src/server/mod.rs", 44, 60)],
            )],
        ),
        agent(
            "gemini",
            vec![finding(
                "I3",
                Severity::Important,
                "Ready flag set too early",
                "Set after config load, before bind; probes pass while connections fail.",
                &[("src/server/mod.rs", 51, 52)],
            )],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["claude:I1", "codex:F2", "gemini:I3"]]),
        "{:#?}",
        report.findings
    );
    let merged = &report.findings[0];
    assert_eq!(merged.consensus, 3);
    assert!(report.retro.iter().all(|row| row.unique_insights == 0));
    assert_eq!(merged.grouping.len(), 2, "one entry per joining agent");
    for evidence in &merged.grouping {
        assert_eq!(evidence.rule, GroupingRule::SamePlace);
        assert!(evidence.score >= evidence.threshold, "{evidence:?}");
    }
    let gemini = merged
        .grouping
        .iter()
        .find(|evidence| evidence.agent == "gemini")
        .expect("gemini joined");
    assert!(
        gemini
            .signals
            .iter()
            .any(|signal| signal.contains("src/server/mod.rs:51-52 lies inside")),
        "{:?}",
        gemini.signals
    );
}

/// Kind 2: two agents with two findings each in one region, where the title words point at
/// the wrong partner and the places and code point at the right one.
#[test]
fn two_findings_each_in_one_region_pair_up_by_place_and_code_not_title_words() {
    let report = run(vec![
        agent(
            "claude",
            vec![
                with_code(
                    finding(
                        "I1",
                        Severity::Important,
                        "Cache lock held across the refresh fetch",
                        "`refresh()` takes the entries mutex and keeps the guard alive while it \
                         awaits the upstream fetch, so every reader blocks for the full network \
                         round trip and a slow upstream stalls the whole service.",
                        &[("src/cache.rs", 88, 95)],
                    ),
                    "let guard = self.entries.lock().await;\nlet fresh = self.upstream.fetch(key).await?;",
                ),
                with_code(
                    finding(
                        "I2",
                        Severity::Important,
                        "Stale entry served when the refresh fails",
                        "When the fetch returns an error the function falls through and returns \
                         the expired value as if it were fresh, with no log and no metric, so \
                         callers cannot tell they got stale data.",
                        &[("src/cache.rs", 97, 101)],
                    ),
                    "Err(_) => return Ok(entry.value.clone()),",
                ),
            ],
        ),
        agent(
            "codex",
            vec![
                with_code(
                    finding(
                        "F1",
                        Severity::Important,
                        "Refresh keeps the entry cache locked during fetch",
                        "Holding the mutex guard over an .await serialises all cache access \
                         behind one upstream request.",
                        &[("src/cache.rs", 90, 90)],
                    ),
                    "let guard = self.entries.lock().await;",
                ),
                with_code(
                    finding(
                        "F2",
                        Severity::Suggestion,
                        "Refresh error swallowed; expired entry returned",
                        "The error arm discards the upstream error.",
                        &[("src/cache.rs", 99, 99)],
                    ),
                    "Err(_) => return Ok(entry.value.clone()),",
                ),
            ],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["claude:I1", "codex:F1"], &["claude:I2", "codex:F2"]]),
        "{:#?}",
        report.findings
    );
    let lock = holding(&report, "codex:F1");
    assert!(
        lock.grouping[0]
            .signals
            .iter()
            .any(|signal| signal.contains("identical quoted code")),
        "{:?}",
        lock.grouping
    );
}

/// Kind 2 again, with no quoted code: the retry loop's two problems, each reported by two
/// agents, one of whose titles mentions both.
#[test]
fn two_problems_of_one_loop_pair_up_by_what_each_says() {
    let report = run(vec![
        agent(
            "claude",
            vec![
                finding(
                    "A1",
                    Severity::Important,
                    "Retry loop has no upper bound on attempts",
                    "The reconnect loop in `connect_with_retry` retries forever when the broker \
                     refuses the connection, pinning a core.",
                    &[("src/broker.rs", 20, 24)],
                ),
                finding(
                    "A2",
                    Severity::Important,
                    "Reconnect delay never backs off",
                    "Each attempt sleeps the same `RETRY_DELAY`, so a fleet of workers hammers a \
                     recovering broker in lockstep. Use exponential backoff.",
                    &[("src/broker.rs", 24, 27)],
                ),
            ],
        ),
        agent(
            "gemini",
            vec![
                finding(
                    "B1",
                    Severity::Important,
                    "Unbounded broker reconnect attempts with a fixed delay",
                    "`connect_with_retry` never gives up: the loop condition is `true` and \
                     there is no attempt counter.",
                    &[("src/broker.rs", 21, 22)],
                ),
                finding(
                    "B2",
                    Severity::Suggestion,
                    "Use exponential backoff with jitter",
                    "The sleep of `RETRY_DELAY` between attempts is constant; back off \
                     exponentially and add jitter.",
                    &[("src/broker.rs", 25, 26)],
                ),
            ],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["claude:A1", "gemini:B1"], &["claude:A2", "gemini:B2"]]),
        "{:#?}",
        report.findings
    );
}

/// Kind 3: two different bugs a few lines apart whose titles share most of their words.
/// A third agent reports the first one in other words; it joins that one only.
#[test]
fn adjacent_distinct_bugs_with_similar_wording_stay_apart() {
    let report = run(vec![
        agent(
            "claude",
            vec![finding(
                "I1",
                Severity::Important,
                "Readiness reported before the database migrations finish",
                "`mark_ready()` is called right after the pool is created, while \
                 `run_migrations()` is still running on a background task. Requests that reach \
                 the pod in that window hit tables that do not exist yet.",
                &[("src/startup.rs", 30, 31)],
            )],
        ),
        agent(
            "codex",
            vec![finding(
                "F1",
                Severity::Important,
                "Readiness reported even when the cache warm-up failed",
                "The result of `warm_cache()` is logged and discarded, and readiness is still \
                 reported, so a pod with an empty cache takes full traffic and overloads the \
                 database with misses.",
                &[("src/startup.rs", 34, 35)],
            )],
        ),
        agent(
            "gemini",
            vec![finding(
                "C1",
                Severity::Critical,
                "Migrations can still be running when the pod is marked ready",
                "`run_migrations()` is spawned and not awaited before `mark_ready()`.",
                &[("src/startup.rs", 30, 30)],
            )],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["claude:I1", "gemini:C1"], &["codex:F1"]]),
        "{:#?}",
        report.findings
    );
}

/// Kind 4: three agents, the same line, almost no words in common, identical quoted code.
#[test]
fn identical_quoted_code_at_one_line_groups_three_different_descriptions() {
    let code = "if claims.expires_at < now {\n    return Ok(claims);\n}";
    let report = run(vec![
        agent(
            "claude",
            vec![with_code(
                finding(
                    "C1",
                    Severity::Critical,
                    "Expired tokens are accepted",
                    "The comparison is inverted: a token whose expiry lies in the past passes \
                     validation and one that is still valid falls through to the error path.",
                    &[("src/auth/token.rs", 77, 79)],
                ),
                code,
            )],
        ),
        agent(
            "codex",
            vec![with_code(
                finding(
                    "F4",
                    Severity::Critical,
                    "Stale credentials let through by inverted check",
                    "Anyone holding an old JWT keeps access indefinitely.",
                    &[("src/auth/token.rs", 77, 77)],
                ),
                code,
            )],
        ),
        agent(
            "gemini",
            vec![with_code(
                finding(
                    "I2",
                    Severity::Important,
                    "Validation short-circuits on the wrong branch",
                    "Swap the operands.",
                    &[("src/auth/token.rs", 77, 78)],
                ),
                code,
            )],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["claude:C1", "codex:F4", "gemini:I2"]]),
        "{:#?}",
        report.findings
    );
    assert_eq!(report.findings[0].severity, Severity::Critical);
}

/// One agent cites both ends of a problem, another only one of them.
#[test]
fn citing_one_of_two_locations_is_enough() {
    let report = run(vec![
        agent(
            "claude",
            vec![finding(
                "C1",
                Severity::Critical,
                "SQL injection through the sort parameter",
                "`list_orders` passes the `sort` query parameter straight into \
                 `build_query`, which formats it into the ORDER BY clause.",
                &[("src/api/orders.rs", 120, 124), ("src/db/query.rs", 45, 45)],
            )],
        ),
        agent(
            "codex",
            vec![finding(
                "F1",
                Severity::Critical,
                "ORDER BY clause built by string formatting",
                "`build_query` uses format! with caller-controlled input.",
                &[("src/db/query.rs", 44, 46)],
            )],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["claude:C1", "codex:F1"]]),
        "{:#?}",
        report.findings
    );
}

/// Two different bugs on the same line share the place and nothing else.
#[test]
fn different_bugs_on_one_line_stay_apart() {
    let report = run(vec![
        agent(
            "claude",
            vec![finding(
                "I1",
                Severity::Important,
                "API key written to the info log",
                "The connection message interpolates the secret, so it lands in every log \
                 aggregator.",
                &[("src/client.rs", 15, 15)],
            )],
        ),
        agent(
            "codex",
            vec![finding(
                "F1",
                Severity::Suggestion,
                "Hard-coded timeout of 30 seconds",
                "Make the request timeout configurable.",
                &[("src/client.rs", 15, 15)],
            )],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["claude:I1"], &["codex:F1"]]),
        "{:#?}",
        report.findings
    );
}

/// Past `max_findings_per_agent`, an agent's least severe findings are left out of grouping
/// and the report says so; nothing is silently dropped from the record.
#[test]
fn findings_beyond_the_cap_are_named_in_the_report() {
    let many: Vec<Finding> = (0..12u32)
        .map(|index| {
            finding(
                &format!("F{index}"),
                if index < 3 {
                    Severity::Critical
                } else {
                    Severity::Suggestion
                },
                &format!("Problem number {index}"),
                "",
                &[("src/big.rs", index * 100 + 1, index * 100 + 1)],
            )
        })
        .collect();
    let results = vec![agent("codex", many)];
    let manifest = manifest(&results);
    let settings = ConsolidationSettings {
        max_findings_per_agent: 5,
        ..ConsolidationSettings::default()
    };
    let report = consolidate(&manifest, results, &settings, manifest.job.created_at);
    assert_eq!(report.findings.len(), 5);
    assert_eq!(
        report
            .findings
            .iter()
            .filter(|finding| finding.severity == Severity::Critical)
            .count(),
        3,
        "the most severe are kept"
    );
    assert!(
        report
            .omitted_content
            .iter()
            .any(|line| line.contains("12 findings") && line.contains("other 7")),
        "{:?}",
        report.omitted_content
    );
    assert_eq!(
        report.appendix[0].findings.len(),
        12,
        "the original output keeps all"
    );
}

/// The static reviewer comes first in the line-up and its wording shares nothing with the
/// first model's; only the second model's report links the two. Adding agents in line-up
/// order would leave the static reviewer's report alone; the groups are joined afterwards.
#[test]
fn a_report_linked_only_through_a_later_agent_still_joins() {
    let mut builtin = with_code(
        finding(
            "I2",
            Severity::Important,
            "Error swallowed by an empty handler",
            "The error is caught and discarded; failures become silent and the code \
             continues in an unknown state. Seen in `app/service.py` at line 8.",
            &[("app/service.py", 8, 9)],
        ),
        "    8 |     except Exception:\n    9 |         pass",
    );
    builtin.category = Some("error-handling".to_string());
    let mut stand_in = finding(
        "I1",
        Severity::Important,
        "A failed charge is silently ignored",
        "Found by the stand-in model.",
        &[("app/service.py", 8, 8)],
    );
    stand_in.locations[0].end_line = None;
    let report = run(vec![
        agent("builtin", vec![builtin]),
        agent("sonnet", vec![stand_in]),
        agent(
            "claude-code",
            vec![finding(
                "C1",
                Severity::Critical,
                "Failures of charge() are swallowed by except/pass",
                "A failed charge is silently ignored.",
                &[("app/service.py", 8, 9)],
            )],
        ),
    ]);
    assert_eq!(
        groups(&report),
        expected(&[&["builtin:I2", "claude-code:C1", "sonnet:I1"]]),
        "{:#?}",
        report.findings
    );
    let evidence = &report.findings[0].grouping;
    assert_eq!(evidence.len(), 2, "{evidence:#?}");
    assert!(evidence
        .iter()
        .all(|entry| entry.score >= entry.threshold && entry.group_mean >= 0.8 * entry.threshold));
}
