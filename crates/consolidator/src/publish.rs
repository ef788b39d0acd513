//! Where reports go. Files now; GitHub comments and check runs implement the same trait.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use deep_review_protocol::{redact_url, Report, ReviewJob, ReviewManifest, Source};
use serde::{Deserialize, Serialize};

use crate::render;

/// Why a report could not be published.
#[derive(Debug, thiserror::Error)]
#[error("publishing to {publisher} failed: {reason}")]
pub struct PublishError {
    /// Which publisher failed.
    pub publisher: String,
    /// What went wrong.
    pub reason: String,
}

/// Delivers a finished report somewhere. Publishing the same report twice must leave the
/// same result as once, since a consolidator may retry after a crash.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// A short name for logs and errors.
    fn name(&self) -> String;

    /// Publishes `report` of the review described by `manifest`.
    async fn publish(&self, manifest: &ReviewManifest, report: &Report)
        -> Result<(), PublishError>;
}

/// Saves the report in the result store, where `GET /v1/reviews/{id}` and
/// `deep-review submit --wait` on other machines find it.
pub struct StorePublisher {
    store: std::sync::Arc<dyn deep_review_transport::ResultStore>,
}

impl StorePublisher {
    /// Publishes into `store`.
    pub fn new(store: std::sync::Arc<dyn deep_review_transport::ResultStore>) -> Self {
        StorePublisher { store }
    }
}

#[async_trait]
impl Publisher for StorePublisher {
    fn name(&self) -> String {
        "result store".to_string()
    }

    async fn publish(
        &self,
        _manifest: &ReviewManifest,
        report: &Report,
    ) -> Result<(), PublishError> {
        self.store
            .save_report(report)
            .await
            .map_err(|error| PublishError {
                publisher: self.name(),
                reason: error.to_string(),
            })
    }
}

/// A report file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// `report.md`.
    Markdown,
    /// `report.html`.
    Html,
    /// `report.json`.
    Json,
    /// `report.sarif` (SARIF 2.1.0, for code scanning).
    Sarif,
}

impl OutputFormat {
    /// Every format.
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Markdown,
        OutputFormat::Html,
        OutputFormat::Json,
        OutputFormat::Sarif,
    ];

    /// The report file this format is written to.
    pub fn file_name(self) -> &'static str {
        match self {
            OutputFormat::Markdown => "report.md",
            OutputFormat::Html => "report.html",
            OutputFormat::Json => "report.json",
            OutputFormat::Sarif => "report.sarif",
        }
    }
}

/// Writes `report.md`, `report.html`, `report.json`, `review.json` (the job) and
/// `agents/<agent>.json` (each agent's result) into a directory.
#[derive(Debug, Clone)]
pub struct FilesPublisher {
    root: PathBuf,
    formats: Vec<OutputFormat>,
    per_review_directory: bool,
    /// Masks secrets in the text `review.json` quotes (the diff, the PR description), as the
    /// report masks them.
    mask_secrets: Option<fn(&str) -> String>,
}

impl FilesPublisher {
    /// Writes straight into `directory` (one review, as `deep-review review --out` does).
    pub fn into_directory(directory: impl Into<PathBuf>, formats: Vec<OutputFormat>) -> Self {
        FilesPublisher {
            root: directory.into(),
            formats,
            per_review_directory: false,
            mask_secrets: None,
        }
    }

    /// Writes each review into `root/<review id>/` (a long-running consolidator).
    pub fn per_review(root: impl Into<PathBuf>, formats: Vec<OutputFormat>) -> Self {
        FilesPublisher {
            root: root.into(),
            formats,
            per_review_directory: true,
            mask_secrets: None,
        }
    }

    /// Masks secrets with `mask` in the text `review.json` quotes.
    pub fn with_secret_masking(mut self, mask: fn(&str) -> String) -> Self {
        self.mask_secrets = Some(mask);
        self
    }

    /// The job as `review.json` shows it: no credentials in a clone URL, and secrets in the
    /// diff and the description masked.
    fn shown_job(&self, job: &ReviewJob) -> ReviewJob {
        let mut job = job.clone();
        match &mut job.source {
            Source::GitRemote { url, .. } => *url = redact_url(url),
            Source::InlineDiff { diff } => {
                if let Some(mask) = self.mask_secrets {
                    *diff = mask(diff);
                }
            }
            Source::LocalRepo { .. } => {}
        }
        if let (Some(mask), Some(body)) = (self.mask_secrets, job.pull_request.body.as_mut()) {
            *body = mask(body);
        }
        job
    }

    /// The directory a review's files go to.
    pub fn directory_for(&self, review_id: &str) -> PathBuf {
        if self.per_review_directory {
            self.root.join(safe_file_name(review_id))
        } else {
            self.root.clone()
        }
    }

    fn error(&self, reason: String) -> PublishError {
        PublishError {
            publisher: self.name(),
            reason,
        }
    }

