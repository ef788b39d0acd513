use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deep_review_protocol::{AgentResult, LedgerEntry, Report, ReviewManifest};
use tokio::sync::Notify;

use crate::{ResultStore, ReviewStatus, StoreOutcome, TransportError};

/// An in-process result store with the same guarantees as the Redis one. For the embedded
/// mode and unit tests.
#[derive(Clone, Default)]
pub struct MemoryResultStore {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes `next_completed` waiters.
    completed_signal: Notify,
    /// Where repository context is persisted between runs, when set.
    context_file: Option<PathBuf>,
    /// Where the agent ledger is kept between runs (one JSON entry a line), when set.
    ledger_file: Mutex<Option<PathBuf>>,
}

#[derive(Default)]
struct State {
    reviews: HashMap<String, Review>,
    /// Reviews whose last result came in, oldest first, not yet taken.
    completed: VecDeque<String>,
    /// Newest review and round per pull request.
    rounds: HashMap<String, (String, u32)>,
    /// Context notes per repository.
    context: HashMap<String, Vec<String>>,
    /// Cost per (UTC day, repository or `None` for everything).
    costs: HashMap<(chrono::NaiveDate, Option<String>), f64>,
    /// Cost per review.
    review_costs: HashMap<String, f64>,
    /// The agent ledger, by entry key, when no ledger file is set.
    ledger: BTreeMap<String, LedgerEntry>,
    /// Webhook deliveries seen, with when their record expires.
    deliveries: HashMap<String, std::time::Instant>,
    /// Result writes still to fail as unavailable, to stand in for a store outage in
    /// tests of the code that must survive one.
    failing_result_writes: u32,
}

struct Review {
    manifest: ReviewManifest,
    /// Results by agent name; the first write per agent wins.
    results: BTreeMap<String, AgentResult>,
    /// Set once "all results in" fired, so it fires once.
    completion_fired: bool,
    /// Taken by `next_completed`; due again until published, as after a consolidator crash.
    taken: bool,
    cancelled: bool,
    published: bool,
    /// Until when a consolidator holds the right to publish.
    lease_until: Option<Instant>,
    report: Option<Report>,
    publications: u64,
}

