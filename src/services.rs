//! The distributed mode: `deep-review scheduler|worker|consolidator`, each a long-running
//! service over RabbitMQ and Redis, and `deep-review submit`, their client.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use deep_review_consolidator::{
    Consolidator, ConsolidatorSettings, FilesPublisher, Publisher, StorePublisher,
};
use deep_review_github::{GitHub, GitHubPublisher, GitHubService};
use deep_review_protocol::{Report, ReviewJob, ReviewManifest, ReviewRequest};
use deep_review_scheduler::{Scheduler, SchedulerError, SchedulerSettings};
use deep_review_telemetry::Metrics;
use deep_review_transport::{
    backoff_delay, redact_url, CancellationToken, RabbitSettings, RabbitTaskQueue,
    RedisResultStore, RedisSettings, ResultStore, TaskQueue, TransportError,
};
use deep_review_worker::{Worker, WorkerSettings};
use serde::{Deserialize, Serialize};

use crate::commands::{build_request, summarise, ChangeArguments};
use crate::settings::Settings;

/// A token cancelled on SIGTERM or SIGINT, so services stop gracefully.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
            () = terminate => tracing::info!("SIGTERM received; shutting down"),
        }
        cancel.cancel();
    });
    token
}

/// How long a readiness probe waits for the broker or Redis to answer.
const DEPENDENCY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a service is ready for work: started, not draining, and able to reach its
/// broker and store right now (checked on every probe, so a lost connection shows).
#[derive(Clone, Default)]
struct Readiness {
    started: Arc<std::sync::atomic::AtomicBool>,
    queue: Arc<std::sync::OnceLock<Arc<dyn TaskQueue>>>,
    store: Arc<std::sync::OnceLock<Arc<dyn ResultStore>>>,
}

impl Readiness {
    fn set(&self, ready: bool) {
        self.started
            .store(ready, std::sync::atomic::Ordering::SeqCst);
    }

    /// Checks `queue` on every probe from now on.
    fn watch_queue(&self, queue: Arc<dyn TaskQueue>) {
        let _already = self.queue.set(queue);
    }

    /// Checks `store` on every probe from now on.
    fn watch_store(&self, store: Arc<dyn ResultStore>) {
        let _already = self.store.set(store);
    }

    /// Why the service is not ready, if it is not.
    async fn check(&self) -> Result<(), String> {
        if !self.started.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("starting or draining".to_string());
        }
        let bounded = |name: &'static str, check| async move {
            match tokio::time::timeout(DEPENDENCY_CHECK_TIMEOUT, check).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(format!("{name}: {error}")),
                Err(_) => Err(format!("{name} did not answer in time")),
            }
        };
        if let Some(queue) = self.queue.get() {
            bounded("broker", queue.check()).await?;
        }
        if let Some(store) = self.store.get() {
            bounded("store", store.check()).await?;
        }
        Ok(())
    }

    /// Turns not-ready as soon as `shutdown` starts, so load balancers stop sending work
    /// while in-flight work drains.
    fn drain_on(&self, shutdown: &CancellationToken) {
        let readiness = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            readiness.set(false);
        });
    }
}

/// `/metrics`, `/healthz` (the process is alive) and `/readyz` (ready for work).
fn telemetry_routes<S: Clone + Send + Sync + 'static>(
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> Router<S> {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .merge(health_routes(readiness))
}

/// `/healthz` (the process is alive) and `/readyz` (ready for work), for probes: open,
/// since they say nothing a probe should not know.
fn health_routes<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness.check().await {
                        Ok(()) => (StatusCode::OK, "ready".to_string()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}"),
                        ),
                    }
                }
            }),
        )
}

/// Serves the telemetry routes on `listen` until `stop`.
async fn serve_telemetry(
    listen: &str,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    stop: CancellationToken,
    limits: &crate::settings::DistributedSettings,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    serve(
        listen,
        "serving /metrics, /healthz and /readyz",
        telemetry_routes(metrics, readiness),
        stop,
        limits,
    )
    .await
}

