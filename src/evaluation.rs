//! `deep-review eval`: runs the configured line-up over changes with known bugs and scores
//! what each agent, and the consolidated report, found.
//!
//! A case is a folder with a `case.toml` and the change under review as a unified diff:
//!
//! ```toml
//! description = "An error swallowed by an empty handler"
//! source = "where the bug comes from (project, fix commit)"
//! title = "Add retries to the billing client"   # the change's title, optional
//! diff = "change.diff"                          # the default
//!
//! [[bugs]]
//! path = "billing/client.py"
//! start_line = 14
//! end_line = 15
//! description = "a failed charge is swallowed"
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use deep_review_consolidator::evaluation::{score_report, ExpectedBug, Score};
use deep_review_protocol::{PullRequestMetadata, ReviewRequest, Source, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};

use crate::settings::Settings;

/// `deep-review eval`.
#[derive(Debug, Args)]
pub struct EvaluationArguments {
    /// Folder of cases, one sub-folder with a `case.toml` each.
    #[arg(long, value_name = "DIR")]
    cases: PathBuf,
    /// How many lines apart a finding and a bug may be and still match.
    #[arg(long, default_value_t = 3, value_name = "LINES")]
    tolerance: u32,
    /// Also write the scores, per case and in total, as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep each case's report files in DIR/<case> (default: discarded).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run only these configured agents (repeatable).
    #[arg(long = "agent", value_name = "NAME")]
    agents: Vec<String>,
}

/// One case as its `case.toml` gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    description: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default = "default_diff")]
    diff: PathBuf,
    bugs: Vec<ExpectedBug>,
}

fn default_diff() -> PathBuf {
    PathBuf::from("change.diff")
}

/// The scores of one case.
#[derive(Debug, Serialize)]
struct CaseScores {
    case: String,
    description: String,
    consolidated: Score,
    agents: Vec<AgentScore>,
}

#[derive(Debug, Clone, Serialize)]
struct AgentScore {
    agent: String,
    #[serde(flatten)]
    score: Score,
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
struct Evaluation {
    tolerance: u32,
    cases: Vec<CaseScores>,
    total: Totals,
}

#[derive(Debug, Serialize)]
struct Totals {
    consolidated: Ratios,
    agents: Vec<AgentRatios>,
}

#[derive(Debug, Serialize)]
struct AgentRatios {
    agent: String,
    #[serde(flatten)]
    ratios: Ratios,
}

/// A score with its ratios spelled out, for readers of the JSON.
#[derive(Debug, Serialize)]
struct Ratios {
    #[serde(flatten)]
    score: Score,
    precision: f64,
    recall: f64,
    f1: f64,
}

impl From<Score> for Ratios {
    fn from(score: Score) -> Self {
        Ratios {
            score,
            precision: score.precision(),
            recall: score.recall(),
            f1: score.f1(),
        }
    }
}

/// Runs every case and prints the scores.
pub async fn evaluate(
    settings: &Settings,
    arguments: EvaluationArguments,
) -> anyhow::Result<ExitCode> {
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&arguments.cases)
        .with_context(|| format!("reading the cases folder {}", arguments.cases.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("case.toml").is_file())
        .collect();
    folders.sort();
    if folders.is_empty() {
        bail!(
            "{} holds no case: each case is a folder with a case.toml",
            arguments.cases.display()
        );
    }
    for name in &arguments.agents {
        if !settings.agents.iter().any(|agent| &agent.name == name) {
            bail!("no agent named `{name}` is configured");
        }
    }
    let scratch = tempfile::tempdir().context("creating a folder for the reports")?;
    let mut cases = Vec::new();
    for folder in &folders {
        let name = folder
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let case = read_case(folder)?;
        let diff_path = folder.join(&case.diff);
        let diff = std::fs::read_to_string(&diff_path)
            .with_context(|| format!("case {name}: reading {}", diff_path.display()))?;
        let request = ReviewRequest {
            schema_version: SCHEMA_VERSION,
            source: Source::InlineDiff { diff },
            pull_request: PullRequestMetadata {
                title: case
                    .title
                    .clone()
                    .or_else(|| Some(case.description.clone())),
                ..PullRequestMetadata::default()
            },
            round: None,
            agents: arguments.agents.clone(),
            declined: Vec::new(),
            policy: Default::default(),
            daily_usd_limit: None,
            notices: Vec::new(),
        };
        let out = match &arguments.out {
            Some(directory) => directory.join(&name),
            None => scratch.path().join(&name),
        };
        let (_job, report) = crate::embedded::review(settings, request, &out, false)
            .await
            .with_context(|| format!("case {name}: the review failed"))?;
        let (consolidated, agents) = score_report(&report, &case.bugs, arguments.tolerance);
        eprintln!(
            "{name}: {} of {} bugs found, {} of {} findings on a bug{}",
            consolidated.found_bugs,
            consolidated.bugs,
            consolidated.matched_findings,
            consolidated.findings,
            case.source
                .as_deref()
                .map(|source| format!(" ({source})"))
                .unwrap_or_default()
        );
        cases.push(CaseScores {
            case: name,
            description: case.description,
            consolidated,
            agents: agents
                .into_iter()
                .map(|(agent, score)| AgentScore { agent, score })
                .collect(),
        });
    }
    let evaluation = totals(arguments.tolerance, cases);
    print_table(&evaluation);
    if let Some(path) = &arguments.json {
        let text = serde_json::to_string_pretty(&evaluation).context("encoding the scores")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn read_case(folder: &Path) -> anyhow::Result<CaseFile> {
    let path = folder.join("case.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let case: CaseFile =
        toml::from_str(&text).with_context(|| format!("{} is not a valid case", path.display()))?;
    if case.bugs.is_empty() {
        bail!("{} names no bug ([[bugs]])", path.display());
    }
    Ok(case)
}

fn totals(tolerance: u32, cases: Vec<CaseScores>) -> Evaluation {
    let mut consolidated = Score::default();
    let mut agents: Vec<(String, Score)> = Vec::new();
    for case in &cases {
        consolidated.add(&case.consolidated);
        for agent in &case.agents {
            match agents.iter_mut().find(|(name, _)| name == &agent.agent) {
                Some((_, total)) => total.add(&agent.score),
                None => agents.push((agent.agent.clone(), agent.score)),
            }
        }
    }
    Evaluation {
        tolerance,
        cases,
        total: Totals {
            consolidated: consolidated.into(),
            agents: agents
                .into_iter()
                .map(|(agent, score)| AgentRatios {
                    agent,
                    ratios: score.into(),
                })
                .collect(),
        },
    }
}

fn print_table(evaluation: &Evaluation) {
    println!(
        "{:<24} {:>8} {:>8} {:>10} {:>9} {:>7} {:>6}",
        "", "findings", "on a bug", "bugs found", "precision", "recall", "F1"
    );
    let rows = evaluation
        .total
        .agents
        .iter()
        .map(|row| (row.agent.as_str(), &row.ratios))
        .chain(std::iter::once((
            "consolidated report",
            &evaluation.total.consolidated,
        )));
    for (name, ratios) in rows {
        let score = &ratios.score;
        println!(
            "{:<24} {:>8} {:>8} {:>10} {:>9.2} {:>7.2} {:>6.2}",
            name,
            score.findings,
            score.matched_findings,
            format!("{}/{}", score.found_bugs, score.bugs),
            ratios.precision,
            ratios.recall,
            ratios.f1
        );
    }
}
