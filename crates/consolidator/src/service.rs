//! The consolidator as a service: waits for complete or overdue reviews, builds their
//! reports and publishes them exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use deep_review_protocol::Report;
use deep_review_transport::{CancellationToken, ResultStore, TransportError};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{consolidate, ConsolidationSettings, Narrator, PublishError, Publisher};

/// Why a review could not be consolidated.
#[derive(Debug, thiserror::Error)]
pub enum ConsolidatorError {
    /// The store failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A publisher failed; the review is retried once its lease expires.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Consolidator tuning.
#[derive(Debug, Clone)]
pub struct ConsolidatorSettings {
    /// How findings merge and the verdict is decided.
    pub consolidation: ConsolidationSettings,
    /// How long a claim on a review lasts; a crashed consolidator's reviews are retried after it.
    pub lease: Duration,
    /// How often overdue reviews are looked for.
    pub sweep_interval: Duration,
    /// Reviews consolidated at once.
    pub concurrency: usize,
}

/// Builds and publishes reports.
pub struct Consolidator {
    store: Arc<dyn ResultStore>,
    publishers: Vec<Arc<dyn Publisher>>,
    settings: ConsolidatorSettings,
    metrics: Option<Arc<deep_review_telemetry::Metrics>>,
    narrator: Option<Arc<dyn Narrator>>,
}

impl Consolidator {
    /// A consolidator reading from `store` and publishing through `publishers`.
    pub fn new(
        store: Arc<dyn ResultStore>,
        publishers: Vec<Arc<dyn Publisher>>,
        settings: ConsolidatorSettings,
    ) -> Self {
        Consolidator {
            store,
            publishers,
            settings,
            metrics: None,
            narrator: None,
        }
    }

    /// Has `narrator` rewrite each report's summary and narratives before publishing.
    pub fn with_narrator(mut self, narrator: Arc<dyn Narrator>) -> Self {
        self.narrator = Some(narrator);
        self
    }

    /// Records review metrics in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<deep_review_telemetry::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Consolidates `review_id` if nobody else holds or finished it. Returns the report
    /// when this call published it.
    pub async fn process(&self, review_id: &str) -> Result<Option<Report>, ConsolidatorError> {
        if !self
            .store
            .claim_consolidation(review_id, self.settings.lease)
            .await?
        {
            return Ok(None);
        }
        if self.store.is_cancelled(review_id).await? {
            // A superseded round is never published.
            self.store.finish_consolidation(review_id).await?;
            if let Some(metrics) = &self.metrics {
                metrics
                    .reviews_total
                    .with_label_values(&["superseded"])
                    .inc();
            }
            tracing::info!(review = %review_id, "review superseded; report not published");
            return Ok(None);
        }
        let Some(manifest) = self.store.manifest(review_id).await? else {
            return Err(TransportError::UnknownReview(review_id.to_string()).into());
        };
        // The report's span joins the review's trace, begun by the scheduler.
        let span = tracing::info_span!(
            "consolidate",
            review = %review_id,
            trace_id = tracing::field::Empty
        );
        deep_review_telemetry::continue_trace(&span, &manifest.job.trace_context);
        self.build_and_publish(review_id, &manifest)
            .instrument(span)
            .await
            .map(Some)
    }

