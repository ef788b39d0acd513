//! The report on the pull request: one sticky comment, inline comments on the lines of
//! serious findings, and a check run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use deep_review_consolidator::{render, PublishError, Publisher};
use deep_review_protocol::{
    ConsolidatedFinding, Report, ReviewJob, ReviewManifest, Severity, Verdict,
};
use octocrab::Octocrab;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::client::all_pages;
use crate::sanitize;
use crate::{GitHub, GitHubError, GitHubSettings, RepositoryName};

/// The hidden marker that identifies deep-review's sticky comment.
pub const REPORT_MARKER: &str = "<!-- deep-review:report -->";
/// Inline comments carry `<!-- deep-review:finding:{fingerprint} -->`.
const FINDING_MARKER: &str = "<!-- deep-review:finding:";
/// Precedes the round number in the sticky comment's footer.
const ROUND_FOOTER: &str = " · round ";
/// And `<!-- deep-review:place:{key} -->`: the file and title without the line.
const PLACE_MARKER: &str = "<!-- deep-review:place:";
/// An inline comment whose finding is gone carries this, so it is marked once.
const RESOLVED_MARKER: &str = "<!-- deep-review:resolved -->";

/// Publishes reports of pull request reviews to GitHub. Reviews of anything else (a
/// local change, a plain diff) are left alone.
pub struct GitHubPublisher {
    github: Arc<GitHub>,
    settings: GitHubSettings,
}

impl GitHubPublisher {
    /// Publishes through `github` as `settings` say.
    pub fn new(github: Arc<GitHub>, settings: GitHubSettings) -> Self {
        GitHubPublisher { github, settings }
    }
}

/// The repository and PR number of a job about a GitHub pull request.
fn pull_request_of(job: &ReviewJob) -> Option<(RepositoryName, u64)> {
    let repository = RepositoryName::parse(job.pull_request.repository.as_deref()?).ok()?;
    Some((repository, job.pull_request.number?))
}

fn failed(error: GitHubError) -> PublishError {
    PublishError {
        publisher: "GitHub".to_string(),
        reason: error.to_string(),
    }
}

#[async_trait]
impl Publisher for GitHubPublisher {
    fn name(&self) -> String {
        "GitHub".to_string()
    }

    /// A transient failure is returned, so the consolidator publishes again later (every
    /// step is idempotent). A permanent one (the App lost access, the PR is gone) is
    /// logged and swallowed: retrying cannot help, and the report must still reach the
    /// result store and its files.
    async fn publish(
        &self,
        manifest: &ReviewManifest,
        report: &Report,
    ) -> Result<(), PublishError> {
        match self.post_report(manifest, report).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_transient() => Err(failed(error)),
            Err(error) => {
                tracing::error!(review = %manifest.job.id, %error, "the report could not be posted on GitHub and will not be retried; it is in the report files and the result store");
                Ok(())
            }
        }
    }
}

impl GitHubPublisher {
    /// Posts `report` (the sticky comment, inline comments and the check run) and says
    /// what failed, transient or not; `publish` decides what the consolidator retries.
    pub async fn post_report(
        &self,
        manifest: &ReviewManifest,
        report: &Report,
    ) -> Result<(), GitHubError> {
        let job = &manifest.job;
        let Some((repository, number)) = pull_request_of(job) else {
            return Ok(());
        };
        let client = self.github.for_repository(&repository, None).await?;
        let pull_request = PullRequestTarget {
            github: &self.github,
            client: &client,
            repository: &repository,
            number,
            settings: &self.settings,
        };
        pull_request.sticky_comment(report).await?;
        if let Some(head_sha) = job.source.head_revision() {
            if self.settings.inline_comments {
                pull_request.inline_comments(report, head_sha).await?;
            }
            check_run(
                &client,
                &repository,
                head_sha,
                job,
                Some(report),
                &self.settings,
            )
            .await?;
        }
        Ok(())
    }
}

struct PullRequestTarget<'a> {
    github: &'a GitHub,
    client: &'a Octocrab,
    repository: &'a RepositoryName,
    number: u64,
    settings: &'a GitHubSettings,
}

#[derive(Debug, Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    user: Option<Author>,
}

#[derive(Debug, Deserialize)]
struct ReviewComment {
    id: u64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    node_id: String,
    #[serde(default)]
    user: Option<Author>,
}