/// Serves `app` on `listen` until `stop`, with the request timeout and the concurrency
/// limit every listener gets, and logs `what` with the address it bound.
async fn serve(
    listen: &str,
    what: &str,
    app: Router,
    stop: CancellationToken,
    limits: &crate::settings::DistributedSettings,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen} ({what})"))?;
    tracing::info!(address = %listener.local_addr()?, "{what}");
    Ok(serve_listener(listener, what, app, stop, limits))
}

/// Serves `app` on `listener` until `stop`, with the request timeout and the concurrency
/// limit every listener gets.
fn serve_listener(
    listener: tokio::net::TcpListener,
    what: &str,
    app: Router,
    stop: CancellationToken,
    limits: &crate::settings::DistributedSettings,
) -> tokio::task::JoinHandle<()> {
    // A slow or stuck client holds a request at most this long, and no listener serves
    // more than its limit at once, so one caller cannot exhaust the process.
    let app = app
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.http_request_timeout,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.http_max_concurrent_requests,
        ));
    let what = what.to_string();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(%error, "the server ({what}) failed");
        }
    })
}

/// The bearer token the scheduler's API requires, as its SHA-256 digest (compared in
/// constant time, and never held or logged in clear beyond start-up).
struct ApiToken {
    digest: Option<[u8; 32]>,
    variable: String,
}

impl ApiToken {
    /// Reads the token from the variable `distributed.api_token_env` names. A missing
    /// token is an error unless `allow_unauthenticated_api` is set.
    fn from_settings(settings: &Settings) -> anyhow::Result<ApiToken> {
        let variable = settings.distributed.api_token_env.clone();
        let token = std::env::var(&variable).unwrap_or_default();
        if token.trim().is_empty() {
            if settings.distributed.allow_unauthenticated_api {
                tracing::warn!(%variable, "the API accepts requests with no token (allow_unauthenticated_api)");
                return Ok(ApiToken {
                    digest: None,
                    variable,
                });
            }
            bail!(
                "the scheduler's API needs a token: set ${variable} (distributed.api_token_env) to a long random string, \
                 or set distributed.allow_unauthenticated_api = true on a network nobody else can reach"
            );
        }
        Ok(ApiToken {
            digest: Some(token_digest(token.trim())),
            variable,
        })
    }