    async fn write(&self, path: &Path, content: &[u8]) -> Result<(), PublishError> {
        // Write then rename, so a reader never sees half a report.
        let temporary = path.with_extension("partial");
        tokio::fs::write(&temporary, content)
            .await
            .map_err(|error| self.error(format!("writing {}: {error}", temporary.display())))?;
        tokio::fs::rename(&temporary, path)
            .await
            .map_err(|error| self.error(format!("renaming to {}: {error}", path.display())))
    }
}

#[async_trait]
impl Publisher for FilesPublisher {
    fn name(&self) -> String {
        format!("files in {}", self.root.display())
    }

    async fn publish(
        &self,
        manifest: &ReviewManifest,
        report: &Report,
    ) -> Result<(), PublishError> {
        let directory = self.directory_for(&report.review_id);
        let agents_directory = directory.join("agents");
        tokio::fs::create_dir_all(&agents_directory)
            .await
            .map_err(|error| {
                self.error(format!("creating {}: {error}", agents_directory.display()))
            })?;
        for format in &self.formats {
            let content = match format {
                OutputFormat::Markdown => render::markdown::render(report),
                OutputFormat::Html => render::html::render(report),
                OutputFormat::Json => render::json(report)
                    .map_err(|error| self.error(format!("encoding the report: {error}")))?,
                OutputFormat::Sarif => render::sarif::render(report)
                    .map_err(|error| self.error(format!("encoding the SARIF log: {error}")))?,
            };
            self.write(&directory.join(format.file_name()), content.as_bytes())
                .await?;
        }
        let job = serde_json::to_vec_pretty(&self.shown_job(&manifest.job))
            .map_err(|error| self.error(format!("encoding the review job: {error}")))?;
        self.write(&directory.join("review.json"), &job).await?;
        for result in &report.appendix {
            let content = serde_json::to_vec_pretty(result).map_err(|error| {
                self.error(format!("encoding {}'s result: {error}", result.agent))
            })?;
            let path = agents_directory.join(format!("{}.json", unique_file_name(&result.agent)));
            self.write(&path, &content).await?;
        }
        Ok(())
    }
}

/// A file name for `name` that no other name shares: the name itself when it is already a
/// safe file name, otherwise its safe form plus a hash of the original, so `a/b` and `a_b`
/// (both `a_b` when made safe) never overwrite each other's file.
pub fn unique_file_name(name: &str) -> String {
    let safe = safe_file_name(name);
    if safe == name {
        return safe;
    }
    format!("{safe}-{:08x}", crate::stable_hash(name) & 0xffff_ffff)
}

/// A file name from an agent or review name: anything but `[A-Za-z0-9._-]` becomes `_`,
/// so a hand-written name like `../x` cannot escape the directory.
pub fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || "._-".contains(character) {
                character
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "_".to_string(),
        trimmed => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape() {
        assert_eq!(safe_file_name("../etc/passwd"), "_etc_passwd");
        assert_eq!(safe_file_name("claude-opus.4"), "claude-opus.4");
        assert_eq!(safe_file_name(""), "_");
        assert_eq!(safe_file_name(".."), "_");
    }

    #[test]
    fn review_json_shows_no_credentials_or_secrets() {
        let mut job: ReviewJob = serde_json::from_value(serde_json::json!({
            "id": "r1",
            "created_at": "2026-01-01T00:00:00Z",
            "deadline": "2026-01-01T00:10:00Z",
            "source": {"kind": "git-remote", "url": "https://x-access-token:ghs_secret@github.com/a/b.git", "base_sha": "a", "head_sha": "b"},
            "round": 1,
            "agents": []
        }))
        .expect("a job");
        job.pull_request.body = Some("key: SECRET-IN-BODY".into());
        let publisher = FilesPublisher::into_directory("/nonexistent", Vec::new())
            .with_secret_masking(|text| text.replace("SECRET-IN-BODY", "SECR****"));
        let shown = serde_json::to_string(&publisher.shown_job(&job)).expect("json");
        assert!(!shown.contains("ghs_secret"), "{shown}");
        assert!(shown.contains("x-access-token:***@github.com"), "{shown}");
        assert!(!shown.contains("SECRET-IN-BODY"), "{shown}");
        job.source = Source::InlineDiff {
            diff: "+password = SECRET-IN-BODY\n".into(),
        };
        let shown = serde_json::to_string(&publisher.shown_job(&job)).expect("json");
        assert!(!shown.contains("SECRET-IN-BODY"), "{shown}");
    }

    #[test]
    fn names_that_clean_to_one_file_name_keep_apart() {
        assert_eq!(unique_file_name("a_b"), "a_b");
        let slashed = unique_file_name("a/b");
        assert!(
            slashed.starts_with("a_b-") && slashed.len() == "a_b-".len() + 8,
            "{slashed}"
        );
        assert_ne!(unique_file_name("a/b"), unique_file_name("a b"));
        assert_eq!(unique_file_name("a/b"), slashed, "stable");
    }
}
