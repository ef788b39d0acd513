//! Turns the agents' results into one report: clusters findings that describe the same
//! problem, reconciles severities with recorded reasons, and computes the verdict and the
//! agent retro. Pure and deterministic: the same results in any order give the same report.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use deep_review_git::is_test_path;
use deep_review_protocol::{
    AgentResult, AgentRetro, AgentStatus, AttributedNote, ConsolidatedFinding,
    ConsolidatedObservation, DesignObservation, DroppedFinding, FailedAgent, FileReviewStatus,
    Finding, GroupingEvidence, Location, OriginalFinding, Reconciliation, Report, ReportHeader,
    ReviewJob, ReviewManifest, ReviewerLine, Severity, SeverityCounts, Verdict, VerdictDecision,
    VerificationOutcome, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::grouping::{self, Item, ItemBuilder};
use crate::similarity::{jaccard, overlap, tokens};
use crate::summary;

/// Thresholds and rules of consolidation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsolidationSettings {
    /// Line ranges in the same file this close (or overlapping) count as nearby.
    pub line_proximity: u32,
    /// The score (0–1) two findings need to merge: at one place, the geometric mean of how
    /// close their locations are and how alike their content is.
    pub merge_threshold: f64,
    /// Title similarity (0–1) that merges two findings wherever they point.
    pub text_similarity: f64,
    /// Findings consolidated per agent; beyond this an agent's least severe findings are left
    /// out of grouping (and named in the report), which bounds time and memory.
    pub max_findings_per_agent: usize,
    /// Agents of one family (e.g. two Claude models) count as one opinion for consensus.
    pub families_count_as_one: bool,
    /// Findings whose every location is test or mock code drop one severity level.
    pub lower_test_code_findings: bool,
    /// When each verdict applies.
    pub verdict: VerdictRules,
}

impl Default for ConsolidationSettings {
    fn default() -> Self {
        ConsolidationSettings {
            line_proximity: 5,
            merge_threshold: 0.45,
            text_similarity: 0.6,
            max_findings_per_agent: 500,
            families_count_as_one: false,
            lower_test_code_findings: true,
            verdict: VerdictRules::default(),
        }
    }
}

impl ConsolidationSettings {
    /// These settings with a repository's own severity rules applied.
    pub fn with_repository_rules(&self, rules: &deep_review_protocol::SeverityRules) -> Self {
        let mut settings = self.clone();
        if let Some(lower) = rules.lower_test_code_findings {
            settings.lower_test_code_findings = lower;
        }
        if let Some(minimum) = rules.rework_min_critical {
            settings.verdict.rework_min_critical = minimum;
        }
        if let Some(minimum) = rules.rework_min_important {
            settings.verdict.rework_min_important = Some(minimum);
        }
        if let Some(minimum) = rules.fixes_min_important {
            settings.verdict.fixes_min_important = minimum;
        }
        settings
    }
}

/// Verdict thresholds: the first rule that matches decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerdictRules {
    /// Rework when at least this many critical findings remain.
    pub rework_min_critical: usize,
    /// Rework also when at least this many important findings remain (off when absent).
    pub rework_min_important: Option<usize>,
    /// Merge with fixes when at least this many important findings remain.
    pub fixes_min_important: usize,
    /// Merge with fixes also when at least this many suggestions remain (off when absent).
    pub fixes_min_suggestion: Option<usize>,
}

impl Default for VerdictRules {
    fn default() -> Self {
        VerdictRules {
            rework_min_critical: 1,
            rework_min_important: None,
            fixes_min_important: 1,
            fixes_min_suggestion: None,
        }
    }
}

