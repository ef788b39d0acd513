use deep_review_protocol::Severity;
use serde::{Deserialize, Serialize};

/// The `[github]` table: how deep-review talks to GitHub. Secrets are never written here;
/// the table names the environment variables or files that hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitHubSettings {
    /// REST API root: `https://api.github.com`, or `https://HOST/api/v3` for GitHub
    /// Enterprise Server.
    pub api_url: String,
    /// The GitHub App's id; with a private key, deep-review acts as the App (recommended
    /// for an organisation). Without it, a plain token is used.
    pub app_id: Option<u64>,
    /// File holding the App's private key (PEM), e.g. a mounted Kubernetes secret.
    pub private_key_path: Option<String>,
    /// Environment variable holding the App's private key (PEM), when no file is given.
    pub private_key_env: String,
    /// Environment variable holding a plain token (personal access token or
    /// `GITHUB_TOKEN`), used when no App is configured.
    pub token_env: String,
    /// Environment variable holding the webhook secret; the webhook route refuses every
    /// delivery when it is unset. (Not `DEEP_REVIEW_…`: those variables are configuration.)
    pub webhook_secret_env: String,
    /// Whether draft pull requests are reviewed; skipped by default until ready.
    pub review_drafts: bool,
    /// The comment command that asks for a new round.
    pub command: String,
    /// Author associations allowed to use the command (GitHub's `author_association`):
    /// on public repositories anyone can comment, and every round costs money.
    pub command_associations: Vec<String>,
    /// How workers get the code.
    pub checkout: CheckoutMode,
    /// The check run's name, shown in the PR's checks list.
    pub check_run_name: String,
    /// Whether a `rework` (or `incomplete`: the review could not run) verdict fails the
    /// check run; off, the check is always neutral and deep-review never blocks a merge.
    pub fail_check_on_rework: bool,
    /// Whether findings get inline review comments on their lines.
    pub inline_comments: bool,
    /// The least severe finding that gets an inline comment.
    pub inline_min_severity: Severity,
    /// Base URL under which the HTML reports are served (`{base}/{review id}/report.html`);
    /// the comment and the check run link to it when set.
    pub report_url_base: Option<String>,
    /// What a repository's `.deep-review.toml` may change.
    pub repository_config: RepositoryConfigLimits,
    /// Reviews a sweep keeps running at once.
    pub sweep_max_in_flight: usize,
    /// A check run still in progress this long after it started belongs to a review that
    /// was lost: a sweep reviews its head again and closes it. Longer than any review's
    /// deadline.
    #[serde(with = "humantime_serde")]
    pub sweep_abandoned_after: std::time::Duration,
}

impl Default for GitHubSettings {
    fn default() -> Self {
        GitHubSettings {
            api_url: "https://api.github.com".to_string(),
            app_id: None,
            private_key_path: None,
            private_key_env: "GITHUB_APP_PRIVATE_KEY".to_string(),
            token_env: "GITHUB_TOKEN".to_string(),
            webhook_secret_env: "GITHUB_WEBHOOK_SECRET".to_string(),
            review_drafts: false,
            command: "/deep-review".to_string(),
            command_associations: vec![
                "OWNER".to_string(),
                "MEMBER".to_string(),
                "COLLABORATOR".to_string(),
            ],
            checkout: CheckoutMode::Clone,
            check_run_name: "deep-review".to_string(),
            fail_check_on_rework: false,
            inline_comments: true,
            inline_min_severity: Severity::Important,
            report_url_base: None,
            repository_config: RepositoryConfigLimits::default(),
            sweep_max_in_flight: 4,
            sweep_abandoned_after: std::time::Duration::from_secs(6 * 60 * 60),
        }
    }
}

/// How workers get the code of a pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckoutMode {
    /// Workers clone the repository (through their mirror cache) and check out the head
    /// commit, so agents can read whole files. Workers need their own read access
    /// (a deploy key or credential helper): the GitHub token is never handed to them.
    Clone,
    /// Workers get the diff GitHub renders, inline in the task, and need no repository
    /// access; agents see only the diff.
    Diff,
}

/// The limits within which a repository's `.deep-review.toml` can change its review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepositoryConfigLimits {
    /// Whether `.deep-review.toml` is read at all.
    pub enabled: bool,
    /// Agents (by name, from the operator's line-up) a repository may pick; empty allows
    /// every configured agent.
    pub allowed_agents: Vec<String>,
    /// Whether a repository may override severity and verdict rules.
    pub allow_severity_rules: bool,
    /// The highest daily budget (US dollars) a repository may set for itself; its
    /// setting can only lower the operator's per-repository budget.
    pub max_daily_usd: Option<f64>,
    /// Whether a repository may name a verification command. Workers run one only when
    /// their own `[verification]` is enabled.
    pub allow_verification: bool,
}

impl Default for RepositoryConfigLimits {
    fn default() -> Self {
        RepositoryConfigLimits {
            enabled: true,
            allowed_agents: Vec::new(),
            allow_severity_rules: true,
            max_daily_usd: None,
            allow_verification: true,
        }
    }
}
