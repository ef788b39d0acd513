//! The Prometheus metrics of deep-review: one registry per process, shared by the
//! components running in it and served on `GET /metrics`.
//!
//! Labels are bounded: agent (from configuration), outcome, severity, direction, reason,
//! event. Never a review id, repository or PR number, which would grow without bound.

mod traces;

pub use traces::{
    continue_trace, init_tracing, record_trace_id, trace_context_of, LogFormat, Tracing,
    TracingError,
};

use prometheus::{
    Counter, CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for durations from sub-second orchestration steps to half-hour agent runs.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0,
    1800.0,
];

/// Buckets for the consolidation step, which takes milliseconds.
pub const CONSOLIDATION_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Reviews finished, by outcome (`published`, `partial`, `superseded`).
    pub reviews_total: IntCounterVec,
    /// Request accepted → report published.
    pub review_duration_seconds: Histogram,
    /// Request accepted → an agent's task started, by agent.
    pub queue_wait_seconds: HistogramVec,
    /// An agent's run, by agent and outcome (`completed`, `failed`, `timed_out`, `cancelled`).
    pub agent_duration_seconds: HistogramVec,
    /// Tokens, by agent and direction (`input`, `output`).
    pub agent_tokens_total: IntCounterVec,
    /// Cost in US dollars, by agent.
    pub agent_cost_usd_total: CounterVec,
    /// Consolidated findings published, by severity.
    pub findings_total: IntCounterVec,
    /// Tasks being worked on now, by agent.
    pub tasks_in_flight: IntGaugeVec,
    /// Tasks run again, by agent and reason (`redelivered`, `store_failed`).
    pub task_retries_total: IntCounterVec,
    /// Tasks sent to the dead-letter queue by this process.
    pub dead_lettered_total: IntCounter,
    /// Reports published without every agent's result.
    pub partial_reports_total: IntCounter,
    /// Webhook deliveries, by event and result.
    pub webhooks_total: IntCounterVec,
    /// Building one report.
    pub consolidation_duration_seconds: Histogram,
    /// Cost of everything this process ran, for a quick total.
    pub cost_usd_total: Counter,
    /// The agent ledger as counters, by agent and measure (`reviews`, `findings`,
    /// `unique_insights`, `confirmed`, `false_positives`, `coverage_misses`, `failures`),
    /// counted when a report is published: rates over any window are ratios of increases.
    pub agent_quality_total: IntCounterVec,
    /// The agent ledger's rates over a trailing window, org-wide, by agent, runner and
    /// model: set by the consolidator from the shared ledger.
    pub agent_quality: AgentQualityGauges,
}

/// The agent-quality gauges: what `deep-review agents stats` prints, over the window the
/// consolidator is configured with (`[distributed] agent_quality_window`).
pub struct AgentQualityGauges {
    /// Reviews the agent took part in within the window.
    pub reviews: GaugeVec,
    /// Share of its findings nobody else reported.
    pub unique_insight_ratio: GaugeVec,
    /// Share of its findings refuted or dropped as wrong.
    pub false_positive_ratio: GaugeVec,
    /// Share of its runs that failed or timed out.
    pub failure_ratio: GaugeVec,
    /// Its cost over its confirmed findings; absent while none is confirmed.
    pub cost_per_confirmed_usd: GaugeVec,
}

