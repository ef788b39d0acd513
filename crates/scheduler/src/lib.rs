//! The scheduler: turns a review request into a job, records its manifest and publishes one
//! task per agent.
//!
//! It resolves what the request leaves open (revisions to SHAs, commits, author, branch) so
//! every worker reviews exactly the same change, and it sets the deadline after which the
//! consolidator writes a partial report.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deep_review_git::{GitError, Repository};
use deep_review_protocol::{
    AgentSpec, AgentTask, CommitSummary, ReviewJob, ReviewManifest, ReviewRequest, RunnerKind,
    Source,
};
use deep_review_transport::{ResultStore, TaskQueue, TransportError};
use tracing::Instrument;

/// Why a request could not be scheduled.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The request itself is wrong; nothing was published.
    #[error("invalid review request: {0}")]
    InvalidRequest(String),
    /// The repository or a revision could not be read.
    #[error(transparent)]
    Git(#[from] GitError),
    /// A daily cost budget is spent and the configuration says to defer reviews.
    #[error("review deferred: {0}")]
    OverBudget(String),
    /// The queue or store failed; the review may be partly published.
    #[error("could not schedule the review: {0}")]
    Transport(#[from] TransportError),
}

/// How the scheduler fills gaps in requests.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Line-up used when a request names no agents.
    pub default_agents: Vec<AgentSpec>,
    /// Time the consolidator waits beyond the slowest agent's timeout before writing a
    /// partial report; covers queue wait and result storage.
    pub deadline_grace: Duration,
    /// Whether every process sees the same filesystem, so a local repository path given by
    /// the requester is readable by the workers. Off for workers on other machines.
    pub shared_filesystem: bool,
    /// Daily cost limits and what to do when one is reached.
    pub budget: Budget,
    /// Bounds on an agent's record in a repository, from the agent ledger.
    pub lineup_policy: LineupPolicy,
    /// The longest the workers' verification stage can take after an agent, when it is
    /// enabled: added to the deadline of reviews whose repository names a verification
    /// command. `None`: workers verify nothing, and such a repository is told so.
    pub verification_time: Option<Duration>,
}

/// Bounds on an agent's record in one repository over a window of its reviews: an agent
/// that breaks one is left out of that repository's reviews or demoted in them (its
/// findings advisory), and the report says why. No bound is set by default.
#[derive(Debug, Clone, PartialEq)]
pub struct LineupPolicy {
    /// What happens to an agent that breaks a bound.
    pub action: LineupAction,
    /// Reviews of the repository an agent needs in the window before it is judged.
    pub min_reviews: usize,
    /// How far back the record goes.
    pub window: Duration,
    /// Most share of runs that may fail or time out.
    pub max_failure_rate: Option<f64>,
    /// Most share of findings that may be refuted or dropped.
    pub max_false_positive_rate: Option<f64>,
    /// Least share of findings nobody else reported.
    pub min_unique_insight_rate: Option<f64>,
}

/// What the line-up policy does to an agent whose record breaks a bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LineupAction {
    /// It does not run in the repository's reviews: no cost, but no new record either,
    /// until its old reviews age out of the window.
    #[default]
    LeaveOut,
    /// It runs with advisory findings (see [`AgentSpec::advisory`]): it still costs, and
    /// its record keeps being measured, so it comes back once it does better.
    Demote,
}

impl Default for LineupPolicy {
    fn default() -> Self {
        LineupPolicy {
            action: LineupAction::default(),
            min_reviews: 20,
            window: Duration::from_secs(30 * 24 * 3600),
            max_failure_rate: None,
            max_false_positive_rate: None,
            min_unique_insight_rate: None,
        }
    }
}

impl LineupPolicy {
    fn is_set(&self) -> bool {
        self.max_failure_rate.is_some()
            || self.max_false_positive_rate.is_some()
            || self.min_unique_insight_rate.is_some()
    }

