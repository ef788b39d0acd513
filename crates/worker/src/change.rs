use std::path::Path;

use deep_review_git::{parse_unified_diff, FileDiff, GitError, Repository, Worktree};
use deep_review_protocol::{ReviewJob, Source};

/// Why the code under review could not be made available to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Reading the repository failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The scratch directory for worktrees could not be used.
    #[error("could not create a worktree directory in {directory}: {source}")]
    Scratch {
        /// The scratch directory.
        directory: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The source kind is not available to this worker.
    #[error("{0}")]
    Unsupported(String),
}

/// The change under review, as an agent sees it: the diff, parsed, and where available the
/// repository and a worktree at the head commit.
pub struct PreparedChange {
    /// The unified diff.
    pub diff: String,
    /// The diff, parsed per file.
    pub files: Vec<FileDiff>,
    repository: Option<Repository>,
    head: Option<String>,
    worktree: Option<(Worktree, tempfile::TempDir)>,
}

impl PreparedChange {
    /// Prepares `job`'s change; checks out a worktree when `with_worktree` and the source
    /// has a repository.
    pub async fn prepare(
        job: &ReviewJob,
        scratch_directory: &Path,
        with_worktree: bool,
    ) -> Result<Self, ChangeError> {
        match &job.source {
            Source::InlineDiff { diff } => Ok(PreparedChange::from_diff(diff.clone())),
            Source::LocalRepo { path, base, head } => {
                let repository = Repository::open(path).await?;
                let diff = repository.diff(base, head).await?;
                let worktree = if with_worktree {
                    std::fs::create_dir_all(scratch_directory).map_err(|source| {
                        ChangeError::Scratch {
                            directory: scratch_directory.display().to_string(),
                            source,
                        }
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
                    head: Some(head.clone()),
                    worktree,
                })
            }
            Source::GitRemote { url, .. } => Err(ChangeError::Unsupported(format!(
                "reviewing {url} needs a worker with a git mirror cache, which this worker does not have; \
                 review a local checkout (--repo) or pass the diff (--diff)"
            ))),
        }
    }

    /// A change known only by its diff.
    pub fn from_diff(diff: String) -> Self {
        PreparedChange {
            files: parse_unified_diff(&diff),
            diff,
            repository: None,
            head: None,
            worktree: None,
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
