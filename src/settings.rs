//! Configuration: defaults, then `deep-review.toml` (or `--config`), then `DEEP_REVIEW_…`
//! environment variables (`__` separates levels: `DEEP_REVIEW_REVIEW__CONCURRENCY=8`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use deep_review_consolidator::{ConsolidationSettings, OutputFormat};
use deep_review_github::GitHubSettings;
use deep_review_protocol::{AgentSpec, RunnerKind};
use deep_review_worker::{BuiltinSettings, ModelPrice, ModelSettings};
use serde::{Deserialize, Serialize};

/// The file read from the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "deep-review.toml";

/// Everything configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The agent line-up: one task per agent per review.
    pub agents: Vec<AgentSpec>,
    /// How reviews run.
    pub review: ReviewSettings,
    /// What the report is written as.
    pub output: OutputSettings,
    /// Rules of the builtin reviewer.
    pub builtin: BuiltinSettings,
    /// How findings merge and the verdict is decided.
    pub consolidation: ConsolidationSettings,
    /// The distributed mode's services.
    pub distributed: DistributedSettings,
    /// Daily cost limits, enforced by the scheduler from the costs recorded in Redis.
    pub budget: BudgetSettings,
    /// Bounds on each agent's record per repository (the agent ledger), below which the
    /// scheduler leaves it out of that repository's reviews.
    #[serde(default)]
    pub lineup_policy: LineupPolicySettings,
    /// The workers' verification stage (off by default): where and within which limits
    /// serious findings are checked with a repository's own verification command.
    #[serde(default)]
    pub verification: deep_review_worker::VerificationSettings,
    /// Model and vendor CLI runners: the prompt, retries, limits and prices.
    pub models: ModelsSettings,
    /// A model API agent (not part of the line-up) that rewrites each report's executive
    /// summary and narratives; absent, the deterministic text is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narrator: Option<AgentSpec>,
    /// The GitHub integration (App or token, webhooks, comments and check runs); absent,
    /// deep-review never talks to GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubSettings>,
}

/// Model and vendor CLI runners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsSettings {
    /// A prompt template file (minijinja) to use instead of the built-in one; empty for
    /// the built-in template.
    pub prompt_template: String,
    /// Tries per model request, the first included, on 429, 5xx, timeouts and broken
    /// responses.
    pub attempts: u32,
    /// First retry delay; it doubles per retry, with jitter, unless `Retry-After` says
    /// otherwise.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Longest one model request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Model turns per task when an agent sets no `max_turns`.
    pub max_turns: u32,
    /// Tokens (input plus output, all turns) per task when an agent sets no `max_tokens`.
    pub max_tokens: u64,
    /// Most output tokens of one model response.
    pub max_output_tokens: u32,
    /// Prices by model name (or name prefix), for providers that report no cost:
    /// `[models.prices."gpt-5"] input_per_million_usd = 1.25, output_per_million_usd = 10`.
    pub prices: BTreeMap<String, ModelPrice>,
}

impl Default for ModelsSettings {
    fn default() -> Self {
        let limits = ModelSettings::default();
        ModelsSettings {
            prompt_template: String::new(),
            attempts: limits.attempts,
            initial_backoff: limits.initial_backoff,
            max_backoff: limits.max_backoff,
            request_timeout: limits.request_timeout,
            max_turns: limits.max_turns,
            max_tokens: limits.max_tokens,
            max_output_tokens: limits.max_output_tokens,
            prices: BTreeMap::new(),
        }
    }
}

impl ModelsSettings {
    /// The worker's model runner settings.
    pub fn runner_settings(&self) -> ModelSettings {
        ModelSettings {
            attempts: self.attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            request_timeout: self.request_timeout,
            max_turns: self.max_turns,
            max_tokens: self.max_tokens,
            max_output_tokens: self.max_output_tokens,
        }
    }
}

/// Daily cost limits (UTC days) and what happens when one is reached.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSettings {
    /// Limit per repository per day, in US dollars; none when absent.
    pub daily_usd_per_repository: Option<f64>,
    /// Limit for everything per day, in US dollars; none when absent.
    pub daily_usd_total: Option<f64>,
    /// Names of configured agents to run instead once a limit is reached; empty means
    /// reviews are deferred (the API answers 429).
    pub fallback_agents: Vec<String>,
}

/// `[lineup_policy] action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineupActionSetting {
    /// The agent does not run in the repository's reviews.
    LeaveOut,
    /// The agent runs, its findings advisory.
    Demote,
}