    /// Why `stats` keeps its agent out, if it does.
    pub fn breach(&self, stats: &deep_review_protocol::AgentStats) -> Option<String> {
        if stats.reviews < self.min_reviews.max(1) {
            return None;
        }
        let percent = |rate: f64| format!("{:.0}%", rate * 100.0);
        let over = format!("over its last {} reviews here", stats.reviews);
        if let Some(bound) = self.max_failure_rate {
            let rate = stats.failure_rate();
            if rate > bound {
                return Some(format!(
                    "it failed or timed out in {} of runs {over}, above the {} bound",
                    percent(rate),
                    percent(bound)
                ));
            }
        }
        if let Some(bound) = self.max_false_positive_rate {
            let rate = stats.false_positive_rate();
            if rate > bound {
                return Some(format!(
                    "{} of its findings were false positives {over}, above the {} bound",
                    percent(rate),
                    percent(bound)
                ));
            }
        }
        if let Some(bound) = self.min_unique_insight_rate {
            let rate = stats.unique_insight_rate();
            if rate < bound {
                return Some(format!(
                    "only {} of its findings were unique insights {over}, below the {} bound",
                    percent(rate),
                    percent(bound)
                ));
            }
        }
        None
    }
}

/// Daily cost limits (UTC days) and what happens when one is reached.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// Limit per repository per day, in US dollars.
    pub daily_usd_per_repository: Option<f64>,
    /// Limit for everything per day, in US dollars.
    pub daily_usd_total: Option<f64>,
    /// The line-up to run instead once a limit is reached; empty means defer the review.
    pub fallback_agents: Vec<AgentSpec>,
}

/// Accepts review requests and dispatches their tasks.
pub struct Scheduler {
    queue: Arc<dyn TaskQueue>,
    store: Arc<dyn ResultStore>,
    settings: SchedulerSettings,
}

impl Scheduler {
    /// A scheduler publishing to `queue` and recording manifests in `store`.
    pub fn new(
        queue: Arc<dyn TaskQueue>,
        store: Arc<dyn ResultStore>,
        settings: SchedulerSettings,
    ) -> Self {
        Scheduler {
            queue,
            store,
            settings,
        }
    }

    /// Prepares `request` and dispatches it: the manifest is stored before any task is
    /// published, so a fast worker never writes a result for an unknown review.
    ///
    /// A request for a pull request that was reviewed before becomes its next round, and
    /// the older round is cancelled: workers skip its remaining tasks and its report is
    /// not published.
    pub async fn submit(&self, request: ReviewRequest) -> Result<ReviewJob, SchedulerError> {
        // The root of the review's trace; workers and the consolidator continue it from
        // the context stored in the job.
        let span = tracing::info_span!(
            "review",
            review = tracing::field::Empty,
            trace_id = tracing::field::Empty
        );
        deep_review_telemetry::record_trace_id(&span);
        self.dispatch(request, &span).instrument(span.clone()).await
    }

    async fn dispatch(
        &self,
        request: ReviewRequest,
        span: &tracing::Span,
    ) -> Result<ReviewJob, SchedulerError> {
        if let (Source::LocalRepo { path, .. }, false) =
            (&request.source, self.settings.shared_filesystem)
        {
            return Err(SchedulerError::InvalidRequest(format!(
                "the local path {path} is only readable by workers that share this filesystem, and \
                 `distributed.shared_filesystem` is off; send the diff inline or a git URL instead"
            )));
        }
        // A file:// URL or a path would make a worker read (and report) a repository on its
        // own disk, which the requester may not be allowed to see.
        if let (Source::GitRemote { url, .. }, false) =
            (&request.source, self.settings.shared_filesystem)
        {
            if deep_review_git::is_local_git_url(url) {
                return Err(SchedulerError::InvalidRequest(format!(
                    "the git URL {} names a repository on the workers' own filesystem, which is refused \
                     while `distributed.shared_filesystem` is off; use an https://, ssh:// or git:// URL",
                    deep_review_transport::redact_url(url)
                )));
            }
        }
        let explicit_round = request.round;
        let repository_limit = request.daily_usd_limit;
        let mut job = prepare_job(request, &self.settings, Utc::now()).await?;
        span.record("review", job.id.as_str());
        job.trace_context = deep_review_telemetry::trace_context_of(span);
        self.apply_budget(&mut job, repository_limit).await?;
        self.apply_lineup_policy(&mut job).await?;
        if let Some(repository) = &job.pull_request.repository {
            job.repository_context = self.store.repository_context(repository).await?;
        }
        let mut superseded = None;
        if let Some(key) = pull_request_key(&job) {
            let (round, previous) = self.store.next_round(&key, &job.id).await?;
            job.round = explicit_round.unwrap_or(round);
            if let Some(previous) = &previous {
                if let Some(report) = self.store.report(previous).await? {
                    job.earlier_findings = report.findings.iter().map(earlier_finding).collect();
                }
            }
            superseded = previous;
        }
        job.supersedes = superseded.clone();
        self.store
            .create_review(&ReviewManifest::for_job(&job))
            .await?;
        if let Some(previous) = superseded {
            self.store.cancel_review(&previous).await?;
            tracing::info!(review = %job.id, superseded = %previous, round = job.round, "newer round supersedes the older one");
        }
        for agent in &job.agents {
            self.queue.publish(&AgentTask::new(&job, agent)).await?;
        }
        tracing::info!(review = %job.id, agents = job.agents.len(), deadline = %job.deadline, "review scheduled");
        Ok(job)
    }
}

