//! Reads a pull request into a review request.

use deep_review_protocol::{
    AgentSpec, CommitSummary, PullRequestMetadata, ReviewRequest, Source, SCHEMA_VERSION,
};
use octocrab::Octocrab;
use serde::Deserialize;

use crate::client::all_pages;
use crate::repository_config::{self, FILE_NAME};
use crate::{CheckoutMode, GitHubError, GitHubSettings, RepositoryName};

/// GitHub lists at most this many files of a pull request.
pub const FILE_LIST_LIMIT: usize = 3000;
/// GitHub lists at most this many commits of a pull request.
pub const COMMIT_LIST_LIMIT: usize = 250;

#[derive(Debug, Deserialize)]
struct User {
    login: String,
}

#[derive(Debug, Deserialize)]
struct RepositoryInfo {
    clone_url: String,
    default_branch: String,
}

#[derive(Debug, Deserialize)]
struct BranchRef {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
    /// Absent when the fork the PR came from was deleted.
    #[serde(default)]
    repo: Option<RepositoryInfo>,
}

/// The fields of GitHub's pull request object deep-review reads.
#[derive(Debug, Deserialize)]
struct PullRequestJson {
    number: u64,
    title: String,
    #[serde(default)]
    body: Option<String>,
    state: String,
    user: User,
    head: BranchRef,
    base: BranchRef,
    #[serde(default)]
    changed_files: Option<usize>,
    #[serde(default)]
    commits: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct CommitJson {
    sha: String,
    commit: CommitMessage,
}

#[derive(Debug, Deserialize)]
struct CommitMessage {
    message: String,
}

/// One file of a pull request, as GitHub lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ChangedFile {
    /// Path at the head.
    pub filename: String,
    /// `added`, `removed`, `modified`, `renamed`…
    pub status: String,
    /// Path at the base, for renames.
    #[serde(default)]
    pub previous_filename: Option<String>,
    /// The file's unified diff hunks; absent for binary files and diffs too large.
    #[serde(default)]
    pub patch: Option<String>,
}

/// A pull request read from GitHub, ready to schedule.
#[derive(Debug, Clone)]
pub struct IngestedPullRequest {
    /// The request for the scheduler.
    pub request: ReviewRequest,
    /// The reviewed commit, where the check run goes.
    pub head_sha: String,
    /// Whether the PR is open.
    pub open: bool,
}

/// Reads pull request `number` of `repository`: metadata, commits, files, the diff when
/// workers get it inline, and the repository's `.deep-review.toml`.
pub async fn pull_request(
    client: &Octocrab,
    repository: &RepositoryName,
    number: u64,
    settings: &GitHubSettings,
    operator_agents: &[AgentSpec],
) -> Result<IngestedPullRequest, GitHubError> {
    let route = format!("{}/pulls/{number}", repository.route());
    let pull: PullRequestJson = client
        .get(&route, None::<&()>)
        .await
        .map_err(|error| GitHubError::api(format!("reading {repository}#{number}"), error))?;
    let base_repository = pull.base.repo.as_ref().ok_or_else(|| {
        GitHubError::Payload(format!("{repository}#{number} has no base repository"))
    })?;
    let mut notices = Vec::new();

    let commits: Vec<CommitJson> =
        all_pages(client, &format!("{route}/commits?per_page=100"), || {
            format!("listing the commits of {repository}#{number}")
        })
        .await?;
    if let Some(total) = pull.commits.filter(|total| *total > commits.len()) {
        notices.push(format!(
            "GitHub lists only the first {COMMIT_LIST_LIMIT} commits of a pull request; this one has {total}, so the report's commit list is incomplete (the diff is complete)."
        ));
    }
    let files: Vec<ChangedFile> = all_pages(client, &format!("{route}/files?per_page=100"), || {
        format!("listing the files of {repository}#{number}")
    })
    .await?;
    let listed_all = pull.changed_files.is_none_or(|total| total <= files.len());

    let source = match settings.checkout {
        CheckoutMode::Clone => {
            if !listed_all {
                notices.push(format!(
                    "GitHub lists only the first {FILE_LIST_LIMIT} files of a pull request; this one changes {}. The agents reviewed the whole diff from git.",
                    pull.changed_files.unwrap_or_default()
                ));
            }
            Source::GitRemote {
                url: base_repository.clone_url.clone(),
                base_sha: pull.base.sha.clone(),
                head_sha: pull.head.sha.clone(),
            }
        }
        CheckoutMode::Diff => {
            let diff = match rendered_diff(client, &route).await {
                Ok(diff) => diff,
                Err(error) => {
                    let (diff, unreviewed) = diff_from_patches(&files);
                    let mut notice = format!(
                        "GitHub would not render this pull request's diff ({}), so the review used the per-file patches GitHub lists",
                        error_reason(&error)
                    );
                    if !listed_all {
                        notice.push_str(&format!(
                            "; GitHub lists only {FILE_LIST_LIMIT} of its {} files",
                            pull.changed_files.unwrap_or_default()
                        ));
                    }
                    if !unreviewed.is_empty() {
                        notice.push_str(&format!(
                            "; GitHub gives no patch for {} file(s), which nobody reviewed: {}",
                            unreviewed.len(),
                            unreviewed.join(", ")
                        ));
                    }
                    notices.push(format!("{notice}."));
                    if diff.trim().is_empty() {
                        return Err(GitHubError::Payload(format!(
                            "{repository}#{number}: GitHub renders neither the diff nor any file patch ({}); set github.checkout = \"clone\" to review it from git",
                            error_reason(&error)
                        )));
                    }
                    diff
                }
            };
            Source::InlineDiff { diff }
        }
    };

    let mut request = ReviewRequest {
        schema_version: SCHEMA_VERSION,
        source,
        pull_request: PullRequestMetadata {
            repository: Some(repository.to_string()),
            number: Some(pull.number),
            title: Some(pull.title.clone()),
            author: Some(pull.user.login.clone()),
            branch: Some(pull.head.name.clone()),
            body: pull.body.clone().filter(|body| !body.trim().is_empty()),
            commits: commits
                .into_iter()
                .map(|commit| CommitSummary {
                    sha: commit.sha,
                    subject: commit
                        .commit
                        .message
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                })
                .collect(),
        },
        round: None,
        agents: Vec::new(),
        declined: Vec::new(),
        policy: Default::default(),
        daily_usd_limit: None,
        notices,
    };
    if settings.repository_config.enabled {
        match repository_file(
            client,
            repository,
            FILE_NAME,
            &base_repository.default_branch,
        )
        .await?
        {
            None => {}
            Some(text) => match repository_config::parse(&text) {
                Ok(config) => {
                    repository_config::apply(&config, operator_agents, &settings.repository_config)
                        .apply_to(&mut request)
                }
                Err(error) => request.notices.push(format!(
                    "{error}. The operator's configuration applied instead."
                )),
            },
        }
    }
    Ok(IngestedPullRequest {
        request,
        head_sha: pull.head.sha,
        open: pull.state == "open",
    })
}

