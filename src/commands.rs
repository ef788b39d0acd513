//! The `review` and `consolidate` subcommands.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, ValueEnum};
use deep_review_consolidator::{consolidate as build_report, FilesPublisher, Publisher};
use deep_review_git::Repository;
use deep_review_github::{GitHub, GitHubPublisher, GitHubSettings, RepositoryName};
use deep_review_protocol::{
    parse_agent_result, parse_json, AgentResult, PullRequestMetadata, Report, ReviewJob,
    ReviewManifest, ReviewRequest, SeverityCounts, Source, Verdict,
};

use crate::embedded;
use crate::settings::Settings;

/// Exit code when `--fail-on` matches the verdict (1 is an error, 2 a usage error).
const VERDICT_EXIT_CODE: u8 = 3;

/// Exit code when the review is incomplete: no agent completed, or the diff held nothing
/// that could be read.
const INCOMPLETE_EXIT_CODE: u8 = 4;

/// Which verdicts make the command fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 3 when the verdict is Rework.
    Rework,
    /// Exit 3 when the verdict is Rework or Merge with fixes.
    Fixes,
}

/// What to review: shared by `review` and `submit`.
#[derive(Debug, Args)]
pub struct ChangeArguments {
    /// The git repository to review.
    #[arg(long, default_value = ".", value_name = "PATH")]
    repo: PathBuf,
    /// Base revision: the review covers what `--head` adds since its merge base with this
    /// (default: the head's parent, or nothing for a root commit).
    #[arg(long, value_name = "REV")]
    base: Option<String>,
    /// Head revision: the commit reviewed.
    #[arg(long, default_value = "HEAD", value_name = "REV")]
    head: String,
    /// Review a GitHub pull request (`owner/repo#42` or its URL) instead of a local
    /// change; needs the [github] table. Workers clone the repository.
    #[arg(
        long,
        value_name = "OWNER/REPO#N",
        conflicts_with_all = ["diff", "base", "repository", "pull_request", "title"]
    )]
    github: Option<String>,
    /// Review a unified diff from FILE (`-` for stdin) instead of a repository.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["base", "head"])]
    diff: Option<PathBuf>,
    /// Run only these configured agents (repeatable).
    #[arg(long = "agent", value_name = "NAME")]
    agents: Vec<String>,
    /// Title for the report (default: the head commit's subject).
    #[arg(long)]
    title: Option<String>,
    /// Repository name (`owner/repo`) for the header and round tracking.
    #[arg(long, value_name = "OWNER/REPO")]
    repository: Option<String>,
    /// Pull request number: a new review of the same PR is its next round and supersedes
    /// the unfinished older one.
    #[arg(long = "pr", value_name = "NUMBER", requires = "repository")]
    pull_request: Option<u64>,
    /// An item declined in an earlier round: listed under acknowledged limitations, not to
    /// be suggested again (repeatable).
    #[arg(long = "declined", value_name = "TEXT")]
    declined: Vec<String>,
    /// Exit with code 3 when the verdict is this bad.
    #[arg(long, value_enum, value_name = "VERDICT")]
    pub fail_on: Option<FailOn>,
}

/// `deep-review review`.
#[derive(Debug, Args)]
pub struct ReviewArguments {
    #[command(flatten)]
    change: ChangeArguments,
    /// Directory for report.md, report.html, report.json and agents/.
    #[arg(long, default_value = "deep-review-report", value_name = "DIR")]
    out: PathBuf,
    /// Do not show live progress.
    #[arg(long)]
    quiet: bool,
    /// Also post the report on the pull request (the sticky comment, inline comments and
    /// the check run), with --github.
    #[arg(long, requires = "github")]
    publish: bool,
}

/// `deep-review consolidate`.
#[derive(Debug, Args)]
pub struct ConsolidateArguments {
    /// Directory of agent results, one `<agent>.json` per agent.
    #[arg(long, value_name = "DIR")]
    agents_dir: PathBuf,
    /// Directory for the rebuilt report.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The review job (`review.json`); default: the one beside the agents directory, if any.
    #[arg(long, value_name = "FILE")]
    job: Option<PathBuf>,
    /// Exit with code 3 when the verdict is this bad.
    #[arg(long, value_enum, value_name = "VERDICT")]
    fail_on: Option<FailOn>,
}