impl MemoryResultStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `count` result writes fail as an outage would.
    pub fn fail_result_writes(&self, count: u32) {
        self.lock().failing_result_writes = count;
    }

    /// An empty store whose repository context lives in `path` (JSON), so the embedded
    /// mode hands one review's context notes to the next review of the repository.
    pub fn with_context_file(path: impl Into<PathBuf>) -> Result<Self, TransportError> {
        let path = path.into();
        let context = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|error| TransportError::Corrupt {
                what: "repository context file",
                reason: format!("{}: {error}", path.display()),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => {
                return Err(TransportError::Unavailable {
                    backend: "repository context file",
                    reason: format!("{}: {error}", path.display()),
                })
            }
        };
        Ok(MemoryResultStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    context,
                    ..State::default()
                }),
                completed_signal: Notify::new(),
                context_file: Some(path),
                ledger_file: Mutex::new(None),
            }),
        })
    }

    /// Keeps the agent ledger in `path` (JSON lines, appended), so that embedded runs
    /// build it up over time; `ledger` then reads that file.
    pub fn keep_ledger_in(&self, path: impl Into<PathBuf>) {
        let mut file = self
            .shared
            .ledger_file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *file = Some(path.into());
    }

    fn ledger_file(&self) -> Option<PathBuf> {
        self.shared
            .ledger_file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few field writes under the lock; a panic elsewhere cannot leave
        // a half-written record, so a poisoned lock is still consistent.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ResultStore for MemoryResultStore {
    async fn create_review(&self, manifest: &ReviewManifest) -> Result<(), TransportError> {
        self.lock()
            .reviews
            .entry(manifest.job.id.clone())
            .or_insert_with(|| Review {
                manifest: manifest.clone(),
                results: BTreeMap::new(),
                completion_fired: false,
                taken: false,
                cancelled: false,
                published: false,
                lease_until: None,
                report: None,
                publications: 0,
            });
        Ok(())
    }

    async fn manifest(&self, review_id: &str) -> Result<Option<ReviewManifest>, TransportError> {
        Ok(self
            .lock()
            .reviews
            .get(review_id)
            .map(|review| review.manifest.clone()))
    }

    async fn put_result(
        &self,
        review_id: &str,
        result: &AgentResult,
    ) -> Result<StoreOutcome, TransportError> {
        let mut state = self.lock();
        if state.failing_result_writes > 0 {
            state.failing_result_writes -= 1;
            return Err(TransportError::Unavailable {
                backend: "in-memory store",
                reason: "a simulated outage".to_string(),
            });
        }
        let review = state
            .reviews
            .get_mut(review_id)
            .ok_or_else(|| TransportError::UnknownReview(review_id.to_string()))?;
        if review.results.contains_key(&result.agent) {
            return Ok(StoreOutcome {
                stored: false,
                completed_review: false,
            });
        }
        review.results.insert(result.agent.clone(), result.clone());
        let all_in = review
            .manifest
            .expected_agents
            .iter()
            .all(|agent| review.results.contains_key(agent));
        let completed_review = all_in && !review.completion_fired;
        if completed_review {
            review.completion_fired = true;
            state.completed.push_back(review_id.to_string());
            drop(state);
            self.shared.completed_signal.notify_waiters();
        }
        Ok(StoreOutcome {
            stored: true,
            completed_review,
        })
    }

    async fn results(&self, review_id: &str) -> Result<Vec<AgentResult>, TransportError> {
        let state = self.lock();
        let review = state
            .reviews
            .get(review_id)
            .ok_or_else(|| TransportError::UnknownReview(review_id.to_string()))?;
        Ok(review.results.values().cloned().collect())
    }

    async fn next_completed(&self, timeout: Duration) -> Result<Option<String>, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.completed_signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(review_id) = state.completed.pop_front() {
                    if let Some(review) = state.reviews.get_mut(&review_id) {
                        review.taken = true;
                    }
                    return Ok(Some(review_id));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn overdue_reviews(&self, now: DateTime<Utc>) -> Result<Vec<String>, TransportError> {
        let state = self.lock();
        let mut overdue: Vec<(DateTime<Utc>, String)> = state
            .reviews
            .iter()
            .filter(|(_, review)| {
                !review.published && (review.taken || review.manifest.job.deadline <= now)
            })
            .map(|(id, review)| (review.manifest.job.deadline, id.clone()))
            .collect();
        overdue.sort();
        Ok(overdue.into_iter().map(|(_, id)| id).collect())
    }

    async fn claim_consolidation(
        &self,
        review_id: &str,
        lease: Duration,
    ) -> Result<bool, TransportError> {
        let mut state = self.lock();
        let review = state
            .reviews
            .get_mut(review_id)
            .ok_or_else(|| TransportError::UnknownReview(review_id.to_string()))?;
        let now = Instant::now();
        if review.published || review.lease_until.is_some_and(|until| until > now) {
            return Ok(false);
        }
        review.lease_until = Some(now + lease);
        Ok(true)
    }

    async fn finish_consolidation(&self, review_id: &str) -> Result<(), TransportError> {
        let mut state = self.lock();
        if let Some(review) = state.reviews.get_mut(review_id) {
            review.published = true;
            review.lease_until = None;
        }
        Ok(())
    }

    async fn cancel_review(&self, review_id: &str) -> Result<(), TransportError> {
        if let Some(review) = self.lock().reviews.get_mut(review_id) {
            review.cancelled = true;
        }
        Ok(())
    }

    async fn is_cancelled(&self, review_id: &str) -> Result<bool, TransportError> {
        Ok(self
            .lock()
            .reviews
            .get(review_id)
            .is_some_and(|review| review.cancelled))
    }

    async fn save_report(&self, report: &Report) -> Result<(), TransportError> {
        let mut state = self.lock();
        let review = state
            .reviews
            .get_mut(&report.review_id)
            .ok_or_else(|| TransportError::UnknownReview(report.review_id.clone()))?;
        review.report = Some(report.clone());
        review.publications += 1;
        Ok(())
    }

    async fn report(&self, review_id: &str) -> Result<Option<Report>, TransportError> {
        Ok(self
            .lock()
            .reviews
            .get(review_id)
            .and_then(|review| review.report.clone()))
    }

    async fn status(&self, review_id: &str) -> Result<Option<ReviewStatus>, TransportError> {
        let state = self.lock();
        let cost_usd = state.review_costs.get(review_id).copied().unwrap_or(0.0);
        Ok(state.reviews.get(review_id).map(|review| ReviewStatus {
            results: review.results.len(),
            expected: review.manifest.expected_agents.len(),
            cancelled: review.cancelled,
            published: review.published,
            publications: review.publications,
            cost_usd,
        }))
    }

    async fn next_round(
        &self,
        pull_request_key: &str,
        review_id: &str,
    ) -> Result<(u32, Option<String>), TransportError> {
        let mut state = self.lock();
        let previous = state.rounds.get(pull_request_key).cloned();
        let round = previous.as_ref().map_or(1, |(_, round)| round + 1);
        state
            .rounds
            .insert(pull_request_key.to_string(), (review_id.to_string(), round));
        Ok((round, previous.map(|(id, _)| id)))
    }

    async fn repository_context(&self, repository: &str) -> Result<Vec<String>, TransportError> {
        Ok(self
            .lock()
            .context
            .get(repository)
            .cloned()
            .unwrap_or_default())
    }

    async fn claim_delivery(
        &self,
        delivery_id: &str,
        ttl: Duration,
    ) -> Result<bool, TransportError> {
        let now = std::time::Instant::now();
        let mut state = self.lock();
        state.deliveries.retain(|_, expires| *expires > now);
        if state.deliveries.contains_key(delivery_id) {
            return Ok(false);
        }
        state.deliveries.insert(delivery_id.to_string(), now + ttl);
        Ok(true)
    }

    async fn release_delivery(&self, delivery_id: &str) -> Result<(), TransportError> {
        self.lock().deliveries.remove(delivery_id);
        Ok(())
    }

    async fn record_ledger(&self, entries: &[LedgerEntry]) -> Result<(), TransportError> {
        let Some(path) = self.ledger_file() else {
            let mut state = self.lock();
            for entry in entries {
                state
                    .ledger
                    .entry(entry.key())
                    .or_insert_with(|| entry.clone());
            }
            return Ok(());
        };
        let known: std::collections::HashSet<String> = read_ledger_file(&path)?
            .iter()
            .map(LedgerEntry::key)
            .collect();
        let mut lines = String::new();
        for entry in entries.iter().filter(|entry| !known.contains(&entry.key())) {
            let line = serde_json::to_string(entry).map_err(|error| TransportError::Corrupt {
                what: "ledger entry",
                reason: error.to_string(),
            })?;
            lines.push_str(&line);
            lines.push('\n');
        }
        let failed = |error: std::io::Error| TransportError::Unavailable {
            backend: "ledger file",
            reason: format!("{}: {error}", path.display()),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(lines.as_bytes()))
            .map_err(failed)
    }

    async fn ledger(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<Vec<LedgerEntry>, TransportError> {
        let mut entries = match self.ledger_file() {
            Some(path) => read_ledger_file(&path)?,
            None => self.lock().ledger.values().cloned().collect(),
        };
        let cutoff = Utc::now() - chrono::Duration::days(crate::LEDGER_RETENTION_DAYS);
        entries.retain(|entry| {
            entry.recorded_at >= since
                && entry.recorded_at >= cutoff
                && repository.is_none_or(|name| entry.repository.as_deref() == Some(name))
        });
        entries.sort_by_key(|entry| entry.recorded_at);
        Ok(entries)
    }

    async fn add_cost(
        &self,
        review_id: &str,
        repository: Option<&str>,
        day: chrono::NaiveDate,
        usd: f64,
    ) -> Result<(), TransportError> {
        let mut state = self.lock();
        *state
            .review_costs
            .entry(review_id.to_string())
            .or_insert(0.0) += usd;
        *state.costs.entry((day, None)).or_insert(0.0) += usd;
        if let Some(repository) = repository {
            *state
                .costs
                .entry((day, Some(repository.to_string())))
                .or_insert(0.0) += usd;
        }
        Ok(())
    }

    async fn cost(
        &self,
        repository: Option<&str>,
        day: chrono::NaiveDate,
    ) -> Result<f64, TransportError> {
        Ok(self
            .lock()
            .costs
            .get(&(day, repository.map(str::to_string)))
            .copied()
            .unwrap_or(0.0))
    }

    async fn add_repository_context(
        &self,
        repository: &str,
        notes: &[String],
    ) -> Result<(), TransportError> {
        let snapshot = {
            let mut state = self.lock();
            let kept = state.context.entry(repository.to_string()).or_default();
            for note in notes {
                if !kept.contains(note) {
                    kept.push(note.clone());
                }
            }
            let excess = kept.len().saturating_sub(crate::REPOSITORY_CONTEXT_LIMIT);
            kept.drain(..excess);
            state.context.clone()
        };
        let Some(path) = &self.shared.context_file else {
            return Ok(());
        };
        let failed = |error: &dyn std::fmt::Display| TransportError::Unavailable {
            backend: "repository context file",
            reason: format!("{}: {error}", path.display()),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| failed(&error))?;
        }
        let text = serde_json::to_string_pretty(&snapshot).map_err(|error| failed(&error))?;
        // Write then rename, so a crash never leaves half a file behind.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text).map_err(|error| failed(&error))?;
        std::fs::rename(&partial, path).map_err(|error| failed(&error))
    }
}

/// The entries of a ledger file; a missing file is an empty ledger, a line that does not
/// parse is an error naming it.
fn read_ledger_file(path: &std::path::Path) -> Result<Vec<LedgerEntry>, TransportError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(TransportError::Unavailable {
                backend: "ledger file",
                reason: format!("{}: {error}", path.display()),
            })
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|error| TransportError::Corrupt {
                what: "ledger file",
                reason: format!("{} line {}: {error}", path.display(), index + 1),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_protocol::{ReviewJob, Source};

    fn manifest(agents: &[&str], deadline: DateTime<Utc>) -> ReviewManifest {
        ReviewManifest {
            job: ReviewJob::new(
                "r1",
                Utc::now(),
                Source::InlineDiff {
                    diff: String::new(),
                },
                vec![],
                deadline,
            ),
            expected_agents: agents.iter().map(|agent| agent.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn completion_fires_exactly_once_despite_duplicates() {
        let store = MemoryResultStore::new();
        store
            .create_review(&manifest(
                &["a", "b"],
                Utc::now() + chrono::Duration::hours(1),
            ))
            .await
            .unwrap();
        let first = store
            .put_result("r1", &AgentResult::new("a"))
            .await
            .unwrap();
        assert!(first.stored && !first.completed_review);
        let duplicate = store
            .put_result("r1", &AgentResult::new("a"))
            .await
            .unwrap();
        assert!(!duplicate.stored && !duplicate.completed_review);
        let last = store
            .put_result("r1", &AgentResult::new("b"))
            .await
            .unwrap();
        assert!(last.stored && last.completed_review);
        let again = store
            .put_result("r1", &AgentResult::new("b"))
            .await
            .unwrap();
        assert!(!again.completed_review);
        assert_eq!(
            store
                .next_completed(Duration::from_millis(10))
                .await
                .unwrap(),
            Some("r1".to_string())
        );
        assert_eq!(
            store
                .next_completed(Duration::from_millis(10))
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.results("r1").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn overdue_until_published_and_claim_is_exclusive() {
        let store = MemoryResultStore::new();
        store
            .create_review(&manifest(&["a"], Utc::now() - chrono::Duration::seconds(1)))
            .await
            .unwrap();
        assert_eq!(store.overdue_reviews(Utc::now()).await.unwrap(), vec!["r1"]);
        assert!(store
            .claim_consolidation("r1", Duration::from_secs(60))
            .await
            .unwrap());
        assert!(!store
            .claim_consolidation("r1", Duration::from_secs(60))
            .await
            .unwrap());
        store.finish_consolidation("r1").await.unwrap();
        assert!(store.overdue_reviews(Utc::now()).await.unwrap().is_empty());
        assert!(!store
            .claim_consolidation("r1", Duration::from_secs(60))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_taken_but_unpublished_review_is_due_again() {
        let store = MemoryResultStore::new();
        store
            .create_review(&manifest(&["a"], Utc::now() + chrono::Duration::hours(1)))
            .await
            .unwrap();
        store
            .put_result("r1", &AgentResult::new("a"))
            .await
            .unwrap();
        assert!(store.overdue_reviews(Utc::now()).await.unwrap().is_empty());
        store
            .next_completed(Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(store.overdue_reviews(Utc::now()).await.unwrap(), vec!["r1"]);
        store.finish_consolidation("r1").await.unwrap();
        assert!(store.overdue_reviews(Utc::now()).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn unknown_review_is_an_error() {
        let store = MemoryResultStore::new();
        let error = store
            .put_result("nope", &AgentResult::new("a"))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("nope"));
    }
}
