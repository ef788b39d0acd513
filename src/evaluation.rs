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
//!
//! `--cases` also takes the Martian Code Review Bench's golden comments
//! (`offline/golden_comments/*.json`: pull requests, each with the issues a human found,
//! their severity and category, and no line): a file, or a folder holding such files. The
//! benchmark ships no code, so each pull request's diff is read from
//! `<diffs>/<owner>/<repo>/<number>.diff` (`--diffs`, by default a `diffs` folder next
//! to the JSON), or from GitHub through the `[github]` configuration when that file is
//! missing. Golden comments are matched by what findings say (see
//! `deep_review_consolidator::evaluation::describes`) or, with `--judge`, by a model (see
//! `crate::judge`); `--profile` chooses which of their categories count, as the
//! benchmark's scoring profiles do.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use deep_review_consolidator::evaluation::{score_report, ExpectedBug, Score, ScoringProfile};
use deep_review_protocol::{ReviewRequest, Source};
use serde::{Deserialize, Serialize};

use crate::settings::Settings;

/// `deep-review eval`.
#[derive(Debug, Args)]
pub struct EvaluationArguments {
    /// Folder of cases, one sub-folder with a `case.toml` each; or Martian Code Review
    /// Bench golden comments: a JSON file, or a folder of them.
    #[arg(long, value_name = "PATH")]
    cases: PathBuf,
    /// Where the diffs of golden-comment pull requests are, as
    /// `<DIR>/<owner>/<repo>/<number>.diff` (default: `diffs` next to each JSON file).
    /// A missing one is read from GitHub when `[github]` is configured.
    #[arg(long, value_name = "DIR")]
    diffs: Option<PathBuf>,
    /// Which golden-comment categories count (`strict`, `core`, `all`), as the Martian
    /// benchmark's profiles; a finding matching only a left-out one counts neither way.
    #[arg(long, value_enum, default_value = "core")]
    profile: ProfileArgument,
    /// How many lines apart a finding and a bug may be and still match.
    #[arg(long, default_value_t = 3, value_name = "LINES")]
    tolerance: u32,
    /// Also write the scores, per case and in total, as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Keep each case's report files in DIR/<case> (default: discarded).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Have this configured model agent judge which findings describe the bugs that name
    /// no place (golden comments), as the Martian benchmark's LLM judge does, instead of
    /// the strict lexical match. One request per case; its tokens are in the JSON.
    #[arg(long, value_name = "NAME")]
    judge: Option<String>,
    /// Run only these configured agents (repeatable).
    #[arg(long = "agent", value_name = "NAME")]
    agents: Vec<String>,
}

/// `--profile`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProfileArgument {
    Strict,
    Core,
    All,
}

impl From<ProfileArgument> for ScoringProfile {
    fn from(profile: ProfileArgument) -> Self {
        match profile {
            ProfileArgument::Strict => ScoringProfile::Strict,
            ProfileArgument::Core => ScoringProfile::Core,
            ProfileArgument::All => ScoringProfile::All,
        }
    }
}

/// One case, from either layout.
#[derive(Debug)]
struct Case {
    /// The folder's name, or `owner/repo#number`.
    name: String,
    description: String,
    source: Option<String>,
    title: Option<String>,
    change: Change,
    bugs: Vec<ExpectedBug>,
}

/// Where a case's change comes from.
#[derive(Debug)]
enum Change {
    /// A unified diff on disk.
    Diff(PathBuf),
    /// The files before the change (a `base/` folder) and the diff to apply to them:
    /// reviewed as a repository, so agents that read the checkout see whole files.
    Repository { base: PathBuf, diff: PathBuf },
    /// A pull request (its URL) with no diff on disk: read from GitHub.
    PullRequest { url: String, expected_at: PathBuf },
}

/// One pull request of a Martian Code Review Bench golden-comments file. Other fields
/// (the curators' notes) are ignored.
#[derive(Debug, Deserialize)]
struct GoldenPullRequest {
    pr_title: String,
    /// The pull request reviewed, often a benchmark fork of the original.
    url: String,
    /// The upstream pull request it was made from.
    #[serde(default)]
    original_url: Option<String>,
    comments: Vec<GoldenComment>,
}

