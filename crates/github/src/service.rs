//! The scheduler's GitHub side: the webhook route, scheduling a pull request, and sweeps.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use deep_review_protocol::{AgentSpec, ReviewJob};
use deep_review_scheduler::{Scheduler, SchedulerError};
use deep_review_telemetry::Metrics;
use deep_review_transport::ResultStore;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_util::task::TaskTracker;

use crate::sweep::{self, Candidate, SweepOptions, SweepSummary};
use crate::webhook::{self, ReviewTrigger, WebhookDecision};
use crate::{ingest, publish, GitHub, GitHubError, GitHubSettings};

/// How long a delivery id is remembered: GitHub lets operators redeliver for three days.
/// Events whose name may label the webhook metric; any other is counted as `other`.
const KNOWN_EVENTS: [&str; 8] = [
    "pull_request",
    "issue_comment",
    "ping",
    "installation",
    "installation_repositories",
    "check_run",
    "check_suite",
    "push",
];

const DELIVERY_MEMORY: Duration = Duration::from_secs(3 * 24 * 3600);
/// Tries to schedule one accepted delivery before giving up on it.
const SCHEDULE_ATTEMPTS: u32 = 3;

/// Why a pull request could not be scheduled.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Reading the PR from GitHub failed.
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    /// The scheduler refused or could not publish the review.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
}

impl ServiceError {
    /// Whether trying again later may succeed (GitHub or the services were unavailable).
    fn is_transient(&self) -> bool {
        match self {
            ServiceError::GitHub(error) => error.is_transient(),
            ServiceError::Scheduler(SchedulerError::Transport(_)) => true,
            ServiceError::Scheduler(_) => false,
        }
    }
}

/// Turns pull requests into scheduled reviews, from webhooks and sweeps.
pub struct GitHubService {
    github: Arc<GitHub>,
    settings: GitHubSettings,
    scheduler: Arc<Scheduler>,
    store: Arc<dyn ResultStore>,
    operator_agents: Vec<AgentSpec>,
    webhook_secret: Vec<u8>,
    metrics: Option<Arc<Metrics>>,
    background: TaskTracker,
}

impl GitHubService {
    /// A service scheduling through `scheduler`, with `operator_agents` as the line-up a
    /// repository's configuration picks from. The webhook secret is read from the
    /// variable `settings.webhook_secret_env`; unset, every delivery is refused.
    pub fn new(
        github: Arc<GitHub>,
        settings: GitHubSettings,
        scheduler: Arc<Scheduler>,
        store: Arc<dyn ResultStore>,
        operator_agents: Vec<AgentSpec>,
    ) -> Self {
        let webhook_secret = std::env::var(&settings.webhook_secret_env)
            .unwrap_or_default()
            .into_bytes();
        GitHubService {
            github,
            settings,
            scheduler,
            store,
            operator_agents,
            webhook_secret,
            metrics: None,
            background: TaskTracker::new(),
        }
    }

    /// Counts deliveries in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Reads the pull request, schedules its review and starts its check run. `None`
    /// when there is nothing to review (the PR is closed, or a draft by a push).
    pub async fn schedule(
        &self,
        trigger: &ReviewTrigger,
    ) -> Result<Option<ReviewJob>, ServiceError> {
        let client = self
            .github
            .for_repository(&trigger.repository, trigger.installation)
            .await?;
        let ingested = ingest::pull_request(
            &client,
            &trigger.repository,
            trigger.number,
            &self.settings,
            &self.operator_agents,
        )
        .await?;
        if !ingested.open {
            tracing::info!(repository = %trigger.repository, number = trigger.number, "the pull request is closed; not reviewed");
            return Ok(None);
        }
        let job = self.scheduler.submit(ingested.request).await?;
        tracing::info!(repository = %trigger.repository, number = trigger.number, review = %job.id, round = job.round, reason = %trigger.reason, "pull request review scheduled");
        if let Err(error) = publish::check_run(
            &client,
            &trigger.repository,
            &ingested.head_sha,
            &job,
            None,
            &self.settings,
        )
        .await
        {
            // The review runs regardless; the publisher creates the check run at the end.
            tracing::warn!(review = %job.id, %error, "could not start the check run");
        }
        if let Some(previous) = &job.supersedes {
            self.close_superseded(&client, trigger, previous, &job)
                .await;
        }
        Ok(Some(job))
    }