/// Builds the report of `manifest`'s review from `results`, as of `now`.
pub fn consolidate(
    manifest: &ReviewManifest,
    results: Vec<AgentResult>,
    settings: &ConsolidationSettings,
    now: DateTime<Utc>,
) -> Report {
    let job = &manifest.job;
    let settings = &settings.with_repository_rules(&job.policy.severity);
    let order = agent_order(manifest, &results);
    let rank_of = |agent: &str| {
        order
            .iter()
            .position(|name| name == agent)
            .unwrap_or(usize::MAX)
    };
    let mut results_by_agent: BTreeMap<usize, AgentResult> = BTreeMap::new();
    for result in results {
        results_by_agent
            .entry(rank_of(&result.agent))
            .or_insert(result);
    }
    let results: Vec<AgentResult> = results_by_agent.into_values().collect();
    let family_of: HashMap<String, String> = job
        .agents
        .iter()
        .map(|agent| {
            let family = agent.family.clone().unwrap_or_else(|| agent.name.clone());
            (agent.name.clone(), family)
        })
        .collect();
    let advisory_of: HashMap<String, String> = job
        .agents
        .iter()
        .filter_map(|agent| {
            agent
                .advisory
                .clone()
                .map(|reason| (agent.name.clone(), reason))
        })
        .collect();
    let display_of = |agent: &str| -> String {
        job.agents
            .iter()
            .find(|spec| spec.name == agent)
            .map(|spec| spec.display().to_string())
            .unwrap_or_else(|| agent.to_string())
    };

    let mut builder = ItemBuilder::new();
    let mut left_out: Vec<String> = Vec::new();
    for result in &results {
        let mut chosen: Vec<&Finding> = result.findings.iter().collect();
        if chosen.len() > settings.max_findings_per_agent {
            // The most severe are kept; the sort is stable, so the agent's order breaks ties.
            chosen.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
            chosen.truncate(settings.max_findings_per_agent);
            left_out.push(format!(
                "{} reported {} findings; only its {} most severe were consolidated \
                 (`max_findings_per_agent`); the other {} are in its original output in the appendix",
                display_of(&result.agent),
                result.findings.len(),
                settings.max_findings_per_agent,
                result.findings.len() - settings.max_findings_per_agent
            ));
        }
        for finding in chosen {
            builder.push(&result.agent, rank_of(&result.agent), finding);
        }
    }
    let (mut items, names) = builder.finish();
    items.sort_by_key(canonical_key);
    let groups = grouping::group(&items, &names, settings);

    let mut findings = Vec::new();
    let mut dropped_findings = Vec::new();
    let mut pending_reconciliations: Vec<(usize, Reconciliation)> = Vec::new();
    for group in groups {
        let members: Vec<&Item> = group.members.iter().map(|&index| &items[index]).collect();
        let line_up = LineUp {
            family_of: &family_of,
            advisory_of: &advisory_of,
            display_of: &display_of,
        };
        match reconcile(&members, group.evidence, settings, &line_up) {
            Outcome::Kept(finding, reconciliations, dropped) => {
                let position = findings.len();
                findings.push(*finding);
                dropped_findings.extend(dropped);
                pending_reconciliations.extend(
                    reconciliations
                        .into_iter()
                        .map(|reconciliation| (position, reconciliation)),
                );
            }
            Outcome::Dropped(dropped, reconciliations) => {
                dropped_findings.extend(dropped);
                pending_reconciliations.extend(
                    reconciliations
                        .into_iter()
                        .map(|reconciliation| (usize::MAX, reconciliation)),
                );
            }
        }
    }

    // Rank: severity, then agreement, then place, so ids read in order of importance.
    let mut positions: Vec<usize> = (0..findings.len()).collect();
    positions.sort_by(|&left, &right| {
        let (left, right) = (&findings[left], &findings[right]);
        right
            .severity
            .cmp(&left.severity)
            .then(right.consensus.cmp(&left.consensus))
            .then_with(|| {
                location_key(left.locations.first()).cmp(&location_key(right.locations.first()))
            })
            .then_with(|| left.title.cmp(&right.title))
    });
    let mut new_index = vec![0; findings.len()];
    let mut ordered = Vec::with_capacity(findings.len());
    let mut counters: BTreeMap<Severity, usize> = BTreeMap::new();
    for (rank, &position) in positions.iter().enumerate() {
        new_index[position] = rank;
        let mut finding = findings[position].clone();
        let counter = counters.entry(finding.severity).or_insert(0);
        *counter += 1;
        finding.id = format!("{}{}", finding.severity.letter(), counter);
        ordered.push(finding);
    }
    let findings = ordered;
    let mut reconciliations: Vec<Reconciliation> = pending_reconciliations
        .into_iter()
        .map(|(position, mut reconciliation)| {
            if position != usize::MAX {
                reconciliation.consolidated_id = Some(findings[new_index[position]].id.clone());
            }
            reconciliation
        })
        .collect();
    reconciliations.sort_by(|left, right| {
        rank_of(&left.agent)
            .cmp(&rank_of(&right.agent))
            .then_with(|| left.consolidated_id.cmp(&right.consolidated_id))
            .then_with(|| left.title.cmp(&right.title))
    });
    dropped_findings.sort_by(|left, right| {
        rank_of(&left.agent)
            .cmp(&rank_of(&right.agent))
            .then_with(|| left.finding.title.cmp(&right.finding.title))
    });

    let failed_agents = failed_agents(&order, &results, &manifest.expected_agents, &display_of);
    let partial = failed_agents.iter().any(|failed| failed.status.is_none());
    let verdict = match incomplete_because(job, &results) {
        Some(reason) => VerdictDecision {
            verdict: Verdict::Incomplete,
            reason,
        },
        None => decide_verdict(&findings, &settings.verdict, &failed_agents, &display_of),
    };
    let retro: Vec<AgentRetro> = results
        .iter()
        .map(|result| {
            agent_retro(
                result,
                &findings,
                &reconciliations,
                &dropped_findings,
                &display_of,
            )
        })
        .chain(
            // Agents with no result still get a row, so the table shows who is missing.
            manifest
                .expected_agents
                .iter()
                .filter(|agent| !results.iter().any(|result| &result.agent == *agent))
                .map(|agent| missing_agent_retro(agent, &display_of)),
        )
        .collect();
    let retro_totals = totals(&retro);

    let reviewers = order
        .iter()
        .map(|agent| {
            let spec = job.agents.iter().find(|spec| &spec.name == agent);
            let result = results.iter().find(|result| &result.agent == agent);
            ReviewerLine {
                agent: agent.clone(),
                display_name: display_of(agent),
                runner: spec
                    .map_or("external", |spec| spec.runner.as_str())
                    .to_string(),
                model: result
                    .and_then(|result| result.model.clone())
                    .or_else(|| spec.and_then(|spec| spec.model.clone())),
                effort: result
                    .and_then(|result| result.effort.clone())
                    .or_else(|| spec.and_then(|spec| spec.effort.clone())),
            }
        })
        .collect();
    let header = ReportHeader {
        date: now,
        repository: job.pull_request.repository.clone(),
        pull_request_number: job.pull_request.number,
        title: job.pull_request.title.clone(),
        round: job.round,
        author: job.pull_request.author.clone(),
        branch: job.pull_request.branch.clone(),
        commits: job.pull_request.commits.clone(),
        reviewed_sha: job.source.head_revision().map(str::to_string),
        reviewers,
        wall_clock_ms: u64::try_from((now - job.created_at).num_milliseconds()).unwrap_or(0),
    };

    let design_observations = merge_observations(&results);
    let attributed = |select: fn(&AgentResult) -> &Vec<String>| merge_notes(&results, select);
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        review_id: job.id.clone(),
        header,
        verdict,
        executive_summary: String::new(),
        partial,
        findings,
        design_observations,
        testing_gaps: attributed(|result| &result.testing_gaps),
        documentation_notes: attributed(|result| &result.documentation_notes),
        acknowledged_limitations: declined_items(job)
            .chain(attributed(|result| &result.acknowledged_limitations))
            .collect(),
        retro,
        retro_totals,
        reconciliations,
        dropped_findings,
        failed_agents,
        omitted_content: omitted_content(&results, &display_of)
            .into_iter()
            .chain(left_out)
            .collect(),
        notices: job.notices.clone(),
        repo_context_updates: attributed(|result| &result.process_notes.repo_context_updates),
        prompt_improvements: attributed(|result| &result.process_notes.prompt_improvements),
        appendix: results,
    };
    report.executive_summary =
        summary::executive_summary(&report, manifest.job.pull_request.body.as_deref());
    for (position, narrative) in summary::narratives(&report).into_iter().enumerate() {
        if let Some(row) = report.retro.get_mut(position) {
            row.narrative = narrative;
        }
    }
    report
}

/// Line-up order, then expected agents missing from it, then unknown agents by name.
fn agent_order(manifest: &ReviewManifest, results: &[AgentResult]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut push = |agent: &str| {
        if !order.iter().any(|known| known == agent) {
            order.push(agent.to_string());
        }
    };
    for agent in &manifest.job.agents {
        push(&agent.name);
    }
    for agent in &manifest.expected_agents {
        push(agent);
    }
    let mut unknown: Vec<&str> = results.iter().map(|result| result.agent.as_str()).collect();
    unknown.sort_unstable();
    for agent in unknown {
        push(agent);
    }
    order
}

fn location_key(location: Option<&Location>) -> (String, u32, u32) {
    match location {
        Some(location) => {
            let (start, end) = location.span().unwrap_or((0, 0));
            (location.path.clone(), start, end)
        }
        None => (String::new(), 0, 0),
    }
}

/// Sort key independent of input order.
fn canonical_key(
    item: &Item,
) -> (
    usize,
    std::cmp::Reverse<Severity>,
    (String, u32, u32),
    String,
    String,
) {
    (
        item.rank,
        std::cmp::Reverse(item.finding.severity),
        location_key(item.finding.locations.first()),
        item.finding.title.clone(),
        item.finding.body.clone(),
    )
}

enum Outcome {
    /// The finding, every reconciliation, and the reports of it that their own agents'
    /// verification refuted.
    Kept(
        Box<ConsolidatedFinding>,
        Vec<Reconciliation>,
        Vec<DroppedFinding>,
    ),
    Dropped(Vec<DroppedFinding>, Vec<Reconciliation>),
}

/// What reconciliation needs to know of the line-up.
struct LineUp<'a> {
    /// Each agent's family (itself when it has none).
    family_of: &'a HashMap<String, String>,
    /// The advisory agents, with why they are.
    advisory_of: &'a HashMap<String, String>,
    /// How the report names an agent.
    display_of: &'a dyn Fn(&str) -> String,
}

