//! The verification stage: after an agent reported serious findings, the worker checks
//! them by running something, and records the evidence in each finding.
//!
//! What runs comes only from the repository's `.deep-review.toml` on its default branch
//! (its `[verification] command`), never from the pull request or the API. An agent may add
//! a test file to that run (a [`Reproduction`]) that fails while the problem it reports is
//! present. Every run gets a fresh copy of the head commit (from `git archive`, so nothing
//! an agent wrote into its checkout), no secrets, no network, and limits on time, memory
//! and output. Where it runs is the seam: a local sandbox (bubblewrap) or a Kubernetes Job
//! in a namespace of its own.
//!
//! How a run becomes an outcome ([`judge_reproduction`], [`judge_repository_check`]):
//! - a reproduction that passes refutes the finding; one that fails printing what the agent
//!   said it would (`fails_with`) confirms it; any other failure proves nothing;
//! - without a reproduction, the repository's check confirms a finding only when it fails
//!   and its output names the finding's file; a passing check proves nothing about it;
//! - a run a limit stopped proves nothing.
//!
//! The worker's evidence replaces an agent's own account of a check unless it is only
//! inconclusive.

mod kubernetes;
mod local;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deep_review_protocol::{
    Finding, Reproduction, Severity, Verification, VerificationOutcome, VerificationPolicy,
};
use serde::{Deserialize, Serialize};

pub use kubernetes::{KubernetesBackend, KubernetesSettings};
pub use local::LocalBackend;

use crate::change::PreparedChange;

/// The operator's `[verification]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerificationSettings {
    /// Whether workers verify findings at all. Off by default; a repository must also
    /// name its command in `.deep-review.toml`.
    pub enabled: bool,
    /// Where the runs happen.
    pub backend: BackendKind,
    /// The least severe finding that is verified.
    pub min_severity: Severity,
    /// Most findings verified per agent result, the most severe first: each costs a run
    /// of the repository's checks.
    pub max_findings: usize,
    /// Longest one run may take before it is stopped (and proves nothing).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most CPU time one run may use.
    #[serde(with = "humantime_serde")]
    pub cpu_time: Duration,
    /// Most memory one run may use, in MiB (address space locally, the container limit
    /// on Kubernetes).
    pub memory_mib: u64,
    /// Most of a run's output kept as evidence, in KiB: the end, where test runners print
    /// their failures.
    pub output_kib: usize,
    /// Folders a local run may read though the sandbox empties the folder they lie in
    /// (the worker's home, the temporary directory): a toolchain, a package cache.
    pub readable_paths: Vec<PathBuf>,
    /// Folders a local run may write, such as a shared build cache. Whatever is written
    /// there outlives the run, so keep secrets out of them.
    pub writable_paths: Vec<PathBuf>,
    /// Names of environment variables a run inherits from the worker (`RUSTUP_HOME`,
    /// `GOFLAGS`). Never name a secret: the repository's tests could print it into the
    /// report.
    pub inherit_environment: Vec<String>,
    /// The Kubernetes backend's settings.
    pub kubernetes: KubernetesSettings,
}

impl Default for VerificationSettings {
    fn default() -> Self {
        VerificationSettings {
            enabled: false,
            backend: BackendKind::Local,
            min_severity: Severity::Important,
            max_findings: 3,
            timeout: Duration::from_secs(300),
            cpu_time: Duration::from_secs(600),
            memory_mib: 4096,
            output_kib: 16,
            readable_paths: Vec::new(),
            writable_paths: Vec::new(),
            inherit_environment: Vec::new(),
            kubernetes: KubernetesSettings::default(),
        }
    }
}

impl VerificationSettings {
    /// The longest the stage can take after one agent, when it is enabled: a run per
    /// verified finding and one of the repository's check, each with its limit (and, on
    /// Kubernetes, the time to start its pod). The scheduler extends deadlines by it.
    pub fn worst_case_time(&self) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let per_run = match self.backend {
            BackendKind::Local => self.timeout,
            BackendKind::Kubernetes => self.timeout + self.kubernetes.start_timeout,
        };
        let runs = u32::try_from(self.max_findings.saturating_add(1)).unwrap_or(u32::MAX);
        Some(per_run.saturating_mul(runs))
    }
}

/// Where verification runs happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// In a bubblewrap sandbox on the worker's machine.
    Local,
    /// In a Kubernetes Job, in a namespace created for the run and deleted after it.
    Kubernetes,
}