/// One line of an earlier round's finding, as agents are shown it.
fn earlier_finding(finding: &deep_review_protocol::ConsolidatedFinding) -> String {
    let place = finding
        .locations
        .first()
        .map(|location| match location.start_line {
            Some(line) => format!("{}:{line}", location.path),
            None => location.path.clone(),
        })
        .unwrap_or_else(|| "(no location)".to_string());
    format!(
        "[{}] {place}: {}",
        finding.severity.label().to_lowercase(),
        finding.title
    )
}

impl Scheduler {
    /// Leaves out of `job`, or demotes in it, the agents whose record in its repository
    /// breaks the line-up policy, naming each and why in the report; never every agent
    /// whose findings count.
    async fn apply_lineup_policy(&self, job: &mut ReviewJob) -> Result<(), SchedulerError> {
        let policy = &self.settings.lineup_policy;
        let Some(repository) = job.pull_request.repository.clone() else {
            return Ok(());
        };
        if !policy.is_set() {
            return Ok(());
        }
        let window = chrono::Duration::from_std(policy.window).unwrap_or(chrono::Duration::MAX);
        let since = job
            .created_at
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let entries = self.store.ledger(since, Some(&repository)).await?;
        let mut breaking = Vec::new();
        for agent in &job.agents {
            // One record per agent name, whichever models it ran.
            let mut record = deep_review_protocol::AgentStats::default();
            for entry in entries.iter().filter(|entry| entry.agent == agent.name) {
                record.add(entry);
            }
            if let Some(reason) = policy.breach(&record) {
                breaking.push((agent.name.clone(), reason));
            }
        }
        if breaking.is_empty() {
            return Ok(());
        }
        // Someone must still review with full weight: never leave out or demote every
        // agent whose findings count (an operator's advisory agents do not).
        let counting = job
            .agents
            .iter()
            .filter(|agent| agent.advisory.is_none())
            .count();
        let breaking_counting = breaking
            .iter()
            .filter(|(name, _)| {
                job.agents
                    .iter()
                    .any(|agent| &agent.name == name && agent.advisory.is_none())
            })
            .count();
        if breaking_counting >= counting {
            job.notices.push(format!(
                "Every agent of the line-up breaks the line-up policy for {repository}; all of them ran as usual, since a review needs someone."
            ));
            return Ok(());
        }
        match policy.action {
            LineupAction::LeaveOut => {
                for (agent, reason) in &breaking {
                    job.notices.push(format!(
                        "{agent} was left out of this review of {repository}: {reason} (scheduler line-up policy)."
                    ));
                    tracing::info!(review = %job.id, %agent, %reason, "agent left out by the line-up policy");
                }
                job.agents
                    .retain(|agent| !breaking.iter().any(|(name, _)| name == &agent.name));
                job.deadline =
                    deadline_for(&job.agents, self.settings.deadline_grace, job.created_at)?;
            }
            LineupAction::Demote => {
                for (name, reason) in &breaking {
                    let Some(agent) = job.agents.iter_mut().find(|agent| &agent.name == name)
                    else {
                        continue;
                    };
                    if agent.advisory.is_some() {
                        continue;
                    }
                    agent.advisory = Some(format!(
                        "the line-up policy demoted it in {repository}: {reason}"
                    ));
                    job.notices.push(format!(
                        "{name}'s findings are advisory in this review of {repository}: {reason} (scheduler line-up policy). Its severity votes do not count, and what only it reports stays a Suggestion unless verification confirms it."
                    ));
                    tracing::info!(review = %job.id, agent = %name, %reason, "agent demoted by the line-up policy");
                }
            }
        }
        Ok(())
    }

