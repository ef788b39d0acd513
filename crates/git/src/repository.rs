use std::path::{Path, PathBuf};
use std::process::Stdio;

use deep_review_protocol::redact_urls_in;
use tokio::process::Command;

/// A failure to read from git.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git could not be started at all.
    #[error("could not run git (is it installed?): {0}")]
    Spawn(#[source] std::io::Error),
    /// The path is not inside a git work tree.
    #[error("{path} is not a git repository: {stderr}")]
    NotARepository {
        /// The path given.
        path: String,
        /// What git said.
        stderr: String,
    },
    /// A revision did not name a commit.
    #[error("unknown revision `{revision}` in {repository}: {stderr}")]
    UnknownRevision {
        /// The revision given.
        revision: String,
        /// The repository.
        repository: String,
        /// What git said.
        stderr: String,
    },
    /// The lock that serialises changes to the repository's worktree list could not be
    /// taken.
    #[error("could not lock the worktree list with {path}: {source}")]
    WorktreeLock {
        /// The lock file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A worktree directory could not be deleted.
    #[error("could not delete the worktree {path}: {source}")]
    DeleteWorktree {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Any other git command failed.
    #[error("`git {arguments}` failed in {repository}: {stderr}")]
    CommandFailed {
        /// The arguments, space-joined.
        arguments: String,
        /// The repository.
        repository: String,
        /// What git said.
        stderr: String,
    },
}

/// Git's empty tree: the base that makes a root commit's diff show all its files.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// A local git repository, addressed by its top-level directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    root: PathBuf,
}

impl Repository {
    /// Opens the repository containing `path`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, GitError> {
        let path = path.as_ref();
        let output = git_command(path)
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .await
            .map_err(GitError::Spawn)?;
        if !output.status.success() {
            return Err(GitError::NotARepository {
                path: path.display().to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let root = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(Repository {
            root: PathBuf::from(root),
        })
    }

    /// A bare repository (a mirror) at `directory`, which has no work tree to find.
    pub fn open_bare(directory: impl AsRef<Path>) -> Self {
        Repository {
            root: directory.as_ref().to_path_buf(),
        }
    }

    /// The work tree's top-level directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A short name for the repository: `owner/name` from the `origin` remote when there is
    /// one, else the directory name.
    pub async fn name(&self) -> String {
        if let Ok(url) = self.run(&["remote", "get-url", "origin"]).await {
            if let Some(name) = repository_name_from_url(url.trim()) {
                return name;
            }
        }
        self.root
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.root.display().to_string())
    }

    /// The git directory shared by all worktrees of the repository (usually `.git`).
    pub async fn common_git_directory(&self) -> Result<PathBuf, GitError> {
        let text = self.run(&["rev-parse", "--git-common-dir"]).await?;
        let directory = PathBuf::from(text.trim());
        Ok(if directory.is_absolute() {
            directory
        } else {
            self.root.join(directory)
        })
    }

    /// The full SHA of the commit `revision` names ([`EMPTY_TREE`] stands for itself).
    pub async fn resolve(&self, revision: &str) -> Result<String, GitError> {
        if revision == EMPTY_TREE {
            return Ok(EMPTY_TREE.to_string());
        }
        let spec = format!("{revision}^{{commit}}");
        let output = git_command(&self.root)
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &spec,
            ])
            .output()
            .await
            .map_err(GitError::Spawn)?;
        if !output.status.success() {
            return Err(GitError::UnknownRevision {
                revision: revision.to_string(),
                repository: self.root.display().to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The parent of `revision`, or [`EMPTY_TREE`] when it is a root commit.
    pub async fn parent_or_empty_tree(&self, revision: &str) -> Result<String, GitError> {
        let head = self.resolve(revision).await?;
        match self.resolve(&format!("{head}~1")).await {
            Ok(parent) => Ok(parent),
            Err(GitError::UnknownRevision { .. }) => Ok(EMPTY_TREE.to_string()),
            Err(error) => Err(error),
        }
    }

    /// Commits reachable from `head` but not `base`, oldest first, as (sha, subject).
    pub async fn commits(&self, base: &str, head: &str) -> Result<Vec<(String, String)>, GitError> {
        let range = if base == EMPTY_TREE {
            head.to_string()
        } else {
            format!("{base}..{head}")
        };
        let text = self
            .run(&["log", "--reverse", "--format=%H%x1f%s", &range, "--"])
            .await?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('\u{1f}'))
            .map(|(sha, subject)| (sha.to_string(), subject.to_string()))
            .collect())
    }

    /// The author name of `revision`.
    pub async fn author(&self, revision: &str) -> Result<String, GitError> {
        Ok(self
            .run(&["log", "-1", "--format=%an", revision, "--"])
            .await?
            .trim()
            .to_string())
    }

    /// The checked-out branch when `head_sha` is what `HEAD` points at.
    pub async fn branch_at(&self, head_sha: &str) -> Option<String> {
        let current = self.resolve("HEAD").await.ok()?;
        if current != head_sha {
            return None;
        }
        let name = self
            .run(&["rev-parse", "--abbrev-ref", "HEAD"])
            .await
            .ok()?;
        let name = name.trim();
        (name != "HEAD" && !name.is_empty()).then(|| name.to_string())
    }

    /// The change from the merge base of `base` and `head` to `head`, as a pull request
    /// shows it, with renames detected.
    pub async fn diff(&self, base: &str, head: &str) -> Result<String, GitError> {
        let mut arguments = vec![
            "diff",
            "--no-color",
            "--no-ext-diff",
            "--find-renames",
            "--unified=3",
        ];
        // The empty tree has no merge base with anything; diff against it directly.
        let range = format!("{base}...{head}");
        if base == EMPTY_TREE {
            arguments.extend([base, head]);
        } else {
            arguments.push(&range);
        }
        arguments.push("--");
        self.run(&arguments).await
    }

    /// The content of `path` at `revision`, or `None` when it does not exist there.
    pub async fn file_at(&self, revision: &str, path: &str) -> Result<Option<String>, GitError> {
        let object = format!("{revision}:{path}");
        let output = git_command(&self.root)
            .args(["show", &object])
            .output()
            .await
            .map_err(GitError::Spawn)?;
        if !output.status.success() {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    /// Checks `revision` out, detached, into a new worktree at `directory`.
    pub async fn add_worktree(
        &self,
        revision: &str,
        directory: &Path,
    ) -> Result<Worktree, GitError> {
        let directory_text = directory.display().to_string();
        let lock_path = worktree_lock_path(&self.common_git_directory().await?);
        let _lock = lock_worktree_list_async(&lock_path).await?;
        self.run(&[
            "worktree",
            "add",
            "--detach",
            "--quiet",
            &directory_text,
            revision,
        ])
        .await?;
        Ok(Worktree {
            repository: self.clone(),
            path: Some(directory.to_path_buf()),
            lock_path,
        })
    }

    /// Runs git with `arguments` in this repository and returns its output. For read-only
    /// queries (log, show, blame, grep); callers vet arguments that come from elsewhere.
    pub async fn output(&self, arguments: &[&str]) -> Result<String, GitError> {
        self.run(arguments).await
    }

    async fn run(&self, arguments: &[&str]) -> Result<String, GitError> {
        run_git(
            Some(&self.root),
            arguments,
            &self.root.display().to_string(),
        )
        .await
    }
}

/// A checked-out worktree, removed when dropped (or explicitly with [`Worktree::remove`]).
#[derive(Debug)]
pub struct Worktree {
    repository: Repository,
    path: Option<PathBuf>,
    /// The repository's worktree-list lock (see [`lock_worktree_list`]).
    lock_path: PathBuf,
}

impl Worktree {
    /// Where the files are.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or_else(|| Path::new(""))
    }

    /// Removes the worktree and its administrative files. When git cannot (something
    /// changed the checkout while it was being removed), the directory is deleted and the
    /// repository's worktree list pruned, so no stale entry is left behind; the error is
    /// returned only when that fails too.
    pub async fn remove(mut self) -> Result<(), GitError> {
        if let Some(path) = self.path.take() {
            let path_text = path.display().to_string();
            let _lock = lock_worktree_list_async(&self.lock_path).await?;
            let removed = self
                .repository
                .run(&["worktree", "remove", "--force", &path_text])
                .await;
            if let Err(error) = removed {
                let deleted = tokio::fs::remove_dir_all(&path).await;
                if deleted.is_err() && tokio::fs::try_exists(&path).await.unwrap_or(true) {
                    return Err(error);
                }
                self.repository.run(&["worktree", "prune"]).await?;
            }
        }
        Ok(())
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        // Fallback for an early return or a cancelled task: remove synchronously so the
        // user's repository is not left with stray worktrees.
        if let Some(path) = self.path.take() {
            // Without the lock, still remove: a stray checkout is worse than a rare race.
            let _lock = try_lock_worktree_list(&self.lock_path);
            let result = std::process::Command::new("git")
                .arg("-C")
                .arg(self.repository.root())
                .args(["worktree", "remove", "--force"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !matches!(result, Ok(status) if status.success()) {
                let _removed = std::fs::remove_dir_all(&path);
                let _pruned = std::process::Command::new("git")
                    .arg("-C")
                    .arg(self.repository.root())
                    .args(["worktree", "prune"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Transports git may use. Excludes `ext::`, which runs commands, since review URLs come
/// from requests.
const ALLOWED_PROTOCOLS: &str = "https:http:ssh:git:file";

/// Deletes a linked worktree whose worker is gone, and its entry in its repository's
/// worktree list (`git worktree prune`, under the worktree-list lock). The repository may
/// be gone too; then only the directory is deleted.
pub async fn remove_orphaned_worktree(directory: &Path) -> Result<(), GitError> {
    let link = tokio::fs::read_to_string(directory.join(".git"))
        .await
        .unwrap_or_default();
    // `gitdir: <common git directory>/worktrees/<name>`
    let common = link
        .strip_prefix("gitdir: ")
        .map(|gitdir| PathBuf::from(gitdir.trim()))
        .and_then(|gitdir| Some(gitdir.parent()?.parent()?.to_path_buf()));
    match tokio::fs::remove_dir_all(directory).await {
        // Another worker sharing the directory got there first.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        outcome => outcome.map_err(|source| GitError::DeleteWorktree {
            path: directory.display().to_string(),
            source,
        })?,
    }
    let Some(common) = common.filter(|common| common.is_dir()) else {
        return Ok(());
    };
    let _lock = lock_worktree_list_async(&worktree_lock_path(&common)).await?;
    let git_directory = format!("--git-dir={}", common.display());
    run_git(
        None,
        &[&git_directory, "worktree", "prune"],
        &common.display().to_string(),
    )
    .await?;
    Ok(())
}

/// Takes the lock that serialises `git worktree add`, `remove` and `prune` on one
/// repository, across threads and processes, until the returned file is dropped. Git does
/// not lock its worktree list: concurrent changes fail now and then ("failed to read
/// .git/worktrees/…/commondir") or leave a stale entry behind, and the agents of one review
/// check out the same repository at the same moment.
fn lock_worktree_list(path: &Path) -> Result<std::fs::File, GitError> {
    let file = open_worktree_lock(path)?;
    file.lock().map_err(|source| GitError::WorktreeLock {
        path: path.display().to_string(),
        source,
    })?;
    Ok(file)
}

/// [`lock_worktree_list`] for `Drop`, which may run on an async runtime's only thread while
/// the lock's holder waits to be polled there: it tries for a short while, then gives up.
fn try_lock_worktree_list(path: &Path) -> Option<std::fs::File> {
    let file = open_worktree_lock(path).ok()?;
    for _ in 0..20 {
        if file.try_lock().is_ok() {
            return Some(file);
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    None
}

/// The lock file of the repository whose common git directory is `common`.
fn worktree_lock_path(common: &Path) -> PathBuf {
    common.join("deep-review").join("worktrees.lock")
}

fn open_worktree_lock(path: &Path) -> Result<std::fs::File, GitError> {
    let failed = |source| GitError::WorktreeLock {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(failed)
}

/// [`lock_worktree_list`], waiting on a blocking thread.
async fn lock_worktree_list_async(path: &Path) -> Result<std::fs::File, GitError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || lock_worktree_list(&owned))
        .await
        .map_err(|error| GitError::WorktreeLock {
            path: path.display().to_string(),
            source: std::io::Error::other(error),
        })?
}

/// git, in `directory`, never prompting, in a stable locale, restricted to safe transports.
fn git_command(directory: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(directory);
    configure(&mut command);
    command
}

fn configure(command: &mut Command) {
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
}

/// Runs git (in `directory`, when given) and returns its stdout; `repository` names the
/// repository in errors.
pub(crate) async fn run_git(
    directory: Option<&Path>,
    arguments: &[&str],
    repository: &str,
) -> Result<String, GitError> {
    let mut command = match directory {
        Some(directory) => git_command(directory),
        None => {
            let mut command = Command::new("git");
            configure(&mut command);
            command
        }
    };
    let output = command
        .args(arguments)
        .output()
        .await
        .map_err(GitError::Spawn)?;
    if !output.status.success() {
        // A clone URL may carry a token (`https://x-access-token:…@host`): errors end up in
        // logs and reports, so no URL in them keeps its credentials.
        return Err(GitError::CommandFailed {
            arguments: redact_urls_in(&arguments.join(" ")),
            repository: redact_urls_in(repository),
            stderr: redact_urls_in(String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `owner/name` from an https, ssh or scp-like clone URL.
fn repository_name_from_url(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    let path = if let Some((_, rest)) = trimmed.split_once("://") {
        rest.split_once('/')?.1
    } else if let Some((_, rest)) = trimmed.split_once(':') {
        rest
    } else {
        return None;
    };
    let mut parts: Vec<&str> = path.rsplitn(3, '/').collect();
    if parts.len() < 2 {
        return None;
    }
    parts.truncate(2);
    Some(format!("{}/{}", parts[1], parts[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls() {
        assert_eq!(
            repository_name_from_url("https://github.com/tokio-rs/mini-redis.git").as_deref(),
            Some("tokio-rs/mini-redis")
        );
        assert_eq!(
            repository_name_from_url("git@github.com:BurntSushi/ripgrep.git").as_deref(),
            Some("BurntSushi/ripgrep")
        );
        assert_eq!(repository_name_from_url("/srv/repo"), None);
    }

    async fn git(directory: &Path, arguments: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(directory)
            .args(arguments)
            .status()
            .await
            .unwrap();
        assert!(status.success(), "git {arguments:?}");
    }

    #[tokio::test]
    async fn reads_commits_diff_files_and_worktrees() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        git(root, &["init", "-q", "-b", "main"]).await;
        git(root, &["config", "user.email", "t@example.com"]).await;
        git(root, &["config", "user.name", "Tess"]).await;
        std::fs::write(root.join("a.txt"), "one\n").unwrap();
        git(root, &["add", "."]).await;
        git(root, &["commit", "-q", "-m", "first"]).await;
        std::fs::write(root.join("a.txt"), "one\ntwo\n").unwrap();
        git(root, &["commit", "-q", "-am", "second"]).await;

        let repository = Repository::open(root).await.unwrap();
        let root_commit = repository.resolve("HEAD~1").await.unwrap();
        assert_eq!(
            repository.parent_or_empty_tree(&root_commit).await.unwrap(),
            EMPTY_TREE
        );
        let from_nothing = repository.diff(EMPTY_TREE, &root_commit).await.unwrap();
        assert!(from_nothing.contains("new file mode"), "{from_nothing}");
        assert_eq!(
            repository
                .commits(EMPTY_TREE, &root_commit)
                .await
                .unwrap()
                .len(),
            1
        );
        let head = repository.resolve("HEAD").await.unwrap();
        assert_eq!(
            repository.parent_or_empty_tree("HEAD").await.unwrap(),
            root_commit
        );
        let base = repository.resolve("HEAD~1").await.unwrap();
        assert_eq!(head.len(), 40);
        let commits = repository.commits(&base, &head).await.unwrap();
        assert_eq!(commits, vec![(head.clone(), "second".to_string())]);
        assert_eq!(repository.author(&head).await.unwrap(), "Tess");
        assert_eq!(repository.branch_at(&head).await.as_deref(), Some("main"));
        assert_eq!(repository.branch_at(&base).await, None);
        let diff = repository.diff(&base, &head).await.unwrap();
        assert!(diff.contains("+two"), "{diff}");
        assert_eq!(
            repository.file_at(&base, "a.txt").await.unwrap().as_deref(),
            Some("one\n")
        );
        assert_eq!(repository.file_at(&base, "missing").await.unwrap(), None);
        assert!(matches!(
            repository.resolve("no-such-rev").await,
            Err(GitError::UnknownRevision { .. })
        ));

        let worktree_parent = tempfile::tempdir().unwrap();
        let worktree_path = worktree_parent.path().join("tree");
        let worktree = repository
            .add_worktree(&base, &worktree_path)
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(worktree.path().join("a.txt")).unwrap(),
            "one\n"
        );
        worktree.remove().await.unwrap();
        assert!(!worktree_path.exists());

        let not_a_repository = tempfile::tempdir().unwrap();
        assert!(matches!(
            Repository::open(not_a_repository.path()).await,
            Err(GitError::NotARepository { .. })
        ));
    }

    /// The agents of one review check out one repository at the same moment; git does not
    /// lock its worktree list, so without our lock some of these fail ("failed to read
    /// .git/worktrees/…/commondir") or leave stale entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_checkouts_of_one_repository_all_succeed_and_leave_nothing() {
        let directory = tempfile::tempdir().unwrap();
        let repository = repository_of_twenty_files(directory.path()).await;
        let scratch = tempfile::tempdir().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8 {
            let repository = repository.clone();
            let scratch = scratch.path().to_path_buf();
            tasks.spawn(async move {
                for round in 0..16 {
                    let path = scratch.join(format!("checkout-{task}-{round}"));
                    let worktree = repository.add_worktree("HEAD", &path).await?;
                    worktree.remove().await?;
                }
                Ok::<(), GitError>(())
            });
        }
        while let Some(outcome) = tasks.join_next().await {
            outcome.unwrap().unwrap();
        }
        let listed = repository.output(&["worktree", "list"]).await.unwrap();
        assert_eq!(listed.lines().count(), 1, "{listed}");
    }

    /// A repository in `directory`/repository with one commit of 20 files.
    async fn repository_of_twenty_files(directory: &Path) -> Repository {
        let root = directory.join("repository");
        std::fs::create_dir(&root).unwrap();
        git(&root, &["init", "-q", "-b", "main"]).await;
        git(&root, &["config", "user.email", "t@example.com"]).await;
        git(&root, &["config", "user.name", "Tess"]).await;
        for index in 0..20 {
            std::fs::write(root.join(format!("file-{index}.txt")), "text\n").unwrap();
        }
        git(&root, &["add", "."]).await;
        git(&root, &["commit", "-q", "-m", "files"]).await;
        Repository::open(&root).await.unwrap()
    }

    /// `Drop` may run on a runtime's only thread while the lock's holder waits to be polled
    /// there; waiting for the lock for ever would hang it, so it gives up and removes.
    #[tokio::test]
    async fn dropping_a_worktree_while_its_lock_is_held_still_removes_it() {
        let directory = tempfile::tempdir().unwrap();
        let repository = repository_of_twenty_files(directory.path()).await;
        let path = directory.path().join("checkout");
        let worktree = repository.add_worktree("HEAD", &path).await.unwrap();
        let held = lock_worktree_list(&worktree.lock_path).unwrap();
        let (dropped, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(worktree);
            let _sent = dropped.send(());
        });
        assert!(
            finished
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_ok(),
            "dropping the worktree waited for the lock for ever"
        );
        assert!(!path.exists());
        drop(held);
    }
}