/// The review request `change` describes, with the configured line-up (or the selected
/// part of it).
pub async fn build_request(
    settings: &Settings,
    change: &ChangeArguments,
) -> anyhow::Result<ReviewRequest> {
    // Checked here too, so a misspelt name fails before anything is sent or cloned.
    for name in &change.agents {
        if !settings.agents.iter().any(|agent| &agent.name == name) {
            let known: Vec<&str> = settings
                .agents
                .iter()
                .map(|agent| agent.name.as_str())
                .collect();
            bail!(
                "no agent named `{name}` is configured (configured: {})",
                known.join(", ")
            );
        }
    }
    let agents = change.agents.clone();
    if let Some(reference) = &change.github {
        let mut request = pull_request_request(settings, reference, true).await?;
        if !change.agents.is_empty() {
            request.agents = agents;
        }
        request.declined = change.declined.clone();
        return Ok(request);
    }
    let source = match &change.diff {
        Some(path) => Source::InlineDiff {
            diff: read_diff(path)?,
        },
        None => {
            let base = match &change.base {
                Some(base) => base.clone(),
                None => {
                    Repository::open(&change.repo)
                        .await?
                        .parent_or_empty_tree(&change.head)
                        .await?
                }
            };
            // An absolute path, so services started elsewhere read the same directory.
            let path = std::fs::canonicalize(&change.repo)
                .with_context(|| format!("reading {}", change.repo.display()))?;
            Source::LocalRepo {
                path: path.display().to_string(),
                base,
                head: change.head.clone(),
            }
        }
    };
    let mut request = ReviewRequest {
        pull_request: PullRequestMetadata {
            title: change.title.clone(),
            repository: change.repository.clone(),
            number: change.pull_request,
            ..PullRequestMetadata::default()
        },
        agents,
        declined: change.declined.clone(),
        ..ReviewRequest::for_source(source)
    };
    apply_repository_config(settings, &mut request).await?;
    Ok(request)
}

/// Applies a local repository's `.deep-review.toml`, read at the base revision as the
/// GitHub integration reads it from the default branch (the change under review must not
/// choose its own rules), within the operator's limits. Agents named on the command line
/// win over the file's.
async fn apply_repository_config(
    settings: &Settings,
    request: &mut ReviewRequest,
) -> anyhow::Result<()> {
    use deep_review_github::repository_config;
    let Source::LocalRepo { path, base, .. } = &request.source else {
        return Ok(());
    };
    let limits = settings
        .github
        .as_ref()
        .map(|github| github.repository_config.clone())
        .unwrap_or_default();
    if !limits.enabled {
        return Ok(());
    }
    let repository = Repository::open(path).await?;
    let Some(text) = repository
        .file_at(base, repository_config::FILE_NAME)
        .await?
    else {
        return Ok(());
    };
    match repository_config::parse(&text) {
        Ok(config) => {
            repository_config::apply(&config, &settings.agents, &limits).apply_to(request)
        }
        Err(error) => request.notices.push(format!(
            "{error} (at the base revision). The operator's configuration applied instead."
        )),
    }
    Ok(())
}

/// The GitHub connection the configuration describes.
fn github_of(settings: &Settings) -> anyhow::Result<(GitHub, &GitHubSettings)> {
    let Some(github_settings) = &settings.github else {
        bail!("--github needs the [github] table in the configuration (api_url and credentials)");
    };
    Ok((GitHub::connect(github_settings)?, github_settings))
}

/// The request for the pull request `reference` (`owner/repo#N` or its URL) as GitHub
/// gives it: metadata, the change, and the repository's `.deep-review.toml`. With
/// `next_round`, it is the round after the one its sticky comment shows (read with the
/// same repository client); otherwise its round is left to the scheduler.
pub async fn pull_request_request(
    settings: &Settings,
    reference: &str,
    next_round: bool,
) -> anyhow::Result<ReviewRequest> {
    let (repository, number) = RepositoryName::parse_pull_request(reference)?;
    let (github, github_settings) = github_of(settings)?;
    let client = github.for_repository(&repository, None).await?;
    let ingested = deep_review_github::ingest::pull_request(
        &client,
        &repository,
        number,
        github_settings,
        &settings.agents,
    )
    .await?;
    if !ingested.open {
        eprintln!("note: {repository}#{number} is closed; reviewing it anyway");
    }
    let mut request = ingested.request;
    if next_round {
        let previous =
            deep_review_github::published_round(&github, &client, &repository, number).await?;
        request.round = previous.map(|round| round + 1);
    }
    Ok(request)
}

/// Runs an embedded review.
pub async fn review(settings: &Settings, arguments: ReviewArguments) -> anyhow::Result<ExitCode> {
    let request = build_request(settings, &arguments.change).await?;
    let (job, report) =
        embedded::review(settings, request, &arguments.out, !arguments.quiet).await?;
    summarise(&report, &arguments.out, settings);
    if arguments.publish {
        // After the files are written: a GitHub failure loses nothing.
        let (github, github_settings) = github_of(settings)?;
        GitHubPublisher::new(std::sync::Arc::new(github), github_settings.clone())
            .post_report(&ReviewManifest::for_job(&job), &report)
            .await
            .with_context(|| {
                format!(
                    "the report is in {}, but posting it on GitHub failed",
                    arguments.out.display()
                )
            })?;
        println!(
            "Posted on {}#{}",
            job.pull_request.repository.as_deref().unwrap_or_default(),
            job.pull_request.number.unwrap_or_default()
        );
    }
    Ok(exit_code(&report, arguments.change.fail_on))
}