/// `[lineup_policy]`: no bound is set by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineupPolicySettings {
    /// What happens to an agent that breaks a bound: `leave_out` (it does not run in the
    /// repository's reviews) or `demote` (it runs, its findings advisory).
    pub action: LineupActionSetting,
    /// Reviews of the repository an agent needs in the window before it is judged.
    pub min_reviews: usize,
    /// How far back its record goes.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Most share (0 to 1) of runs that may fail or time out.
    pub max_failure_rate: Option<f64>,
    /// Most share of findings that may be refuted or dropped.
    pub max_false_positive_rate: Option<f64>,
    /// Least share of findings nobody else reported.
    pub min_unique_insight_rate: Option<f64>,
}

impl Default for LineupPolicySettings {
    fn default() -> Self {
        let policy = deep_review_scheduler::LineupPolicy::default();
        LineupPolicySettings {
            action: LineupActionSetting::LeaveOut,
            min_reviews: policy.min_reviews,
            window: policy.window,
            max_failure_rate: None,
            max_false_positive_rate: None,
            min_unique_insight_rate: None,
        }
    }
}

impl LineupPolicySettings {
    /// The scheduler's policy.
    pub fn policy(&self) -> deep_review_scheduler::LineupPolicy {
        deep_review_scheduler::LineupPolicy {
            action: match self.action {
                LineupActionSetting::LeaveOut => deep_review_scheduler::LineupAction::LeaveOut,
                LineupActionSetting::Demote => deep_review_scheduler::LineupAction::Demote,
            },
            min_reviews: self.min_reviews,
            window: self.window,
            max_failure_rate: self.max_failure_rate,
            max_false_positive_rate: self.max_false_positive_rate,
            min_unique_insight_rate: self.min_unique_insight_rate,
        }
    }
}

