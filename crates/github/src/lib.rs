//! GitHub integration: how an organisation turns deep-review on for every pull request.
//!
//! - [`GitHub`] authenticates as a GitHub App (JWT, then per-installation tokens that
//!   octocrab caches and refreshes) or with a plain token, against github.com or an
//!   Enterprise Server.
//! - [`webhook`] verifies deliveries and decides which ones ask for a review.
//! - [`ingest`] reads a pull request (metadata, commits, files, diff, the repository's
//!   `.deep-review.toml`) into a review request.
//! - [`GitHubPublisher`] posts the report: one sticky comment, inline comments on the
//!   lines of serious findings, and a neutral check run.
//! - [`sweep`] finds the open pull requests of an organisation that have no review yet.
//!
//! The token never leaves this crate's callers (the scheduler and the publisher): review
//! requests carry clone URLs and SHAs, never credentials.

mod client;
pub mod ingest;
mod publish;
pub mod repository_config;
pub mod sanitize;
mod service;
mod settings;
pub mod sweep;
pub mod webhook;

pub use client::{GitHub, RepositoryName};
pub use publish::{
    check_run, close_superseded_check_run, fingerprint, published_round, GitHubPublisher,
    REPORT_MARKER,
};
pub use service::{GitHubService, ServiceError};
pub use settings::{CheckoutMode, GitHubSettings, RepositoryConfigLimits};

/// What went wrong talking to GitHub or reading what it sent.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// The GitHub configuration is incomplete or wrong; names the setting.
    #[error("GitHub configuration: {0}")]
    Configuration(String),
    /// A GitHub API call failed.
    #[error("GitHub API: {action} failed: {reason}")]
    Api {
        /// What was being done, e.g. "listing the files of acme/widgets#42".
        action: String,
        /// GitHub's message and status, or the transport error.
        reason: String,
        /// The HTTP status GitHub answered, when it answered.
        status: Option<u16>,
    },
    /// A webhook payload or an API answer did not have the expected shape.
    #[error("unexpected GitHub payload: {0}")]
    Payload(String),
}

impl GitHubError {
    /// Wraps an octocrab error with what was being done.
    pub(crate) fn api(action: impl Into<String>, error: octocrab::Error) -> Self {
        let (reason, status) = match &error {
            octocrab::Error::GitHub { source, .. } => (
                format!("{} (HTTP {})", source.message, source.status_code.as_u16()),
                Some(source.status_code.as_u16()),
            ),
            other => (first_line(&other.to_string()), None),
        };
        GitHubError::Api {
            action: action.into(),
            reason,
            status,
        }
    }

    /// Whether trying again later may succeed: the network failed, GitHub failed (5xx)
    /// or a rate limit was hit. A refusal (401, 403, 404, 422) or a configuration or
    /// payload problem will fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            GitHubError::Api { status: None, .. } => true,
            GitHubError::Api {
                status: Some(status),
                reason,
                ..
            } => {
                *status >= 500
                    || *status == 429
                    || (*status == 403 && reason.to_ascii_lowercase().contains("rate limit"))
            }
            GitHubError::Configuration(_) | GitHubError::Payload(_) => false,
        }
    }
}

/// octocrab's messages end with a backtrace; logs and reports want the first line.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::GitHubError;

    fn api(status: Option<u16>, reason: &str) -> GitHubError {
        GitHubError::Api {
            action: "testing".into(),
            reason: reason.into(),
            status,
        }
    }

    #[test]
    fn only_outages_and_rate_limits_are_transient() {
        assert!(api(None, "connection reset").is_transient());
        assert!(api(Some(502), "Bad Gateway").is_transient());
        assert!(api(Some(429), "Too Many Requests").is_transient());
        assert!(api(Some(403), "You have exceeded a secondary rate limit").is_transient());
        assert!(!api(Some(403), "Resource not accessible by integration").is_transient());
        assert!(!api(Some(404), "Not Found").is_transient());
        assert!(!GitHubError::Payload("x".into()).is_transient());
    }
}
