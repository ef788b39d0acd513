//! The two seams between deep-review's components: the task queue (scheduler → workers)
//! and the result store (workers → consolidator).
//!
//! Both traits carry the semantics the distributed backends (RabbitMQ, Redis) provide, so the
//! in-memory implementations here behave the same way: unacknowledged deliveries come back
//! marked redelivered, poison messages dead-letter after a delivery limit, result writes are
//! idempotent per agent and "all results in" fires exactly once per review.

mod memory_queue;
mod memory_store;
mod rabbitmq;
mod redis_store;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deep_review_protocol::{AgentResult, AgentTask, LedgerEntry, Report, ReviewManifest};

pub use deep_review_protocol::redact_url;
pub use memory_queue::MemoryTaskQueue;
pub use memory_store::MemoryResultStore;
pub use rabbitmq::{delete_topology, RabbitSettings, RabbitTaskQueue};
pub use redis_store::{delete_prefix, RedisResultStore, RedisSettings};

pub use tokio_util::sync::CancellationToken;

/// The wait before reconnection attempt `attempt`: 100 ms doubling up to `max`, plus
/// jitter so many processes do not reconnect in lockstep.
pub fn backoff_delay(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1u32 << attempt.min(10));
    let jitter = u64::from(std::process::id() ^ attempt.wrapping_mul(2_654_435_761)) % 100;
    base.min(max) + Duration::from_millis(jitter)
}

/// A failure of the queue or store backend.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The backend is closed or unreachable.
    #[error("{backend} is unavailable: {reason}")]
    Unavailable {
        /// Which backend, e.g. "in-memory queue", "RabbitMQ".
        backend: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A review the caller named is not in the store.
    #[error("review {0} is not in the result store")]
    UnknownReview(String),
    /// A stored record could not be read back.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it could not be read.
        reason: String,
    },
}

/// Publishes agent tasks and hands them to consumers.
#[async_trait]
pub trait TaskQueue: Send + Sync + 'static {
    /// Publishes `task` durably; returns once the queue has accepted it (publisher confirm).
    async fn publish(&self, task: &AgentTask) -> Result<(), TransportError>;

    /// Starts a consumer that holds at most `prefetch` unacknowledged deliveries.
    async fn consume(&self, prefetch: usize) -> Result<Box<dyn TaskConsumer>, TransportError>;

    /// Whether the queue is reachable now, for readiness probes.
    async fn check(&self) -> Result<(), TransportError> {
        Ok(())
    }
}

/// A stream of deliveries from a [`TaskQueue`].
#[async_trait]
pub trait TaskConsumer: Send {
    /// The next delivery; `None` when the queue was closed for good.
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>>;
}

/// Settles one delivery with the queue.
#[async_trait]
pub trait Acknowledger: Send + Sync {
    /// The task is done; the queue forgets it.
    async fn ack(self: Box<Self>) -> Result<(), TransportError>;
    /// The task could not be handled; requeue it or dead-letter it.
    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), TransportError>;
}

/// One task handed to a worker. Dropping it unsettled returns it to the queue, as a
/// broker does when a consumer's channel closes.
pub struct Delivery {
    /// The task to run.
    pub task: AgentTask,
    /// How many times the task was delivered before this one.
    pub previous_deliveries: u32,
    /// The W3C trace context the message carried (AMQP headers); the task's own job
    /// context when the backend has no headers.
    pub trace_context: std::collections::BTreeMap<String, String>,
    acknowledger: Box<dyn Acknowledger>,
}

impl Delivery {
    /// Wraps a task and the backend's way to settle it.
    pub fn new(
        task: AgentTask,
        previous_deliveries: u32,
        acknowledger: Box<dyn Acknowledger>,
    ) -> Self {
        Delivery {
            trace_context: task.job.trace_context.clone(),
            task,
            previous_deliveries,
            acknowledger,
        }
    }

    /// Replaces the trace context with the one the message itself carried.
    pub fn with_trace_context(
        mut self,
        trace_context: std::collections::BTreeMap<String, String>,
    ) -> Self {
        if !trace_context.is_empty() {
            self.trace_context = trace_context;
        }
        self
    }

    /// Acknowledges the task as done.
    pub async fn ack(self) -> Result<(), TransportError> {
        self.acknowledger.ack().await
    }

    /// Rejects the task, requeueing it or sending it to the dead letters.
    pub async fn reject(self, requeue: bool) -> Result<(), TransportError> {
        self.acknowledger.reject(requeue).await
    }
}

/// What storing one agent result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOutcome {
    /// False when a result of this agent was already stored (a redelivery); the first wins.
    pub stored: bool,
    /// True for exactly one write per review: the one that brought in the last expected result.
    pub completed_review: bool,
}

/// What the store knows of one review, for status queries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReviewStatus {
    /// Agents whose result is stored.
    pub results: usize,
    /// Agents expected.
    pub expected: usize,
    /// Superseded or cancelled: no report will be published.
    pub cancelled: bool,
    /// The report is published.
    pub published: bool,
    /// How many times a report was saved; more than one would mean a duplicate.
    pub publications: u64,
    /// What the review's agents cost so far, in US dollars.
    pub cost_usd: f64,
}

