//! A repository's own `.deep-review.toml`, read from its default branch and applied within
//! the operator's limits.

use deep_review_protocol::{AgentSpec, RepositoryPolicy, SeverityRules, VerificationPolicy};
use serde::Deserialize;

use crate::RepositoryConfigLimits;

/// The file a repository configures its reviews with, on its default branch (never the
/// PR's head: a PR must not loosen its own review).
pub const FILE_NAME: &str = ".deep-review.toml";

/// What `.deep-review.toml` may say.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Agents to run, by name from the operator's line-up; empty keeps the line-up.
    pub agents: Vec<String>,
    /// Glob patterns of paths to leave out of the review (generated code, vendored
    /// code, fixtures).
    pub exclude: Vec<String>,
    /// Severity and verdict rules.
    pub severity: SeverityRules,
    /// Spending limits.
    pub budget: RepositoryBudget,
    /// The command workers verify serious findings with, and whether agents may propose
    /// reproductions for it.
    pub verification: Option<VerificationPolicy>,
}

/// A repository's spending limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepositoryBudget {
    /// Most this repository's reviews may cost per UTC day, in US dollars.
    pub daily_usd: Option<f64>,
}

/// What the scheduler applies to a review of the repository.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedConfig {
    /// The line-up; empty means the operator's default.
    pub agents: Vec<AgentSpec>,
    /// Path filters and severity rules for the job.
    pub policy: RepositoryPolicy,
    /// The repository's daily budget, within the operator's.
    pub daily_usd_limit: Option<f64>,
    /// What was not applied, and why, for the report.
    pub notices: Vec<String>,
}

impl AppliedConfig {
    /// Puts what was applied into `request`: the line-up (unless the requester already
    /// named agents), the policy, the daily limit and the notices.
    pub fn apply_to(self, request: &mut deep_review_protocol::ReviewRequest) {
        if request.agents.is_empty() {
            request.agents = self.agents.into_iter().map(|agent| agent.name).collect();
        }
        request.policy = self.policy;
        request.daily_usd_limit = self.daily_usd_limit;
        request.notices.extend(self.notices);
    }
}

/// Parses `.deep-review.toml`; the error names the file and the problem.
pub fn parse(text: &str) -> Result<RepositoryConfig, String> {
    toml::from_str(text).map_err(|error| format!("{FILE_NAME} is invalid: {error}"))
}