/// Why a verification could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    /// The configuration cannot work on this machine or cluster.
    #[error("verification.{0}")]
    Configuration(String),
    /// The backend failed to run the check (not the check failing).
    #[error("{backend} verification could not run: {reason}")]
    Backend {
        /// `local` or `kubernetes`.
        backend: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Limits of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLimits {
    /// Wall-clock time.
    pub timeout: Duration,
    /// CPU time.
    pub cpu_time: Duration,
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Output kept, in bytes.
    pub output_bytes: usize,
}

/// One run to make.
#[derive(Debug, Clone)]
pub struct VerificationRun<'a> {
    /// The review it belongs to, for names and labels.
    pub review_id: &'a str,
    /// The head commit's files, as a gzipped tar.
    pub source_archive: &'a Path,
    /// A file added to them (the reproduction): its path and content.
    pub extra_file: Option<(&'a str, &'a str)>,
    /// The shell command to run at the root of the files.
    pub command: &'a str,
    /// What the run may use.
    pub limits: &'a RunLimits,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvidence {
    /// Its exit code; `None` when a limit or a signal stopped it.
    pub exit_code: Option<i32>,
    /// Which limit stopped it, when one did ("the 5m time limit").
    pub stopped_by: Option<String>,
    /// The end of its output (stdout and stderr interleaved).
    pub output: String,
    /// How long it ran.
    pub duration: Duration,
}

/// Runs verification commands somewhere isolated.
#[async_trait]
pub trait VerificationBackend: Send + Sync {
    /// `local` or `kubernetes`, as the report names it.
    fn name(&self) -> &'static str;

    /// Runs `run` and reports what it did; an error only when the run could not be made.
    async fn run(&self, run: VerificationRun<'_>) -> Result<RunEvidence, VerificationError>;
}

/// The verification stage of a worker.
#[derive(Clone)]
pub struct Verifier {
    settings: VerificationSettings,
    backend: Arc<dyn VerificationBackend>,
}

impl Verifier {
    /// The stage `settings` describe, or `None` when they leave it off. An error when the
    /// chosen backend cannot work here (no bubblewrap, no cluster credentials).
    pub fn from_settings(
        settings: &VerificationSettings,
    ) -> Result<Option<Self>, VerificationError> {
        if !settings.enabled {
            return Ok(None);
        }
        let backend: Arc<dyn VerificationBackend> = match settings.backend {
            BackendKind::Local => Arc::new(LocalBackend::new(settings)?),
            BackendKind::Kubernetes => {
                Arc::new(KubernetesBackend::from_settings(&settings.kubernetes)?)
            }
        };
        Ok(Some(Verifier::with_backend(settings.clone(), backend)))
    }

    /// The stage with `backend`, for tests and embedders with a backend of their own.
    pub fn with_backend(
        settings: VerificationSettings,
        backend: Arc<dyn VerificationBackend>,
    ) -> Self {
        Verifier { settings, backend }
    }

    fn limits(&self) -> RunLimits {
        RunLimits {
            timeout: self.settings.timeout,
            cpu_time: self.settings.cpu_time,
            memory_bytes: self.settings.memory_mib.saturating_mul(1024 * 1024),
            output_bytes: self.settings.output_kib.saturating_mul(1024).max(1024),
        }
    }