    /// Defers `job`, or switches it to the fallback line-up, when a daily budget is spent.
    /// `repository_limit` is the repository's own daily limit, which can only lower the
    /// operator's.
    async fn apply_budget(
        &self,
        job: &mut ReviewJob,
        repository_limit: Option<f64>,
    ) -> Result<(), SchedulerError> {
        let budget = &self.settings.budget;
        let today = job.created_at.date_naive();
        let mut spent_reason = None;
        let per_repository = match (budget.daily_usd_per_repository, repository_limit) {
            (Some(operator), Some(repository)) => Some(operator.min(repository)),
            (operator, repository) => operator.or(repository),
        };
        if let (Some(limit), Some(repository)) =
            (per_repository, job.pull_request.repository.as_deref())
        {
            let spent = self.store.cost(Some(repository), today).await?;
            if spent >= limit {
                spent_reason = Some(format!("the daily budget for {repository} is spent (${spent:.2} of ${limit:.2} on {today})"));
            }
        }
        if let (None, Some(limit)) = (&spent_reason, budget.daily_usd_total) {
            let spent = self.store.cost(None, today).await?;
            if spent >= limit {
                spent_reason = Some(format!(
                    "the daily budget is spent (${spent:.2} of ${limit:.2} on {today})"
                ));
            }
        }
        let Some(reason) = spent_reason else {
            return Ok(());
        };
        if budget.fallback_agents.is_empty() {
            tracing::warn!(review = %job.id, %reason, "review deferred");
            return Err(SchedulerError::OverBudget(format!(
                "{reason}; retry tomorrow or raise the budget"
            )));
        }
        validate_agents(&budget.fallback_agents)?;
        let names: Vec<&str> = budget
            .fallback_agents
            .iter()
            .map(|agent| agent.name.as_str())
            .collect();
        job.notices.push(format!(
            "Because {reason}, this review ran the cheaper fallback line-up ({}) instead of the configured one.",
            names.join(", ")
        ));
        job.agents = budget.fallback_agents.clone();
        job.deadline = deadline_for(&job.agents, self.settings.deadline_grace, job.created_at)?;
        tracing::info!(review = %job.id, %reason, "review switched to the fallback line-up");
        Ok(())
    }
}

/// When the consolidator stops waiting: the slowest agent's timeout plus the grace.
fn deadline_for(
    agents: &[AgentSpec],
    grace: Duration,
    accepted: DateTime<Utc>,
) -> Result<DateTime<Utc>, SchedulerError> {
    let slowest = agents
        .iter()
        .map(|agent| agent.timeout)
        .max()
        .unwrap_or_default();
    let wait = chrono::Duration::from_std(slowest + grace)
        .map_err(|_| SchedulerError::InvalidRequest("agent timeout is too long".into()))?;
    Ok(accepted + wait)
}

/// `owner/repo#42` for a job about a pull request; rounds are counted per key.
fn pull_request_key(job: &ReviewJob) -> Option<String> {
    let pull_request = &job.pull_request;
    Some(format!(
        "{}#{}",
        pull_request.repository.as_ref()?,
        pull_request.number?
    ))
}

