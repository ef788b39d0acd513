//! The agent-quality gauges: the agent ledger's rates (unique insights, false positives,
//! failures, cost per confirmed finding) over a trailing window, organisation-wide, kept
//! current for Prometheus.
//!
//! Every consolidator replica reads the same shared ledger, so each exports the same
//! figures; dashboards take `max by (agent, runner, model)`. After one full read of the
//! window at start, each refresh reads only what was recorded since the last one (plus a
//! margin for clocks that disagree between replicas), so the cost does not grow with the
//! window.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use deep_review_protocol::{AgentStats, LedgerEntry};
use deep_review_telemetry::Metrics;
use deep_review_transport::CancellationToken;
use deep_review_transport::ResultStore;

/// How the gauges are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QualityGaugeSettings {
    /// How far back the figures go; whole UTC days, the oldest counted whole.
    pub window: Duration,
    /// How often the ledger is read again.
    pub refresh: Duration,
}

impl Default for QualityGaugeSettings {
    fn default() -> Self {
        QualityGaugeSettings {
            window: Duration::from_secs(30 * 24 * 3600),
            refresh: Duration::from_secs(60),
        }
    }
}

/// Who a row of figures is about: agent, runner and model, as `agents stats` groups them.
type AgentKey = (String, String, Option<String>);

/// The ledger over the window, summed per UTC day and agent, fed incrementally.
#[derive(Debug)]
pub struct QualityWindow {
    window: chrono::Duration,
    /// How far before the last read the next one starts: an entry another replica
    /// stamped with a clock this far behind is still read.
    overlap: chrono::Duration,
    days: BTreeMap<NaiveDate, BTreeMap<AgentKey, AgentStats>>,
    /// Keys of entries read inside the overlap, so a re-read counts nothing twice.
    recent: HashMap<String, DateTime<Utc>>,
    read_until: Option<DateTime<Utc>>,
}

impl QualityWindow {
    /// An empty window of `window`.
    pub fn new(window: Duration) -> Self {
        QualityWindow {
            window: chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX),
            overlap: chrono::Duration::minutes(5),
            days: BTreeMap::new(),
            recent: HashMap::new(),
            read_until: None,
        }
    }

    /// Where the next read of the ledger starts, at `now`.
    pub fn read_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.read_until {
            Some(until) => until - self.overlap,
            None => self
                .oldest_day(now)
                .and_time(chrono::NaiveTime::MIN)
                .and_utc(),
        }
    }

    fn oldest_day(&self, now: DateTime<Utc>) -> NaiveDate {
        now.checked_sub_signed(self.window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            .date_naive()
    }

    /// Takes in `entries`, read at `now` from [`QualityWindow::read_from`] on; entries
    /// already counted are skipped, and days past the window are forgotten.
    pub fn absorb(&mut self, entries: &[LedgerEntry], now: DateTime<Utc>) {
        let oldest = self.oldest_day(now);
        for entry in entries {
            let day = entry.recorded_at.date_naive();
            if day < oldest || self.recent.contains_key(&entry.key()) {
                continue;
            }
            self.recent.insert(entry.key(), entry.recorded_at);
            let key = (
                entry.agent.clone(),
                entry.runner.clone(),
                entry.model.clone(),
            );
            self.days
                .entry(day)
                .or_default()
                .entry(key)
                .or_insert_with(|| AgentStats::row_for(entry))
                .add(entry);
        }
        self.read_until = Some(now);
        let remembered_from = now - self.overlap - self.overlap;
        self.recent.retain(|_, at| *at >= remembered_from);
        self.days.retain(|day, _| *day >= oldest);
    }

    /// Each agent's figures over the window, most reviews first.
    pub fn rows(&self) -> Vec<AgentStats> {
        let mut sums: BTreeMap<AgentKey, AgentStats> = BTreeMap::new();
        for agents in self.days.values() {
            for (key, day) in agents {
                match sums.get_mut(key) {
                    Some(sum) => sum.merge(day),
                    None => {
                        sums.insert(key.clone(), day.clone());
                    }
                }
            }
        }
        let mut rows: Vec<AgentStats> = sums.into_values().collect();
        AgentStats::most_reviews_first(&mut rows);
        rows
    }
}

/// Sets the gauges to `rows`, and removes the series of agents no longer in them (aged
/// out of the window), so a dashboard does not keep showing an old figure.
pub fn export(metrics: &Metrics, rows: &[AgentStats], exported: &mut BTreeSet<AgentKey>) {
    let mut now_exported = BTreeSet::new();
    for row in rows {
        let model = row.model.as_deref().unwrap_or("");
        let labels = [row.agent.as_str(), row.runner.as_str(), model];
        let quality = &metrics.agent_quality;
        quality
            .reviews
            .with_label_values(&labels)
            .set(row.reviews as f64);
        quality
            .unique_insight_ratio
            .with_label_values(&labels)
            .set(row.unique_insight_rate());
        quality
            .false_positive_ratio
            .with_label_values(&labels)
            .set(row.false_positive_rate());
        quality
            .failure_ratio
            .with_label_values(&labels)
            .set(row.failure_rate());
        match row.cost_per_confirmed() {
            Some(cost) => quality
                .cost_per_confirmed_usd
                .with_label_values(&labels)
                .set(cost),
            // No confirmed finding: no figure, rather than a zero that reads as free.
            None => {
                let _absent = quality.cost_per_confirmed_usd.remove_label_values(&labels);
            }
        }
        now_exported.insert((row.agent.clone(), row.runner.clone(), row.model.clone()));
    }
    for (agent, runner, model) in exported.difference(&now_exported) {
        let labels = [
            agent.as_str(),
            runner.as_str(),
            model.as_deref().unwrap_or(""),
        ];
        metrics.agent_quality.remove(&labels);
    }
    *exported = now_exported;
}