impl AgentQualityGauges {
    const LABELS: [&'static str; 3] = ["agent", "runner", "model"];

    fn new() -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &Self::LABELS);
        Ok(AgentQualityGauges {
            reviews: gauge(
                "deep_review_agent_window_reviews",
                "Reviews an agent took part in over the quality window",
            )?,
            unique_insight_ratio: gauge(
                "deep_review_agent_unique_insight_ratio",
                "Share of an agent's findings nobody else reported, over the quality window",
            )?,
            false_positive_ratio: gauge(
                "deep_review_agent_false_positive_ratio",
                "Share of an agent's findings refuted or dropped, over the quality window",
            )?,
            failure_ratio: gauge(
                "deep_review_agent_failure_ratio",
                "Share of an agent's runs that failed or timed out, over the quality window",
            )?,
            cost_per_confirmed_usd: gauge(
                "deep_review_agent_cost_per_confirmed_finding_usd",
                "An agent's cost in US dollars per confirmed finding, over the quality window",
            )?,
        })
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.reviews.clone()),
            Box::new(self.unique_insight_ratio.clone()),
            Box::new(self.false_positive_ratio.clone()),
            Box::new(self.failure_ratio.clone()),
            Box::new(self.cost_per_confirmed_usd.clone()),
        ]
    }

    /// Removes every series of one agent (`[agent, runner, model]`).
    pub fn remove(&self, labels: &[&str; 3]) {
        for gauge in [
            &self.reviews,
            &self.unique_insight_ratio,
            &self.false_positive_ratio,
            &self.failure_ratio,
            &self.cost_per_confirmed_usd,
        ] {
            // Absent already is fine: the cost gauge often is.
            let _absent = gauge.remove_label_values(labels);
        }
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let durations = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec())
        };
        let metrics = Metrics {
            reviews_total: IntCounterVec::new(
                Opts::new("deep_review_reviews_total", "Reviews finished, by outcome"),
                &["outcome"],
            )?,
            review_duration_seconds: Histogram::with_opts(durations(
                "deep_review_review_duration_seconds",
                "Request accepted to report published",
            ))?,
            queue_wait_seconds: HistogramVec::new(
                durations(
                    "deep_review_queue_wait_seconds",
                    "Request accepted to the agent's task started",
                ),
                &["agent"],
            )?,
            agent_duration_seconds: HistogramVec::new(
                durations(
                    "deep_review_agent_duration_seconds",
                    "Agent run time, by outcome",
                ),
                &["agent", "outcome"],
            )?,
            agent_tokens_total: IntCounterVec::new(
                Opts::new("deep_review_agent_tokens_total", "Tokens used by agents"),
                &["agent", "direction"],
            )?,
            agent_cost_usd_total: CounterVec::new(
                Opts::new(
                    "deep_review_agent_cost_usd_total",
                    "Agent cost in US dollars",
                ),
                &["agent"],
            )?,
            findings_total: IntCounterVec::new(
                Opts::new(
                    "deep_review_findings_total",
                    "Consolidated findings published, by severity",
                ),
                &["severity"],
            )?,
            tasks_in_flight: IntGaugeVec::new(
                Opts::new("deep_review_tasks_in_flight", "Tasks being worked on"),
                &["agent"],
            )?,
            task_retries_total: IntCounterVec::new(
                Opts::new(
                    "deep_review_task_retries_total",
                    "Tasks run again, by reason",
                ),
                &["agent", "reason"],
            )?,
            dead_lettered_total: IntCounter::new(
                "deep_review_dead_lettered_total",
                "Tasks sent to the dead-letter queue",
            )?,
            partial_reports_total: IntCounter::new(
                "deep_review_partial_reports_total",
                "Reports published without every agent's result",
            )?,
            webhooks_total: IntCounterVec::new(
                Opts::new(
                    "deep_review_webhooks_total",
                    "Webhook deliveries, by event and result",
                ),
                &["event", "result"],
            )?,
            consolidation_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "deep_review_consolidation_duration_seconds",
                    "Building one report",
                )
                .buckets(CONSOLIDATION_BUCKETS.to_vec()),
            )?,
            cost_usd_total: Counter::new(
                "deep_review_cost_usd_total",
                "Cost of all agent runs in US dollars",
            )?,
            agent_quality_total: IntCounterVec::new(
                Opts::new(
                    "deep_review_agent_quality_total",
                    "Published agent ledger counts, by agent and measure",
                ),
                &["agent", "measure"],
            )?,
            agent_quality: AgentQualityGauges::new()?,
            registry,
        };
        metrics.register_all()?;
        Ok(metrics)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.reviews_total.clone()),
            Box::new(self.review_duration_seconds.clone()),
            Box::new(self.queue_wait_seconds.clone()),
            Box::new(self.agent_duration_seconds.clone()),
            Box::new(self.agent_tokens_total.clone()),
            Box::new(self.agent_cost_usd_total.clone()),
            Box::new(self.findings_total.clone()),
            Box::new(self.tasks_in_flight.clone()),
            Box::new(self.task_retries_total.clone()),
            Box::new(self.dead_lettered_total.clone()),
            Box::new(self.partial_reports_total.clone()),
            Box::new(self.webhooks_total.clone()),
            Box::new(self.consolidation_duration_seconds.clone()),
            Box::new(self.cost_usd_total.clone()),
            Box::new(self.agent_quality_total.clone()),
        ];
        collectors.extend(self.agent_quality.collectors());
        for collector in collectors {
            self.registry.register(collector)?;
        }
        Ok(())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed() {
        let metrics = Metrics::new().unwrap();
        metrics
            .reviews_total
            .with_label_values(&["published"])
            .inc();
        metrics
            .agent_duration_seconds
            .with_label_values(&["builtin", "completed"])
            .observe(0.2);
        metrics.dead_lettered_total.inc();
        let text = metrics.render();
        assert!(
            text.contains("deep_review_reviews_total{outcome=\"published\"} 1"),
            "{text}"
        );
        assert!(text.contains("deep_review_agent_duration_seconds_bucket{agent=\"builtin\",outcome=\"completed\",le=\"0.25\"} 1"));
        assert!(text.contains("deep_review_dead_lettered_total 1"));
        assert!(text.contains("le=\"1800\""), "buckets reach half an hour");
    }
}