/// Who wrote a comment.
#[derive(Debug, Deserialize)]
struct Author {
    login: String,
}

/// Whether a comment is deep-review's own: its markers mean nothing in anyone else's.
fn written_by(user: Option<&Author>, login: &str) -> bool {
    user.is_some_and(|user| user.login.eq_ignore_ascii_case(login))
}

fn report_url(settings: &GitHubSettings, review_id: &str) -> Option<String> {
    settings
        .report_url_base
        .as_ref()
        .map(|base| format!("{}/{review_id}/report.html", base.trim_end_matches('/')))
}

impl PullRequestTarget<'_> {
    fn describe(&self) -> String {
        format!("{}#{}", self.repository, self.number)
    }

    /// Creates the report comment, or updates the one carrying the marker.
    async fn sticky_comment(&self, report: &Report) -> Result<(), GitHubError> {
        let link = report_url(self.settings, &report.review_id);
        let mut footer = String::new();
        if let Some(link) = &link {
            footer.push_str(&format!("\n\n[Full report (HTML)]({link})"));
        }
        footer.push_str(&format!(
            "\n\n<sub>deep-review · review {}{ROUND_FOOTER}{}</sub>\n",
            report.review_id, report.header.round
        ));
        let markdown = sanitize::for_github(&render::markdown::render(report));
        let where_the_rest_is = match &link {
            Some(_) => "the full report is linked below",
            None => "the full report is in the check run and the report files",
        };
        let body = format!(
            "{REPORT_MARKER}\n{}{footer}",
            sanitize::truncate(
                &markdown,
                footer.len() + REPORT_MARKER.len(),
                where_the_rest_is
            )
        );
        let route = format!(
            "{}/issues/{}/comments?per_page=100",
            self.repository.route(),
            self.number
        );
        let comments: Vec<Comment> = all_pages(self.client, &route, || {
            format!("listing the comments of {}", self.describe())
        })
        .await?;
        let own_login = self.github.own_login().await?;
        let existing = comments.iter().find(|comment| {
            written_by(comment.user.as_ref(), &own_login) && comment.body.contains(REPORT_MARKER)
        });
        match existing {
            Some(comment) => {
                let _updated: serde_json::Value = self
                    .client
                    .patch(
                        format!("{}/issues/comments/{}", self.repository.route(), comment.id),
                        Some(&json!({ "body": body })),
                    )
                    .await
                    .map_err(|error| {
                        GitHubError::api(
                            format!("updating the report comment on {}", self.describe()),
                            error,
                        )
                    })?;
                tracing::info!(pull_request = %self.describe(), comment = comment.id, "report comment updated");
            }
            None => {
                let created: Comment = self
                    .client
                    .post(
                        format!(
                            "{}/issues/{}/comments",
                            self.repository.route(),
                            self.number
                        ),
                        Some(&json!({ "body": body })),
                    )
                    .await
                    .map_err(|error| {
                        GitHubError::api(format!("commenting on {}", self.describe()), error)
                    })?;
                tracing::info!(pull_request = %self.describe(), comment = created.id, "report comment created");
            }
        }
        Ok(())
    }

    /// Posts a review with one comment per new serious finding on a line of the diff, and
    /// marks the comments of findings that are gone.
    async fn inline_comments(&self, report: &Report, head_sha: &str) -> Result<(), GitHubError> {
        let route = format!("{}/pulls/{}", self.repository.route(), self.number);
        let existing: Vec<ReviewComment> = all_pages(
            self.client,
            &format!("{route}/comments?per_page=100"),
            || format!("listing the review comments of {}", self.describe()),
        )
        .await?;
        // Comments of findings still open, and of findings an earlier round marked as no
        // longer reported (reopened if the finding comes back).
        let own_login = self.github.own_login().await?;
        let (closed, posted): (Vec<_>, Vec<_>) = existing
            .iter()
            .filter(|comment| written_by(comment.user.as_ref(), &own_login))
            .filter_map(|comment| {
                let fingerprint = marker_in(&comment.body, FINDING_MARKER)?;
                Some((fingerprint, marker_in(&comment.body, PLACE_MARKER), comment))
            })
            .partition(|(_, _, comment)| comment.body.contains(RESOLVED_MARKER));
        let files: Vec<crate::ingest::ChangedFile> =
            all_pages(self.client, &format!("{route}/files?per_page=100"), || {
                format!("listing the files of {}", self.describe())
            })
            .await?;
        let commentable: BTreeMap<&str, HashSet<u32>> = files
            .iter()
            .map(|file| {
                (
                    file.filename.as_str(),
                    file.patch.as_deref().map(head_lines).unwrap_or_default(),
                )
            })
            .collect();
        let anchored: Vec<(&ConsolidatedFinding, &str, u32)> = report
            .findings
            .iter()
            .filter(|finding| finding.severity >= self.settings.inline_min_severity)
            .filter_map(|finding| {
                let (path, line) = anchor(finding, &commentable)?;
                Some((finding, path, line))
            })
            .collect();
        let current: HashSet<String> = anchored
            .iter()
            .map(|(finding, path, line)| fingerprint(path, *line, &finding.title))
            .collect();
        // Comments still standing for a current finding: the same fingerprint, or the same
        // file and title on a line that moved (a comment no other finding holds).
        let mut kept: HashSet<u64> = posted
            .iter()
            .filter(|(fingerprint, _, _)| current.contains(fingerprint))
            .map(|(_, _, comment)| comment.id)
            .collect();
        let mut new_comments = Vec::new();
        let mut reopened: HashSet<u64> = HashSet::new();
        for (finding, path, line) in anchored {
            let fingerprint = fingerprint(path, line, &finding.title);
            if posted.iter().any(|(posted, _, _)| posted == &fingerprint) {
                continue;
            }
            let place = place_key(path, &finding.title);
            let moved = posted.iter().find(|(_, posted_place, comment)| {
                posted_place.as_deref() == Some(place.as_str()) && !kept.contains(&comment.id)
            });
            if let Some((_, _, comment)) = moved {
                kept.insert(comment.id);
                continue;
            }
            // A finding that was fixed and came back reopens its old thread, so the
            // discussion stays in one place, rather than starting a second one.
            let returned = closed
                .iter()
                .filter(|(_, _, comment)| !reopened.contains(&comment.id))
                .find(|(closed_fingerprint, _, _)| closed_fingerprint == &fingerprint)
                .or_else(|| {
                    closed.iter().find(|(_, closed_place, comment)| {
                        closed_place.as_deref() == Some(place.as_str())
                            && !reopened.contains(&comment.id)
                    })
                });
            if let Some((_, _, comment)) = returned {
                reopened.insert(comment.id);
                self.reopen(
                    comment,
                    finding,
                    &fingerprint,
                    &place,
                    head_sha,
                    report.header.round,
                )
                .await?;
                continue;
            }
            new_comments.push(json!({
                "path": path,
                "line": line,
                "side": "RIGHT",
                "body": inline_body(finding, &fingerprint, &place),
            }));
        }
        if !new_comments.is_empty() {
            let count = new_comments.len();
            let review = json!({
                "commit_id": head_sha,
                "event": "COMMENT",
                "body": format!(
                    "deep-review round {}: {count} new finding(s) on these lines. The summary is in the report comment.",
                    report.header.round
                ),
                "comments": new_comments,
            });
            let _review: serde_json::Value = self
                .client
                .post(format!("{route}/reviews"), Some(&review))
                .await
                .map_err(|error| {
                    GitHubError::api(
                        format!("posting inline comments on {}", self.describe()),
                        error,
                    )
                })?;
            tracing::info!(pull_request = %self.describe(), comments = count, "inline comments posted");
        }
        for (_, _, comment) in &posted {
            if kept.contains(&comment.id) {
                continue;
            }
            self.mark_resolved(comment, head_sha, report.header.round)
                .await?;
        }
        Ok(())
    }

    /// Puts a finding that an earlier round marked as no longer reported back on its
    /// comment, and reopens the thread (GraphQL `unresolveReviewThread`, best effort).
    async fn reopen(
        &self,
        comment: &ReviewComment,
        finding: &ConsolidatedFinding,
        fingerprint: &str,
        place: &str,
        head_sha: &str,
        round: u32,
    ) -> Result<(), GitHubError> {
        let short = head_sha.get(..7).unwrap_or(head_sha);
        let body = format!(
            "**Reported again** by deep-review as of {short} (round {round}), after an earlier round no longer reported it.\n\n{}",
            inline_body(finding, fingerprint, place)
        );
        self.rewrite_comment(comment, body, false).await
    }

    /// Says on a finding's comment that the latest round no longer reports it, and
    /// resolves its thread where GitHub lets the App (GraphQL `resolveReviewThread`).
    async fn mark_resolved(
        &self,
        comment: &ReviewComment,
        head_sha: &str,
        round: u32,
    ) -> Result<(), GitHubError> {
        let short = head_sha.get(..7).unwrap_or(head_sha);
        // The old text, quoted line by line, markers included: later rounds still find
        // the fingerprint, and nothing in it can end the quote.
        let quoted: Vec<String> = comment
            .body
            .lines()
            .map(|line| format!("> {line}"))
            .collect();
        let body = format!(
            "{RESOLVED_MARKER}\n**No longer reported** by deep-review as of {short} (round {round}).\n\n{}",
            quoted.join("\n")
        );
        self.rewrite_comment(comment, body, true).await
    }

    /// Replaces an inline comment's text, then resolves or reopens its thread. The text is
    /// the record; the thread's state is a courtesy, so failing to set it is only logged.
    async fn rewrite_comment(
        &self,
        comment: &ReviewComment,
        body: String,
        resolved: bool,
    ) -> Result<(), GitHubError> {
        let _updated: serde_json::Value = self
            .client
            .patch(
                format!("{}/pulls/comments/{}", self.repository.route(), comment.id),
                Some(&json!({ "body": body })),
            )
            .await
            .map_err(|error| {
                GitHubError::api(
                    format!(
                        "editing inline comment {} on {}",
                        comment.id,
                        self.describe()
                    ),
                    error,
                )
            })?;
        if let Err(error) = self.set_thread_resolved(&comment.node_id, resolved).await {
            tracing::warn!(pull_request = %self.describe(), %error, resolved, "could not set a review thread's state");
        }
        Ok(())
    }

    /// Resolves (or reopens) the review thread that `comment_node_id` starts.
    async fn set_thread_resolved(
        &self,
        comment_node_id: &str,
        resolved: bool,
    ) -> Result<(), GitHubError> {
        if comment_node_id.is_empty() {
            return Ok(());
        }
        let query = json!({
            "query": "query($owner: String!, $name: String!, $number: Int!) { repository(owner: $owner, name: $name) { pullRequest(number: $number) { reviewThreads(first: 100) { nodes { id isResolved comments(first: 1) { nodes { id } } } } } } }",
            "variables": { "owner": self.repository.owner, "name": self.repository.name, "number": self.number },
        });
        let graphql = self.github.graphql_for_repository(self.repository).await?;
        let answer: serde_json::Value = graphql
            .graphql(&query)
            .await
            .map_err(|error| GitHubError::api("listing review threads", error))?;
        let threads = answer["repository"]["pullRequest"]["reviewThreads"]["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let thread = threads.iter().find(|thread| {
            thread["comments"]["nodes"]
                .as_array()
                .and_then(|nodes| nodes.first())
                .is_some_and(|first| first["id"] == comment_node_id)
        });
        let Some(thread) = thread else {
            // Only the first 100 threads are read; the comment's text already says it all.
            tracing::warn!(pull_request = %self.describe(), resolved, "the review thread of a finding's comment was not among the first 100; its state is left as it is");
            return Ok(());
        };
        if thread["isResolved"] == resolved {
            return Ok(());
        }
        let operation = if resolved {
            "resolveReviewThread"
        } else {
            "unresolveReviewThread"
        };
        let mutation = json!({
            "query": format!("mutation($thread: ID!) {{ {operation}(input: {{ threadId: $thread }}) {{ thread {{ isResolved }} }} }}"),
            "variables": { "thread": thread["id"] },
        });
        let _changed: serde_json::Value = graphql
            .graphql(&mutation)
            .await
            .map_err(|error| GitHubError::api(format!("calling {operation}"), error))?;
        Ok(())
    }
}