/// Applies `config` within `limits`, picking agents from `operator_agents`. Anything
/// beyond the limits is left out with a notice rather than failing the review.
pub fn apply(
    config: &RepositoryConfig,
    operator_agents: &[AgentSpec],
    limits: &RepositoryConfigLimits,
) -> AppliedConfig {
    let mut applied = AppliedConfig::default();
    for name in &config.agents {
        let allowed = limits.allowed_agents.is_empty()
            || limits.allowed_agents.iter().any(|allowed| allowed == name);
        match operator_agents.iter().find(|agent| &agent.name == name) {
            Some(agent) if allowed => {
                if !applied.agents.iter().any(|chosen| chosen.name == agent.name) {
                    applied.agents.push(agent.clone());
                }
            }
            Some(_) => applied.notices.push(format!(
                "{FILE_NAME} asks for agent `{name}`, which the operator does not allow repositories to choose; it did not run."
            )),
            None => applied.notices.push(format!(
                "{FILE_NAME} asks for agent `{name}`, which is not configured; configured agents: {}.",
                operator_agents.iter().map(|agent| agent.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    if !config.agents.is_empty() && applied.agents.is_empty() {
        applied.notices.push(format!(
            "None of the agents {FILE_NAME} asks for can run, so the default line-up ran."
        ));
    }
    match deep_review_git::PathFilter::new(&config.exclude) {
        Ok(_) => applied.policy.excluded_paths = config.exclude.clone(),
        Err(error) => applied
            .notices
            .push(format!("{FILE_NAME}: {error}; no paths were excluded.")),
    }
    if !config.severity.is_default() {
        if limits.allow_severity_rules {
            applied.policy.severity = config.severity.clone();
        } else {
            applied.notices.push(format!(
                "{FILE_NAME} sets severity rules, which the operator does not allow repositories to change; the operator's rules applied."
            ));
        }
    }
    if let Some(verification) = &config.verification {
        if !limits.allow_verification {
            applied.notices.push(format!(
                "{FILE_NAME} sets a verification command, which the operator does not allow repositories to set; no finding was verified."
            ));
        } else if verification.command.trim().is_empty() {
            applied.notices.push(format!(
                "{FILE_NAME}: verification.command is empty; no finding was verified."
            ));
        } else {
            applied.policy.verification = Some(verification.clone());
        }
    }
    if let Some(asked) = config.budget.daily_usd {
        if !asked.is_finite() || asked < 0.0 {
            applied.notices.push(format!(
                "{FILE_NAME}: budget.daily_usd must be a positive number of dollars; it was ignored."
            ));
        } else {
            let allowed = limits
                .max_daily_usd
                .map_or(asked, |maximum| asked.min(maximum));
            if allowed < asked {
                applied.notices.push(format!(
                    "{FILE_NAME} sets a daily budget of ${asked:.2}; the operator allows at most ${allowed:.2}, which applies."
                ));
            }
            applied.daily_usd_limit = Some(allowed);
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_protocol::RunnerKind;

    fn line_up() -> Vec<AgentSpec> {
        vec![
            AgentSpec::new("builtin", RunnerKind::Builtin),
            AgentSpec::new("claude", RunnerKind::ClaudeCode),
            AgentSpec::new("codex", RunnerKind::Codex),
        ]
    }

    #[test]
    fn a_full_configuration_applies_within_limits() {
        let config = parse(
            r#"
agents = ["claude", "builtin", "gpt-9"]
exclude = ["generated/**", "*.lock"]
[severity]
lower_test_code_findings = false
rework_min_critical = 2
[budget]
daily_usd = 50
[verification]
command = "cargo test --offline"
"#,
        )
        .expect("valid");
        let limits = RepositoryConfigLimits {
            allowed_agents: vec!["builtin".into(), "codex".into(), "gpt-9".into()],
            max_daily_usd: Some(10.0),
            ..RepositoryConfigLimits::default()
        };
        let applied = apply(&config, &line_up(), &limits);
        let names: Vec<&str> = applied
            .agents
            .iter()
            .map(|agent| agent.name.as_str())
            .collect();
        assert_eq!(names, ["builtin"]);
        assert_eq!(applied.policy.excluded_paths, ["generated/**", "*.lock"]);
        assert_eq!(applied.policy.severity.rework_min_critical, Some(2));
        assert_eq!(applied.daily_usd_limit, Some(10.0));
        let verification = applied.policy.verification.as_ref().expect("verification");
        assert_eq!(verification.command, "cargo test --offline");
        assert!(
            verification.reproductions,
            "reproductions are on unless turned off"
        );
        let notices = applied.notices.join("\n");
        assert!(
            notices.contains("`claude`") && notices.contains("does not allow"),
            "{notices}"
        );
        assert!(
            notices.contains("`gpt-9`") && notices.contains("not configured"),
            "{notices}"
        );
        assert!(notices.contains("at most $10.00"), "{notices}");
    }

    #[test]
    fn severity_rules_can_be_locked_and_bad_patterns_are_named() {
        let config = parse(
            "exclude = [\"src/[\"]\n[severity]\nrework_min_critical = 5\n[verification]\ncommand = \"make check\"\n",
        )
        .expect("valid TOML");
        let limits = RepositoryConfigLimits {
            allow_severity_rules: false,
            allow_verification: false,
            ..RepositoryConfigLimits::default()
        };
        let applied = apply(&config, &line_up(), &limits);
        assert!(applied.policy.is_default());
        let notices = applied.notices.join("\n");
        assert!(notices.contains("src/["), "{notices}");
        assert!(notices.contains("severity rules"), "{notices}");
        assert!(notices.contains("verification command"), "{notices}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_file() {
        let error = parse("agent = [\"claude\"]\n").expect_err("unknown key");
        assert!(
            error.contains(".deep-review.toml") && error.contains("agent"),
            "{error}"
        );
    }
}