    fn accepts(&self, presented: Option<&str>) -> bool {
        match (&self.digest, presented) {
            (None, _) => true,
            (Some(expected), Some(token)) => {
                subtle::ConstantTimeEq::ct_eq(&expected[..], &token_digest(token)[..]).into()
            }
            (Some(_), None) => false,
        }
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Refuses API requests without the configured bearer token.
async fn require_token(
    State(token): State<Arc<ApiToken>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    if token.accepts(presented) {
        return next.run(request).await;
    }
    let reason = if presented.is_some() {
        "the bearer token is not the API's".to_string()
    } else {
        format!(
            "missing `Authorization: Bearer` token (deep-review submit sends ${})",
            token.variable
        )
    };
    let mut response = ApiError(StatusCode::UNAUTHORIZED, reason).into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    response
}

fn new_metrics() -> anyhow::Result<Arc<Metrics>> {
    Ok(Arc::new(Metrics::new().context("registering metrics")?))
}

/// Retries `connect` with backoff until it succeeds or `shutdown`, logging each failure, so
/// a service started before its dependencies waits instead of crash-looping silently.
async fn connect_with_retry<T, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    max_backoff: Duration,
    mut connect: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let mut attempt = 0u32;
    loop {
        match connect().await {
            Ok(connected) => {
                if attempt > 0 {
                    tracing::info!(attempts = attempt + 1, "connected to {what}");
                }
                return Ok(connected);
            }
            Err(error) => {
                let delay = backoff_delay(attempt, max_backoff);
                tracing::warn!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "{what} is unavailable; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => bail!("stopped before {what} became available: {error}"),
                    () = tokio::time::sleep(delay) => {}
                }
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn rabbit_settings(settings: &Settings) -> RabbitSettings {
    RabbitSettings {
        url: settings.distributed.broker_url.clone(),
        prefix: settings.distributed.prefix.clone(),
        delivery_limit: settings.review.delivery_limit,
        runners: settings.distributed.runners.clone(),
        max_backoff: settings.distributed.max_backoff,
    }
}

async fn connect_queue(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<RabbitTaskQueue> {
    let rabbit = rabbit_settings(settings);
    let what = format!("RabbitMQ at {}", redact_url(&rabbit.url));
    connect_with_retry(&what, shutdown, settings.distributed.max_backoff, || {
        RabbitTaskQueue::connect(rabbit.clone())
    })
    .await
}

async fn connect_store(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<RedisResultStore> {
    let redis = RedisSettings {
        url: settings.distributed.redis_url.clone(),
        prefix: settings.distributed.prefix.clone(),
        ttl: settings.distributed.result_ttl,
    };
    let what = format!("Redis at {}", redact_url(&redis.url));
    connect_with_retry(&what, shutdown, settings.distributed.max_backoff, || {
        RedisResultStore::connect(redis.clone())
    })
    .await
}

/// `deep-review worker`: consumes tasks until SIGTERM, then drains.
pub async fn worker(settings: &Settings) -> anyhow::Result<ExitCode> {
    settings.check_consumer_timeout()?;
    let isolation = deep_review_worker::configure_agent_isolation(
        settings.review.agent_isolation,
        settings.sandbox_folders(),
    )
    .map_err(|reason| anyhow!("invalid configuration: review.{reason}"))?;
    tracing::info!(?isolation, "agent processes isolated");
    let shutdown = shutdown_on_signals();
    let (metrics, readiness) = (new_metrics()?, Readiness::default());
    readiness.drain_on(&shutdown);
    // Health endpoints outlive the drain: /readyz answers 503 while in-flight work finishes.
    let telemetry_stop = CancellationToken::new();
    let telemetry = serve_telemetry(
        &settings.distributed.worker_telemetry_listen,
        Arc::clone(&metrics),
        readiness.clone(),
        telemetry_stop.clone(),
        &settings.distributed,
    )
    .await?;
    let queue: Arc<dyn TaskQueue> = Arc::new(connect_queue(settings, &shutdown).await?);
    let store: Arc<dyn ResultStore> = Arc::new(connect_store(settings, &shutdown).await?);
    tracing::info!(runners = ?settings.distributed.runners, concurrency = settings.review.concurrency, "worker started");
    readiness.watch_queue(Arc::clone(&queue));
    readiness.watch_store(Arc::clone(&store));
    readiness.set(true);
    let worker = Worker::new(
        queue,
        store,
        crate::embedded::runners(settings)?,
        WorkerSettings {
            concurrency: settings.review.concurrency,
            scratch_directory: settings.scratch_directory(),
            drain_timeout: settings.distributed.drain_timeout,
            max_backoff: settings.distributed.max_backoff,
        },
    )
    .with_metrics(metrics)
    .with_verifier(crate::embedded::verifier(settings)?);
    let outcome = worker.run(shutdown).await.context("the worker stopped");
    telemetry_stop.cancel();
    let _stopped = telemetry.await;
    outcome?;
    tracing::info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}

/// `deep-review consolidator`: publishes reports until SIGTERM.
pub async fn consolidator(settings: &Settings) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_on_signals();
    let (metrics, readiness) = (new_metrics()?, Readiness::default());
    readiness.drain_on(&shutdown);
    let telemetry_stop = CancellationToken::new();
    let telemetry = serve_telemetry(
        &settings.distributed.consolidator_telemetry_listen,
        Arc::clone(&metrics),
        readiness.clone(),
        telemetry_stop.clone(),
        &settings.distributed,
    )
    .await?;
    let store: Arc<dyn ResultStore> = Arc::new(connect_store(settings, &shutdown).await?);
    readiness.watch_store(Arc::clone(&store));
    readiness.set(true);
    let mut publishers: Vec<Arc<dyn Publisher>> = vec![Arc::new(
        FilesPublisher::per_review(
            &settings.distributed.reports_directory,
            settings.output.formats.clone(),
        )
        .with_secret_masking(deep_review_worker::mask_secrets),
    )];
    if let Some(github_settings) = &settings.github {
        publishers.push(Arc::new(GitHubPublisher::new(
            Arc::new(GitHub::connect(github_settings)?),
            github_settings.clone(),
        )));
    }
    // Last, so a report is only visible to clients once it is everywhere else.
    publishers.push(Arc::new(StorePublisher::new(Arc::clone(&store))));
    let consolidator = Consolidator::new(
        Arc::clone(&store),
        publishers,
        ConsolidatorSettings {
            consolidation: settings.consolidation.clone(),
            lease: settings.distributed.consolidation_lease,
            sweep_interval: settings.distributed.sweep_interval,
            concurrency: settings.distributed.consolidation_concurrency,
        },
    )
    .with_metrics(Arc::clone(&metrics));
    // Stopped with the consolidator, whether by a signal or because it failed.
    let gauges_stop = shutdown.child_token();
    let gauges = tokio::spawn(deep_review_consolidator::run_quality_gauges(
        Arc::clone(&store),
        metrics,
        deep_review_consolidator::QualityGaugeSettings {
            window: settings.distributed.agent_quality_window,
            refresh: settings.distributed.agent_quality_refresh,
        },
        gauges_stop.clone(),
    ));
    let consolidator = match crate::embedded::narrator(settings)? {
        Some(narrator) => consolidator.with_narrator(narrator),
        None => consolidator,
    };
    tracing::info!(reports = %settings.distributed.reports_directory, "consolidator started");
    let outcome = Arc::new(consolidator)
        .run(shutdown, None)
        .await
        .context("the consolidator stopped");
    gauges_stop.cancel();
    let _stopped = gauges.await;
    telemetry_stop.cancel();
    let _stopped = telemetry.await;
    outcome?;
    tracing::info!("consolidator stopped");
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone)]
struct ApiState {
    scheduler: Arc<Scheduler>,
    store: Arc<dyn ResultStore>,
}

/// The answer to `POST /v1/reviews`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    /// The review id.
    pub id: String,
    /// Its round.
    pub round: u32,
    /// Where to poll.
    pub status_url: String,
}

/// The answer to `GET /v1/reviews/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReviewState {
    /// The review id.
    pub id: String,
    /// `pending`, `published` or `superseded`.
    pub status: String,
    /// Agents that delivered a result.
    pub results: usize,
    /// Agents expected.
    pub expected: usize,
    /// What the agents cost so far, in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
    /// The review job.
    pub job: Option<ReviewJob>,
    /// The report, once published.
    pub report: Option<Report>,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<SchedulerError> for ApiError {
    fn from(error: SchedulerError) -> Self {
        let status = match error {
            SchedulerError::InvalidRequest(_) | SchedulerError::Git(_) => StatusCode::BAD_REQUEST,
            SchedulerError::OverBudget(_) => StatusCode::TOO_MANY_REQUESTS,
            SchedulerError::Transport(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, error.to_string())
    }
}

impl From<TransportError> for ApiError {
    fn from(error: TransportError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

async fn create_review(
    State(state): State<ApiState>,
    Json(request): Json<ReviewRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    // Whoever holds the API token could otherwise choose a command for the workers to run.
    if request.policy.verification.is_some() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy.verification cannot be set through the API: a verification command comes only from a repository's .deep-review.toml on its default branch".to_string(),
        ));
    }
    let job = state.scheduler.submit(request).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status_url: format!("/v1/reviews/{}", job.id),
            id: job.id,
            round: job.round,
        }),
    ))
}