fn reconcile(
    members: &[&Item],
    grouping: Vec<GroupingEvidence>,
    settings: &ConsolidationSettings,
    line_up: &LineUp<'_>,
) -> Outcome {
    let (family_of, display_of) = (line_up.family_of, line_up.display_of);
    // A refutation is the refuting agent's own evidence against its own report: it drops
    // that agent's opinion, never another agent's. Only when every report was refuted by
    // its own agent is the problem gone.
    let (refuted, members): (Vec<&Item>, Vec<&Item>) = members.iter().partition(|item| {
        item.finding
            .verification
            .as_ref()
            .is_some_and(|verification| verification.outcome == VerificationOutcome::Refuted)
    });
    let mut dropped_findings = Vec::new();
    let mut refutation_notes = Vec::new();
    let mut reconciliations: Vec<Reconciliation> = Vec::new();
    for item in &refuted {
        let Some(verification) = item.finding.verification.as_ref() else {
            continue;
        };
        let command = &verification.command;
        let evidence = verification
            .reason
            .as_deref()
            .map(|reason| format!(": {reason}"))
            .unwrap_or_default();
        let (reason, note) = match &verification.sandbox {
            // deep-review's own run: evidence, not the agent's word.
            Some(_) => (
                format!(
                    "refuted by verification ({}; `{command}`){evidence}: a false positive",
                    verification.provenance()
                ),
                format!(
                    "verification ({}) refuted {}'s report of it{evidence}",
                    verification.provenance(),
                    display_of(&item.agent)
                ),
            ),
            None => (
                format!(
                    "refuted by {}'s own verification (`{command}`){evidence}: a false positive",
                    display_of(&item.agent)
                ),
                format!(
                    "{}'s verification (`{command}`) refuted its own report of it",
                    display_of(&item.agent)
                ),
            ),
        };
        refutation_notes.push(note);
        dropped_findings.push(DroppedFinding {
            agent: item.agent.clone(),
            finding: item.finding.clone(),
            reason: reason.clone(),
        });
        reconciliations.push(Reconciliation {
            agent: item.agent.clone(),
            original_id: item.finding.id.clone(),
            title: item.finding.title.clone(),
            from: item.finding.severity,
            to: None,
            consolidated_id: None,
            reason,
        });
    }
    if members.is_empty() {
        return Outcome::Dropped(dropped_findings, reconciliations);
    }
    let grouping: Vec<GroupingEvidence> = grouping
        .into_iter()
        .filter(|evidence| {
            members.iter().any(|item| item.agent == evidence.agent)
                && members
                    .iter()
                    .any(|item| item.agent == evidence.matched_agent)
        })
        .collect();
    let members = &members[..];
    let confirmed = members.iter().any(|item| {
        item.finding
            .verification
            .as_ref()
            .is_some_and(|verification| verification.outcome == VerificationOutcome::Confirmed)
    });

    // Advisory agents vote only where nobody else reported the problem.
    let counting: Vec<&Item> = members
        .iter()
        .copied()
        .filter(|item| !line_up.advisory_of.contains_key(&item.agent))
        .collect();
    let only_advisory = counting.is_empty();
    let voters: &[&Item] = if only_advisory { members } else { &counting };
    let not_counted: Vec<String> = members
        .iter()
        .filter(|item| !only_advisory && line_up.advisory_of.contains_key(&item.agent))
        .map(|item| display_of(&item.agent))
        .collect();
    // Majority vote; a tie goes to the lower severity.
    let mut votes: BTreeMap<Severity, usize> = BTreeMap::new();
    for item in voters {
        *votes.entry(item.finding.severity).or_insert(0) += 1;
    }
    let top = votes.values().copied().max().unwrap_or(0);
    let tied: Vec<Severity> = votes
        .iter()
        .filter(|(_, count)| **count == top)
        .map(|(severity, _)| *severity)
        .collect();
    let mut severity = tied.first().copied().unwrap_or(Severity::Suggestion);
    let mut because = if voters.len() == 1 && not_counted.is_empty() {
        String::new()
    } else if voters.len() == 1 {
        format!(
            "{} rated it {}, and {} is advisory here, so its rating does not count",
            display_of(&voters[0].agent),
            severity.label(),
            join_names(&not_counted)
        )
    } else if tied.len() > 1 {
        format!(
            "the agents split evenly between {}, and a tie goes to the lower severity",
            tied.iter()
                .rev()
                .map(|severity| severity.label())
                .collect::<Vec<_>>()
                .join(" and ")
        )
    } else {
        let advisory = if not_counted.is_empty() {
            String::new()
        } else {
            format!(" ({} advisory here, not counted)", join_names(&not_counted))
        };
        format!(
            "{top} of {} agents rated it {}{advisory}",
            voters.len(),
            severity.label()
        )
    };
    let highest = members
        .iter()
        .map(|item| item.finding.severity)
        .max()
        .unwrap_or(Severity::Suggestion);
    // A confirmed report keeps its severity: the run showed the problem as that agent
    // described it, whatever the others voted.
    let confirmed_severity = members
        .iter()
        .filter(|item| {
            item.finding
                .verification
                .as_ref()
                .is_some_and(|verification| verification.outcome == VerificationOutcome::Confirmed)
        })
        .map(|item| item.finding.severity)
        .max();
    if let Some(kept) = confirmed_severity {
        let floor = kept.max(highest.min(Severity::Important));
        if severity < floor {
            severity = floor;
            because = if floor == kept {
                format!(
                    "verification confirmed it as reported, so it keeps its severity {}",
                    kept.label()
                )
            } else {
                "verification confirmed it, and a confirmed finding stays at least Important"
                    .to_string()
            };
        }
    }
    // Only deep-review's own run, not an agent's word, lifts an advisory finding.
    let confirmed_by_run = members.iter().any(|item| {
        item.finding
            .verification
            .as_ref()
            .is_some_and(|verification| {
                verification.outcome == VerificationOutcome::Confirmed
                    && verification.sandbox.is_some()
            })
    });
    if only_advisory && severity > Severity::Suggestion && !confirmed_by_run {
        severity = Severity::Suggestion;
        let reasons: Vec<String> = members
            .iter()
            .filter_map(|item| line_up.advisory_of.get(&item.agent))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let names: Vec<String> = members
            .iter()
            .map(|item| display_of(&item.agent))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        because = format!(
            "only {} reported it, whose findings are advisory here ({}), so it stays a Suggestion unless verification confirms it",
            join_names(&names),
            reasons.join("; ")
        );
    }
    let all_in_tests = members.iter().all(|item| {
        !item.finding.locations.is_empty()
            && item
                .finding
                .locations
                .iter()
                .all(|location| is_test_path(&location.path))
    });
    if settings.lower_test_code_findings
        && all_in_tests
        && severity > Severity::Suggestion
        && !confirmed
    {
        severity = severity.lowered();
        because = if because.is_empty() {
            "it lies only in test or mock code, which calibrates one level lower".to_string()
        } else {
            format!("{because}, and it lies only in test or mock code, which calibrates one level lower")
        };
    }

    let representative = members
        .iter()
        .copied()
        .max_by(|left, right| {
            let score = |item: &Item| {
                (
                    item.finding.severity == severity,
                    item.finding
                        .verification
                        .as_ref()
                        .map(|verification| verification.outcome)
                        == Some(VerificationOutcome::Confirmed),
                    item.finding.body.len(),
                    std::cmp::Reverse(item.rank),
                )
            };
            score(left).cmp(&score(right))
        })
        .unwrap_or(members[0]);
    let mut by_rank: Vec<&Item> = members.to_vec();
    by_rank.sort_by_key(|item| item.rank);
    let agents: Vec<String> = by_rank.iter().map(|item| item.agent.clone()).collect();
    let consensus = if settings.families_count_as_one {
        agents
            .iter()
            .map(|agent| {
                family_of
                    .get(agent)
                    .cloned()
                    .unwrap_or_else(|| agent.clone())
            })
            .collect::<BTreeSet<_>>()
            .len()
    } else {
        agents.len()
    };
    let mut locations: Vec<Location> = Vec::new();
    for location in std::iter::once(representative)
        .chain(by_rank.iter().copied())
        .flat_map(|item| item.finding.locations.iter())
    {
        if !locations.contains(location) {
            locations.push(location.clone());
        }
    }
    let first_with = |pick: fn(&Finding) -> Option<String>| {
        pick(&representative.finding)
            .or_else(|| by_rank.iter().find_map(|item| pick(&item.finding)))
    };
    let verification = by_rank
        .iter()
        .filter_map(|item| item.finding.verification.clone())
        .min_by_key(|verification| match verification.outcome {
            VerificationOutcome::Confirmed => 0,
            VerificationOutcome::Inconclusive => 1,
            VerificationOutcome::Refuted => 2,
        });

    let changed: Vec<&Item> = by_rank
        .iter()
        .copied()
        .filter(|item| item.finding.severity != severity)
        .collect();
    let severity_note = (!changed.is_empty()).then(|| {
        let mut by_severity: BTreeMap<std::cmp::Reverse<Severity>, Vec<String>> = BTreeMap::new();
        for item in &by_rank {
            by_severity
                .entry(std::cmp::Reverse(item.finding.severity))
                .or_default()
                .push(display_of(&item.agent));
        }
        let ratings: Vec<String> = by_severity
            .iter()
            .map(|(severity, agents)| {
                format!("{} rated this {}", join_names(agents), severity.0.label())
            })
            .collect();
        format!(
            "{}. Consolidated as {} because {}.",
            ratings.join("; "),
            severity.label(),
            because
        )
    });
    reconciliations.extend(changed.iter().map(|item| Reconciliation {
        agent: item.agent.clone(),
        original_id: item.finding.id.clone(),
        title: item.finding.title.clone(),
        from: item.finding.severity,
        to: Some(severity),
        consolidated_id: None,
        reason: because.clone(),
    }));
    let severity_note = if refutation_notes.is_empty() {
        severity_note
    } else {
        let refutations = format!("{}; the other reports stand.", refutation_notes.join("; "));
        Some(match severity_note {
            Some(note) => format!("{note} {refutations}"),
            None => refutations,
        })
    };

    Outcome::Kept(
        Box::new(ConsolidatedFinding {
            id: String::new(),
            severity,
            title: representative.finding.title.clone(),
            body: representative.finding.body.clone(),
            category: first_with(|finding| finding.category.clone()),
            tag: representative
                .finding
                .tag
                .or_else(|| by_rank.iter().find_map(|item| item.finding.tag)),
            locations,
            code_excerpt: first_with(|finding| finding.code_excerpt.clone()),
            fix: first_with(|finding| finding.fix.clone()),
            agents,
            consensus,
            verification,
            originals: by_rank
                .iter()
                .map(|item| OriginalFinding {
                    agent: item.agent.clone(),
                    finding: item.finding.clone(),
                })
                .collect(),
            severity_note,
            grouping,
        }),
        reconciliations,
        dropped_findings,
    )
}

