//! The worker: consumes agent tasks, prepares the code under review, runs the agent with
//! its timeout and stores the result idempotently.
//!
//! Workers are stateless. Every outcome of an agent (success, failure, timeout, garbage
//! output) becomes an `AgentResult`, so a bad agent never blocks a review; only a failure
//! to store the result sends the task back to the queue.

mod answer;
mod builtin;
mod change;
mod command;
mod isolation;
mod model;
mod pricing;
mod prompt;
mod runner;
#[cfg(test)]
mod test_support;
mod vendor_cli;
mod verification;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use deep_review_protocol::{AgentResult, AgentStatus, AgentTask, RunnerKind, SeverityCounts};
use deep_review_transport::{backoff_delay, CancellationToken, Delivery, ResultStore, TaskQueue};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use builtin::{mask_secrets, BuiltinRunner, BuiltinSettings};
pub use change::{remove_orphaned_checkouts, ChangeError, PreparedChange, ORPHANED_CHECKOUT_AGE};
pub use command::CommandRunner;
pub use isolation::{configure_agent_isolation, AgentIsolation, Isolation, SandboxFolders};
pub use model::{ModelRunner, ModelSettings};
pub use pricing::{ModelPrice, PriceTable};
pub use prompt::{
    estimate_tokens, AnswerChannel, CodeAccess, Prompt, PromptBuilder, PromptError,
    DEFAULT_PROMPT_TOKENS, DEFAULT_TEMPLATE,
};
pub use runner::{AgentRunner, RunnerError};
pub use vendor_cli::VendorCliRunner;
pub use verification::{
    judge_repository_check, judge_reproduction, BackendKind, KubernetesBackend, KubernetesSettings,
    LocalBackend, RunEvidence, RunLimits, VerificationBackend, VerificationError, VerificationRun,
    VerificationSettings, Verifier,
};

/// What a worker tells observers (a terminal, metrics) about a task.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// The agent started.
    Started {
        /// The review.
        review_id: String,
        /// The agent.
        agent: String,
    },
    /// The agent's result was stored.
    Finished {
        /// The review.
        review_id: String,
        /// The agent.
        agent: String,
        /// How it ended.
        status: AgentStatus,
        /// How long it ran.
        duration: Duration,
        /// Its findings by severity.
        findings: SeverityCounts,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Tasks run at once; also the queue prefetch.
    pub concurrency: usize,
    /// Where worktrees for agents are created.
    pub scratch_directory: PathBuf,
    /// How long in-flight tasks may run after shutdown is requested before they are
    /// abandoned (and so redelivered to another worker).
    pub drain_timeout: Duration,
    /// Longest wait between tries to store a finished result while the store is down.
    pub max_backoff: Duration,
}

/// The runners a worker can use, by kind.
#[derive(Clone, Default)]
pub struct RunnerSet {
    runners: HashMap<RunnerKind, Arc<dyn AgentRunner>>,
}

impl RunnerSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the runner for `kind`.
    pub fn with(mut self, kind: RunnerKind, runner: Arc<dyn AgentRunner>) -> Self {
        self.runners.insert(kind, runner);
        self
    }

    fn get(&self, kind: RunnerKind) -> Option<&Arc<dyn AgentRunner>> {
        self.runners.get(&kind)
    }
}

/// A stateless consumer of agent tasks.
pub struct Worker {
    /// Bare mirrors of git URLs this worker reviewed, under the scratch directory.
    mirrors: deep_review_git::MirrorCache,
    queue: Arc<dyn TaskQueue>,
    store: Arc<dyn ResultStore>,
    runners: RunnerSet,
    settings: WorkerSettings,
    progress: Option<mpsc::UnboundedSender<ProgressEvent>>,
    metrics: Option<Arc<deep_review_telemetry::Metrics>>,
    /// Checks serious findings of repositories that name a verification command.
    verifier: Option<Verifier>,
}