/// Validates `request` and resolves it into a job accepted at `now`.
pub async fn prepare_job(
    request: ReviewRequest,
    settings: &SchedulerSettings,
    now: DateTime<Utc>,
) -> Result<ReviewJob, SchedulerError> {
    let agents = select_agents(&settings.default_agents, &request.agents)?;
    validate_agents(&agents)?;
    deep_review_git::PathFilter::new(&request.policy.excluded_paths)
        .map_err(|error| SchedulerError::InvalidRequest(error.to_string()))?;
    let mut pull_request = request.pull_request;
    let source = match request.source {
        Source::LocalRepo { path, base, head } => {
            let repository = Repository::open(&path).await?;
            let base_sha = repository.resolve(&base).await?;
            let head_sha = repository.resolve(&head).await?;
            if pull_request.commits.is_empty() {
                pull_request.commits = repository
                    .commits(&base_sha, &head_sha)
                    .await?
                    .into_iter()
                    .map(|(sha, subject)| CommitSummary { sha, subject })
                    .collect();
            }
            if pull_request.repository.is_none() {
                pull_request.repository = Some(repository.name().await);
            }
            if pull_request.author.is_none() {
                pull_request.author = Some(repository.author(&head_sha).await?);
            }
            if pull_request.branch.is_none() {
                pull_request.branch = repository.branch_at(&head_sha).await;
            }
            if pull_request.title.is_none() {
                pull_request.title = pull_request
                    .commits
                    .last()
                    .map(|commit| commit.subject.clone());
            }
            Source::LocalRepo {
                path: repository.root().display().to_string(),
                base: base_sha,
                head: head_sha,
            }
        }
        Source::InlineDiff { diff } => {
            if diff.trim().is_empty() {
                return Err(SchedulerError::InvalidRequest(
                    "the diff is empty: there is nothing to review".to_string(),
                ));
            }
            Source::InlineDiff { diff }
        }
        Source::GitRemote {
            url,
            base_sha,
            head_sha,
        } => {
            let full_sha = |sha: &str| {
                matches!(sha.len(), 40 | 64)
                    && sha.chars().all(|character| character.is_ascii_hexdigit())
            };
            if url.trim().is_empty() || url.starts_with('-') {
                return Err(SchedulerError::InvalidRequest(format!(
                    "`{url}` is not a git URL"
                )));
            }
            for (name, sha) in [("base_sha", &base_sha), ("head_sha", &head_sha)] {
                if !full_sha(sha) {
                    return Err(SchedulerError::InvalidRequest(format!(
                        "{name} `{sha}` must be a full commit SHA: workers on other machines resolve nothing"
                    )));
                }
            }
            Source::GitRemote {
                url,
                base_sha,
                head_sha,
            }
        }
    };
    let mut policy = request.policy;
    let mut notices = request.notices;
    let mut deadline = deadline_for(&agents, settings.deadline_grace, now)?;
    if policy.verification.is_some() {
        match settings.verification_time {
            Some(time) => {
                deadline += chrono::Duration::from_std(time).map_err(|_| {
                    SchedulerError::InvalidRequest(
                        "the verification stage's time limits are too large".to_string(),
                    )
                })?;
            }
            None => {
                policy.verification = None;
                notices.push(
                    "The repository names a verification command, but verification is off on these workers (`[verification] enabled`); no finding was verified."
                        .to_string(),
                );
            }
        }
    }
    Ok(ReviewJob {
        pull_request,
        round: request.round.unwrap_or(1).max(1),
        declined: request.declined,
        notices,
        policy,
        ..ReviewJob::new(new_review_id(now), now, source, agents, deadline)
    })
}

/// The agents of `line_up` that `names` ask for, in the order asked; the whole line-up when
/// `names` is empty.
fn select_agents(
    line_up: &[AgentSpec],
    names: &[String],
) -> Result<Vec<AgentSpec>, SchedulerError> {
    if names.is_empty() {
        return Ok(line_up.to_vec());
    }
    names
        .iter()
        .map(|name| {
            line_up
                .iter()
                .find(|agent| &agent.name == name)
                .cloned()
                .ok_or_else(|| {
                    let known: Vec<&str> = line_up.iter().map(|agent| agent.name.as_str()).collect();
                    SchedulerError::InvalidRequest(format!(
                        "no agent named `{name}` is configured (configured: {}); a request can only name agents of the operator's line-up",
                        known.join(", ")
                    ))
                })
        })
        .collect()
}