/// Keeps the gauges of `metrics` current from `store`'s ledger until `shutdown`. A failed
/// read is logged and tried again at the next refresh; the gauges keep their last values.
pub async fn run_quality_gauges(
    store: Arc<dyn ResultStore>,
    metrics: Arc<Metrics>,
    settings: QualityGaugeSettings,
    shutdown: CancellationToken,
) {
    let mut window = QualityWindow::new(settings.window);
    let mut exported = BTreeSet::new();
    let mut ticks = tokio::time::interval(settings.refresh.max(Duration::from_secs(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = Utc::now();
        match store.ledger(window.read_from(now), None).await {
            Ok(entries) => {
                window.absorb(&entries, now);
                export(&metrics, &window.rows(), &mut exported);
            }
            Err(error) => {
                tracing::warn!(%error, "reading the agent ledger for the quality gauges failed; trying again at the next refresh");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_protocol::{AgentStatus, SeverityCounts};

    fn entry(review: &str, agent: &str, at: DateTime<Utc>, status: AgentStatus) -> LedgerEntry {
        LedgerEntry {
            review_id: review.to_string(),
            recorded_at: at,
            repository: Some("acme/api".to_string()),
            agent: agent.to_string(),
            runner: "builtin".to_string(),
            model: None,
            status: Some(status),
            findings: SeverityCounts {
                critical: 1,
                important: 1,
                suggestion: 0,
            },
            unique_insights: 1,
            confirmed: 1,
            false_positives: 0,
            coverage_misses: 0,
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: Some(0.5),
            duration_ms: 1_000,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .expect("a timestamp")
    }

    #[test]
    fn a_re_read_counts_nothing_twice_and_old_days_age_out() {
        let mut window = QualityWindow::new(Duration::from_secs(2 * 24 * 3600));
        let now = at("2026-12-03T12:00:00Z");
        assert_eq!(window.read_from(now), at("2026-12-01T00:00:00Z"));
        let first = entry(
            "r1",
            "claude",
            at("2026-12-01T08:00:00Z"),
            AgentStatus::Completed,
        );
        let second = entry(
            "r2",
            "claude",
            at("2026-12-03T11:58:00Z"),
            AgentStatus::Failed,
        );
        window.absorb(&[first.clone(), second.clone()], now);
        // The next read starts inside the overlap, so it sees `second` again.
        let later = at("2026-12-03T12:01:00Z");
        assert!(window.read_from(later) <= second.recorded_at);
        window.absorb(std::slice::from_ref(&second), later);
        let rows = window.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].reviews, 2);
        assert_eq!(rows[0].failures, 1);
        assert!((rows[0].failure_rate() - 0.5).abs() < 1e-9);
        assert_eq!(rows[0].cost_per_confirmed(), Some(0.5));
        // Two days on, 2026-12-01 is past the window.
        window.absorb(&[], at("2026-12-04T00:30:00Z"));
        let rows = window.rows();
        assert_eq!(rows[0].reviews, 1, "{rows:?}");
    }

    #[test]
    fn the_gauges_follow_the_rows_and_drop_agents_that_aged_out() {
        let metrics = Metrics::new().expect("metrics");
        let mut exported = BTreeSet::new();
        let mut window = QualityWindow::new(Duration::from_secs(24 * 3600));
        let now = at("2026-12-03T12:00:00Z");
        let mut failed = entry("r1", "codex", now, AgentStatus::Failed);
        failed.confirmed = 0;
        window.absorb(
            &[entry("r1", "claude", now, AgentStatus::Completed), failed],
            now,
        );
        export(&metrics, &window.rows(), &mut exported);
        let text = metrics.render();
        assert!(
            text.contains(
                "deep_review_agent_failure_ratio{agent=\"codex\",model=\"\",runner=\"builtin\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "deep_review_agent_cost_per_confirmed_finding_usd{agent=\"claude\",model=\"\",runner=\"builtin\"} 0.5"
        ));
        assert!(
            !text.contains("deep_review_agent_cost_per_confirmed_finding_usd{agent=\"codex\""),
            "no confirmed finding, no cost per confirmed finding"
        );
        // Two days on, both aged out: their series go.
        window.absorb(&[], at("2026-12-05T12:00:00Z"));
        export(&metrics, &window.rows(), &mut exported);
        let text = metrics.render();
        assert!(!text.contains("deep_review_agent_failure_ratio{"), "{text}");
        assert!(
            !text.contains("deep_review_agent_window_reviews{"),
            "{text}"
        );
    }
}