    /// Closes the check run of the round `job` replaced; failures are logged, since the
    /// new round is already under way.
    async fn close_superseded(
        &self,
        client: &octocrab::Octocrab,
        trigger: &ReviewTrigger,
        previous: &str,
        job: &ReviewJob,
    ) {
        let superseded = match self.store.manifest(previous).await {
            Ok(Some(manifest)) => manifest.job,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(review = %job.id, superseded = %previous, %error, "could not read the superseded review");
                return;
            }
        };
        if let Err(error) = publish::close_superseded_check_run(
            client,
            &trigger.repository,
            &superseded,
            job,
            &self.settings,
        )
        .await
        {
            tracing::warn!(review = %job.id, superseded = %previous, %error, "could not close the superseded check run");
        }
    }

    /// `POST /github/webhook`, on a router to merge into the scheduler's.
    pub fn router(self: Arc<Self>) -> Router {
        if self.webhook_secret.is_empty() {
            tracing::warn!(variable = %self.settings.webhook_secret_env, "no webhook secret is set: every webhook delivery will be refused");
        }
        Router::new()
            .route("/github/webhook", post(receive_webhook))
            .with_state(self)
    }

    /// Waits up to `limit` for accepted deliveries still being scheduled.
    pub async fn drain(&self, limit: Duration) {
        self.background.close();
        if tokio::time::timeout(limit, self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "stopped with webhook deliveries still being scheduled; GitHub can redeliver them"
            );
        }
    }

    fn count(&self, event: &str, result: &str) {
        if let Some(metrics) = &self.metrics {
            metrics
                .webhooks_total
                .with_label_values(&[event, result])
                .inc();
        }
    }

    /// Schedules `trigger` in the background, retrying transient failures; a delivery
    /// that finally fails is forgotten so an operator's redelivery is handled.
    fn schedule_in_background(
        self: &Arc<Self>,
        trigger: ReviewTrigger,
        delivery: String,
        replay_key: String,
    ) {
        let service = Arc::clone(self);
        self.background.spawn(async move {
            let mut delay = Duration::from_secs(2);
            for attempt in 1..=SCHEDULE_ATTEMPTS {
                match service.schedule(&trigger).await {
                    Ok(_) => return,
                    Err(error) if error.is_transient() && attempt < SCHEDULE_ATTEMPTS => {
                        tracing::warn!(%delivery, attempt, %error, "scheduling a webhook's review failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(error) => {
                        tracing::error!(%delivery, repository = %trigger.repository, number = trigger.number, %error, "could not schedule the review of a webhook delivery; redeliver it from the App's settings once fixed");
                        for key in [&delivery, &replay_key] {
                            if let Err(error) = service.store.release_delivery(key).await {
                                tracing::warn!(%delivery, %error, "could not forget the failed delivery");
                            }
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Sweeps an organisation: schedules every open PR whose head has no deep-review
    /// check run, keeping at most `max_in_flight` of the reviews it started unfinished,
    /// and with `wait_for_all`, waits for the last of them.
    pub async fn sweep(&self, options: &SweepOptions) -> Result<SweepSummary, ServiceError> {
        let candidates = sweep::candidates(&self.github, &self.settings, options).await?;
        let mut summary = SweepSummary {
            open: candidates.open,
            already_reviewed: candidates.already_reviewed,
            ..SweepSummary::default()
        };
        let mut in_flight: Vec<String> = Vec::new();
        for candidate in candidates.to_review {
            let trigger = &candidate.trigger;
            loop {
                in_flight = self.unfinished(in_flight).await?;
                if in_flight.len() < options.max_in_flight.max(1) {
                    break;
                }
                tokio::time::sleep(options.poll_interval).await;
            }
            match self.schedule(trigger).await {
                Ok(Some(job)) => {
                    summary
                        .scheduled
                        .push(format!("{}#{}", trigger.repository, trigger.number));
                    self.close_abandoned(&candidate, &job).await;
                    in_flight.push(job.id);
                }
                Ok(None) => {}
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    tracing::warn!(repository = %trigger.repository, number = trigger.number, %error, "sweep: could not schedule a pull request");
                    summary.failed.push(format!(
                        "{}#{}: {error}",
                        trigger.repository, trigger.number
                    ));
                }
            }
        }
        while options.wait_for_all && !in_flight.is_empty() {
            tokio::time::sleep(options.poll_interval).await;
            in_flight = self.unfinished(in_flight).await?;
        }
        Ok(summary)
    }

    /// Closes the check runs of the lost reviews `candidate`'s new review replaces. Best
    /// effort: the new review goes on whatever GitHub answers.
    async fn close_abandoned(&self, candidate: &Candidate, replacement: &ReviewJob) {
        if candidate.abandoned_check_runs.is_empty() {
            return;
        }
        let repository = &candidate.trigger.repository;
        let client = match self.github.for_repository(repository, None).await {
            Ok(client) => client,
            Err(error) => {
                tracing::warn!(%repository, %error, "sweep: could not close abandoned check runs");
                return;
            }
        };
        for run_id in &candidate.abandoned_check_runs {
            if let Err(error) =
                crate::publish::close_abandoned_check_run(&client, repository, *run_id, replacement)
                    .await
            {
                tracing::warn!(%repository, run_id, %error, "sweep: could not close an abandoned check run");
            }
        }
    }

    /// The reviews of `review_ids` that are neither published nor superseded.
    async fn unfinished(&self, review_ids: Vec<String>) -> Result<Vec<String>, ServiceError> {
        let mut unfinished = Vec::new();
        for id in review_ids {
            let status = self
                .store
                .status(&id)
                .await
                .map_err(SchedulerError::Transport)?;
            if status.is_some_and(|status| !status.published && !status.cancelled) {
                unfinished.push(id);
            }
        }
        Ok(unfinished)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

async fn receive_webhook(
    State(service): State<Arc<GitHubService>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let event = header(&headers, "x-github-event").unwrap_or("").to_string();
    // The header is the caller's until the signature is checked: only a verified delivery
    // of an event deep-review knows names its metric label, so nobody can mint labels.
    let answer = |verified: bool, status: StatusCode, result: &str, message: String| {
        let label = if verified && KNOWN_EVENTS.contains(&event.as_str()) {
            event.as_str()
        } else {
            "other"
        };
        service.count(label, result);
        (
            status,
            Json(json!({ "result": result, "message": message })),
        )
    };
    let signature = header(&headers, "x-hub-signature-256").unwrap_or("");
    if let Err(error) = webhook::verify_signature(
        &service.webhook_secret,
        &body,
        header(&headers, "x-hub-signature-256"),
    ) {
        tracing::warn!(%error, "webhook delivery refused");
        return answer(
            false,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            error.to_string(),
        );
    }
    let verified = true;
    if event.is_empty() {
        return answer(
            verified,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the delivery has no X-GitHub-Event header".into(),
        );
    }
    let Some(delivery) = header(&headers, "x-github-delivery").map(str::to_string) else {
        return answer(
            verified,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the delivery has no X-GitHub-Delivery header".into(),
        );
    };
    let decision = webhook::delivery_payload(header(&headers, "content-type"), &body)
        .and_then(|payload| webhook::decide(&event, &payload, &service.settings));
    let trigger = match decision {
        Ok(WebhookDecision::Review(trigger)) => trigger,
        Ok(WebhookDecision::Ignore(reason)) => {
            tracing::info!(%event, %delivery, %reason, "webhook delivery ignored");
            return answer(verified, StatusCode::ACCEPTED, "ignored", reason);
        }
        Err(error) => {
            tracing::warn!(%event, %delivery, %error, "webhook payload refused");
            return answer(
                verified,
                StatusCode::BAD_REQUEST,
                "bad_payload",
                error.to_string(),
            );
        }
    };
    // The delivery id, and the signature too: the same signed body under a new delivery id
    // is a replay (GitHub's own redelivery keeps the id). Both are remembered as long.
    let replay_key = format!(
        "signature:{}",
        hex::encode(Sha256::digest(signature.as_bytes()))
    );
    for (key, duplicate) in [
        (&delivery, "was handled already"),
        (&replay_key, "repeats an earlier delivery's signed body"),
    ] {
        match service.store.claim_delivery(key, DELIVERY_MEMORY).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%event, %delivery, "webhook delivery {duplicate}");
                return answer(
                    verified,
                    StatusCode::OK,
                    "duplicate",
                    format!("delivery {delivery} {duplicate}"),
                );
            }
            Err(error) => {
                // GitHub retries nothing on its own, but an unavailable answer is visible
                // in the App's delivery log, where the operator can redeliver.
                tracing::error!(%event, %delivery, %error, "cannot record the webhook delivery");
                return answer(
                    verified,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    error.to_string(),
                );
            }
        }
    }
    let message = format!(
        "review of {}#{} accepted ({})",
        trigger.repository, trigger.number, trigger.reason
    );
    tracing::info!(%event, %delivery, repository = %trigger.repository, number = trigger.number, reason = %trigger.reason, "webhook delivery accepted");
    service.schedule_in_background(trigger, delivery, replay_key);
    answer(verified, StatusCode::ACCEPTED, "accepted", message)
}