/// `A`, `A and B`, `A, B and C`.
pub(crate) fn join_names(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn failed_agents(
    order: &[String],
    results: &[AgentResult],
    expected: &[String],
    display_of: &dyn Fn(&str) -> String,
) -> Vec<FailedAgent> {
    order
        .iter()
        .filter_map(
            |agent| match results.iter().find(|result| &result.agent == agent) {
                Some(result) if result.status != AgentStatus::Completed => Some(FailedAgent {
                    agent: agent.clone(),
                    status: Some(result.status),
                    reason: result.error.clone().unwrap_or_else(|| {
                        format!("{} {}", display_of(agent), result.status.label())
                    }),
                }),
                None if expected.contains(agent) => Some(FailedAgent {
                    agent: agent.clone(),
                    status: None,
                    reason: "no result arrived before the review's deadline".to_string(),
                }),
                _ => None,
            },
        )
        .collect()
}

/// Why nothing was reviewed, when nothing was: no agent completed, or an inline diff held no
/// file change that could be read (prose, or a truncated paste).
fn incomplete_because(job: &ReviewJob, results: &[AgentResult]) -> Option<String> {
    if let deep_review_protocol::Source::InlineDiff { diff } = &job.source {
        // An empty diff never gets this far (the scheduler refuses it); one with text but
        // no file in it is what a paste of prose or a truncated diff gives.
        if !diff.trim().is_empty() && deep_review_git::parse_unified_diff(diff).is_empty() {
            return Some(
                "the diff could not be read: it holds no file changes in unified diff form, so nothing was reviewed"
                    .to_string(),
            );
        }
    }
    if !results
        .iter()
        .any(|result| result.status == AgentStatus::Completed)
    {
        return Some(if results.is_empty() {
            "no agent delivered a result, so nothing was reviewed".to_string()
        } else {
            "no agent completed its review, so nothing was reviewed".to_string()
        });
    }
    // Advisory agents cannot block, so a review only they completed cannot clear a change.
    let advisory = |agent: &str| {
        job.agents
            .iter()
            .any(|spec| spec.name == agent && spec.advisory.is_some())
    };
    if !results
        .iter()
        .any(|result| result.status == AgentStatus::Completed && !advisory(&result.agent))
    {
        return Some(
            "only advisory agents completed their review, and their findings cannot block, so the change was not reviewed with full weight"
                .to_string(),
        );
    }
    None
}

fn decide_verdict(
    findings: &[ConsolidatedFinding],
    rules: &VerdictRules,
    failed: &[FailedAgent],
    display_of: &dyn Fn(&str) -> String,
) -> VerdictDecision {
    let mut counts = SeverityCounts::default();
    for finding in findings {
        counts.add(finding.severity);
    }
    // Distinct titles, most frequent first among equals in report order, `×N` for repeats.
    let titles = |severity: Severity| -> String {
        let mut distinct: Vec<(String, usize)> = Vec::new();
        for finding in findings
            .iter()
            .filter(|finding| finding.severity == severity)
        {
            match distinct
                .iter_mut()
                .find(|(title, _)| title == &finding.title)
            {
                Some((_, count)) => *count += 1,
                None => distinct.push((finding.title.clone(), 1)),
            }
        }
        let more = if distinct.len() > 3 { "; …" } else { "" };
        let shown: Vec<String> = distinct
            .iter()
            .take(3)
            .map(|(title, count)| {
                if *count > 1 {
                    format!("{title} ×{count}")
                } else {
                    title.clone()
                }
            })
            .collect();
        format!("{}{more}", shown.join("; "))
    };
    let described = |count: usize, severity: Severity| -> String {
        let noun = match severity {
            Severity::Critical => "critical issue",
            Severity::Important => "important issue",
            Severity::Suggestion => "suggestion",
        };
        let more = if count > 3 { "; …" } else { "" };
        format!(
            "{count} {noun}{} ({}{more})",
            if count == 1 { "" } else { "s" },
            titles(severity)
        )
    };
    let (verdict, mut reason) = if counts.critical >= rules.rework_min_critical.max(1) {
        (
            Verdict::Rework,
            described(counts.critical, Severity::Critical),
        )
    } else if rules
        .rework_min_important
        .is_some_and(|minimum| counts.important >= minimum.max(1))
    {
        (
            Verdict::Rework,
            described(counts.important, Severity::Important),
        )
    } else if counts.important >= rules.fixes_min_important.max(1) {
        (
            Verdict::MergeWithFixes,
            described(counts.important, Severity::Important),
        )
    } else if rules
        .fixes_min_suggestion
        .is_some_and(|minimum| counts.suggestion >= minimum.max(1))
    {
        (
            Verdict::MergeWithFixes,
            described(counts.suggestion, Severity::Suggestion),
        )
    } else if counts.suggestion > 0 {
        (
            Verdict::Merge,
            format!(
                "no critical or important issues; {} suggestion{}",
                counts.suggestion,
                if counts.suggestion == 1 { "" } else { "s" }
            ),
        )
    } else {
        (Verdict::Merge, "no issues found".to_string())
    };
    if !failed.is_empty() {
        let names: Vec<String> = failed
            .iter()
            .map(|failed| display_of(&failed.agent))
            .collect();
        reason.push_str(&format!(
            " — without {} (did not complete)",
            join_names(&names)
        ));
    }
    VerdictDecision { verdict, reason }
}

fn agent_retro(
    result: &AgentResult,
    findings: &[ConsolidatedFinding],
    reconciliations: &[Reconciliation],
    dropped: &[DroppedFinding],
    display_of: &dyn Fn(&str) -> String,
) -> AgentRetro {
    let agent = &result.agent;
    let mut counts = SeverityCounts::default();
    for finding in &result.findings {
        counts.add(finding.severity);
    }
    let mine = |reconciliation: &&Reconciliation| &reconciliation.agent == agent;
    let coverage_misses: Vec<String> = result
        .files_reviewed
        .iter()
        .filter(|file| file.status == FileReviewStatus::ReviewedNoIssues)
        .filter(|file| {
            findings.iter().any(|finding| {
                finding.severity >= Severity::Important
                    && !finding.agents.contains(agent)
                    && finding
                        .locations
                        .iter()
                        .any(|location| location.path == file.path)
            })
        })
        .map(|file| file.path.clone())
        .collect();
    AgentRetro {
        agent: agent.clone(),
        display_name: display_of(agent),
        status: Some(result.status),
        duration_ms: result.duration_ms,
        findings: counts,
        tool_calls: result.usage.tool_calls.clone(),
        input_tokens: result.usage.input_tokens,
        output_tokens: result.usage.output_tokens,
        cost_usd: result.usage.cost_usd,
        design_observations: result.design_observations.len(),
        false_positives: dropped
            .iter()
            .filter(|dropped| &dropped.agent == agent)
            .count(),
        unique_insights: findings
            .iter()
            .filter(|finding| finding.agents.len() == 1 && &finding.agents[0] == agent)
            .count(),
        files_reviewed: result
            .files_reviewed
            .iter()
            .filter(|file| file.status != FileReviewStatus::Skipped)
            .count(),
        coverage_misses,
        downgraded: reconciliations
            .iter()
            .filter(mine)
            .filter(|reconciliation| reconciliation.to.is_some_and(|to| to < reconciliation.from))
            .count(),
        upgraded: reconciliations
            .iter()
            .filter(mine)
            .filter(|reconciliation| reconciliation.to.is_some_and(|to| to > reconciliation.from))
            .count(),
        dropped: reconciliations
            .iter()
            .filter(mine)
            .filter(|reconciliation| reconciliation.to.is_none())
            .count(),
        narrative: String::new(),
    }
}

fn missing_agent_retro(agent: &str, display_of: &dyn Fn(&str) -> String) -> AgentRetro {
    let mut row = empty_retro(agent, display_of(agent));
    row.status = None;
    row
}

fn empty_retro(agent: &str, display_name: String) -> AgentRetro {
    AgentRetro {
        agent: agent.to_string(),
        display_name,
        status: None,
        duration_ms: 0,
        findings: SeverityCounts::default(),
        tool_calls: BTreeMap::new(),
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: None,
        design_observations: 0,
        false_positives: 0,
        unique_insights: 0,
        files_reviewed: 0,
        coverage_misses: Vec::new(),
        downgraded: 0,
        upgraded: 0,
        dropped: 0,
        narrative: String::new(),
    }
}

fn totals(rows: &[AgentRetro]) -> AgentRetro {
    let mut total = empty_retro("total", "Total".to_string());
    for row in rows {
        total.duration_ms = total.duration_ms.max(row.duration_ms);
        total.findings.critical += row.findings.critical;
        total.findings.important += row.findings.important;
        total.findings.suggestion += row.findings.suggestion;
        for (tool, count) in &row.tool_calls {
            *total.tool_calls.entry(tool.clone()).or_insert(0) += count;
        }
        total.input_tokens += row.input_tokens;
        total.output_tokens += row.output_tokens;
        if let Some(cost) = row.cost_usd {
            total.cost_usd = Some(total.cost_usd.unwrap_or(0.0) + cost);
        }
        total.design_observations += row.design_observations;
        total.false_positives += row.false_positives;
        total.unique_insights += row.unique_insights;
        total.files_reviewed = total.files_reviewed.max(row.files_reviewed);
        for miss in &row.coverage_misses {
            if !total.coverage_misses.contains(miss) {
                total.coverage_misses.push(miss.clone());
            }
        }
        total.downgraded += row.downgraded;
        total.upgraded += row.upgraded;
        total.dropped += row.dropped;
    }
    total.narrative = "Duration is the slowest agent's (agents run in parallel); files reviewed is the widest coverage of any agent.".to_string();
    total
}

fn merge_observations(results: &[AgentResult]) -> Vec<ConsolidatedObservation> {
    let mut merged: Vec<(BTreeSet<String>, ConsolidatedObservation)> = Vec::new();
    for result in results {
        for observation in &result.design_observations {
            let title_tokens = tokens(&observation.title);
            let existing = merged.iter_mut().find(|(existing_tokens, existing)| {
                existing.kind == observation.kind
                    && !existing.agents.contains(&result.agent)
                    && (jaccard(existing_tokens, &title_tokens) >= 0.5
                        || overlap(existing_tokens, &title_tokens) >= 0.8)
            });
            match existing {
                Some((_, existing)) => {
                    existing.agents.push(result.agent.clone());
                    existing
                        .originals
                        .push((result.agent.clone(), observation.clone()));
                }
                None => merged.push((title_tokens, new_observation(&result.agent, observation))),
            }
        }
    }
    merged
        .into_iter()
        .map(|(_, observation)| observation)
        .collect()
}

fn new_observation(agent: &str, observation: &DesignObservation) -> ConsolidatedObservation {
    ConsolidatedObservation {
        kind: observation.kind,
        scope: observation.scope,
        title: observation.title.clone(),
        body: observation.body.clone(),
        agents: vec![agent.to_string()],
        originals: vec![(agent.to_string(), observation.clone())],
    }
}

/// Items declined in earlier rounds, first among the acknowledged limitations; they carry
/// no agent because the PR author, not an agent, declined them.
fn declined_items(job: &ReviewJob) -> impl Iterator<Item = AttributedNote> + '_ {
    job.declined.iter().map(|item| AttributedNote {
        text: format!("{item} (declined in an earlier round; do not re-suggest)"),
        agents: Vec::new(),
    })
}