    /// Builds the report of a claimed review, publishes it and releases the claim.
    async fn build_and_publish(
        &self,
        review_id: &str,
        manifest: &deep_review_protocol::ReviewManifest,
    ) -> Result<Report, ConsolidatorError> {
        let results = self.store.results(review_id).await?;
        let started = Instant::now();
        let mut report = consolidate(manifest, results, &self.settings.consolidation, Utc::now());
        let building = started.elapsed();
        if let Some(narrator) = &self.narrator {
            crate::narrate(narrator.as_ref(), &mut report, &manifest.job).await;
        }
        tracing::info!(
            review = %review_id,
            verdict = report.verdict.verdict.label(),
            findings = report.findings.len(),
            partial = report.partial,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "report built"
        );
        for publisher in &self.publishers {
            publisher.publish(manifest, &report).await?;
        }
        // Handed to the next review of the repository; losing them costs context, not the
        // report, so a failure is logged rather than failing the publication.
        if let Some(repository) = &manifest.job.pull_request.repository {
            let notes: Vec<String> = report
                .repo_context_updates
                .iter()
                .map(|note| note.text.clone())
                .collect();
            if let Err(error) = self.store.add_repository_context(repository, &notes).await {
                tracing::warn!(%error, review = %review_id, "could not store the repository context updates");
            }
        }
        // The agent ledger, like the context, is worth a log line but not the publication.
        let ledger = deep_review_protocol::LedgerEntry::from_report(&report, Utc::now());
        if let Err(error) = self.store.record_ledger(&ledger).await {
            tracing::warn!(%error, review = %review_id, "could not record the agent ledger");
        }
        self.store.finish_consolidation(review_id).await?;
        if let Some(metrics) = &self.metrics {
            for entry in &ledger {
                let count = |measure: &str, value: usize| {
                    metrics
                        .agent_quality_total
                        .with_label_values(&[&entry.agent, measure])
                        .inc_by(value as u64);
                };
                let findings =
                    entry.findings.critical + entry.findings.important + entry.findings.suggestion;
                // A superseded (cancelled) run is nobody's failure.
                let failed = matches!(
                    entry.status,
                    None | Some(
                        deep_review_protocol::AgentStatus::Failed
                            | deep_review_protocol::AgentStatus::TimedOut
                    )
                );
                count("reviews", 1);
                count("findings", findings);
                count("unique_insights", entry.unique_insights);
                count("confirmed", entry.confirmed);
                count("false_positives", entry.false_positives);
                count("coverage_misses", entry.coverage_misses);
                count("failures", usize::from(failed));
            }
            metrics
                .consolidation_duration_seconds
                .observe(building.as_secs_f64());
            let outcome = if report.partial {
                "partial"
            } else {
                "published"
            };
            metrics.reviews_total.with_label_values(&[outcome]).inc();
            if report.partial {
                metrics.partial_reports_total.inc();
            }
            let took = (Utc::now() - manifest.job.created_at)
                .to_std()
                .unwrap_or_default();
            metrics.review_duration_seconds.observe(took.as_secs_f64());
            for finding in &report.findings {
                metrics
                    .findings_total
                    .with_label_values(&[&finding.severity.label().to_lowercase()])
                    .inc();
            }
        }
        Ok(report)
    }

    /// Serves until `shutdown`: consolidates each review when its last result arrives, and
    /// each overdue review as a partial report. Published reports go to `published`.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        published: Option<mpsc::UnboundedSender<Report>>,
    ) -> Result<(), ConsolidatorError> {
        let slots = Arc::new(tokio::sync::Semaphore::new(
            self.settings.concurrency.max(1),
        ));
        let mut in_progress = tokio::task::JoinSet::new();
        let mut last_sweep: Option<Instant> = None;
        loop {
            while in_progress.try_join_next().is_some() {}
            let completed = tokio::select! {
                () = shutdown.cancelled() => break,
                completed = self.store.next_completed(self.settings.sweep_interval) => completed,
            };
            let mut due: Vec<String> = Vec::new();
            match completed {
                Ok(Some(review_id)) => due.push(review_id),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "waiting for completed reviews failed; retrying");
                    tokio::time::sleep(self.settings.sweep_interval.min(Duration::from_secs(1)))
                        .await;
                }
            }
            if last_sweep.is_none_or(|at| at.elapsed() >= self.settings.sweep_interval) {
                last_sweep = Some(Instant::now());
                match self.store.overdue_reviews(Utc::now()).await {
                    Ok(overdue) => due.extend(overdue),
                    Err(error) => tracing::error!(%error, "looking for overdue reviews failed"),
                }
            }
            for review_id in due {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let consolidator = Arc::clone(&self);
                let published = published.clone();
                in_progress.spawn(async move {
                    match consolidator.process(&review_id).await {
                        Ok(Some(report)) => {
                            if let Some(published) = &published {
                                // Nobody listening is fine: the report is already published.
                                let _unobserved = published.send(report);
                            }
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::error!(%error, review = %review_id, "consolidation failed; it will be retried when the claim expires");
                        }
                    }
                    drop(slot);
                });
            }
        }
        // Let reviews being published finish, so a stop does not leave a claim to expire.
        while in_progress.join_next().await.is_some() {}
        Ok(())
    }
}