    /// Verifies the serious findings of one agent result under `policy`, writing the
    /// evidence into them. Never fails: a run that could not be made leaves an
    /// inconclusive verification saying why.
    pub async fn verify(
        &self,
        policy: &VerificationPolicy,
        review_id: &str,
        change: &PreparedChange,
        findings: &mut [Finding],
    ) {
        let mut chosen: Vec<usize> = (0..findings.len())
            .filter(|&index| findings[index].severity >= self.settings.min_severity)
            .collect();
        chosen.sort_by_key(|&index| std::cmp::Reverse(findings[index].severity));
        chosen.truncate(self.settings.max_findings);
        if chosen.is_empty() {
            return;
        }
        let backend = self.backend.name();
        let unverifiable = |reason: String| Verification {
            command: policy.command.clone(),
            output: String::new(),
            outcome: VerificationOutcome::Inconclusive,
            reason: Some(reason),
            exit_code: None,
            duration_ms: None,
            sandbox: Some(backend.to_string()),
        };
        let folder = match tempfile::Builder::new()
            .prefix("deep-review-verify-source-")
            .tempdir()
        {
            Ok(folder) => folder,
            Err(error) => {
                let reason =
                    format!("the verification could not run: no temporary folder ({error})");
                for &index in &chosen {
                    record(&mut findings[index], unverifiable(reason.clone()));
                }
                return;
            }
        };
        let archive = folder.path().join("head.tar.gz");
        let archived = match change.archive_head(&archive).await {
            None => Err("the change has no repository (an inline diff), so there is no commit to run the check on".to_string()),
            Some(Err(error)) => Err(format!("the head commit could not be archived: {error}")),
            Some(Ok(())) => Ok(()),
        };
        if let Err(reason) = archived {
            for &index in &chosen {
                record(
                    &mut findings[index],
                    unverifiable(format!("the verification could not run: {reason}")),
                );
            }
            return;
        }
        let limits = self.limits();
        // The repository's check without a reproduction is the same for every finding:
        // run once, on first need.
        let mut repository_check: Option<Result<RunEvidence, String>> = None;
        for index in chosen {
            let finding = &findings[index];
            let reproduction = finding
                .reproduction
                .clone()
                .filter(|_| policy.reproductions);
            let verification = match reproduction {
                Some(reproduction) => match reproduction_problem(&reproduction, change).await {
                    Some(problem) => {
                        unverifiable(format!("the proposed test was not run: {problem}"))
                    }
                    None => {
                        let run = VerificationRun {
                            review_id,
                            source_archive: &archive,
                            extra_file: Some((&reproduction.path, &reproduction.content)),
                            command: &policy.command,
                            limits: &limits,
                        };
                        match self.backend.run(run).await {
                            Ok(evidence) => {
                                let (outcome, reason) =
                                    judge_reproduction(&evidence, &reproduction);
                                evidence.into_verification(
                                    policy,
                                    outcome,
                                    reason,
                                    backend,
                                    Some(&reproduction.path),
                                )
                            }
                            Err(error) => {
                                unverifiable(format!("the verification could not run: {error}"))
                            }
                        }
                    }
                },
                None => {
                    if repository_check.is_none() {
                        let run = VerificationRun {
                            review_id,
                            source_archive: &archive,
                            extra_file: None,
                            command: &policy.command,
                            limits: &limits,
                        };
                        repository_check = Some(
                            self.backend
                                .run(run)
                                .await
                                .map_err(|error| error.to_string()),
                        );
                    }
                    match repository_check.as_ref() {
                        Some(Ok(evidence)) => {
                            let (outcome, reason) = judge_repository_check(evidence, finding);
                            evidence
                                .clone()
                                .into_verification(policy, outcome, reason, backend, None)
                        }
                        Some(Err(error)) => {
                            unverifiable(format!("the verification could not run: {error}"))
                        }
                        None => unverifiable("the verification could not run".to_string()),
                    }
                }
            };
            tracing::info!(
                review = review_id,
                finding = %findings[index].title,
                outcome = ?verification.outcome,
                exit_code = verification.exit_code,
                duration_ms = verification.duration_ms,
                "verified a finding"
            );
            record(&mut findings[index], verification);
        }
    }
}

impl RunEvidence {
    fn into_verification(
        self,
        policy: &VerificationPolicy,
        outcome: VerificationOutcome,
        reason: String,
        backend: &str,
        reproduction: Option<&str>,
    ) -> Verification {
        let command = match reproduction {
            Some(path) => format!("{}  # with the proposed test {path}", policy.command),
            None => policy.command.clone(),
        };
        Verification {
            command,
            output: self.output,
            outcome,
            reason: Some(reason),
            exit_code: self.exit_code,
            duration_ms: Some(u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX)),
            sandbox: Some(backend.to_string()),
        }
    }
}

/// Puts the worker's evidence in `finding`: it replaces the agent's own account unless it
/// settles nothing and the agent gave one.
fn record(finding: &mut Finding, verification: Verification) {
    if verification.outcome != VerificationOutcome::Inconclusive || finding.verification.is_none() {
        finding.verification = Some(verification);
    }
}