/// Rebuilds a report from saved agent results.
pub async fn consolidate(
    settings: &Settings,
    arguments: ConsolidateArguments,
) -> anyhow::Result<ExitCode> {
    let results = read_agent_results(&arguments.agents_dir)?;
    let job_path = arguments.job.clone().or_else(|| {
        let beside = arguments.agents_dir.parent()?.join("review.json");
        beside.is_file().then_some(beside)
    });
    let manifest = match job_path {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let job: ReviewJob = parse_json("review job", &text)
                .with_context(|| format!("in {}", path.display()))?;
            ReviewManifest::for_job(&job)
        }
        None => synthesised_manifest(&results),
    };
    let report = build_report(&manifest, results, &settings.consolidation, Utc::now());
    FilesPublisher::into_directory(&arguments.out, settings.output.formats.clone())
        .with_secret_masking(deep_review_worker::mask_secrets)
        .publish(&manifest, &report)
        .await?;
    summarise(&report, &arguments.out, settings);
    Ok(exit_code(&report, arguments.fail_on))
}

/// The diff at `path` (`-` for stdin). Bytes that are not UTF-8 (a latin-1 file, a binary
/// blob pasted in) are replaced with U+FFFD rather than refusing the whole diff, and the
/// files they were in are named on stderr.
fn read_diff(path: &Path) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the diff from standard input")?;
    } else {
        bytes =
            std::fs::read(path).with_context(|| format!("reading the diff {}", path.display()))?;
    }
    Ok(match String::from_utf8(bytes) {
        Ok(diff) => diff,
        Err(error) => {
            let diff = String::from_utf8_lossy(error.as_bytes()).into_owned();
            let files: Vec<String> = deep_review_git::split_by_file(&diff)
                .into_iter()
                .filter(|section| section.text.contains('\u{FFFD}'))
                .map(|section| section.path)
                .collect();
            eprintln!(
                "note: the diff has bytes that are not UTF-8 (in {}); they are shown as \u{FFFD}",
                if files.is_empty() {
                    "text outside any file".to_string()
                } else {
                    files.join(", ")
                }
            );
            diff
        }
    })
}

/// Every `*.json` in `directory`, parsed strictly; the first bad file stops the command
/// with its name and the failing field, so no agent silently goes missing.
fn read_agent_results(directory: &Path) -> anyhow::Result<Vec<AgentResult>> {
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("reading the agents directory {}", directory.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{} holds no agent results (*.json)", directory.display());
    }
    let mut results: Vec<AgentResult> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let result = parse_agent_result(&text)
            .with_context(|| format!("{} is not a valid agent result", path.display()))?;
        if let Some(earlier) = results.iter().find(|earlier| earlier.agent == result.agent) {
            bail!(
                "{} repeats agent `{}`, already read from another file",
                path.display(),
                earlier.agent
            );
        }
        results.push(result);
    }
    Ok(results)
}

/// A job for results that came without one: every result's agent was expected.
fn synthesised_manifest(results: &[AgentResult]) -> ReviewManifest {
    let now = Utc::now();
    let created_at = results
        .iter()
        .filter_map(|result| result.started_at)
        .min()
        .unwrap_or(now);
    let job = ReviewJob::new(
        format!("consolidated-{}", now.format("%Y%m%d-%H%M%S")),
        created_at,
        Source::InlineDiff {
            diff: String::new(),
        },
        Vec::new(),
        now,
    );
    ReviewManifest {
        expected_agents: results.iter().map(|result| result.agent.clone()).collect(),
        job,
    }
}

/// Prints the verdict, counts, failed agents and where the files are.
pub fn summarise(report: &Report, out: &Path, settings: &Settings) {
    println!(
        "Verdict: {} — {}",
        report.verdict.verdict.label(),
        report.verdict.reason
    );
    let mut counts = SeverityCounts::default();
    for finding in &report.findings {
        counts.add(finding.severity);
    }
    println!(
        "Findings: {} critical, {} important, {} suggestions",
        counts.critical, counts.important, counts.suggestion
    );
    for failed in &report.failed_agents {
        println!("Agent {} did not complete: {}", failed.agent, failed.reason);
    }
    let files: Vec<String> = settings
        .output
        .formats
        .iter()
        .map(|format| out.join(format.file_name()).display().to_string())
        .collect();
    println!("Report: {}", files.join(", "));
}

/// 0; 3 when the verdict matches `--fail-on`; 4 when the review is incomplete (nothing
/// was reviewed), whatever `--fail-on` says, so no gate passes a review that did not run.
pub fn exit_code(report: &Report, fail_on: Option<FailOn>) -> ExitCode {
    if report.verdict.verdict == Verdict::Incomplete {
        return ExitCode::from(INCOMPLETE_EXIT_CODE);
    }
    let failing = matches!(
        (fail_on, report.verdict.verdict),
        (Some(FailOn::Rework), Verdict::Rework)
            | (
                Some(FailOn::Fixes),
                Verdict::Rework | Verdict::MergeWithFixes
            )
    );
    if failing {
        ExitCode::from(VERDICT_EXIT_CODE)
    } else {
        ExitCode::SUCCESS
    }
}