impl Worker {
    /// A worker taking tasks from `queue` and storing results in `store`.
    pub fn new(
        queue: Arc<dyn TaskQueue>,
        store: Arc<dyn ResultStore>,
        runners: RunnerSet,
        settings: WorkerSettings,
    ) -> Self {
        Worker {
            mirrors: deep_review_git::MirrorCache::new(settings.scratch_directory.join("mirrors")),
            queue,
            store,
            runners,
            settings,
            progress: None,
            metrics: None,
            verifier: None,
        }
    }

    /// Verifies serious findings with `verifier` where the review's repository asks.
    pub fn with_verifier(mut self, verifier: Option<Verifier>) -> Self {
        self.verifier = verifier;
        self
    }

    /// Records task metrics in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<deep_review_telemetry::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Sends progress events to `sender`.
    pub fn with_progress(mut self, sender: mpsc::UnboundedSender<ProgressEvent>) -> Self {
        self.progress = Some(sender);
        self
    }

    /// Consumes tasks until `shutdown` is cancelled or the queue ends, then drains.
    pub async fn run(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), deep_review_transport::TransportError> {
        let concurrency = self.settings.concurrency.max(1);
        // In the background: a large scratch volume must not delay taking tasks.
        let scratch_directory = self.settings.scratch_directory.clone();
        tokio::spawn(async move {
            let removed =
                remove_orphaned_checkouts(&scratch_directory, ORPHANED_CHECKOUT_AGE).await;
            if removed > 0 {
                tracing::info!(removed, directory = %scratch_directory.display(), "deleted checkouts that killed workers left behind");
            }
        });
        let consumer = self.queue.consume(concurrency).await?;
        let worker = Arc::new(self);
        let mut in_flight = JoinSet::new();
        // The queue's prefetch already bounds deliveries; this also bounds the work when a
        // backend delivers more (several consumers, or prefetch not honoured).
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
        // The wait for the next delivery lives across loop turns and owns the consumer: a
        // task finishing meanwhile must not cancel it half-way, say while the consumer
        // reconnects after a broker restart, which could leave a subscription behind that
        // takes deliveries nobody reads.
        let mut waiting = Box::pin(next_with_slot(consumer, Arc::clone(&slots)));
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(error) = joined {
                        tracing::error!(%error, "a task handler panicked; its delivery returns to the queue");
                    }
                }
                (consumer, delivery) = &mut waiting => {
                    waiting = Box::pin(next_with_slot(consumer, Arc::clone(&slots)));
                    match delivery {
                    Some((Ok(delivery), slot)) => {
                        let worker = Arc::clone(&worker);
                        // Every log line of the task names its review, agent and trace; the
                        // span joins the review's trace from the message's context.
                        let span = tracing::info_span!(
                            "agent",
                            review = %delivery.task.job.id,
                            agent = %delivery.task.agent.name,
                            runner = delivery.task.agent.runner.as_str(),
                            trace_id = tracing::field::Empty
                        );
                        deep_review_telemetry::continue_trace(&span, &delivery.trace_context);
                        in_flight.spawn(
                            async move {
                                worker.handle(delivery).await;
                                drop(slot);
                            }
                            .instrument(span),
                        );
                    }
                    Some((Err(error), _slot)) => {
                        tracing::error!(%error, "receiving a task failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    None => break,
                    }
                }
            }
        }
        let drain = async { while in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(worker.settings.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!("drain timeout reached; abandoning in-flight tasks to be redelivered");
            in_flight.abort_all();
        }
        Ok(())
    }

