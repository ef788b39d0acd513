use std::path::Path;

use deep_review_git::PathFilter;
use deep_review_git::{parse_unified_diff, FileDiff, GitError, MirrorCache, Repository, Worktree};
use deep_review_protocol::{OmittedFile, ReviewJob, Source};

/// Why the code under review could not be made available to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Reading the repository failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The repository's path filters are not valid globs.
    #[error("the repository's path filters are invalid: {0}")]
    PathFilter(#[from] deep_review_git::PatternError),
    /// The scratch directory for worktrees could not be used.
    #[error("could not create a worktree directory in {directory}: {source}")]
    Scratch {
        /// The scratch directory.
        directory: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How long a checkout left in the scratch directory must have been untouched before a
/// starting worker deletes it: far beyond any agent's timeout, so a checkout another
/// process sharing the directory still uses is never touched.
pub const ORPHANED_CHECKOUT_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Deletes the checkouts a killed worker left in `scratch_directory` (linked worktrees
/// untouched for `age`), with their entries in their repositories' worktree lists. A worker
/// killed mid-task (out of memory, SIGKILL) cannot clean up, and a restarted container keeps
/// its scratch volume. Returns how many it deleted; failures are logged and skipped.
pub async fn remove_orphaned_checkouts(
    scratch_directory: &Path,
    age: std::time::Duration,
) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(scratch_directory).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let directory = entry.path();
        let untouched_for = entry
            .metadata()
            .await
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok());
        if untouched_for.is_none_or(|untouched| untouched < age) {
            continue;
        }
        // Only linked worktrees: their `.git` is a file pointing at the repository.
        let is_checkout = tokio::fs::read_to_string(directory.join(".git"))
            .await
            .is_ok_and(|link| link.starts_with("gitdir: "));
        if !is_checkout {
            continue;
        }
        match deep_review_git::remove_orphaned_worktree(&directory).await {
            Ok(()) => removed += 1,
            Err(error) => {
                tracing::warn!(%error, directory = %directory.display(), "could not delete an orphaned checkout")
            }
        }
    }
    removed
}

impl ChangeError {
    /// Whether preparing again may succeed: a git command or the scratch directory failed
    /// (a lock another process holds, a fetch cut short, a disk being cleaned up), as
    /// opposed to a repository or revision that is not there or filters that do not parse.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChangeError::Git(
                GitError::CommandFailed { .. } | GitError::Spawn(_) | GitError::WorktreeLock { .. }
            ) | ChangeError::Scratch { .. }
        )
    }
}

/// The change under review, as an agent sees it: the diff, parsed, and where available the
/// repository and a worktree at the head commit.
pub struct PreparedChange {
    /// The unified diff.
    pub diff: String,
    /// The diff, parsed per file.
    pub files: Vec<FileDiff>,
    repository: Option<Repository>,
    base: Option<String>,
    head: Option<String>,
    worktree: Option<(Worktree, tempfile::TempDir)>,
    /// Files of the change the repository's path filters left out; the agent's result
    /// lists them so the report says what nobody reviewed.
    pub excluded: Vec<OmittedFile>,
    /// When the worker stops the agent, set by the worker: runners that start a process
    /// stop it themselves then, keeping what it printed so far.
    pub deadline: Option<tokio::time::Instant>,
}

impl PreparedChange {
    /// Prepares `job`'s change; checks out a worktree when `with_worktree` and the source
    /// has a repository. Git URLs are read through the worker's mirror cache.
    pub async fn prepare(
        job: &ReviewJob,
        scratch_directory: &Path,
        with_worktree: bool,
        mirrors: &MirrorCache,
    ) -> Result<Self, ChangeError> {
        let filter = PathFilter::new(&job.policy.excluded_paths)?;
        let (repository, base, head) = match &job.source {
            Source::InlineDiff { diff } => {
                let (diff, excluded) = filter.filter_diff(diff);
                let mut change = PreparedChange::from_diff(diff);
                change.excluded = excluded_files(excluded);
                return Ok(change);
            }
            Source::LocalRepo { path, base, head } => (Repository::open(path).await?, base, head),
            Source::GitRemote {
                url,
                base_sha,
                head_sha,
            } => (
                mirrors
                    .repository(url, &[base_sha.as_str(), head_sha.as_str()])
                    .await?,
                base_sha,
                head_sha,
            ),
        };
        let (diff, excluded) = filter.filter_diff(&repository.diff(base, head).await?);
        let worktree = if with_worktree {
            std::fs::create_dir_all(scratch_directory).map_err(|source| ChangeError::Scratch {
                directory: scratch_directory.display().to_string(),
                source,
            })?;
            let holder = tempfile::Builder::new()
                .prefix(&format!("{}-", job.id))
                .tempdir_in(scratch_directory)
                .map_err(|source| ChangeError::Scratch {
                    directory: scratch_directory.display().to_string(),
                    source,
                })?;
            // Check out into the random directory itself: git names a worktree after
            // its directory's basename, and concurrent adds of one basename race.
            let worktree = repository.add_worktree(head, holder.path()).await?;
            Some((worktree, holder))
        } else {
            None
        };
        Ok(PreparedChange {
            files: parse_unified_diff(&diff),
            diff,
            repository: Some(repository),
            base: Some(base.clone()),
            head: Some(head.clone()),
            worktree,
            excluded: excluded_files(excluded),
            deadline: None,
        })
    }