/// Where workers put agent results and the consolidator finds complete or overdue reviews.
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// Whether the store is reachable now, for readiness probes.
    async fn check(&self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Records a newly scheduled review: its job, expected agents and deadline.
    async fn create_review(&self, manifest: &ReviewManifest) -> Result<(), TransportError>;

    /// The manifest of `review_id`, if the store has it.
    async fn manifest(&self, review_id: &str) -> Result<Option<ReviewManifest>, TransportError>;

    /// Stores `result` for its agent unless one is already stored, and detects completion.
    async fn put_result(
        &self,
        review_id: &str,
        result: &AgentResult,
    ) -> Result<StoreOutcome, TransportError>;

    /// All results stored for `review_id`, in no particular order.
    async fn results(&self, review_id: &str) -> Result<Vec<AgentResult>, TransportError>;

    /// Waits up to `timeout` for a review whose last result came in, and takes it.
    async fn next_completed(&self, timeout: Duration) -> Result<Option<String>, TransportError>;

    /// Reviews due for consolidation that no completion signal will bring: those whose
    /// deadline is at or before `now`, and complete ones a consolidator took but did not
    /// publish (it crashed). None of them is published yet.
    async fn overdue_reviews(&self, now: DateTime<Utc>) -> Result<Vec<String>, TransportError>;

    /// Claims the right to build and publish the report of `review_id` for `lease`.
    /// Returns false when another consolidator holds it or the report is already published.
    async fn claim_consolidation(
        &self,
        review_id: &str,
        lease: Duration,
    ) -> Result<bool, TransportError>;

    /// Records that the report of `review_id` is published; it is never built again.
    async fn finish_consolidation(&self, review_id: &str) -> Result<(), TransportError>;

    /// Marks a review cancelled (superseded); workers skip its remaining tasks.
    async fn cancel_review(&self, review_id: &str) -> Result<(), TransportError>;

    /// Whether `review_id` was cancelled.
    async fn is_cancelled(&self, review_id: &str) -> Result<bool, TransportError>;

    /// Stores the published report, so clients on other machines can fetch it.
    async fn save_report(&self, report: &Report) -> Result<(), TransportError>;

    /// The published report of `review_id`, if any.
    async fn report(&self, review_id: &str) -> Result<Option<Report>, TransportError>;

    /// The status of `review_id`; `None` when the store does not know it.
    async fn status(&self, review_id: &str) -> Result<Option<ReviewStatus>, TransportError>;

    /// Records `review_id` as the newest round of the pull request `pull_request_key`
    /// (e.g. `owner/repo#42`). Returns the round it became and the review it superseded.
    async fn next_round(
        &self,
        pull_request_key: &str,
        review_id: &str,
    ) -> Result<(u32, Option<String>), TransportError>;

    /// Notes kept about `repository` from earlier reviews, oldest first.
    async fn repository_context(&self, repository: &str) -> Result<Vec<String>, TransportError>;

    /// Adds `notes` to what is kept about `repository`; notes already kept are skipped and
    /// only the newest [`REPOSITORY_CONTEXT_LIMIT`] are kept.
    async fn add_repository_context(
        &self,
        repository: &str,
        notes: &[String],
    ) -> Result<(), TransportError>;

    /// Adds `usd` to the cost of `review_id`, of `repository` (when known) and of the whole
    /// deployment, for the UTC day `day`.
    async fn add_cost(
        &self,
        review_id: &str,
        repository: Option<&str>,
        day: chrono::NaiveDate,
        usd: f64,
    ) -> Result<(), TransportError>;

    /// What `repository` (or, with `None`, everything) cost on the UTC day `day`.
    async fn cost(
        &self,
        repository: Option<&str>,
        day: chrono::NaiveDate,
    ) -> Result<f64, TransportError>;

    /// Records a webhook delivery id for `ttl`; false when it was recorded already, so
    /// a redelivered webhook (by GitHub or by every replica of the scheduler) schedules
    /// one review.
    async fn claim_delivery(
        &self,
        delivery_id: &str,
        ttl: Duration,
    ) -> Result<bool, TransportError>;

    /// Forgets a delivery whose handling failed, so GitHub's redelivery is handled.
    async fn release_delivery(&self, delivery_id: &str) -> Result<(), TransportError>;

    /// Records `entries` in the agent ledger, each once (by review and agent, so a report
    /// published twice counts once), kept [`LEDGER_RETENTION_DAYS`] days.
    async fn record_ledger(&self, entries: &[LedgerEntry]) -> Result<(), TransportError>;

    /// The ledger entries recorded at or after `since` (of `repository` only, when
    /// given), oldest first.
    async fn ledger(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<Vec<LedgerEntry>, TransportError>;
}

/// How long the agent ledger keeps an entry: a year of reviews, and a little more.
pub const LEDGER_RETENTION_DAYS: i64 = 400;

/// How many context notes are kept per repository; older ones give way.
pub const REPOSITORY_CONTEXT_LIMIT: usize = 50;