    /// Runs one delivery to a stored result, then settles it.
    async fn handle(&self, delivery: Delivery) {
        let task = delivery.task.clone();
        let review_id = task.job.id.clone();
        match self.store.is_cancelled(&review_id).await {
            Ok(true) => {
                tracing::info!(review = %review_id, agent = %task.agent.name, "review superseded; skipping task");
                settle(delivery, true).await;
                return;
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, review = %review_id, "could not check for cancellation; running anyway");
            }
        }
        self.emit(ProgressEvent::Started {
            review_id: review_id.clone(),
            agent: task.agent.name.clone(),
        });
        let agent = task.agent.name.as_str();
        if let Some(metrics) = &self.metrics {
            if delivery.previous_deliveries > 0 {
                metrics
                    .task_retries_total
                    .with_label_values(&[agent, "redelivered"])
                    .inc();
            }
            let waited = (Utc::now() - task.job.created_at)
                .to_std()
                .unwrap_or_default();
            metrics
                .queue_wait_seconds
                .with_label_values(&[agent])
                .observe(waited.as_secs_f64());
            metrics.tasks_in_flight.with_label_values(&[agent]).inc();
        }
        let result = self.execute(&task).await;
        if let Some(metrics) = &self.metrics {
            metrics.tasks_in_flight.with_label_values(&[agent]).dec();
            metrics
                .agent_duration_seconds
                .with_label_values(&[agent, status_label(result.status)])
                .observe(Duration::from_millis(result.duration_ms).as_secs_f64());
            metrics
                .agent_tokens_total
                .with_label_values(&[agent, "input"])
                .inc_by(result.usage.input_tokens);
            metrics
                .agent_tokens_total
                .with_label_values(&[agent, "output"])
                .inc_by(result.usage.output_tokens);
            if let Some(cost) = result.usage.cost_usd.filter(|cost| *cost > 0.0) {
                metrics
                    .agent_cost_usd_total
                    .with_label_values(&[agent])
                    .inc_by(cost);
                metrics.cost_usd_total.inc_by(cost);
            }
        }
        tracing::info!(
            status = status_label(result.status),
            duration_ms = result.duration_ms,
            findings = result.findings.len(),
            error = result.error.as_deref().unwrap_or(""),
            "agent finished"
        );
        let event = ProgressEvent::Finished {
            review_id: review_id.clone(),
            agent: task.agent.name.clone(),
            status: result.status,
            duration: Duration::from_millis(result.duration_ms),
            findings: counts(&result),
            error: result.error.clone(),
        };
        // The agent's work is done and may have cost money: an outage of the store must not
        // throw it away. The delivery stays unacknowledged (so a crash still hands the task
        // to another worker) while the write is tried again with backoff, for as long as it
        // takes; a stopping worker abandons it at the drain timeout, and the queue redelivers.
        let mut attempt: u32 = 0;
        let stored = loop {
            match self.store.put_result(&review_id, &result).await {
                Err(deep_review_transport::TransportError::UnknownReview(id)) => {
                    break Err(id);
                }
                Err(error) => {
                    attempt = attempt.saturating_add(1);
                    let delay = backoff_delay(attempt, self.settings.max_backoff);
                    tracing::warn!(%error, review = %review_id, agent = %task.agent.name, attempt, retry_in_ms = delay.as_millis() as u64, "could not store the result; keeping the task and trying again");
                    if let Some(metrics) = &self.metrics {
                        metrics
                            .task_retries_total
                            .with_label_values(&[agent, "store_failed"])
                            .inc();
                    }
                    tokio::time::sleep(delay).await;
                }
                Ok(outcome) => break Ok(outcome),
            }
        };
        match stored {
            Ok(outcome) => {
                if let (true, Some(cost)) = (
                    outcome.stored,
                    result.usage.cost_usd.filter(|cost| *cost > 0.0),
                ) {
                    // Counted once, with the result that was kept; a failure loses only the
                    // accounting, never the review.
                    let repository = task.job.pull_request.repository.as_deref();
                    let day = Utc::now().date_naive();
                    if let Err(error) = self.store.add_cost(&review_id, repository, day, cost).await
                    {
                        tracing::warn!(%error, review = %review_id, "could not record the agent's cost");
                    }
                }
                if !outcome.stored {
                    tracing::info!(review = %review_id, agent = %task.agent.name, "result already stored by an earlier delivery; keeping the first");
                }
                settle(delivery, true).await;
                self.emit(event);
            }
            Err(_) => {
                // No manifest will ever appear for it: retrying cannot help, so dead-letter.
                tracing::error!(review = %review_id, agent = %task.agent.name, "task of an unknown review; dead-lettering it");
                if let Some(metrics) = &self.metrics {
                    metrics.dead_lettered_total.inc();
                }
                if let Err(error) = delivery.reject(false).await {
                    tracing::warn!(%error, "could not dead-letter the task; the queue will redeliver it");
                }
            }
        }
    }

    /// Runs the agent of `task` and always returns a result describing what happened.
    pub async fn execute(&self, task: &AgentTask) -> AgentResult {
        let started_at = Utc::now();
        let clock = Instant::now();
        let agent = &task.agent;
        let mut result = match self.runners.get(agent.runner) {
            None => AgentResult::unsuccessful(
                &agent.name,
                AgentStatus::Failed,
                format!(
                    "this worker has no `{}` runner configured",
                    agent.runner.as_str()
                ),
            ),
            Some(runner) => {
                let runner = Arc::clone(runner);
                let scratch = &self.settings.scratch_directory;
                let deadline = tokio::time::Instant::now() + agent.timeout;
                let timed_out = || {
                    AgentResult::unsuccessful(
                        &agent.name,
                        AgentStatus::TimedOut,
                        format!(
                            "no result within the {} timeout; the agent was stopped",
                            humanize(agent.timeout)
                        ),
                    )
                };
                let failed = |error: RunnerError| {
                    // A run its runner stopped at the deadline is a timeout that kept what
                    // the agent printed and spent.
                    let mut result = if error.timed_out {
                        let mut result = timed_out();
                        if let Some(reason) = &mut result.error {
                            reason.push_str(&error.message);
                        }
                        result
                    } else {
                        AgentResult::unsuccessful(&agent.name, AgentStatus::Failed, error.message)
                    };
                    result.raw_output = error.raw_output;
                    result.usage = error.usage.unwrap_or_default();
                    result
                };
                let prepared = tokio::time::timeout_at(
                    deadline,
                    prepare_with_retries(task, scratch, runner.needs_worktree(), &self.mirrors),
                )
                .await;
                match prepared {
                    Err(_) => timed_out(),
                    Ok(Err(error)) => failed(RunnerError::failed(format!(
                        "could not prepare the change: {error}"
                    ))),
                    Ok(Ok(mut change)) => {
                        // Runners that start a process stop it at the deadline themselves,
                        // keeping its output; dropping the run a moment later is the
                        // backstop. The run is dropped first, which kills the agent's
                        // process group, and only then is the worktree removed: an agent
                        // still writing into it would make the removal fail half-way.
                        change.deadline = Some(deadline);
                        let mut outcome = tokio::time::timeout_at(
                            deadline + DEADLINE_BACKSTOP,
                            runner.run(task, &change),
                        )
                        .await;
                        // Only the worker's own runs name a sandbox: an agent cannot pass
                        // its word off as deep-review's evidence.
                        if let Ok(Ok(result)) = &mut outcome {
                            for verification in result
                                .findings
                                .iter_mut()
                                .filter_map(|finding| finding.verification.as_mut())
                            {
                                verification.sandbox = None;
                            }
                        }
                        // Verification has limits of its own, outside the agent's time.
                        if let (Ok(Ok(result)), Some(verifier), Some(policy)) =
                            (&mut outcome, &self.verifier, &task.job.policy.verification)
                        {
                            verifier
                                .verify(policy, &task.job.id, &change, &mut result.findings)
                                .await;
                        }
                        let mut omitted = change.excluded.clone();
                        change.cleanup().await;
                        match outcome {
                            Err(_) => timed_out(),
                            Ok(Err(error)) => failed(error),
                            Ok(Ok(mut result)) => {
                                omitted.append(&mut result.omitted_files);
                                result.omitted_files = omitted;
                                result
                            }
                        }
                    }
                }
            }
        };
        // The worker, not the agent, is the authority on identity and timing.
        result.agent = agent.name.clone();
        result.model = result.model.or_else(|| agent.model.clone());
        result.effort = result.effort.or_else(|| agent.effort.clone());
        result.started_at = Some(started_at);
        result.finished_at = Some(Utc::now());
        result.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        result
    }

    fn emit(&self, event: ProgressEvent) {
        if let Some(progress) = &self.progress {
            // A closed progress channel only means nobody is watching.
            let _ignored = progress.send(event);
        }
    }
}