/// The round of the report in the pull request's sticky comment, if there is one: a
/// review run outside the services (no shared round counter) continues from it.
pub async fn published_round(
    github: &GitHub,
    client: &Octocrab,
    repository: &RepositoryName,
    number: u64,
) -> Result<Option<u32>, GitHubError> {
    let own_login = github.own_login().await?;
    let route = format!(
        "{}/issues/{number}/comments?per_page=100",
        repository.route()
    );
    let comments: Vec<Comment> = all_pages(client, &route, || {
        format!("listing the comments of {repository}#{number}")
    })
    .await?;
    Ok(comments
        .iter()
        .find(|comment| {
            written_by(comment.user.as_ref(), &own_login) && comment.body.contains(REPORT_MARKER)
        })
        .and_then(|comment| {
            let footer = comment.body.rfind(ROUND_FOOTER)? + ROUND_FOOTER.len();
            let digits: String = comment.body[footer..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        }))
}

/// Creates or updates the check run of `job` on `head_sha`: in progress while agents
/// work (`report` absent), then completed with the verdict. The conclusion is `neutral`
/// unless the operator makes a rework verdict fail it.
pub async fn check_run(
    client: &Octocrab,
    repository: &RepositoryName,
    head_sha: &str,
    job: &ReviewJob,
    report: Option<&Report>,
    settings: &GitHubSettings,
) -> Result<(), GitHubError> {
    let describe = || {
        format!(
            "the {} check run of {repository} at {head_sha}",
            settings.check_run_name
        )
    };
    let mut payload = json!({
        "name": settings.check_run_name,
        "head_sha": head_sha,
        "external_id": job.id,
    });
    if let Some(link) = report_url(settings, &job.id) {
        payload["details_url"] = json!(link);
    }
    match report {
        None => {
            payload["status"] = json!("in_progress");
            payload["started_at"] = json!(job.created_at.to_rfc3339());
            payload["output"] = json!({
                "title": format!("Reviewing (round {})", job.round),
                "summary": format!(
                    "{} agent(s) are reviewing {}: {}.",
                    job.agents.len(),
                    head_sha.get(..7).unwrap_or(head_sha),
                    job.agents.iter().map(|agent| agent.display()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Some(report) => {
            let conclusion =
                // A gate that fails on Rework fails on a review that could not run too.
                if settings.fail_check_on_rework
                    && matches!(report.verdict.verdict, Verdict::Rework | Verdict::Incomplete)
                {
                    "failure"
                } else {
                    "neutral"
                };
            payload["status"] = json!("completed");
            payload["conclusion"] = json!(conclusion);
            payload["completed_at"] = json!(Utc::now().to_rfc3339());
            payload["output"] = json!({
                "title": format!("{} (round {})", report.verdict.verdict.label(), report.header.round),
                "summary": sanitize::truncate(&sanitize::for_github(&check_summary(report)), 0, "the full report is in the PR comment"),
            });
        }
    }
    match find_check_run(client, repository, head_sha, &job.id, settings).await? {
        Some(run) => {
            let _updated: serde_json::Value = client
                .patch(
                    format!("{}/check-runs/{}", repository.route(), run.id),
                    Some(&payload),
                )
                .await
                .map_err(|error| GitHubError::api(format!("updating {}", describe()), error))?;
        }
        None => {
            let _created: serde_json::Value = client
                .post(format!("{}/check-runs", repository.route()), Some(&payload))
                .await
                .map_err(|error| GitHubError::api(format!("creating {}", describe()), error))?;
        }
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct CheckRun {
    pub(crate) id: u64,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    started_at: Option<chrono::DateTime<Utc>>,
}

impl CheckRun {
    /// Whether the run started before `cutoff` and never finished: its review was lost
    /// (its report could not be published, or its records expired).
    pub(crate) fn is_abandoned(&self, cutoff: chrono::DateTime<Utc>) -> bool {
        self.status != "completed" && self.started_at.is_some_and(|started| started < cutoff)
    }
}

#[derive(Deserialize)]
struct CheckRuns {
    check_runs: Vec<CheckRun>,
}

/// deep-review's check runs on `head_sha` (by their configured name).
pub(crate) async fn check_runs_at(
    client: &Octocrab,
    repository: &RepositoryName,
    head_sha: &str,
    settings: &GitHubSettings,
) -> Result<Vec<CheckRun>, GitHubError> {
    let existing: CheckRuns = client
        .get(
            format!("{}/commits/{head_sha}/check-runs", repository.route()),
            Some(&[
                ("check_name", settings.check_run_name.as_str()),
                ("per_page", "100"),
            ]),
        )
        .await
        .map_err(|error| {
            GitHubError::api(
                format!("finding the check runs of {repository} at {head_sha}"),
                error,
            )
        })?;
    Ok(existing.check_runs)
}

/// The check run deep-review created on `head_sha` for review `review_id`.
async fn find_check_run(
    client: &Octocrab,
    repository: &RepositoryName,
    head_sha: &str,
    review_id: &str,
    settings: &GitHubSettings,
) -> Result<Option<CheckRun>, GitHubError> {
    Ok(check_runs_at(client, repository, head_sha, settings)
        .await?
        .into_iter()
        .find(|run| run.external_id.as_deref() == Some(review_id)))
}

/// Completes the check run of `superseded` (an earlier round whose report will never be
/// published) as neutral, pointing at the round that replaced it; otherwise it would
/// stay "in progress" on the older commit for ever.
pub async fn close_superseded_check_run(
    client: &Octocrab,
    repository: &RepositoryName,
    superseded: &ReviewJob,
    by: &ReviewJob,
    settings: &GitHubSettings,
) -> Result<(), GitHubError> {
    let Some(head_sha) = superseded.source.head_revision() else {
        return Ok(());
    };
    let Some(run) = find_check_run(client, repository, head_sha, &superseded.id, settings).await?
    else {
        return Ok(());
    };
    if run.status == "completed" {
        return Ok(());
    }
    let new_head = by.source.head_revision().unwrap_or("");
    complete_as_neutral(
        client,
        repository,
        run.id,
        &format!("Superseded by round {}", by.round),
        &format!(
            "Round {} was replaced by round {} (review {}, at {}) before it finished; its report was not published.",
            superseded.round,
            by.round,
            by.id,
            new_head.get(..7).unwrap_or(new_head)
        ),
    )
    .await
}

/// Completes check run `run_id`, which a sweep found started long ago and never
/// finished, as neutral, pointing at the review scheduled in its place.
pub(crate) async fn close_abandoned_check_run(
    client: &Octocrab,
    repository: &RepositoryName,
    run_id: u64,
    replacement: &ReviewJob,
) -> Result<(), GitHubError> {
    complete_as_neutral(
        client,
        repository,
        run_id,
        "No result: this review never finished",
        &format!(
            "The review never published a report. A sweep scheduled round {} (review {}) in its place.",
            replacement.round, replacement.id
        ),
    )
    .await
}

/// Completes check run `run_id` as neutral with `title` and `summary`.
async fn complete_as_neutral(
    client: &Octocrab,
    repository: &RepositoryName,
    run_id: u64,
    title: &str,
    summary: &str,
) -> Result<(), GitHubError> {
    let payload = json!({
        "status": "completed",
        "conclusion": "neutral",
        "completed_at": Utc::now().to_rfc3339(),
        "output": { "title": title, "summary": summary },
    });
    let _updated: serde_json::Value = client
        .patch(
            format!("{}/check-runs/{run_id}", repository.route()),
            Some(&payload),
        )
        .await
        .map_err(|error| {
            GitHubError::api(
                format!("completing check run {run_id} of {repository}"),
                error,
            )
        })?;
    Ok(())
}

/// The check run's summary: the verdict, its reason and the counts.
fn check_summary(report: &Report) -> String {
    let count = |severity: Severity| {
        report
            .findings
            .iter()
            .filter(|finding| finding.severity == severity)
            .count()
    };
    let mut summary = format!(
        "**{}**: {}\n\n| Critical | Important | Suggestion |\n|---:|---:|---:|\n| {} | {} | {} |\n",
        report.verdict.verdict.label(),
        report.verdict.reason,
        count(Severity::Critical),
        count(Severity::Important),
        count(Severity::Suggestion)
    );
    if report.partial {
        summary.push_str("\nThis report is partial: not every agent delivered a result.\n");
    }
    for notice in &report.notices {
        summary.push_str(&format!("\n> {notice}\n"));
    }
    summary.push_str("\ndeep-review never approves or blocks a pull request on its own; the report comment has the findings.\n");
    summary
}

/// Where a finding's inline comment goes: its first location on a line the diff shows.
fn anchor<'a>(
    finding: &'a ConsolidatedFinding,
    commentable: &BTreeMap<&str, HashSet<u32>>,
) -> Option<(&'a str, u32)> {
    finding.locations.iter().find_map(|location| {
        let line = location.start_line?;
        let lines = commentable.get(location.path.as_str())?;
        // A range may start on an unchanged line outside the hunk; take its first line the
        // diff shows.
        let end = location.end_line.unwrap_or(line).max(line);
        (line..=end)
            .find(|candidate| lines.contains(candidate))
            .map(|found| (location.path.as_str(), found))
    })
}

/// Head-side line numbers a review comment can be attached to: the added and context
/// lines of a file's patch.
fn head_lines(patch: &str) -> HashSet<u32> {
    let mut lines = HashSet::new();
    let mut next = 0u32;
    for line in patch.lines() {
        if let Some(header) = line.strip_prefix("@@ ") {
            next = header
                .split_whitespace()
                .find_map(|part| part.strip_prefix('+'))
                .and_then(|range| range.split(',').next())
                .and_then(|start| start.parse().ok())
                .unwrap_or(0);
            continue;
        }
        match line.as_bytes().first() {
            Some(b'+') | Some(b' ') => {
                lines.insert(next);
                next += 1;
            }
            Some(b'-') | Some(b'\\') => {}
            _ => {
                // A blank context line can lose its leading space in transit.
                lines.insert(next);
                next += 1;
            }
        }
    }
    lines
}

/// The fingerprint of a finding on a line: the normalised path, line and title, so a
/// re-run recognises the comment it posted.
pub fn fingerprint(path: &str, line: u32, title: &str) -> String {
    let normalised_title = title
        .to_lowercase()
        .split(|character: char| !character.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let normalised_path = path.trim_start_matches("./").trim_start_matches('/');
    let digest = Sha256::digest(format!("{normalised_path}\n{line}\n{normalised_title}"));
    digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A finding's file and title without its line, to recognise a comment whose line moved.
fn place_key(path: &str, title: &str) -> String {
    fingerprint(path, 0, title)
}

/// The value of the hidden `marker` in a comment body.
fn marker_in(body: &str, marker: &str) -> Option<String> {
    // The last one: a comment marked "no longer reported" quotes its old body first.
    let start = body.rfind(marker)? + marker.len();
    let rest = &body[start..];
    let end = rest.find(" -->")?;
    Some(rest[..end].to_string())
}

fn inline_body(finding: &ConsolidatedFinding, fingerprint: &str, place: &str) -> String {
    let mut body = format!(
        "**{}** · {}\n\n{}",
        finding.severity.label(),
        finding.title,
        finding.body
    );
    if let Some(fix) = &finding.fix {
        body.push_str(&format!("\n\n**Suggested fix:** {fix}"));
    }
    let agreement = if finding.consensus > 1 {
        format!("{} agents agree", finding.consensus)
    } else {
        format!("found by {}", finding.agents.join(", "))
    };
    body.push_str(&format!(
        "\n\n<sub>deep-review {} · {agreement}</sub>",
        finding.id
    ));
    format!(
        "{}\n{FINDING_MARKER}{fingerprint} -->\n{PLACE_MARKER}{place} -->",
        sanitize::truncate(&sanitize::for_github(&body), 200, "see the report comment")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_case_and_punctuation() {
        assert_eq!(
            fingerprint("src/a.rs", 3, "SQL injection in `query()`!"),
            fingerprint("./src/a.rs", 3, "sql injection in query")
        );
        assert_ne!(
            fingerprint("src/a.rs", 3, "x"),
            fingerprint("src/a.rs", 4, "x")
        );
        let body = format!("text\n{FINDING_MARKER}{} -->", fingerprint("a", 1, "b"));
        assert_eq!(
            marker_in(&body, FINDING_MARKER),
            Some(fingerprint("a", 1, "b"))
        );
    }

    #[test]
    fn head_lines_follow_the_hunks() {
        let patch = "@@ -1,3 +1,4 @@\n context\n-old\n+new\n+added\n context\n@@ -20,2 +21,2 @@\n-x\n+y\n z";
        let lines = head_lines(patch);
        let mut sorted: Vec<u32> = lines.into_iter().collect();
        sorted.sort();
        assert_eq!(sorted, [1, 2, 3, 4, 21, 22]);
    }
}