async fn review_state(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ReviewState>, ApiError> {
    let Some(status) = state.store.status(&id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no review {id}")));
    };
    let report = if status.published {
        state.store.report(&id).await?
    } else {
        None
    };
    let label = if status.cancelled {
        "superseded"
    } else if report.is_some() {
        "published"
    } else {
        "pending"
    };
    Ok(Json(ReviewState {
        id: id.clone(),
        status: label.to_string(),
        results: status.results,
        expected: status.expected,
        cost_usd: status.cost_usd,
        job: state
            .store
            .manifest(&id)
            .await?
            .map(|manifest| manifest.job),
        report,
    }))
}

/// `deep-review scheduler`: the HTTP API that accepts reviews.
pub async fn scheduler(settings: &Settings) -> anyhow::Result<ExitCode> {
    settings.check_consumer_timeout()?;
    let shutdown = shutdown_on_signals();
    let (metrics, readiness) = (new_metrics()?, Readiness::default());
    readiness.drain_on(&shutdown);
    let queue: Arc<dyn TaskQueue> = Arc::new(connect_queue(settings, &shutdown).await?);
    let store: Arc<dyn ResultStore> = Arc::new(connect_store(settings, &shutdown).await?);
    readiness.watch_queue(Arc::clone(&queue));
    readiness.watch_store(Arc::clone(&store));
    readiness.set(true);
    let scheduler = new_scheduler(settings, queue, Arc::clone(&store))?;
    let scheduler = Arc::new(scheduler);
    let github = match &settings.github {
        Some(github_settings) => Some(Arc::new(
            GitHubService::new(
                Arc::new(GitHub::connect(github_settings)?),
                github_settings.clone(),
                Arc::clone(&scheduler),
                Arc::clone(&store),
                settings.agents.clone(),
            )
            .with_metrics(Arc::clone(&metrics)),
        )),
        None => None,
    };
    let token = ApiToken::from_settings(settings)?;
    let api = Router::new()
        .route("/v1/reviews", post(create_review))
        .route("/v1/reviews/{id}", get(review_state))
        .with_state(ApiState { scheduler, store })
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ))
        .layer(DefaultBodyLimit::max(
            settings.distributed.max_request_bytes,
        ));
    let mut servers = Vec::new();
    let api = if settings.distributed.metrics_listen.is_empty() {
        api.merge(telemetry_routes(metrics, readiness))
    } else {
        servers.push(
            serve_telemetry(
                &settings.distributed.metrics_listen,
                metrics,
                readiness.clone(),
                shutdown.clone(),
                &settings.distributed,
            )
            .await?,
        );
        api.merge(health_routes(readiness))
    };
    if let Some(github) = &github {
        let webhook = Arc::clone(github).router().layer(DefaultBodyLimit::max(
            settings.distributed.max_request_bytes,
        ));
        servers.push(
            serve(
                &settings.distributed.webhook_listen,
                "GitHub webhooks listening at /github/webhook",
                webhook,
                shutdown.clone(),
                &settings.distributed,
            )
            .await?,
        );
        tracing::info!(api = %settings.github.as_ref().map(|github| github.api_url.as_str()).unwrap_or_default(), "GitHub integration enabled");
    }
    servers.push(
        serve(
            &settings.distributed.scheduler_listen,
            "scheduler listening",
            api,
            shutdown.clone(),
            &settings.distributed,
        )
        .await?,
    );
    for server in servers {
        if let Err(error) = server.await {
            tracing::error!(%error, "a listener's task failed");
        }
    }
    if let Some(github) = &github {
        github.drain(settings.distributed.drain_timeout).await;
    }
    tracing::info!("scheduler stopped");
    Ok(ExitCode::SUCCESS)
}