/// How often preparing a change is tried when it fails for a passing reason, and the
/// pause before the first retry (doubled each time).
const PREPARE_ATTEMPTS: u32 = 3;
const PREPARE_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Prepares the change of `task`, trying again when a git command or the scratch directory
/// failed: the agent has not run yet, so a retry costs nothing, and a passing failure
/// should not be reported as the agent's.
async fn prepare_with_retries(
    task: &AgentTask,
    scratch: &std::path::Path,
    with_worktree: bool,
    mirrors: &deep_review_git::MirrorCache,
) -> Result<PreparedChange, change::ChangeError> {
    let mut pause = PREPARE_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match PreparedChange::prepare(&task.job, scratch, with_worktree, mirrors).await {
            Err(error) if attempt < PREPARE_ATTEMPTS && error.is_transient() => {
                tracing::warn!(%error, attempt, agent = %task.agent.name, "could not prepare the change; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// The metric label of an agent outcome, as the protocol spells it.
fn status_label(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Completed => "completed",
        AgentStatus::Failed => "failed",
        AgentStatus::TimedOut => "timed_out",
        AgentStatus::Cancelled => "cancelled",
    }
}

/// What waiting for a delivery gives back: the consumer, and the delivery with the slot it
/// runs in, or nothing when the queue ended.
type NextDelivery = (
    Box<dyn deep_review_transport::TaskConsumer>,
    Option<(
        Result<Delivery, deep_review_transport::TransportError>,
        tokio::sync::OwnedSemaphorePermit,
    )>,
);

/// Waits for a free slot, then for the next delivery; hands the consumer back.
async fn next_with_slot(
    mut consumer: Box<dyn deep_review_transport::TaskConsumer>,
    slots: Arc<tokio::sync::Semaphore>,
) -> NextDelivery {
    let Ok(slot) = slots.acquire_owned().await else {
        return (consumer, None);
    };
    let delivery = consumer.next().await;
    (consumer, delivery.map(|delivery| (delivery, slot)))
}

async fn settle(delivery: Delivery, done: bool) {
    let task_id = delivery.task.task_id.clone();
    let settled = if done {
        delivery.ack().await
    } else {
        delivery.reject(true).await
    };
    if let Err(error) = settled {
        tracing::warn!(%error, task = %task_id, "could not settle the delivery; the queue will redeliver it");
    }
}

fn counts(result: &AgentResult) -> SeverityCounts {
    let mut counts = SeverityCounts::default();
    for finding in &result.findings {
        counts.add(finding.severity);
    }
    counts
}

/// How long past an agent's deadline the worker waits for its runner to stop it (and keep
/// its output) before dropping the run.
const DEADLINE_BACKSTOP: Duration = Duration::from_secs(2);

/// `90s` → `1m 30s`, for messages.
pub fn humanize(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 60, seconds % 60) {
        (0, 0) => format!("{}ms", duration.as_millis()),
        (0, seconds) => format!("{seconds}s"),
        (minutes, 0) => format!("{minutes}m"),
        (minutes, seconds) => format!("{minutes}m {seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use deep_review_protocol::{AgentSpec, ReviewJob, ReviewManifest, Source};
    use deep_review_transport::{MemoryResultStore, MemoryTaskQueue};

    /// A runner whose behaviour the test picks: answer after a delay.
    struct SlowRunner(Duration);

    #[async_trait]
    impl AgentRunner for SlowRunner {
        async fn run(
            &self,
            task: &AgentTask,
            _change: &PreparedChange,
        ) -> Result<AgentResult, RunnerError> {
            tokio::time::sleep(self.0).await;
            Ok(AgentResult::new(&task.agent.name))
        }
    }

    fn job(agents: &[(&str, RunnerKind, u64)]) -> ReviewJob {
        ReviewJob::new(
            "r1",
            Utc::now(),
            Source::InlineDiff {
                diff: "--- a/a.js\n+++ b/a.js\n@@ -1 +1,2 @@\n x\n+debugger;\n".into(),
            },
            agents
                .iter()
                .map(|(name, runner, timeout_ms)| AgentSpec {
                    timeout: Duration::from_millis(*timeout_ms),
                    command: vec!["unused".into()],
                    ..AgentSpec::new(name.to_string(), *runner)
                })
                .collect(),
            Utc::now() + chrono::Duration::minutes(1),
        )
    }

    async fn run_review(
        job: &ReviewJob,
        runners: RunnerSet,
    ) -> (MemoryResultStore, MemoryTaskQueue) {
        let queue = MemoryTaskQueue::new(3);
        let store = MemoryResultStore::new();
        store
            .create_review(&ReviewManifest::for_job(job))
            .await
            .unwrap();
        for agent in &job.agents {
            queue.publish(&AgentTask::new(job, agent)).await.unwrap();
        }
        let worker = Worker::new(
            Arc::new(queue.clone()),
            Arc::new(store.clone()),
            runners,
            test_settings(2),
        );
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let completed = store.next_completed(Duration::from_secs(10)).await.unwrap();
        assert_eq!(completed.as_deref(), Some("r1"), "the review completes");
        shutdown.cancel();
        running.await.unwrap().unwrap();
        (store, queue)
    }

    fn test_settings(concurrency: usize) -> WorkerSettings {
        WorkerSettings {
            concurrency,
            scratch_directory: std::env::temp_dir(),
            drain_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_millis(50),
        }
    }

    fn result_of(results: &[AgentResult], agent: &str) -> AgentResult {
        results
            .iter()
            .find(|result| result.agent == agent)
            .cloned()
            .unwrap()
    }

    #[tokio::test]
    async fn every_outcome_becomes_a_stored_result() {
        let job = job(&[
            ("fast", RunnerKind::Builtin, 5_000),
            ("slow", RunnerKind::Command, 100),
        ]);
        let runners = RunnerSet::new()
            .with(RunnerKind::Builtin, Arc::new(BuiltinRunner::default()))
            .with(
                RunnerKind::Command,
                Arc::new(SlowRunner(Duration::from_secs(30))),
            );
        let (store, queue) = run_review(&job, runners).await;
        let results = store.results("r1").await.unwrap();
        let fast = result_of(&results, "fast");
        assert_eq!(fast.status, AgentStatus::Completed);
        let titles: Vec<&str> = fast
            .findings
            .iter()
            .map(|finding| finding.title.as_str())
            .collect();
        assert_eq!(
            titles,
            vec![
                "Debugger breakpoint left in code",
                "Source changed with no test change"
            ]
        );
        assert!(fast.started_at.is_some() && fast.finished_at.is_some());
        let slow = result_of(&results, "slow");
        assert_eq!(slow.status, AgentStatus::TimedOut);
        assert!(slow.error.unwrap().contains("100ms timeout"));
        assert_eq!(queue.ready_count(), 0);
        assert!(queue.dead_letters().is_empty());
    }

    /// A process stopped at its timeout keeps what it printed: its stream says why it
    /// never finished.
    #[tokio::test]
    async fn a_timed_out_agent_keeps_its_output_so_far() {
        let mut hanging = job(&[("hanging", RunnerKind::Command, 2_000)]);
        hanging.agents[0].command = vec![
            "sh".into(),
            "-c".into(),
            "echo '{\"type\":\"retry\",\"status\":401}'; echo 'key refused' >&2; sleep 60".into(),
        ];
        let runners = RunnerSet::new().with(RunnerKind::Command, Arc::new(CommandRunner::new()));
        let (store, _queue) = run_review(&hanging, runners).await;
        let result = result_of(&store.results("r1").await.unwrap(), "hanging");
        assert_eq!(result.status, AgentStatus::TimedOut);
        let error = result.error.unwrap();
        assert!(error.contains("2s timeout"), "{error}");
        assert!(error.contains("key refused"), "{error}");
        assert_eq!(
            result.raw_output.as_deref(),
            Some("{\"type\":\"retry\",\"status\":401}\n")
        );
    }

    /// A runner that reports a cost, as model agents do.
    struct PricedRunner;

    #[async_trait]
    impl AgentRunner for PricedRunner {
        async fn run(
            &self,
            task: &AgentTask,
            _change: &PreparedChange,
        ) -> Result<AgentResult, RunnerError> {
            let mut result = AgentResult::new(&task.agent.name);
            result.usage.cost_usd = Some(0.75);
            Ok(result)
        }
    }

    #[tokio::test]
    async fn costs_are_recorded_once_per_stored_result() {
        let mut priced = job(&[("priced", RunnerKind::Command, 5_000)]);
        priced.pull_request.repository = Some("acme/shop".into());
        let queue = MemoryTaskQueue::new(3);
        let store = MemoryResultStore::new();
        store
            .create_review(&ReviewManifest::for_job(&priced))
            .await
            .unwrap();
        // Delivered twice: the duplicate's cost must not be counted.
        for _ in 0..2 {
            queue
                .publish(&AgentTask::new(&priced, &priced.agents[0]))
                .await
                .unwrap();
        }
        queue.close();
        let worker = Worker::new(
            Arc::new(queue),
            Arc::new(store.clone()),
            RunnerSet::new().with(RunnerKind::Command, Arc::new(PricedRunner)),
            test_settings(1),
        );
        worker.run(CancellationToken::new()).await.unwrap();
        let today = Utc::now().date_naive();
        assert_eq!(store.cost(Some("acme/shop"), today).await.unwrap(), 0.75);
        assert_eq!(store.cost(None, today).await.unwrap(), 0.75);
        assert_eq!(store.status("r1").await.unwrap().unwrap().cost_usd, 0.75);
    }

    /// A runner that counts its runs.
    struct CountingRunner(Arc<std::sync::atomic::AtomicUsize>);

    #[async_trait]
    impl AgentRunner for CountingRunner {
        async fn run(
            &self,
            task: &AgentTask,
            _change: &PreparedChange,
        ) -> Result<AgentResult, RunnerError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(AgentResult::new(&task.agent.name))
        }
    }

    #[tokio::test]
    async fn a_store_outage_keeps_the_finished_result_and_never_reruns_the_agent() {
        let job = job(&[("counted", RunnerKind::Command, 5_000)]);
        let queue = MemoryTaskQueue::new(3);
        let store = MemoryResultStore::new();
        store
            .create_review(&ReviewManifest::for_job(&job))
            .await
            .unwrap();
        queue
            .publish(&AgentTask::new(&job, &job.agents[0]))
            .await
            .unwrap();
        // More failures than the queue's delivery limit: requeueing on each would re-run
        // the agent and finally dead-letter a task that was never poison.
        store.fail_result_writes(8);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let worker = Worker::new(
            Arc::new(queue.clone()),
            Arc::new(store.clone()),
            RunnerSet::new().with(
                RunnerKind::Command,
                Arc::new(CountingRunner(Arc::clone(&runs))),
            ),
            test_settings(1),
        );
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let completed = store.next_completed(Duration::from_secs(20)).await.unwrap();
        assert_eq!(completed.as_deref(), Some("r1"));
        shutdown.cancel();
        running.await.unwrap().unwrap();
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the agent ran once"
        );
        assert_eq!(
            result_of(&store.results("r1").await.unwrap(), "counted").status,
            AgentStatus::Completed
        );
        assert!(queue.dead_letters().is_empty());
        assert_eq!(queue.ready_count(), 0);
    }

    #[tokio::test]
    async fn a_missing_runner_is_a_failed_result_not_a_stuck_review() {
        let job = job(&[("lonely", RunnerKind::Command, 1_000)]);
        let (store, _) = run_review(&job, RunnerSet::new()).await;
        let result = result_of(&store.results("r1").await.unwrap(), "lonely");
        assert_eq!(result.status, AgentStatus::Failed);
        assert!(result.error.unwrap().contains("no `command` runner"));
    }

    #[tokio::test]
    async fn a_redelivered_task_keeps_the_first_result() {
        let job = job(&[
            ("a", RunnerKind::Builtin, 5_000),
            ("b", RunnerKind::Builtin, 5_000),
        ]);
        let queue = MemoryTaskQueue::new(3);
        let store = MemoryResultStore::new();
        store
            .create_review(&ReviewManifest::for_job(&job))
            .await
            .unwrap();
        let first = AgentResult::unsuccessful("a", AgentStatus::Failed, "first delivery");
        store.put_result("r1", &first).await.unwrap();
        // The same task arrives again, as after a worker crash before its ack.
        for agent in &job.agents {
            queue.publish(&AgentTask::new(&job, agent)).await.unwrap();
        }
        let worker = Worker::new(
            Arc::new(queue.clone()),
            Arc::new(store.clone()),
            RunnerSet::new().with(RunnerKind::Builtin, Arc::new(BuiltinRunner::default())),
            test_settings(1),
        );
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        assert_eq!(
            store
                .next_completed(Duration::from_secs(10))
                .await
                .unwrap()
                .as_deref(),
            Some("r1")
        );
        shutdown.cancel();
        running.await.unwrap().unwrap();
        let results = store.results("r1").await.unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(
            result_of(&results, "a").error.as_deref(),
            Some("first delivery")
        );
        assert_eq!(queue.ready_count(), 0, "the duplicate was acknowledged");
    }

    #[tokio::test]
    async fn tasks_of_a_cancelled_review_are_skipped() {
        let job = job(&[("a", RunnerKind::Builtin, 5_000)]);
        let queue = MemoryTaskQueue::new(3);
        let store = MemoryResultStore::new();
        store
            .create_review(&ReviewManifest::for_job(&job))
            .await
            .unwrap();
        store.cancel_review("r1").await.unwrap();
        queue
            .publish(&AgentTask::new(&job, &job.agents[0]))
            .await
            .unwrap();
        queue.close();
        let worker = Worker::new(
            Arc::new(queue.clone()),
            Arc::new(store.clone()),
            RunnerSet::new().with(RunnerKind::Builtin, Arc::new(BuiltinRunner::default())),
            test_settings(1),
        );
        // The queue is closed, so the worker stops by itself once the task is settled.
        worker.run(CancellationToken::new()).await.unwrap();
        assert!(store.results("r1").await.unwrap().is_empty());
        assert_eq!(queue.ready_count(), 0);
        assert!(queue.dead_letters().is_empty());
    }

    #[test]
    fn durations_are_humanized() {
        assert_eq!(humanize(Duration::from_millis(100)), "100ms");
        assert_eq!(humanize(Duration::from_secs(90)), "1m 30s");
        assert_eq!(humanize(Duration::from_secs(900)), "15m");
    }
}