/// The distributed mode: RabbitMQ, Redis and the three services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedSettings {
    /// RabbitMQ URL (`amqp://user:password@host:port/vhost`).
    pub broker_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// Prefix of every queue, exchange and key, so deployments can share servers.
    pub prefix: String,
    /// Runner kinds with a task queue; a worker consumes these.
    pub runners: Vec<RunnerKind>,
    /// The broker's `consumer_timeout` (rabbitmq.conf; 30 min by default). Agents must
    /// finish within it, or the broker closes the channel and redelivers their task.
    #[serde(with = "humantime_serde")]
    pub broker_consumer_timeout: Duration,
    /// Whether every process sees the same filesystem, so local repository paths work.
    pub shared_filesystem: bool,
    /// How long review records stay in Redis.
    #[serde(with = "humantime_serde")]
    pub result_ttl: Duration,
    /// Where the scheduler's HTTP API listens (`/v1/reviews`, `/healthz`, `/readyz`).
    pub scheduler_listen: String,
    /// The environment variable holding the bearer token the API requires
    /// (`Authorization: Bearer …`); `deep-review submit` sends it from the same variable.
    pub api_token_env: String,
    /// Serve the API with no token. Only for a network nobody else can reach: whoever can
    /// reach the API can start reviews that spend the model budget.
    pub allow_unauthenticated_api: bool,
    /// Where the scheduler serves GitHub webhooks, apart from the API, so that exposing the
    /// webhook to GitHub does not expose the API.
    pub webhook_listen: String,
    /// Where the scheduler serves `/metrics`; empty serves it on the API address.
    pub metrics_listen: String,
    /// Longest one HTTP request to any listener may take before it is answered 408.
    #[serde(with = "humantime_serde")]
    pub http_request_timeout: Duration,
    /// Requests one listener serves at once; more wait for a place.
    pub http_max_concurrent_requests: usize,
    /// Where `deep-review submit` finds the scheduler.
    pub scheduler_url: String,
    /// Where a worker serves `/metrics`, `/healthz` and `/readyz` (the scheduler serves
    /// them on its API address).
    pub worker_telemetry_listen: String,
    /// Where the consolidator serves `/metrics`, `/healthz` and `/readyz`.
    pub consolidator_telemetry_listen: String,
    /// Largest accepted request body (an inline diff lives in it).
    pub max_request_bytes: usize,
    /// Where the consolidator writes each review's files (`<dir>/<review id>/`).
    pub reports_directory: String,
    /// How long a consolidator's claim on a review lasts before another may take over.
    #[serde(with = "humantime_serde")]
    pub consolidation_lease: Duration,
    /// How often the consolidator looks for overdue reviews.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Reviews one consolidator builds and publishes at once.
    pub consolidation_concurrency: usize,
    /// How far back the consolidator's agent-quality gauges
    /// (`deep_review_agent_*_ratio`, cost per confirmed finding) look in the agent ledger;
    /// whole UTC days.
    #[serde(with = "humantime_serde")]
    pub agent_quality_window: Duration,
    /// How often the consolidator reads the ledger again for those gauges (only what was
    /// recorded since the last read).
    #[serde(with = "humantime_serde")]
    pub agent_quality_refresh: Duration,
    /// How long a stopping worker lets in-flight agents finish before leaving them to be
    /// redelivered.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Longest wait between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for DistributedSettings {
    fn default() -> Self {
        DistributedSettings {
            broker_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
            redis_url: "redis://127.0.0.1:6379/".to_string(),
            prefix: "deep-review".to_string(),
            runners: RunnerKind::ALL.to_vec(),
            broker_consumer_timeout: Duration::from_secs(30 * 60),
            shared_filesystem: false,
            result_ttl: Duration::from_secs(7 * 24 * 3600),
            scheduler_listen: "127.0.0.1:8080".to_string(),
            api_token_env: "DEEPREVIEW_API_TOKEN".to_string(),
            allow_unauthenticated_api: false,
            webhook_listen: "127.0.0.1:8081".to_string(),
            metrics_listen: String::new(),
            http_request_timeout: Duration::from_secs(30),
            http_max_concurrent_requests: 256,
            scheduler_url: "http://127.0.0.1:8080".to_string(),
            worker_telemetry_listen: "127.0.0.1:9101".to_string(),
            consolidator_telemetry_listen: "127.0.0.1:9102".to_string(),
            max_request_bytes: 32 * 1024 * 1024,
            reports_directory: "deep-review-reports".to_string(),
            consolidation_lease: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(1),
            consolidation_concurrency: 16,
            agent_quality_window: Duration::from_secs(30 * 24 * 3600),
            agent_quality_refresh: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// How reviews run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewSettings {
    /// Agents run at once by a worker.
    pub concurrency: usize,
    /// Extra time past the slowest agent's timeout before a partial report is written.
    #[serde(with = "humantime_serde")]
    pub deadline_grace: Duration,
    /// Times one task may be returned to the queue (a crash, a drain) before it is
    /// dead-lettered as poison; it is delivered at most this plus one times.
    pub delivery_limit: u32,
    /// Where agent worktrees are created; the system temp directory when empty.
    pub scratch_directory: String,
    /// How agent processes are kept from the worker's processes and files: `auto` (the
    /// bubblewrap sandbox where it works, else a PID namespace where the machine allows
    /// one), `sandbox` or `pid-namespace` (required), or `none`.
    #[serde(default)]
    pub agent_isolation: deep_review_worker::AgentIsolation,
    /// Folders a sandboxed agent may also read, though they lie in a folder the sandbox
    /// empties (the worker's home, the temporary directory): e.g. a CLI's login kept in
    /// the worker's home.
    #[serde(default)]
    pub agent_readable_paths: Vec<PathBuf>,
    /// Folders a sandboxed agent may also write, shared by every agent: e.g. a package
    /// cache. Nothing else outside its checkout is writable.
    #[serde(default)]
    pub agent_writable_paths: Vec<PathBuf>,
    /// Where embedded reviews keep the agent ledger (`deep-review agents stats`); default
    /// `$XDG_DATA_HOME/deep-review/ledger.jsonl` (`~/.local/share/…`). The distributed
    /// services keep it in Redis.
    #[serde(default)]
    pub ledger_file: Option<PathBuf>,
}

/// Report output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    /// Formats written; `report.json` is what `consolidate` and other tools read.
    pub formats: Vec<OutputFormat>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            agents: vec![AgentSpec {
                timeout: Duration::from_secs(120),
                display_name: Some("Builtin static reviewer".to_string()),
                ..AgentSpec::new("builtin".to_string(), RunnerKind::Builtin)
            }],
            review: ReviewSettings {
                concurrency: 4,
                deadline_grace: Duration::from_secs(30),
                delivery_limit: 5,
                scratch_directory: String::new(),
                agent_isolation: deep_review_worker::AgentIsolation::Auto,
                agent_readable_paths: Vec::new(),
                agent_writable_paths: Vec::new(),
                ledger_file: None,
            },
            output: OutputSettings {
                formats: OutputFormat::ALL.to_vec(),
            },
            builtin: BuiltinSettings::default(),
            consolidation: ConsolidationSettings::default(),
            distributed: DistributedSettings::default(),
            budget: BudgetSettings::default(),
            lineup_policy: LineupPolicySettings::default(),
            verification: deep_review_worker::VerificationSettings::default(),
            models: ModelsSettings::default(),
            narrator: None,
            github: None,
        }
    }
}