fn validate_agents(agents: &[AgentSpec]) -> Result<(), SchedulerError> {
    if agents.is_empty() {
        return Err(SchedulerError::InvalidRequest(
            "the agent line-up is empty: configure at least one [[agents]] entry".to_string(),
        ));
    }
    let mut names = HashSet::new();
    for agent in agents {
        let valid_name = !agent.name.is_empty()
            && agent
                .name
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character));
        if !valid_name {
            return Err(SchedulerError::InvalidRequest(format!(
                "agent name `{}` must be non-empty and use only letters, digits, `-`, `_` and `.` (it names files and queue messages)",
                agent.name
            )));
        }
        if !names.insert(agent.name.as_str()) {
            return Err(SchedulerError::InvalidRequest(format!(
                "agent name `{}` appears twice in the line-up",
                agent.name
            )));
        }
        if agent.runner == RunnerKind::Command && agent.command.is_empty() {
            return Err(SchedulerError::InvalidRequest(format!(
                "agent `{}` uses the command runner but sets no `command`",
                agent.name
            )));
        }
        if agent.runner.is_model_api() && agent.model.as_deref().is_none_or(str::is_empty) {
            return Err(SchedulerError::InvalidRequest(format!(
                "agent `{}` uses the {} runner but names no `model`",
                agent.name,
                agent.runner.as_str()
            )));
        }
        if agent.timeout.is_zero() {
            return Err(SchedulerError::InvalidRequest(format!(
                "agent `{}` has a zero timeout",
                agent.name
            )));
        }
        if let Some(problem) = agent.unsupported_setting() {
            return Err(SchedulerError::InvalidRequest(problem));
        }
    }
    Ok(())
}