/// Files some agent was not shown, one line each, naming the agents that missed them.
fn omitted_content(results: &[AgentResult], display_of: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut by_file: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for result in results {
        for file in &result.omitted_files {
            let agent = display_of(&result.agent);
            match by_file.iter_mut().find(|(path, _, _)| *path == file.path) {
                Some((_, _, agents)) => agents.push(agent),
                None => by_file.push((&file.path, &file.reason, vec![agent])),
            }
        }
    }
    by_file
        .into_iter()
        .map(|(path, reason, agents)| {
            format!("`{path}`: {reason} (not shown to {})", agents.join(", "))
        })
        .collect()
}

/// Merges near-identical remarks of different agents, keeping first-seen order (agents rank
/// their own lists, e.g. testing gaps by risk).
fn merge_notes(
    results: &[AgentResult],
    select: fn(&AgentResult) -> &Vec<String>,
) -> Vec<AttributedNote> {
    let mut merged: Vec<(BTreeSet<String>, AttributedNote)> = Vec::new();
    for result in results {
        for text in select(result) {
            let note_tokens = tokens(text);
            let existing = merged.iter_mut().find(|(existing_tokens, existing)| {
                !existing.agents.contains(&result.agent)
                    && jaccard(existing_tokens, &note_tokens) >= 0.6
            });
            match existing {
                Some((_, existing)) => existing.agents.push(result.agent.clone()),
                None => merged.push((
                    note_tokens,
                    AttributedNote {
                        text: text.clone(),
                        agents: vec![result.agent.clone()],
                    },
                )),
            }
        }
    }
    merged.into_iter().map(|(_, note)| note).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_protocol::{AgentSpec, ReviewJob, Source, Verification};

    fn manifest(agents: &[&str]) -> ReviewManifest {
        let now = Utc::now();
        ReviewManifest {
            job: ReviewJob::new(
                "r",
                now,
                Source::InlineDiff {
                    diff: String::new(),
                },
                Vec::new(),
                now,
            ),
            expected_agents: agents.iter().map(|agent| agent.to_string()).collect(),
        }
    }

    fn finding(severity: Severity, title: &str, path: &str, line: u32) -> Finding {
        Finding {
            id: None,
            severity,
            title: title.into(),
            body: String::new(),
            category: None,
            tag: None,
            locations: vec![Location::lines(path, line, line)],
            code_excerpt: None,
            fix: None,
            confidence: None,
            verification: None,
            reproduction: None,
        }
    }

    fn result(agent: &str, findings: Vec<Finding>) -> AgentResult {
        let mut result = AgentResult::new(agent);
        result.findings = findings;
        result
    }

    fn run(results: Vec<AgentResult>) -> Report {
        let agents: Vec<String> = results.iter().map(|result| result.agent.clone()).collect();
        let names: Vec<&str> = agents.iter().map(String::as_str).collect();
        consolidate(
            &manifest(&names),
            results,
            &ConsolidationSettings::default(),
            Utc::now(),
        )
    }

    fn sample() -> Vec<AgentResult> {
        vec![
            result(
                "a",
                vec![
                    finding(
                        Severity::Critical,
                        "Null pointer dereference in parser",
                        "src/parse.rs",
                        10,
                    ),
                    finding(
                        Severity::Suggestion,
                        "Rename helper for clarity",
                        "src/util.rs",
                        3,
                    ),
                ],
            ),
            result(
                "b",
                vec![
                    finding(
                        Severity::Important,
                        "Parser dereferences a null pointer",
                        "src/parse.rs",
                        12,
                    ),
                    finding(
                        Severity::Important,
                        "Unbounded retry loop",
                        "src/net.rs",
                        40,
                    ),
                ],
            ),
            result(
                "c",
                vec![finding(
                    Severity::Important,
                    "Null pointer dereference when parsing",
                    "src/parse.rs",
                    11,
                )],
            ),
        ]
    }

    #[test]
    fn merges_same_problem_and_takes_the_majority() {
        let report = run(sample());
        let parser = &report.findings[0];
        assert_eq!(parser.agents, vec!["a", "b", "c"]);
        assert_eq!(parser.severity, Severity::Important);
        assert_eq!(parser.id, "I1");
        assert_eq!(report.findings.len(), 3);
        assert_eq!(report.verdict.verdict, Verdict::MergeWithFixes);
        assert_eq!(report.reconciliations.len(), 1);
        assert!(
            report.reconciliations[0]
                .reason
                .contains("2 of 3 agents rated it Important"),
            "{:?}",
            report.reconciliations
        );
    }

    #[test]
    fn order_of_agents_and_findings_does_not_matter() {
        let expected = run(sample());
        let strip = |report: &Report| -> Vec<(String, Severity, Vec<String>, String)> {
            report
                .findings
                .iter()
                .map(|finding| {
                    (
                        finding.id.clone(),
                        finding.severity,
                        finding.agents.clone(),
                        finding.title.clone(),
                    )
                })
                .collect()
        };
        let permutations = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for permutation in permutations {
            let mut results: Vec<AgentResult> = permutation
                .iter()
                .map(|&index| sample()[index].clone())
                .collect();
            for result in &mut results {
                result.findings.reverse();
            }
            // Line-up order stays the same; only arrival order changes.
            let report = consolidate(
                &manifest(&["a", "b", "c"]),
                results,
                &ConsolidationSettings::default(),
                Utc::now(),
            );
            assert_eq!(
                strip(&report),
                strip(&expected),
                "permutation {permutation:?}"
            );
            assert_eq!(report.verdict, expected.verdict);
        }
    }

    #[test]
    fn one_agents_findings_never_merge_together() {
        let report = run(vec![result(
            "a",
            vec![
                finding(Severity::Important, "Race on shared counter", "src/a.rs", 5),
                finding(Severity::Important, "Race on shared counter", "src/a.rs", 6),
            ],
        )]);
        assert_eq!(report.findings.len(), 2);
    }

    #[test]
    fn tie_goes_to_the_lower_severity() {
        let report = run(vec![
            result(
                "a",
                vec![finding(
                    Severity::Critical,
                    "SQL injection in search",
                    "src/db.rs",
                    5,
                )],
            ),
            result(
                "b",
                vec![finding(
                    Severity::Important,
                    "SQL injection in search query",
                    "src/db.rs",
                    5,
                )],
            ),
        ]);
        assert_eq!(report.findings[0].severity, Severity::Important);
        assert!(report.findings[0]
            .severity_note
            .as_deref()
            .unwrap_or("")
            .contains("tie goes to the lower"));
    }

    #[test]
    fn verification_outranks_votes() {
        let mut confirmed = finding(Severity::Critical, "Deadlock on shutdown", "src/run.rs", 9);
        confirmed.verification = Some(Verification::by_agent(
            "cargo test shutdown",
            "hangs",
            VerificationOutcome::Confirmed,
        ));
        let report = run(vec![
            result("a", vec![confirmed]),
            result(
                "b",
                vec![finding(
                    Severity::Suggestion,
                    "Deadlock on shutdown path",
                    "src/run.rs",
                    9,
                )],
            ),
            result(
                "c",
                vec![finding(
                    Severity::Suggestion,
                    "Possible deadlock on shutdown",
                    "src/run.rs",
                    10,
                )],
            ),
        ]);
        assert_eq!(
            report.findings[0].severity,
            Severity::Critical,
            "a confirmed report keeps its severity against the votes"
        );
        assert!(
            report.findings[0]
                .severity_note
                .as_deref()
                .unwrap_or("")
                .contains("keeps its severity Critical"),
            "{:?}",
            report.findings[0].severity_note
        );

        // deep-review's own run refutes with its evidence in the reconciliation notes.
        let mut sandboxed = finding(Severity::Important, "Negative total", "src/cart.rs", 3);
        sandboxed.verification = Some(Verification {
            reason: Some("the proposed test `tests/neg.rs` passes at the head commit".into()),
            exit_code: Some(0),
            duration_ms: Some(2400),
            sandbox: Some("local".into()),
            ..Verification::by_agent("cargo test", "1 passed", VerificationOutcome::Refuted)
        });
        let report = run(vec![result("a", vec![sandboxed])]);
        assert!(report.findings.is_empty());
        let reason = &report.reconciliations[0].reason;
        assert!(
            reason.contains("run by deep-review in the local sandbox, exit 0, 2.4 s")
                && reason.contains("`tests/neg.rs` passes at the head commit")
                && reason.contains("false positive"),
            "{reason}"
        );
        assert_eq!(report.retro[0].false_positives, 1);

        let mut refuted = finding(Severity::Critical, "Overflow in sum", "src/math.rs", 3);
        refuted.verification = Some(Verification::by_agent(
            "cargo test sum",
            "ok",
            VerificationOutcome::Refuted,
        ));
        let report = run(vec![result("a", vec![refuted])]);
        assert!(report.findings.is_empty());
        assert_eq!(report.dropped_findings.len(), 1);
        assert_eq!(report.retro[0].false_positives, 1);
        assert_eq!(report.verdict.verdict, Verdict::Merge);
    }

    fn run_with_advisory(results: Vec<AgentResult>, advisory: &str) -> Report {
        let names: Vec<String> = results.iter().map(|result| result.agent.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut manifest = manifest(&names);
        manifest.job.agents = names
            .iter()
            .map(|name| AgentSpec {
                advisory: (*name == advisory).then(|| {
                    "the line-up policy demoted it in acme/api: 60% false positives".into()
                }),
                ..AgentSpec::new(*name, deep_review_protocol::RunnerKind::Builtin)
            })
            .collect();
        consolidate(
            &manifest,
            results,
            &ConsolidationSettings::default(),
            Utc::now(),
        )
    }

    #[test]
    fn an_advisory_agent_neither_blocks_alone_nor_outvotes_others() {
        // Alone, its Critical stays a Suggestion and the review can merge.
        let report = run_with_advisory(
            vec![
                result(
                    "noisy",
                    vec![finding(
                        Severity::Critical,
                        "Race in cache",
                        "src/cache.rs",
                        7,
                    )],
                ),
                result("careful", vec![]),
            ],
            "noisy",
        );
        assert_eq!(report.findings[0].severity, Severity::Suggestion);
        let note = report.findings[0].severity_note.clone().unwrap_or_default();
        assert!(
            note.contains("advisory here") && note.contains("60% false positives"),
            "{note}"
        );
        assert_eq!(report.verdict.verdict, Verdict::Merge);
        assert_eq!(report.reconciliations[0].to, Some(Severity::Suggestion));

        // With another agent on the same problem, only the other's rating counts.
        let report = run_with_advisory(
            vec![
                result(
                    "noisy",
                    vec![finding(
                        Severity::Critical,
                        "Race in cache",
                        "src/cache.rs",
                        7,
                    )],
                ),
                result(
                    "careful",
                    vec![finding(
                        Severity::Important,
                        "Race in the cache",
                        "src/cache.rs",
                        7,
                    )],
                ),
            ],
            "noisy",
        );
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].severity, Severity::Important);
        assert_eq!(
            report.findings[0].agents.len(),
            2,
            "its agreement still shows"
        );
        let note = report.findings[0].severity_note.clone().unwrap_or_default();
        assert!(
            note.contains("advisory here, so its rating does not count"),
            "{note}"
        );

        // deep-review's own confirmation lifts the cap; an agent's own claim does not.
        let mut claimed = finding(Severity::Critical, "Race in cache", "src/cache.rs", 7);
        claimed.verification = Some(Verification::by_agent(
            "cargo test cache",
            "failed",
            VerificationOutcome::Confirmed,
        ));
        let report = run_with_advisory(vec![result("noisy", vec![claimed.clone()])], "noisy");
        assert_eq!(report.findings[0].severity, Severity::Suggestion);
        claimed.verification = Some(Verification {
            sandbox: Some("local".into()),
            exit_code: Some(1),
            ..Verification::by_agent("cargo test cache", "failed", VerificationOutcome::Confirmed)
        });
        let report = run_with_advisory(vec![result("noisy", vec![claimed])], "noisy");
        assert_eq!(report.findings[0].severity, Severity::Critical);

        // When only the advisory agent completed, nothing may be concluded.
        let mut failed = result("careful", vec![]);
        failed.status = AgentStatus::Failed;
        let report = run_with_advisory(vec![result("noisy", vec![]), failed], "noisy");
        assert_eq!(
            report.verdict.verdict,
            Verdict::Incomplete,
            "{:?}",
            report.verdict
        );
    }

    #[test]
    fn findings_only_in_test_code_drop_one_level() {
        let report = run(vec![result(
            "a",
            vec![finding(Severity::Critical, "Flaky sleep", "tests/it.rs", 4)],
        )]);
        assert_eq!(report.findings[0].severity, Severity::Important);
        assert_eq!(report.reconciliations[0].to, Some(Severity::Important));
    }

    #[test]
    fn no_finding_is_lost() {
        let results = sample();
        let total: usize = results.iter().map(|result| result.findings.len()).sum();
        let report = run(results);
        let kept: usize = report
            .findings
            .iter()
            .map(|finding| finding.originals.len())
            .sum();
        assert_eq!(kept + report.dropped_findings.len(), total);
    }

    #[test]
    fn missing_agent_makes_a_partial_report_naming_it() {
        let report = consolidate(
            &manifest(&["a", "slow"]),
            vec![result("a", vec![])],
            &ConsolidationSettings::default(),
            Utc::now(),
        );
        assert!(report.partial);
        assert_eq!(report.failed_agents[0].agent, "slow");
        assert!(
            report.verdict.reason.contains("without slow"),
            "{}",
            report.verdict.reason
        );
        assert_eq!(
            report.retro.len(),
            2,
            "the missing agent still has a retro row"
        );
    }

    #[test]
    fn a_refutation_drops_only_the_refuting_agents_own_report() {
        let mut refuted = finding(
            Severity::Critical,
            "SQL injection in search",
            "src/db.rs",
            40,
        );
        refuted.verification = Some(Verification::by_agent(
            "cargo test search_escapes",
            "ok",
            VerificationOutcome::Refuted,
        ));
        let report = run(vec![
            result(
                "a",
                vec![finding(
                    Severity::Critical,
                    "SQL injection in search",
                    "src/db.rs",
                    40,
                )],
            ),
            result(
                "b",
                vec![finding(
                    Severity::Critical,
                    "SQL injection in search query",
                    "src/db.rs",
                    41,
                )],
            ),
            result("c", vec![refuted]),
        ]);
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        let kept = &report.findings[0];
        assert_eq!(kept.severity, Severity::Critical);
        assert_eq!(kept.agents, vec!["a", "b"]);
        assert!(
            kept.severity_note
                .as_deref()
                .is_some_and(|note| note.contains("refuted its own report")),
            "{:?}",
            kept.severity_note
        );
        assert_eq!(report.verdict.verdict, Verdict::Rework);
        assert_eq!(report.dropped_findings.len(), 1);
        assert_eq!(report.dropped_findings[0].agent, "c");
        let row = |agent: &str| report.retro.iter().find(|row| row.agent == agent).unwrap();
        assert_eq!(row("c").false_positives, 1);
        assert_eq!(row("a").false_positives, 0);
    }

    #[test]
    fn a_review_that_could_not_run_is_incomplete_never_merge() {
        let mut failed = result("a", vec![]);
        failed.status = AgentStatus::Failed;
        failed.error = Some("the model API answered 401".into());
        let mut timed_out = result("b", vec![]);
        timed_out.status = AgentStatus::TimedOut;
        let report = consolidate(
            &manifest(&["a", "b"]),
            vec![failed, timed_out],
            &ConsolidationSettings::default(),
            Utc::now(),
        );
        assert_eq!(report.verdict.verdict, Verdict::Incomplete);
        assert!(report.verdict.reason.contains("no agent completed"));

        let nobody = consolidate(
            &manifest(&["a"]),
            vec![],
            &ConsolidationSettings::default(),
            Utc::now(),
        );
        assert_eq!(nobody.verdict.verdict, Verdict::Incomplete);

        let mut prose = manifest(&["a"]);
        prose.job.source = deep_review_protocol::Source::InlineDiff {
            diff: "Please review my change, it fixes the login bug.\n".into(),
        };
        let report = consolidate(
            &prose,
            vec![result("a", vec![])],
            &ConsolidationSettings::default(),
            Utc::now(),
        );
        assert_eq!(report.verdict.verdict, Verdict::Incomplete);
        assert!(report.verdict.reason.contains("diff could not be read"));
    }

    #[test]
    fn one_family_counts_as_one_opinion_when_configured() {
        let mut line_up = manifest(&["opus", "sonnet", "gpt"]);
        for (name, family) in [("opus", "claude"), ("sonnet", "claude"), ("gpt", "openai")] {
            line_up.job.agents.push(AgentSpec {
                timeout: std::time::Duration::from_secs(60),
                command: vec!["x".into()],
                family: Some(family.to_string()),
                ..deep_review_protocol::AgentSpec::new(
                    name.to_string(),
                    deep_review_protocol::RunnerKind::Command,
                )
            });
        }
        let results = || {
            vec![
                result(
                    "opus",
                    vec![finding(
                        Severity::Important,
                        "SQL injection in search",
                        "src/db.rs",
                        5,
                    )],
                ),
                result(
                    "sonnet",
                    vec![finding(
                        Severity::Important,
                        "SQL injection in search query",
                        "src/db.rs",
                        6,
                    )],
                ),
                result(
                    "gpt",
                    vec![finding(
                        Severity::Important,
                        "Search query is injectable",
                        "src/db.rs",
                        5,
                    )],
                ),
            ]
        };
        let separate = consolidate(
            &line_up,
            results(),
            &ConsolidationSettings::default(),
            Utc::now(),
        );
        assert_eq!(separate.findings[0].consensus, 3);
        let settings = ConsolidationSettings {
            families_count_as_one: true,
            ..ConsolidationSettings::default()
        };
        let by_family = consolidate(&line_up, results(), &settings, Utc::now());
        assert_eq!(by_family.findings[0].agents, vec!["opus", "sonnet", "gpt"]);
        assert_eq!(
            by_family.findings[0].consensus, 2,
            "two Claude models are one opinion"
        );
    }

    #[test]
    fn notices_reach_the_report_and_its_summary() {
        let mut line_up = manifest(&["a"]);
        line_up.job.notices = vec![
            "Because the daily budget is spent, this review ran the cheaper fallback line-up (a)."
                .to_string(),
        ];
        let report = consolidate(
            &line_up,
            vec![result("a", vec![])],
            &ConsolidationSettings::default(),
            Utc::now(),
        );
        assert_eq!(report.notices, line_up.job.notices);
        assert!(
            report
                .executive_summary
                .contains("cheaper fallback line-up"),
            "{}",
            report.executive_summary
        );
        let markdown = crate::render::markdown::render(&report);
        assert!(
            markdown.contains("> **Note.** Because the daily budget is spent"),
            "{markdown}"
        );
    }

    #[test]
    fn declined_items_are_acknowledged_limitations() {
        let mut line_up = manifest(&["a"]);
        line_up.job.declined = vec!["Split the reconciler".to_string()];
        let mut limited = result("a", vec![]);
        limited.acknowledged_limitations = vec!["Temporary shim in controller.go".to_string()];
        let report = consolidate(
            &line_up,
            vec![limited],
            &ConsolidationSettings::default(),
            Utc::now(),
        );
        let texts: Vec<&str> = report
            .acknowledged_limitations
            .iter()
            .map(|note| note.text.as_str())
            .collect();
        assert_eq!(
            texts,
            vec![
                "Split the reconciler (declined in an earlier round; do not re-suggest)",
                "Temporary shim in controller.go"
            ]
        );
        assert!(report.acknowledged_limitations[0].agents.is_empty());
    }

    #[test]
    fn verdict_rules_are_configurable() {
        let mut settings = ConsolidationSettings::default();
        settings.verdict.rework_min_important = Some(2);
        let report = consolidate(
            &manifest(&["a", "b"]),
            sample().into_iter().take(2).collect(),
            &settings,
            Utc::now(),
        );
        assert_eq!(report.verdict.verdict, Verdict::Rework);
        assert!(
            report.verdict.reason.starts_with("2 important issues"),
            "{}",
            report.verdict.reason
        );
    }
}