fn error_reason(error: &GitHubError) -> String {
    match error {
        GitHubError::Api { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// The whole diff as GitHub renders it (`application/vnd.github.diff`); GitHub refuses
/// (406 or 422) beyond its limits on files and lines.
async fn rendered_diff(client: &Octocrab, route: &str) -> Result<String, GitHubError> {
    raw_get(client, route, "application/vnd.github.diff", || {
        format!("rendering the diff of {route}")
    })
    .await?
    .ok_or_else(|| GitHubError::Payload(format!("{route} has no diff")))
}

/// A file of the repository at `reference`, raw; `None` when it does not exist.
async fn repository_file(
    client: &Octocrab,
    repository: &RepositoryName,
    path: &str,
    reference: &str,
) -> Result<Option<String>, GitHubError> {
    raw_get(
        client,
        &format!(
            "{}/contents/{path}?ref={}",
            repository.route(),
            percent_encoding::utf8_percent_encode(reference, percent_encoding::NON_ALPHANUMERIC)
        ),
        "application/vnd.github.raw+json",
        || format!("reading {path} of {repository} at {reference}"),
    )
    .await
}

/// GET `route` with the media type `accept`, as text; `None` on 404.
async fn raw_get(
    client: &Octocrab,
    route: &str,
    accept: &'static str,
    action: impl Fn() -> String,
) -> Result<Option<String>, GitHubError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::ACCEPT, http::HeaderValue::from_static(accept));
    let response = client
        ._get_with_headers(route, Some(headers))
        .await
        .map_err(|error| GitHubError::api(action(), error))?;
    if response.status() == http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let response = octocrab::map_github_error(response)
        .await
        .map_err(|error| GitHubError::api(action(), error))?;
    client
        .body_to_string(response)
        .await
        .map(Some)
        .map_err(|error| GitHubError::api(action(), error))
}

/// A unified diff built from the files' patches, and the files that have none.
pub fn diff_from_patches(files: &[ChangedFile]) -> (String, Vec<String>) {
    let mut diff = String::new();
    let mut unreviewed = Vec::new();
    for file in files {
        let Some(patch) = &file.patch else {
            unreviewed.push(file.filename.clone());
            continue;
        };
        let old = file.previous_filename.as_deref().unwrap_or(&file.filename);
        let new = &file.filename;
        diff.push_str(&format!("diff --git a/{old} b/{new}\n"));
        let (from, to) = match file.status.as_str() {
            "added" => ("/dev/null".to_string(), format!("b/{new}")),
            "removed" => (format!("a/{old}"), "/dev/null".to_string()),
            _ => (format!("a/{old}"), format!("b/{new}")),
        };
        diff.push_str(&format!("--- {from}\n+++ {to}\n{patch}"));
        if !patch.ends_with('\n') {
            diff.push('\n');
        }
    }
    (diff, unreviewed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_become_a_diff_and_patchless_files_are_named() {
        let files = vec![
            ChangedFile {
                filename: "src/lib.rs".into(),
                status: "modified".into(),
                previous_filename: None,
                patch: Some("@@ -1 +1 @@\n-a\n+b".into()),
            },
            ChangedFile {
                filename: "new.txt".into(),
                status: "added".into(),
                previous_filename: None,
                patch: Some("@@ -0,0 +1 @@\n+hello".into()),
            },
            ChangedFile {
                filename: "logo.png".into(),
                status: "added".into(),
                previous_filename: None,
                patch: None,
            },
        ];
        let (diff, unreviewed) = diff_from_patches(&files);
        assert_eq!(unreviewed, ["logo.png"]);
        let parsed = deep_review_git::parse_unified_diff(&diff);
        let paths: Vec<&str> = parsed.iter().map(|file| file.path()).collect();
        assert_eq!(paths, ["src/lib.rs", "new.txt"]);
    }
}
