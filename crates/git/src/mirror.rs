//! A cache of bare mirrors of remote repositories, so workers on any machine can review a
//! git URL: clone once, fetch when a needed commit is missing, then check out worktrees.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::repository::run_git;
use crate::{GitError, Repository};

/// Whether `url` names a repository on this machine's filesystem (`file://`, or a path)
/// rather than on a git server (`https://`, `ssh://`, `git://`, or `host:path`).
pub fn is_local_git_url(url: &str) -> bool {
    let url = url.trim();
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme.eq_ignore_ascii_case("file");
    }
    // git's scp-like syntax, `[user@]host:path`: a colon before any slash.
    match url.find(':') {
        Some(colon) => url[..colon].contains('/') || colon == 0,
        None => true,
    }
}

/// Bare mirrors under one directory, one per URL.
pub struct MirrorCache {
    root: PathBuf,
    /// One lock per URL, so concurrent tasks of one process do not clone or fetch it twice.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl MirrorCache {
    /// A cache in `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        MirrorCache {
            root: root.into(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The mirror of `url`, holding every commit in `commits` (cloned or fetched as needed).
    pub async fn repository(&self, url: &str, commits: &[&str]) -> Result<Repository, GitError> {
        if url.starts_with('-') || url.trim().is_empty() {
            return Err(GitError::CommandFailed {
                arguments: "clone".to_string(),
                repository: deep_review_protocol::redact_url(url),
                stderr: "not a repository URL".to_string(),
            });
        }
        let lock = {
            let mut locks = self.locks.lock().await;
            Arc::clone(locks.entry(url.to_string()).or_default())
        };
        let _guard = lock.lock().await;
        let directory = self.root.join(mirror_name(url));
        if !directory.join("HEAD").is_file() {
            tokio::fs::create_dir_all(&self.root)
                .await
                .map_err(GitError::Spawn)?;
            let partial = self.root.join(format!(
                "{}.partial-{}",
                mirror_name(url),
                std::process::id()
            ));
            let _stale = tokio::fs::remove_dir_all(&partial).await;
            run_git(
                None,
                &[
                    "clone",
                    "--bare",
                    "--quiet",
                    "--",
                    url,
                    &partial.display().to_string(),
                ],
                url,
            )
            .await?;
            tokio::fs::rename(&partial, &directory)
                .await
                .map_err(GitError::Spawn)?;
        }
        let repository = Repository::open_bare(&directory);
        let mut missing = Vec::new();
        for commit in commits {
            if repository.resolve(commit).await.is_err() {
                missing.push(*commit);
            }
        }
        if !missing.is_empty() {
            // Branches, tags and pull-request heads; then any commit still missing by id.
            let directory_text = directory.display().to_string();
            run_git(
                Some(&directory),
                &[
                    "fetch",
                    "--quiet",
                    "--prune",
                    "origin",
                    "+refs/heads/*:refs/heads/*",
                    "+refs/tags/*:refs/tags/*",
                    "+refs/pull/*:refs/pull/*",
                ],
                &directory_text,
            )
            .await?;
            for commit in missing {
                if repository.resolve(commit).await.is_err() {
                    run_git(
                        Some(&directory),
                        &["fetch", "--quiet", "origin", commit],
                        &directory_text,
                    )
                    .await
                    .map_err(|_| GitError::UnknownRevision {
                        revision: commit.to_string(),
                        repository: deep_review_protocol::redact_url(url),
                        stderr: "the commit is not on the remote".to_string(),
                    })?;
                }
            }
        }
        Ok(repository)
    }
}

/// A directory name for `url`: readable tail plus a hash, so different URLs never collide.
fn mirror_name(url: &str) -> String {
    let tail: String = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repository")
        .chars()
        .filter(|character| character.is_ascii_alphanumeric() || "-_.".contains(*character))
        .collect();
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{tail}-{hash:016x}.git")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::process::Command;

    use super::*;

    async fn git(directory: &Path, arguments: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(directory)
            .args(arguments)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "git {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    #[test]
    fn mirror_names_are_readable_and_distinct() {
        let first = mirror_name("https://github.com/acme/shop.git");
        assert!(
            first.starts_with("shop-") && first.ends_with(".git"),
            "{first}"
        );
        assert_ne!(first, mirror_name("https://gitlab.com/acme/shop.git"));
    }

    #[tokio::test]
    async fn clones_once_then_fetches_new_commits() {
        let origin = tempfile::tempdir().unwrap();
        git(origin.path(), &["init", "-q", "-b", "main"]).await;
        git(origin.path(), &["config", "user.email", "a@b.c"]).await;
        git(origin.path(), &["config", "user.name", "A"]).await;
        std::fs::write(origin.path().join("a.txt"), "one\n").unwrap();
        git(origin.path(), &["add", "."]).await;
        git(origin.path(), &["commit", "-q", "-m", "one"]).await;
        let first = git(origin.path(), &["rev-parse", "HEAD"]).await;
        let url = format!("file://{}", origin.path().display());

        let cache_directory = tempfile::tempdir().unwrap();
        let cache = MirrorCache::new(cache_directory.path());
        let mirror = cache.repository(&url, &[&first]).await.unwrap();
        assert_eq!(mirror.resolve(&first).await.unwrap(), first);

        std::fs::write(origin.path().join("a.txt"), "one\ntwo\n").unwrap();
        git(origin.path(), &["commit", "-q", "-am", "two"]).await;
        let second = git(origin.path(), &["rev-parse", "HEAD"]).await;
        let mirror = cache.repository(&url, &[&first, &second]).await.unwrap();
        assert!(mirror.diff(&first, &second).await.unwrap().contains("+two"));
        let checkout = tempfile::tempdir().unwrap();
        let worktree = mirror.add_worktree(&second, checkout.path()).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(worktree.path().join("a.txt")).unwrap(),
            "one\ntwo\n"
        );
        worktree.remove().await.unwrap();

        let missing = cache
            .repository(&url, &["0123456789abcdef0123456789abcdef01234567"])
            .await;
        assert!(
            matches!(missing, Err(GitError::UnknownRevision { .. })),
            "{missing:?}"
        );
        let refused = cache.repository("ext::sh -c touch% /tmp/pwned", &[]).await;
        assert!(refused.is_err());
        assert!(cache.repository("--upload-pack=evil", &[]).await.is_err());
    }
}

#[cfg(test)]
mod url_tests {
    use super::is_local_git_url;

    #[test]
    fn local_and_remote_urls() {
        for local in [
            "file:///srv/private",
            "FILE:///srv/private",
            "/srv/private",
            "../private",
            "private",
            "./a:b",
        ] {
            assert!(is_local_git_url(local), "{local}");
        }
        for remote in [
            "https://github.com/acme/shop.git",
            "ssh://git@github.com/acme/shop.git",
            "git@github.com:acme/shop.git",
            "git://example.com/shop",
        ] {
            assert!(!is_local_git_url(remote), "{remote}");
        }
    }
}