    /// A change known only by its diff.
    pub fn from_diff(diff: String) -> Self {
        PreparedChange {
            files: parse_unified_diff(&diff),
            diff,
            repository: None,
            base: None,
            head: None,
            worktree: None,
            excluded: Vec::new(),
            deadline: None,
        }
    }

    /// The checkout of the head commit, when one was prepared.
    pub fn worktree(&self) -> Option<&Path> {
        self.worktree.as_ref().map(|(worktree, _)| worktree.path())
    }

    /// The full content of `path` at the head commit, when the repository is available.
    pub async fn head_file(&self, path: &str) -> Option<String> {
        let (repository, head) = (self.repository.as_ref()?, self.head.as_ref()?);
        repository.file_at(head, path).await.ok().flatten()
    }

    /// The content of `path` at the base commit: repository files that steer the review
    /// (like `.deep-review.md`) are read from there, so a change cannot rewrite its own
    /// review instructions.
    pub async fn base_file(&self, path: &str) -> Option<String> {
        let (repository, base) = (self.repository.as_ref()?, self.base.as_ref()?);
        repository.file_at(base, path).await.ok().flatten()
    }

    /// Writes the head commit's files as a gzipped tar to `destination`, for a
    /// verification run: the commit as pushed, whatever an agent did to its checkout.
    /// `None` when the change has no repository (an inline diff).
    pub async fn archive_head(
        &self,
        destination: &Path,
    ) -> Option<Result<(), deep_review_git::GitError>> {
        let (repository, head) = (self.repository.as_ref()?, self.head.as_ref()?);
        let destination = destination.display().to_string();
        Some(
            repository
                .output(&["archive", "--format=tar.gz", "-o", &destination, head])
                .await
                .map(|_| ()),
        )
    }

    /// The repository under review, when there is one.
    pub fn repository(&self) -> Option<&Repository> {
        self.repository.as_ref()
    }

    /// Removes the worktree, if any.
    pub async fn cleanup(mut self) {
        if let Some((worktree, holder)) = self.worktree.take() {
            if let Err(error) = worktree.remove().await {
                tracing::warn!(%error, "could not remove an agent worktree");
            }
            drop(holder);
        }
    }
}

fn excluded_files(paths: Vec<String>) -> Vec<OmittedFile> {
    paths
        .into_iter()
        .map(|path| OmittedFile {
            path,
            reason: "excluded by the repository's path filters".to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::git;

    /// Sets a directory's modification time `age` in the past.
    fn age_directory(directory: &Path, age: std::time::Duration) {
        let handle = std::fs::File::open(directory).unwrap();
        handle
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    }

    #[tokio::test]
    async fn checkouts_left_by_a_killed_worker_are_deleted_once_old_enough() {
        let repository_directory = tempfile::tempdir().unwrap();
        let root = repository_directory.path();
        git(root, &["init", "-q", "-b", "main"]);
        std::fs::write(root.join("a.txt"), "a\n").unwrap();
        git(root, &["add", "."]);
        git(root, &["commit", "-q", "-m", "a"]);
        let repository = Repository::open(root).await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(24 * 60 * 60);
        // Two checkouts whose worker was killed (nothing removes them), one of them old.
        let old = scratch.path().join("review-1-old");
        let recent = scratch.path().join("review-2-recent");
        for path in [&old, &recent] {
            std::mem::forget(repository.add_worktree("HEAD", path).await.unwrap());
        }
        age_directory(&old, 2 * day);
        // Neither the mirror cache nor a stray directory is a checkout, however old.
        let mirrors = scratch.path().join("mirrors");
        std::fs::create_dir(&mirrors).unwrap();
        age_directory(&mirrors, 2 * day);

        assert_eq!(remove_orphaned_checkouts(scratch.path(), day).await, 1);
        assert!(!old.exists());
        assert!(recent.join("a.txt").exists());
        assert!(mirrors.exists());
        let listed = repository.output(&["worktree", "list"]).await.unwrap();
        assert_eq!(listed.lines().count(), 2, "{listed}");
        assert!(!listed.contains("review-1-old"), "{listed}");
    }

    #[test]
    fn only_passing_failures_are_tried_again() {
        let lock = ChangeError::Git(GitError::CommandFailed {
            arguments: "worktree add".to_string(),
            repository: "/repo".to_string(),
            stderr: "fatal: Unable to create '/repo/.git/index.lock': File exists.".to_string(),
        });
        assert!(lock.is_transient());
        let missing = ChangeError::Git(GitError::UnknownRevision {
            revision: "abc".to_string(),
            repository: "/repo".to_string(),
            stderr: String::new(),
        });
        assert!(!missing.is_transient());
        let filters = PathFilter::new(&["[".to_string()])
            .err()
            .map(ChangeError::from);
        assert!(filters.is_some_and(|error| !error.is_transient()));
    }
}