/// Why a proposed test cannot be added to the head commit's files, if it cannot: it must
/// be a new file at a plain relative path outside `.git`.
async fn reproduction_problem(
    reproduction: &Reproduction,
    change: &PreparedChange,
) -> Option<String> {
    let path = Path::new(&reproduction.path);
    let plain = !reproduction.path.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if !plain {
        return Some(format!(
            "its path `{}` must be relative, without `..`",
            reproduction.path
        ));
    }
    if path
        .components()
        .next()
        .is_some_and(|first| first.as_os_str() == ".git")
    {
        return Some(format!("its path `{}` lies in `.git`", reproduction.path));
    }
    if reproduction.fails_with.trim().is_empty() {
        return Some(
            "it gives no `fails_with` text, so its failure could not be told from any other"
                .to_string(),
        );
    }
    if change.head_file(&reproduction.path).await.is_some() {
        return Some(format!(
            "`{}` already exists at the head commit; a reproduction must be a new file",
            reproduction.path
        ));
    }
    None
}

/// What a run with the agent's proposed test shows.
pub fn judge_reproduction(
    evidence: &RunEvidence,
    reproduction: &Reproduction,
) -> (VerificationOutcome, String) {
    let path = &reproduction.path;
    if let Some(limit) = &evidence.stopped_by {
        return (
            VerificationOutcome::Inconclusive,
            format!("the run with the proposed test `{path}` was stopped by {limit}, which proves nothing"),
        );
    }
    match evidence.exit_code {
        Some(0) => (
            VerificationOutcome::Refuted,
            format!("the proposed test `{path}` passes at the head commit, so the problem it tests for does not occur"),
        ),
        Some(code) if evidence.output.contains(reproduction.fails_with.trim()) => (
            VerificationOutcome::Confirmed,
            format!(
                "the proposed test `{path}` fails at the head commit (exit {code}) with `{}`",
                reproduction.fails_with.trim()
            ),
        ),
        Some(code) => (
            VerificationOutcome::Inconclusive,
            format!(
                "the run with the proposed test `{path}` failed (exit {code}) without printing `{}`: the test may not build, or the check failed for another reason",
                reproduction.fails_with.trim()
            ),
        ),
        None => (
            VerificationOutcome::Inconclusive,
            format!("the run with the proposed test `{path}` ended without an exit code, which proves nothing"),
        ),
    }
}

/// What the repository's own check shows about `finding`.
pub fn judge_repository_check(
    evidence: &RunEvidence,
    finding: &Finding,
) -> (VerificationOutcome, String) {
    if let Some(limit) = &evidence.stopped_by {
        return (
            VerificationOutcome::Inconclusive,
            format!("the repository's check was stopped by {limit}, which proves nothing"),
        );
    }
    let Some(code) = evidence.exit_code else {
        return (
            VerificationOutcome::Inconclusive,
            "the repository's check ended without an exit code, which proves nothing".to_string(),
        );
    };
    if code == 0 {
        return (
            VerificationOutcome::Inconclusive,
            "the repository's check passes at the head commit; it does not exercise this finding"
                .to_string(),
        );
    }
    let named = finding.locations.first().and_then(|location| {
        let path = location.path.as_str();
        let file_name = Path::new(path).file_name().and_then(|name| name.to_str());
        [Some(path), file_name]
            .into_iter()
            .flatten()
            .find(|needle| !needle.is_empty() && evidence.output.contains(needle))
    });
    match named {
        Some(needle) => (
            VerificationOutcome::Confirmed,
            format!("the repository's check fails at the head commit (exit {code}) and its output names `{needle}`"),
        ),
        None => (
            VerificationOutcome::Inconclusive,
            format!(
                "the repository's check fails at the head commit (exit {code}), but its output does not name {}",
                finding
                    .locations
                    .first()
                    .map_or("the finding's file".to_string(), |location| format!("`{}`", location.path))
            ),
        ),
    }
}

/// Keeps the end of `output` within `limit` bytes, saying how much was left out.
pub(crate) fn output_excerpt(output: &[u8], left_out: usize, limit: usize) -> String {
    let start = output.len().saturating_sub(limit);
    let text = String::from_utf8_lossy(&output[start..]);
    let text = strip_ansi_escapes::strip_str(&text);
    let dropped = left_out + start;
    if dropped > 0 {
        format!("… ({dropped} bytes of output before this left out)\n{text}")
    } else {
        text
    }
}

/// `300s` → `the 5m time limit`, for reasons.
pub(crate) fn limit_name(duration: Duration, what: &str) -> String {
    format!("the {} {what} limit", crate::humanize(duration))
}

#[cfg(test)]
mod tests;