/// `deep-review submit`.
#[derive(Debug, Args)]
pub struct SubmitArguments {
    #[command(flatten)]
    change: ChangeArguments,
    /// Wait for the report and write its files to `--out`.
    #[arg(long)]
    wait: bool,
    /// Directory for the report files, with `--wait`.
    #[arg(long, default_value = "deep-review-report", value_name = "DIR")]
    out: PathBuf,
    /// Give up waiting after this long (e.g. `30m`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The scheduler's URL (default: distributed.scheduler_url).
    #[arg(long)]
    scheduler: Option<String>,
}

/// Sends a review request to the scheduler and, with `--wait`, writes its report.
pub async fn submit(settings: &Settings, arguments: SubmitArguments) -> anyhow::Result<ExitCode> {
    let mut request = build_request(settings, &arguments.change).await?;
    // The API takes no verification command (see `create_review`).
    if request.policy.verification.take().is_some() {
        request.notices.push(
            "The repository's verification command was not sent: the scheduler's API never takes one, so no finding was verified."
                .to_string(),
        );
    }
    let base = arguments
        .scheduler
        .clone()
        .unwrap_or_else(|| settings.distributed.scheduler_url.clone());
    let base = base.trim_end_matches('/').to_string();
    // Every request carries the API token, when the variable the scheduler reads is set.
    let mut headers = reqwest::header::HeaderMap::new();
    let token = std::env::var(&settings.distributed.api_token_env).unwrap_or_default();
    if !token.trim().is_empty() {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .with_context(|| {
                format!(
                    "${} is not a valid header value",
                    settings.distributed.api_token_env
                )
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .context("building the HTTP client")?;
    let response = client
        .post(format!("{base}/v1/reviews"))
        .json(&request)
        .send()
        .await
        .with_context(|| format!("sending the review to the scheduler at {base}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!("the scheduler refused the review ({status}): {body}");
    }
    let accepted: Accepted = response
        .json()
        .await
        .context("reading the scheduler's answer")?;
    println!("Review {} accepted (round {})", accepted.id, accepted.round);
    if !arguments.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let state = loop {
        let state: ReviewState = client
            .get(format!("{base}{}", accepted.status_url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("asking the scheduler about review {}", accepted.id))?
            .json()
            .await
            .context("reading the review's state")?;
        match state.status.as_str() {
            "published" => break state,
            "superseded" => bail!(
                "review {} was superseded by a newer round; no report",
                accepted.id
            ),
            _ => {}
        }
        if started.elapsed() > arguments.timeout {
            bail!(
                "no report for review {} after {} ({} of {} agents done)",
                accepted.id,
                humantime::format_duration(arguments.timeout),
                state.results,
                state.expected
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (Some(job), Some(report)) = (state.job, state.report) else {
        return Err(anyhow!(
            "the scheduler said review {} is published but sent no report",
            accepted.id
        ));
    };
    FilesPublisher::into_directory(&arguments.out, settings.output.formats.clone())
        .with_secret_masking(deep_review_worker::mask_secrets)
        .publish(&ReviewManifest::for_job(&job), &report)
        .await?;
    summarise(&report, &arguments.out, settings);
    Ok(crate::commands::exit_code(
        &report,
        arguments.change.fail_on,
    ))
}

fn new_scheduler(
    settings: &Settings,
    queue: Arc<dyn TaskQueue>,
    store: Arc<dyn ResultStore>,
) -> anyhow::Result<Scheduler> {
    Ok(Scheduler::new(
        queue,
        store,
        SchedulerSettings {
            default_agents: settings.agents.clone(),
            deadline_grace: settings.review.deadline_grace,
            shared_filesystem: settings.distributed.shared_filesystem,
            budget: settings.budget()?,
            lineup_policy: settings.lineup_policy.policy(),
            verification_time: settings.verification.worst_case_time(),
        },
    ))
}

/// `deep-review sweep`.
#[derive(Debug, Args)]
pub struct SweepArguments {
    /// The GitHub organisation whose open pull requests to review.
    #[arg(long, value_name = "ORG")]
    org: String,
    /// Only repositories whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    repo_filter: Option<String>,
    /// Only pull requests updated within this long (`7d`) or since this time (RFC 3339).
    #[arg(long, value_name = "AGE|TIME")]
    since: Option<String>,
    /// Reviews of this sweep unfinished at once (default: github.sweep_max_in_flight).
    #[arg(long, value_name = "N")]
    max_in_flight: Option<usize>,
    /// List what would be reviewed and schedule nothing (needs no RabbitMQ or Redis).
    #[arg(long)]
    dry_run: bool,
    /// Return only when every review the sweep scheduled is finished.
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
}

/// Schedules a review of every open pull request of an organisation whose head has none,
/// through the distributed services (RabbitMQ and Redis).
pub async fn sweep(settings: &Settings, arguments: SweepArguments) -> anyhow::Result<ExitCode> {
    let Some(github_settings) = &settings.github else {
        bail!("`sweep` needs the [github] table in the configuration (api_url and credentials)");
    };
    let repository_filter = arguments
        .repo_filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--repo-filter is not a valid regular expression")?;
    let since = arguments.since.as_deref().map(parse_since).transpose()?;
    let github = Arc::new(GitHub::connect(github_settings)?);
    let options = deep_review_github::sweep::SweepOptions {
        organisation: arguments.org.clone(),
        repository_filter,
        since,
        max_in_flight: arguments
            .max_in_flight
            .unwrap_or(github_settings.sweep_max_in_flight),
        poll_interval: Duration::from_secs(2),
        wait_for_all: arguments.wait,
    };
    if arguments.dry_run {
        let found = deep_review_github::sweep::candidates(&github, github_settings, &options)
            .await
            .with_context(|| format!("sweeping {}", arguments.org))?;
        println!(
            "{}: {} open pull request(s), {} already reviewed, {} to review (dry run: nothing scheduled)",
            arguments.org,
            found.open,
            found.already_reviewed,
            found.to_review.len()
        );
        for candidate in &found.to_review {
            let trigger = &candidate.trigger;
            match candidate.abandoned_check_runs.len() {
                0 => println!("  would schedule {}#{}", trigger.repository, trigger.number),
                abandoned => println!(
                    "  would schedule {}#{} and close {abandoned} abandoned check run(s)",
                    trigger.repository, trigger.number
                ),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let shutdown = shutdown_on_signals();
    let queue: Arc<dyn TaskQueue> = Arc::new(connect_queue(settings, &shutdown).await?);
    let store: Arc<dyn ResultStore> = Arc::new(connect_store(settings, &shutdown).await?);
    let scheduler = Arc::new(new_scheduler(settings, queue, Arc::clone(&store))?);
    let service = GitHubService::new(
        github,
        github_settings.clone(),
        scheduler,
        store,
        settings.agents.clone(),
    );
    let summary = tokio::select! {
        summary = service.sweep(&options) => summary.with_context(|| format!("sweeping {}", arguments.org))?,
        () = shutdown.cancelled() => bail!("sweep interrupted; reviews already scheduled go on"),
    };
    let outcome = if arguments.wait {
        "finished"
    } else {
        "scheduled"
    };
    println!(
        "{}: {} open pull request(s), {} already reviewed, {} {outcome}, {} failed",
        arguments.org,
        summary.open,
        summary.already_reviewed,
        summary.scheduled.len(),
        summary.failed.len()
    );
    for scheduled in &summary.scheduled {
        println!("  {outcome} {scheduled}");
    }
    for failed in &summary.failed {
        println!("  failed {failed}");
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `7d` (an age) or an RFC 3339 time.
pub fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(age) = humantime::parse_duration(text) {
        let age = chrono::Duration::from_std(age).context("--since is too long ago")?;
        return Ok(chrono::Utc::now() - age);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&chrono::Utc))
        .with_context(|| {
            format!("--since `{text}` is neither an age like `7d` nor an RFC 3339 time")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A listener with the given limits, serving `/slow` (never answers by itself) and
    /// `/hold` (answers once released, counting who got in).
    async fn limited_server(
        timeout: Duration,
        max_concurrent: usize,
    ) -> (
        String,
        Arc<AtomicUsize>,
        Arc<tokio::sync::Semaphore>,
        CancellationToken,
    ) {
        let entered = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "never"
                }),
            )
            .route(
                "/hold",
                get({
                    let (entered, release) = (Arc::clone(&entered), Arc::clone(&release));
                    move || async move {
                        entered.fetch_add(1, Ordering::SeqCst);
                        let _permit = release.acquire().await;
                        "released"
                    }
                }),
            );
        let limits = crate::settings::DistributedSettings {
            http_request_timeout: timeout,
            http_max_concurrent_requests: max_concurrent,
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        serve_listener(listener, "test listener", app, stop.clone(), &limits);
        (url, entered, release, stop)
    }

    #[tokio::test]
    async fn a_request_past_the_timeout_gets_408() {
        let (url, _entered, _release, stop) = limited_server(Duration::from_millis(200), 8).await;
        // The client gives up long after the server should have answered.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let response = client.get(format!("{url}/slow")).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::REQUEST_TIMEOUT);
        stop.cancel();
    }

    #[tokio::test]
    async fn no_more_requests_than_the_limit_are_served_at_once() {
        let (url, entered, release, stop) = limited_server(Duration::from_secs(60), 1).await;
        let first = tokio::spawn(reqwest::get(format!("{url}/hold")));
        while entered.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = tokio::spawn(reqwest::get(format!("{url}/hold")));
        // However long the first holds its place, the second waits for it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            entered.load(Ordering::SeqCst),
            1,
            "two requests were served at once"
        );
        release.add_permits(1);
        assert_eq!(
            first.await.unwrap().unwrap().text().await.unwrap(),
            "released"
        );
        while entered.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.add_permits(1);
        assert_eq!(
            second.await.unwrap().unwrap().text().await.unwrap(),
            "released"
        );
        stop.cancel();
    }
}