#[derive(Debug, Deserialize)]
struct GoldenComment {
    comment: String,
    /// `Low`, `Medium`, `High` or `Critical`.
    #[serde(default)]
    severity: Option<String>,
    /// `bug`, `security`, `concurrency`, `data`, `api`, `perf`, `test_gap`, `doc_defect`,
    /// `style` or `speculative`.
    #[serde(default)]
    category: Option<String>,
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
    /// How findings were matched to this case's bugs.
    matched_by: String,
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
    profile: ScoringProfile,
    /// The judge model's requests and tokens, when one judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    judge: Option<crate::judge::JudgeUsage>,
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
    let profile = ScoringProfile::from(arguments.profile);
    let mut judge = match &arguments.judge {
        Some(name) => Some(crate::judge::Judge::from_settings(settings, name)?),
        None => None,
    };
    let cases_found = load_cases(&arguments.cases, arguments.diffs.as_deref(), profile)?;
    // Before any review runs: every pull request without a diff needs GitHub.
    if settings.github.is_none() {
        let missing: Vec<String> = cases_found
            .iter()
            .filter_map(|case| match &case.change {
                Change::PullRequest { url, expected_at } => Some(format!(
                    "{} (GitHub serves it at {url}.diff)",
                    expected_at.display()
                )),
                Change::Diff(_) | Change::Repository { .. } => None,
            })
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} pull request(s) have no diff on disk and there is no [github] configuration to read them from; save each diff at:\n  {}",
                missing.len(),
                missing.join("\n  ")
            );
        }
    }
    for name in &arguments.agents {
        if !settings.agents.iter().any(|agent| &agent.name == name) {
            bail!("no agent named `{name}` is configured");
        }
    }
    let scratch = tempfile::tempdir().context("creating a folder for the reports")?;
    let mut cases = Vec::new();
    for mut case in cases_found {
        let name = case.name.clone();
        let source = match &case.change {
            Change::Diff(diff_path) => Some(Source::InlineDiff {
                diff: std::fs::read_to_string(diff_path)
                    .with_context(|| format!("case {name}: reading {}", diff_path.display()))?,
            }),
            Change::Repository { base, diff } => {
                let repository = scratch
                    .path()
                    .join("repositories")
                    .join(deep_review_consolidator::safe_file_name(&name));
                build_repository(base, diff, &repository)
                    .await
                    .with_context(|| format!("case {name}: building its repository"))?;
                Some(Source::LocalRepo {
                    path: repository.display().to_string(),
                    base: "HEAD~1".to_string(),
                    head: "HEAD".to_string(),
                })
            }
            Change::PullRequest { .. } => None,
        };
        let mut request = match (source, &case.change) {
            (Some(source), _) => ReviewRequest::for_source(source),
            (None, Change::PullRequest { url, .. }) => {
                crate::commands::pull_request_request(settings, url, false)
                    .await
                    .with_context(|| format!("case {name}: reading {url} from GitHub"))?
            }
            (None, _) => bail!("case {name}: nothing to review"),
        };
        if request.pull_request.title.is_none() {
            request.pull_request.title = case
                .title
                .clone()
                .or_else(|| Some(case.description.clone()));
        }
        request.agents = arguments.agents.clone();
        let out = match &arguments.out {
            Some(directory) => directory.join(deep_review_consolidator::safe_file_name(&name)),
            None => scratch
                .path()
                .join(deep_review_consolidator::safe_file_name(&name)),
        };
        let (_job, report) = crate::embedded::review(settings, request, &out, false)
            .await
            .with_context(|| format!("case {name}: the review failed"))?;
        let mut matched_by = "place, or what findings say where a bug names no place".to_string();
        if let Some(judge) = judge.as_mut() {
            if case.bugs.iter().any(|bug| bug.path.is_none()) {
                matched_by = match judge.judge(&mut case.bugs, &report).await {
                    Ok(()) => "place, or the judge model where a bug names no place".to_string(),
                    Err(reason) => {
                        eprintln!("{name}: the judge failed ({reason}); its golden comments were matched by what findings say");
                        format!("place, or what findings say where a bug names no place (the judge failed: {reason})")
                    }
                };
            }
        }
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
            matched_by,
            consolidated,
            agents: agents
                .into_iter()
                .map(|(agent, score)| AgentScore { agent, score })
                .collect(),
        });
    }
    let mut evaluation = totals(arguments.tolerance, profile, cases);
    evaluation.judge = judge.map(|judge| judge.usage().clone());
    print_table(&evaluation);
    if let Some(path) = &arguments.json {
        let text = serde_json::to_string_pretty(&evaluation).context("encoding the scores")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The cases at `path`: case folders and golden-comment files, folders first, each in
/// name order.
fn load_cases(
    path: &Path,
    diffs: Option<&Path>,
    profile: ScoringProfile,
) -> anyhow::Result<Vec<Case>> {
    if path.is_file() {
        return read_golden_comments(path, diffs, profile);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading the cases folder {}", path.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    entries.sort();
    let mut cases = Vec::new();
    for folder in entries
        .iter()
        .filter(|entry| entry.join("case.toml").is_file())
    {
        cases.push(read_case(folder)?);
    }
    for file in entries.iter().filter(|entry| {
        entry.is_file()
            && entry
                .extension()
                .is_some_and(|extension| extension == "json")
    }) {
        cases.extend(read_golden_comments(file, diffs, profile)?);
    }
    if cases.is_empty() {
        bail!(
            "{} holds no case: each case is a folder with a case.toml, or a golden-comments JSON file",
            path.display()
        );
    }
    Ok(cases)
}

fn read_case(folder: &Path) -> anyhow::Result<Case> {
    let path = folder.join("case.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let case: CaseFile =
        toml::from_str(&text).with_context(|| format!("{} is not a valid case", path.display()))?;
    if case.bugs.is_empty() {
        bail!("{} names no bug ([[bugs]])", path.display());
    }
    Ok(Case {
        name: folder
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        description: case.description,
        source: case.source,
        title: case.title,
        change: if folder.join("base").is_dir() {
            Change::Repository {
                base: folder.join("base"),
                diff: folder.join(&case.diff),
            }
        } else {
            Change::Diff(folder.join(&case.diff))
        },
        bugs: case.bugs,
    })
}

/// Builds at `into` a repository of two commits: the files of `base`, then `diff`
/// applied to them with `git apply`; so a case is built from its patch, with no network.
async fn build_repository(base: &Path, diff: &Path, into: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    // git runs in `into`, so the case's paths must not be relative.
    let base =
        &std::fs::canonicalize(base).with_context(|| format!("reading {}", base.display()))?;
    let diff =
        &std::fs::canonicalize(diff).with_context(|| format!("reading {}", diff.display()))?;
    let git = |arguments: Vec<std::ffi::OsString>| async move {
        let output = tokio::process::Command::new("git")
            .arg("-C")
            .arg(into)
            .args([
                "-c",
                "user.name=deep-review eval",
                "-c",
                "user.email=eval@deep-review.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(&arguments)
            .output()
            .await
            .context("running git")?;
        if !output.status.success() {
            bail!(
                "git {} failed: {}",
                arguments
                    .iter()
                    .map(|argument| argument.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    };
    let words =
        |text: &str| -> Vec<std::ffi::OsString> { text.split(' ').map(Into::into).collect() };
    git(words("init -q")).await?;
    // The base is committed straight from the case's folder, then checked out here.
    let mut add: Vec<std::ffi::OsString> = vec!["--work-tree".into(), base.as_os_str().into()];
    add.extend(words("add -A"));
    git(add).await?;
    git(words("commit -q -m base")).await?;
    git(words("reset -q --hard")).await?;
    let mut apply = words("apply --index");
    apply.push(diff.as_os_str().into());
    git(apply)
        .await
        .with_context(|| format!("{} does not apply to {}", diff.display(), base.display()))?;
    git(words("commit -q -m change")).await?;
    Ok(())
}

/// The pull requests of a Martian Code Review Bench golden-comments file as cases.
fn read_golden_comments(
    file: &Path,
    diffs: Option<&Path>,
    profile: ScoringProfile,
) -> anyhow::Result<Vec<Case>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let pull_requests: Vec<GoldenPullRequest> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a golden-comments file (a JSON array of {{pr_title, url, comments: [{{comment, severity, category}}]}})",
            file.display()
        )
    })?;
    let diffs = match diffs {
        Some(diffs) => diffs.to_path_buf(),
        None => file.parent().unwrap_or(Path::new(".")).join("diffs"),
    };
    let mut cases = Vec::new();
    for (index, pull_request) in pull_requests.into_iter().enumerate() {
        let (repository, number) =
            deep_review_github::RepositoryName::parse_pull_request(&pull_request.url)
                .with_context(|| {
                    format!(
                        "{}: pull request {} (\"{}\") has no pull request URL",
                        file.display(),
                        index + 1,
                        pull_request.pr_title
                    )
                })?;
        if pull_request.comments.is_empty() {
            bail!(
                "{}: {} has no golden comment",
                file.display(),
                pull_request.url
            );
        }
        let name = format!("{repository}#{number}");
        let diff = diffs
            .join(repository.to_string())
            .join(format!("{number}.diff"));
        let change = if diff.is_file() {
            Change::Diff(diff)
        } else {
            Change::PullRequest {
                url: pull_request.url.clone(),
                expected_at: diff,
            }
        };
        let bugs = pull_request
            .comments
            .into_iter()
            .map(|comment| ExpectedBug {
                path: None,
                start_line: None,
                end_line: None,
                other_lines: Vec::new(),
                excluded: profile.excludes(comment.category.as_deref()),
                judged: None,
                description: match &comment.severity {
                    Some(severity) => format!("{} ({severity})", comment.comment),
                    None => comment.comment,
                },
                category: comment.category,
            })
            .collect();
        cases.push(Case {
            name,
            description: pull_request.pr_title.clone(),
            source: Some(
                pull_request
                    .original_url
                    .unwrap_or_else(|| pull_request.url.clone()),
            ),
            title: Some(pull_request.pr_title),
            change,
            bugs,
        });
    }
    Ok(cases)
}

fn totals(tolerance: u32, profile: ScoringProfile, cases: Vec<CaseScores>) -> Evaluation {
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
        profile,
        judge: None,
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
