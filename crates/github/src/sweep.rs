//! Org sweeps: the open pull requests of an organisation that have no review yet.

use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Deserialize;

use crate::client::all_pages;
use crate::webhook::ReviewTrigger;
use crate::{GitHub, GitHubError, GitHubSettings, RepositoryName};

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The organisation.
    pub organisation: String,
    /// Only repositories whose name (without the owner) matches.
    pub repository_filter: Option<Regex>,
    /// Only pull requests updated since then.
    pub since: Option<DateTime<Utc>>,
    /// Reviews started by the sweep that may be unfinished at once.
    pub max_in_flight: usize,
    /// How often to look whether a running review finished, when at the limit.
    pub poll_interval: Duration,
    /// Whether the sweep returns only once every review it scheduled is finished (a cron
    /// job then knows the sweep's work is done), rather than right after scheduling.
    pub wait_for_all: bool,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Open pull requests found in the matching repositories.
    pub open: usize,
    /// Those whose head already has a deep-review check run (done or running).
    pub already_reviewed: usize,
    /// `owner/repo#N` of each review scheduled.
    pub scheduled: Vec<String>,
    /// `owner/repo#N: reason` of each pull request that could not be scheduled.
    pub failed: Vec<String>,
}

/// The pull requests a sweep found.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// Open pull requests in the matching repositories (drafts and stale ones excluded).
    pub open: usize,
    /// Those already reviewed at their head.
    pub already_reviewed: usize,
    /// Those to review.
    pub to_review: Vec<Candidate>,
}

/// An open pull request a sweep reviews.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// What to schedule.
    pub trigger: ReviewTrigger,
    /// deep-review check runs on its head that started long ago and never finished; they
    /// are closed once the new review is scheduled, so none stays "in progress" for ever.
    pub abandoned_check_runs: Vec<u64>,
}

#[derive(Deserialize)]
struct RepositoryJson {
    name: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize)]
struct HeadJson {
    sha: String,
}

#[derive(Deserialize)]
struct PullJson {
    number: u64,
    #[serde(default)]
    draft: bool,
    updated_at: DateTime<Utc>,
    head: HeadJson,
}

/// Lists the organisation's repositories and their open pull requests, and keeps those
/// whose head commit has no deep-review check run, or only ones abandoned long ago: GitHub
/// itself records what was reviewed, so a sweep needs no state of its own and never
/// repeats a finished review.
pub async fn candidates(
    github: &GitHub,
    settings: &GitHubSettings,
    options: &SweepOptions,
) -> Result<Candidates, GitHubError> {
    let organisation = &options.organisation;
    let client = github.for_organisation(organisation).await?;
    let repositories: Vec<RepositoryJson> = all_pages(
        &client,
        &format!("/orgs/{organisation}/repos?type=all&per_page=100"),
        || format!("listing the repositories of {organisation}"),
    )
    .await?;
    let mut found = Candidates::default();
    // No cutoff (an age beyond the calendar) means no run counts as abandoned.
    let abandoned_before = chrono::Duration::from_std(settings.sweep_abandoned_after)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age));
    for repository in repositories {
        if repository.archived || repository.disabled {
            continue;
        }
        if let Some(filter) = &options.repository_filter {
            if !filter.is_match(&repository.name) {
                continue;
            }
        }
        let name = RepositoryName {
            owner: organisation.clone(),
            name: repository.name,
        };
        let pulls: Vec<PullJson> = all_pages(
            &client,
            &format!("{}/pulls?state=open&per_page=100", name.route()),
            || format!("listing the open pull requests of {name}"),
        )
        .await?;
        for pull in pulls {
            if pull.draft && !settings.review_drafts {
                continue;
            }
            if options.since.is_some_and(|since| pull.updated_at < since) {
                continue;
            }
            found.open += 1;
            let runs =
                crate::publish::check_runs_at(&client, &name, &pull.head.sha, settings).await?;
            // A completed check means this head was reviewed, and a recent running one that
            // a review is under way. One running since long ago belongs to a lost review.
            let (abandoned, live): (Vec<_>, Vec<_>) = runs
                .into_iter()
                .partition(|run| abandoned_before.is_some_and(|cutoff| run.is_abandoned(cutoff)));
            if !live.is_empty() {
                found.already_reviewed += 1;
                continue;
            }
            found.to_review.push(Candidate {
                trigger: ReviewTrigger {
                    repository: name.clone(),
                    number: pull.number,
                    installation: None,
                    reason: format!("sweep of {organisation}"),
                },
                abandoned_check_runs: abandoned.iter().map(|run| run.id).collect(),
            });
        }
    }
    Ok(found)
}