impl Settings {
    /// Loads the layered configuration. `explicit` must exist; the default file may not.
    pub fn load(explicit: Option<&Path>) -> anyhow::Result<Settings> {
        let defaults = config::Config::try_from(&Settings::default())
            .context("encoding the default configuration")?;
        let mut builder = config::Config::builder().add_source(defaults);
        match explicit {
            Some(path) => {
                if !path.is_file() {
                    bail!("configuration file {} does not exist", path.display());
                }
                builder =
                    builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
            }
            None => {
                builder = builder.add_source(
                    config::File::with_name(DEFAULT_CONFIG_FILE)
                        .format(config::FileFormat::Toml)
                        .required(false),
                );
            }
        }
        builder = builder.add_source(
            config::Environment::with_prefix("DEEP_REVIEW")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                // One worker Deployment per runner queue sets its runners in a variable:
                // `DEEP_REVIEW_DISTRIBUTED__RUNNERS=claude-code,codex`.
                .list_separator(",")
                .with_list_parse_key("distributed.runners"),
        );
        let source = explicit.map_or_else(
            || format!("{DEFAULT_CONFIG_FILE} (if present) and DEEP_REVIEW_* variables"),
            |path| format!("{} and DEEP_REVIEW_* variables", path.display()),
        );
        let settings: Settings = builder
            .build()
            .and_then(|merged| merged.try_deserialize())
            .with_context(|| format!("invalid configuration in {source}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.review.concurrency == 0 {
            bail!("invalid configuration: review.concurrency must be at least 1");
        }
        if self.models.attempts == 0 {
            bail!("invalid configuration: models.attempts must be at least 1");
        }
        for agent in &self.agents {
            if let Some(problem) = agent.unsupported_setting() {
                bail!("invalid configuration: {problem}");
            }
            if agent.runner.is_model_api() && agent.model.as_deref().is_none_or(str::is_empty) {
                bail!(
                    "invalid configuration: agent `{}` uses the {} runner but names no `model`",
                    agent.name,
                    agent.runner.as_str()
                );
            }
        }
        if let Some(narrator) = &self.narrator {
            if !narrator.runner.is_model_api()
                || narrator.model.as_deref().is_none_or(str::is_empty)
            {
                bail!(
                    "invalid configuration: [narrator] must use a model API runner (anthropic, openai or gemini) and name a `model`"
                );
            }
        }
        if self.distributed.http_max_concurrent_requests == 0 {
            bail!("invalid configuration: distributed.http_max_concurrent_requests must be at least 1");
        }
        if self.output.formats.is_empty() {
            bail!("invalid configuration: output.formats must name at least one of markdown, html, json, sarif");
        }
        Ok(())
    }

    /// The longest agent timeout must fit in the broker's consumer timeout, or the broker
    /// would take tasks away from agents that are still working.
    pub fn check_consumer_timeout(&self) -> anyhow::Result<()> {
        let limit = self.distributed.broker_consumer_timeout;
        if let Some(agent) = self.agents.iter().find(|agent| agent.timeout >= limit) {
            bail!(
                "agent `{}` may run for {}, which is not below the broker's consumer timeout of {}: \
                 RabbitMQ would close the channel mid-task and redeliver it. Raise consumer_timeout \
                 in rabbitmq.conf and distributed.broker_consumer_timeout, or lower the agent's timeout",
                agent.name,
                humantime::format_duration(agent.timeout),
                humantime::format_duration(limit)
            );
        }
        Ok(())
    }

    /// The scheduler's budget, with fallback agents resolved from the line-up.
    pub fn budget(&self) -> anyhow::Result<deep_review_scheduler::Budget> {
        let fallback_agents = self
            .budget
            .fallback_agents
            .iter()
            .map(|name| {
                self.agents.iter().find(|agent| &agent.name == name).cloned().ok_or_else(|| {
                    anyhow::anyhow!("invalid configuration: budget.fallback_agents names `{name}`, which is not in [[agents]]")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(deep_review_scheduler::Budget {
            daily_usd_per_repository: self.budget.daily_usd_per_repository,
            daily_usd_total: self.budget.daily_usd_total,
            fallback_agents,
        })
    }

    /// What the agent sandbox hides and mounts back besides each agent's own folders.
    pub fn sandbox_folders(&self) -> deep_review_worker::SandboxFolders {
        deep_review_worker::SandboxFolders {
            scratch_directory: self.scratch_directory(),
            readable: self.review.agent_readable_paths.clone(),
            writable: self.review.agent_writable_paths.clone(),
        }
    }

    /// Where embedded reviews keep the agent ledger.
    pub fn ledger_file(&self) -> PathBuf {
        if let Some(path) = &self.review.ledger_file {
            return path.clone();
        }
        let data_home = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share"))
            })
            .unwrap_or_else(std::env::temp_dir);
        data_home.join("deep-review").join("ledger.jsonl")
    }

    /// Where worktrees go.
    pub fn scratch_directory(&self) -> PathBuf {
        if self.review.scratch_directory.is_empty() {
            std::env::temp_dir().join("deep-review")
        } else {
            PathBuf::from(&self.review.scratch_directory)
        }
    }

    /// The merged configuration as TOML, with anything secret-looking redacted.
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        let mut value = toml::Value::try_from(self).context("encoding the configuration")?;
        redact(&mut value, None);
        toml::to_string_pretty(&value).context("encoding the configuration")
    }
}

/// Replaces values whose key names a secret (token, password, secret, private or API key),
/// and command arguments that carry one inline (`--api-key=…`).
fn redact(value: &mut toml::Value, key: Option<&str>) {
    let secret_key = |key: &str| {
        let key = key.to_ascii_lowercase();
        // `_env` and `_path` settings name where a secret is, not the secret.
        !key.ends_with("_env")
            && !key.ends_with("_path")
            && [
                "token",
                "password",
                "secret",
                "api_key",
                "apikey",
                "private_key",
            ]
            .iter()
            .any(|word| key.contains(word))
    };
    match value {
        toml::Value::Table(table) => {
            for (name, child) in table.iter_mut() {
                redact(child, Some(name));
            }
        }
        toml::Value::Array(items) => {
            // A command's `--token VALUE` carries the secret in the item after the flag.
            let mut after_secret_flag = false;
            for item in items {
                let flag_names_secret = item.as_str().is_some_and(|text| {
                    text.starts_with('-')
                        && !text.contains('=')
                        && secret_key(text.trim_start_matches('-').replace('-', "_").as_str())
                });
                match item {
                    toml::Value::String(text) if after_secret_flag && !text.starts_with('-') => {
                        *text = "<redacted>".to_string();
                    }
                    _ => redact(item, key),
                }
                after_secret_flag = flag_names_secret;
            }
        }
        toml::Value::String(text) => {
            if key.is_some_and(secret_key) && !text.is_empty() {
                *text = "<redacted>".to_string();
            } else if text.contains("://") && text.contains('@') {
                *text = deep_review_transport::redact_url(text);
            } else if let Some((name, _)) = text.split_once('=') {
                if name.starts_with('-')
                    && secret_key(name.trim_start_matches('-').replace('-', "_").as_str())
                {
                    *text = format!("{name}=<redacted>");
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = Settings::default().to_redacted_toml().unwrap();
        let mut parsed: Settings = toml::from_str(&text).unwrap();
        // The only difference is the broker password, which is never shown.
        assert_eq!(
            parsed.distributed.broker_url,
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        parsed.distributed.broker_url = Settings::default().distributed.broker_url;
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn secrets_are_redacted() {
        let mut value: toml::Value = toml::from_str(
            "broker = 'amqp://user:hunter2@host/'\ngithub_token = 'abc'\napi_key_env = 'ANTHROPIC_API_KEY'\n[[agents]]\ncommand = ['tool', '--api-key=xyz', '--verbose', '--token', 'tok-two-argument', '--model', 'opus']\n",
        )
        .unwrap();
        redact(&mut value, None);
        let text = value.to_string();
        assert!(
            !text.contains("abc")
                && !text.contains("xyz")
                && !text.contains("hunter2")
                && !text.contains("tok-two-argument"),
            "{text}"
        );
        assert!(
            text.contains("opus"),
            "an ordinary flag's value stays: {text}"
        );
        assert!(text.contains("amqp://user:***@host/"), "{text}");
        assert!(text.contains("ANTHROPIC_API_KEY"), "{text}");
        assert!(text.contains("--verbose"), "{text}");
    }
}