/// `20260415-103429-3f2a9c1d`: sortable by time, unique by the random suffix.
fn new_review_id(now: DateTime<Utc>) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", now.format("%Y%m%d-%H%M%S"), &random[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_transport::{MemoryResultStore, MemoryTaskQueue};

    fn agent(name: &str) -> AgentSpec {
        AgentSpec {
            timeout: Duration::from_secs(60),
            ..AgentSpec::new(name.to_string(), RunnerKind::Builtin)
        }
    }

    fn settings() -> SchedulerSettings {
        SchedulerSettings {
            default_agents: ["builtin", "a", "b", "expensive"]
                .into_iter()
                .map(agent)
                .collect(),
            deadline_grace: Duration::from_secs(30),
            shared_filesystem: true,
            budget: Budget::default(),
            lineup_policy: LineupPolicy::default(),
            verification_time: None,
        }
    }

    fn diff_request(agents: &[&str]) -> ReviewRequest {
        ReviewRequest {
            agents: agents.iter().map(|name| name.to_string()).collect(),
            ..ReviewRequest::for_source(Source::InlineDiff {
                diff: "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n".into(),
            })
        }
    }

    #[tokio::test]
    async fn submit_stores_manifest_then_publishes_one_task_per_agent() {
        let queue = MemoryTaskQueue::new(3);
        let store = MemoryResultStore::new();
        let scheduler =
            Scheduler::new(Arc::new(queue.clone()), Arc::new(store.clone()), settings());
        let job = scheduler.submit(diff_request(&["a", "b"])).await.unwrap();
        assert_eq!(queue.ready_count(), 2);
        let manifest = store.manifest(&job.id).await.unwrap().unwrap();
        assert_eq!(manifest.expected_agents, vec!["a", "b"]);
        assert_eq!(job.deadline - job.created_at, chrono::Duration::seconds(90));
        assert_eq!(job.round, 1);
    }

    #[tokio::test]
    async fn default_line_up_and_validation() {
        let now = Utc::now();
        let job = prepare_job(diff_request(&[]), &settings(), now)
            .await
            .unwrap();
        assert_eq!(job.agents[0].name, "builtin");

        // A request names agents of the line-up; it can never define one.
        let unknown = prepare_job(diff_request(&["a", "shell"]), &settings(), now)
            .await
            .unwrap_err();
        assert!(
            unknown.to_string().contains(
                "no agent named `shell` is configured (configured: builtin, a, b, expensive)"
            ),
            "{unknown}"
        );
        let chosen = prepare_job(diff_request(&["b", "a"]), &settings(), now)
            .await
            .unwrap();
        let names: Vec<&str> = chosen
            .agents
            .iter()
            .map(|agent| agent.name.as_str())
            .collect();
        assert_eq!(names, ["b", "a"]);

        let duplicate = validate_agents(&[agent("a"), agent("a")]).unwrap_err();
        assert!(
            duplicate.to_string().contains("appears twice"),
            "{duplicate}"
        );

        let bad_name = validate_agents(&[agent("../x")]).unwrap_err();
        assert!(bad_name.to_string().contains("../x"), "{bad_name}");

        let mut command = agent("c");
        command.runner = RunnerKind::Command;
        let no_command = validate_agents(&[command]).unwrap_err();
        assert!(no_command.to_string().contains("sets no `command`"));

        let mut empty = diff_request(&[]);
        empty.source = Source::InlineDiff { diff: " \n".into() };
        assert!(prepare_job(empty, &settings(), now).await.is_err());
    }

    #[tokio::test]
    async fn a_new_round_supersedes_the_old_one() {
        let queue = MemoryTaskQueue::new(3);
        let store = MemoryResultStore::new();
        let scheduler =
            Scheduler::new(Arc::new(queue.clone()), Arc::new(store.clone()), settings());
        let mut request = diff_request(&["a"]);
        request.pull_request.repository = Some("acme/shop".into());
        request.pull_request.number = Some(7);
        let first = scheduler.submit(request.clone()).await.unwrap();
        let second = scheduler.submit(request).await.unwrap();
        assert_eq!((first.round, second.round), (1, 2));
        assert!(store.is_cancelled(&first.id).await.unwrap());
        assert!(!store.is_cancelled(&second.id).await.unwrap());
    }

    #[tokio::test]
    async fn stored_repository_context_reaches_the_job() {
        let store = MemoryResultStore::new();
        store
            .add_repository_context(
                "acme/shop",
                &["Mocks run in a single-user apiserver".to_string()],
            )
            .await
            .unwrap();
        let scheduler = Scheduler::new(
            Arc::new(MemoryTaskQueue::new(3)),
            Arc::new(store),
            settings(),
        );
        let mut request = diff_request(&[]);
        request.pull_request.repository = Some("acme/shop".into());
        request.declined = vec!["Split the reconciler".into()];
        let job = scheduler.submit(request).await.unwrap();
        assert_eq!(
            job.repository_context,
            vec!["Mocks run in a single-user apiserver"]
        );
        assert_eq!(job.declined, vec!["Split the reconciler"]);
    }

    #[tokio::test]
    async fn the_policy_demotes_but_never_every_agent_that_counts() {
        let store = MemoryResultStore::new();
        // `a` and `b` keep failing in acme/shop.
        let entries: Vec<deep_review_protocol::LedgerEntry> = ["a", "b"]
            .into_iter()
            .flat_map(|agent| {
                (0..5).map(move |index| deep_review_protocol::LedgerEntry {
                    review_id: format!("r{index}"),
                    recorded_at: Utc::now(),
                    repository: Some("acme/shop".into()),
                    agent: agent.into(),
                    runner: "builtin".into(),
                    model: None,
                    status: Some(deep_review_protocol::AgentStatus::Failed),
                    findings: Default::default(),
                    unique_insights: 0,
                    confirmed: 0,
                    false_positives: 0,
                    coverage_misses: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    cost_usd: None,
                    duration_ms: 0,
                })
            })
            .collect();
        store.record_ledger(&entries).await.unwrap();
        let mut demoting = settings();
        demoting.lineup_policy = LineupPolicy {
            action: LineupAction::Demote,
            min_reviews: 5,
            max_failure_rate: Some(0.5),
            ..LineupPolicy::default()
        };
        let scheduler = Scheduler::new(
            Arc::new(MemoryTaskQueue::new(3)),
            Arc::new(store.clone()),
            demoting,
        );
        let mut request = diff_request(&["builtin", "a"]);
        request.pull_request.repository = Some("acme/shop".into());
        let job = scheduler.submit(request).await.unwrap();
        assert_eq!(job.agents.len(), 2, "demoted, not left out");
        assert!(job.agents[0].advisory.is_none());
        let reason = job.agents[1].advisory.as_deref().unwrap_or("");
        assert!(
            reason.contains("acme/shop") && reason.contains("100%"),
            "{reason}"
        );
        assert!(
            job.notices[0].contains("a's findings are advisory"),
            "{:?}",
            job.notices
        );

        // Both agents that count break the policy: neither is demoted.
        let mut request = diff_request(&["a", "b"]);
        request.pull_request.repository = Some("acme/shop".into());
        let job = scheduler.submit(request).await.unwrap();
        assert!(job.agents.iter().all(|agent| agent.advisory.is_none()));
        assert!(
            job.notices[0].contains("Every agent of the line-up breaks"),
            "{:?}",
            job.notices
        );
    }

    #[tokio::test]
    async fn a_spent_budget_defers_or_falls_back() {
        let store = MemoryResultStore::new();
        let today = Utc::now().date_naive();
        store
            .add_cost("earlier", Some("acme/shop"), today, 12.5)
            .await
            .unwrap();
        let mut request = diff_request(&["expensive"]);
        request.pull_request.repository = Some("acme/shop".into());

        let mut deferring = settings();
        deferring.budget.daily_usd_per_repository = Some(10.0);
        let scheduler = Scheduler::new(
            Arc::new(MemoryTaskQueue::new(3)),
            Arc::new(store.clone()),
            deferring.clone(),
        );
        let error = scheduler.submit(request.clone()).await.unwrap_err();
        assert!(matches!(error, SchedulerError::OverBudget(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("acme/shop is spent ($12.50 of $10.00"),
            "{error}"
        );

        let mut falling_back = deferring;
        falling_back.budget.fallback_agents = vec![agent("cheap")];
        let queue = MemoryTaskQueue::new(3);
        let scheduler = Scheduler::new(
            Arc::new(queue.clone()),
            Arc::new(store.clone()),
            falling_back.clone(),
        );
        let job = scheduler.submit(request.clone()).await.unwrap();
        assert_eq!(
            job.agents
                .iter()
                .map(|agent| agent.name.as_str())
                .collect::<Vec<_>>(),
            vec!["cheap"]
        );
        assert!(
            job.notices[0].contains("fallback line-up (cheap)"),
            "{:?}",
            job.notices
        );
        assert_eq!(
            store
                .manifest(&job.id)
                .await
                .unwrap()
                .unwrap()
                .expected_agents,
            vec!["cheap"]
        );
        assert_eq!(queue.ready_count(), 1);

        // Another repository, or a higher limit, is unaffected.
        let mut other = request;
        other.pull_request.repository = Some("acme/other".into());
        let job = scheduler.submit(other).await.unwrap();
        assert_eq!(job.agents[0].name, "expensive");
        assert!(job.notices.is_empty());
        let mut everything = settings();
        everything.budget.daily_usd_total = Some(12.0);
        everything.budget.fallback_agents = vec![agent("cheap")];
        let scheduler = Scheduler::new(
            Arc::new(MemoryTaskQueue::new(3)),
            Arc::new(store),
            everything,
        );
        let job = scheduler
            .submit(diff_request(&["expensive"]))
            .await
            .unwrap();
        assert!(
            job.notices[0].contains("the daily budget is spent ($12.50 of $12.00"),
            "{:?}",
            job.notices
        );
    }

    #[tokio::test]
    async fn local_paths_need_a_shared_filesystem() {
        let mut no_sharing = settings();
        no_sharing.shared_filesystem = false;
        let scheduler = Scheduler::new(
            Arc::new(MemoryTaskQueue::new(3)),
            Arc::new(MemoryResultStore::new()),
            no_sharing,
        );
        let mut request = diff_request(&[]);
        request.source = Source::LocalRepo {
            path: "/srv/repo".into(),
            base: "a".into(),
            head: "b".into(),
        };
        let error = scheduler.submit(request.clone()).await.unwrap_err();
        assert!(error.to_string().contains("shared_filesystem"), "{error}");
        for url in ["file:///srv/private", "/srv/private", "private/repo"] {
            request.source = Source::GitRemote {
                url: url.into(),
                base_sha: "a".repeat(40),
                head_sha: "b".repeat(40),
            };
            let error = scheduler.submit(request.clone()).await.unwrap_err();
            assert!(
                error.to_string().contains("workers' own filesystem"),
                "{url}: {error}"
            );
        }
        request.source = Source::GitRemote {
            url: "https://github.com/acme/shop.git".into(),
            base_sha: "a".repeat(40),
            head_sha: "b".repeat(40),
        };
        scheduler.submit(request).await.unwrap();
    }

    #[test]
    fn review_ids_sort_by_time() {
        let early = new_review_id("2026-01-01T00:00:00Z".parse().unwrap());
        let late = new_review_id("2026-01-01T00:00:01Z".parse().unwrap());
        assert!(early < late);
        assert_eq!(early.len(), "20260101-000000-".len() + 8);
    }
}
