//! The result store on Redis (redis-rs).
//!
//! Keys (every per-review key shares the `{review}` hash tag, so the Lua scripts touch one
//! Redis Cluster slot):
//! - `{prefix}:{R}:manifest`: the review manifest, JSON.
//! - `{prefix}:{R}:results`: hash agent → result JSON; `HSETNX`, so the first write wins.
//! - `{prefix}:{R}:state`: hash with `expected`, `fired`, `cancelled`, `published`.
//! - `{prefix}:{R}:claim`: a consolidator's lease (`SET NX PX`).
//! - `{prefix}:deadlines`: sorted set of unpublished reviews by deadline (ms).
//! - `{prefix}:completed` → `{prefix}:completing`: reviews whose last result arrived, moved
//!   with `BLMOVE` while being consolidated, so a consolidator crash loses nothing.
//!
//! Everything per review expires after the configured TTL.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deep_review_protocol::{
    parse_agent_result, parse_json, AgentResult, LedgerEntry, Report, ReviewManifest,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script};
use tokio::sync::Mutex;

use crate::{ResultStore, ReviewStatus, StoreOutcome, TransportError};
use deep_review_protocol::redact_url;

const BACKEND: &str = "Redis";

/// Stores a result unless its agent already has one; fires completion exactly once.
/// KEYS: results, state. ARGV: agent, result JSON, TTL seconds.
const PUT_RESULT: &str = r"
local stored = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if stored == 0 then return {0, 0} end
local expected = tonumber(redis.call('HGET', KEYS[2], 'expected') or '-1')
if expected < 0 then return {-1, 0} end
if redis.call('HLEN', KEYS[1]) >= expected and redis.call('HSETNX', KEYS[2], 'fired', '1') == 1 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  return {1, 1}
end
return {1, 0}
";

/// Claims the right to publish unless published or claimed. KEYS: state, claim.
/// ARGV: claimant, lease ms.
const CLAIM: &str = r"
if redis.call('HGET', KEYS[1], 'published') == '1' then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// Makes `review` the newest round of a pull request. KEYS: the pull request's hash.
/// ARGV: review id, TTL seconds. Returns {round, previous review id or ''}.
const NEXT_ROUND: &str = r"
local previous = redis.call('HGET', KEYS[1], 'review') or ''
local round = redis.call('HINCRBY', KEYS[1], 'round', 1)
redis.call('HSET', KEYS[1], 'review', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {round, previous}
";

/// Appends context notes not yet kept, then keeps the newest ones. KEYS: the list.
/// ARGV: limit, TTL seconds, notes…
const ADD_CONTEXT: &str = r"
local kept = redis.call('LRANGE', KEYS[1], 0, -1)
local present = {}
for _, note in ipairs(kept) do present[note] = true end
for index = 3, #ARGV do
  if not present[ARGV[index]] then
    redis.call('RPUSH', KEYS[1], ARGV[index])
    present[ARGV[index]] = true
  end
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 0
";

/// Connection and naming of the store.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// How long review records are kept.
    pub ttl: Duration,
}

fn unavailable(reason: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable {
        backend: BACKEND,
        reason: reason.to_string(),
    }
}

/// The result store on Redis.
/// Ledger entries read per `HMGET`.
const LEDGER_READ_SLICE: usize = 1_000;

pub struct RedisResultStore {
    settings: RedisSettings,
    client: redis::Client,
    /// Reconnects by itself; used for everything but blocking reads.
    connection: ConnectionManager,
    /// A separate connection for `BLMOVE`: a blocking read must not stall other commands,
    /// and it needs a response timeout longer than its block (redis-rs defaults to 500 ms).
    blocking: Mutex<Option<MultiplexedConnection>>,
    put_result: Script,
    claim: Script,
    next_round: Script,
    add_context: Script,
    /// Identifies this process's claims.
    claimant: String,
}

impl RedisResultStore {
    /// Connects (once).
    pub async fn connect(settings: RedisSettings) -> Result<Self, TransportError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(|error| {
            unavailable(format!(
                "invalid Redis URL {}: {error}",
                redact_url(&settings.url)
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_max_delay(Duration::from_secs(5));
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|error| {
                unavailable(format!(
                    "connecting to {}: {error}",
                    redact_url(&settings.url)
                ))
            })?;
        Ok(RedisResultStore {
            settings,
            client,
            connection,
            blocking: Mutex::new(None),
            put_result: Script::new(PUT_RESULT),
            claim: Script::new(CLAIM),
            next_round: Script::new(NEXT_ROUND),
            add_context: Script::new(ADD_CONTEXT),
            claimant: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
        })
    }

    fn key(&self, review_id: &str, part: &str) -> String {
        format!("{}:{{{review_id}}}:{part}", self.settings.prefix)
    }

    /// `{prefix}:cost:{day}:all` or `{prefix}:cost:{day}:repository:{name}`.
    fn cost_key(&self, repository: Option<&str>, day: chrono::NaiveDate) -> String {
        match repository {
            Some(repository) => self.global(&format!("cost:{day}:repository:{repository}")),
            None => self.global(&format!("cost:{day}:all")),
        }
    }

    /// The agent ledger's entries hash and time index, under one hash tag.
    fn ledger_keys(&self) -> (String, String) {
        (
            self.global("{ledger}:entries"),
            self.global("{ledger}:index"),
        )
    }

    /// The time index of one repository's ledger entries, beside the others.
    fn ledger_repository_index(&self, repository: &str) -> String {
        self.global(&format!("{{ledger}}:index:{repository}"))
    }

    fn global(&self, part: &str) -> String {
        format!("{}:{part}", self.settings.prefix)
    }

    fn ttl_seconds(&self) -> u64 {
        self.settings.ttl.as_secs().max(60)
    }

    /// Repository context outlives reviews: kept for ten TTLs of a review record.
    fn context_ttl_seconds(&self) -> u64 {
        self.ttl_seconds().saturating_mul(10)
    }

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}

#[async_trait]
impl ResultStore for RedisResultStore {
    async fn check(&self) -> Result<(), TransportError> {
        let mut connection = self.connection();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn create_review(&self, manifest: &ReviewManifest) -> Result<(), TransportError> {
        let review_id = &manifest.job.id;
        let json = serde_json::to_string(manifest).map_err(|error| TransportError::Corrupt {
            what: "review manifest",
            reason: error.to_string(),
        })?;
        let ttl = self.ttl_seconds();
        let deadline_ms = manifest.job.deadline.timestamp_millis();
        let mut connection = self.connection();
        // Per-review keys first, then the global deadline index: a crash in between leaves
        // a review that is simply never swept, and the scheduler reports the failure.
        redis::pipe()
            .cmd("SET")
            .arg(self.key(review_id, "manifest"))
            .arg(&json)
            .arg("NX")
            .arg("EX")
            .arg(ttl)
            .ignore()
            .cmd("HSETNX")
            .arg(self.key(review_id, "state"))
            .arg("expected")
            .arg(manifest.expected_agents.len())
            .ignore()
            .cmd("EXPIRE")
            .arg(self.key(review_id, "state"))
            .arg(ttl)
            .ignore()
            .cmd("ZADD")
            .arg(self.global("deadlines"))
            .arg("NX")
            .arg(deadline_ms)
            .arg(review_id)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn manifest(&self, review_id: &str) -> Result<Option<ReviewManifest>, TransportError> {
        let mut connection = self.connection();
        let text: Option<String> = redis::cmd("GET")
            .arg(self.key(review_id, "manifest"))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        text.map(|text| {
            parse_json::<ReviewManifest>("review manifest", &text).map_err(|error| {
                TransportError::Corrupt {
                    what: "review manifest",
                    reason: error.to_string(),
                }
            })
        })
        .transpose()
    }

    async fn put_result(
        &self,
        review_id: &str,
        result: &AgentResult,
    ) -> Result<StoreOutcome, TransportError> {
        let json = serde_json::to_string(result).map_err(|error| TransportError::Corrupt {
            what: "agent result",
            reason: error.to_string(),
        })?;
        let mut connection = self.connection();
        let (stored, completed): (i64, i64) = self
            .put_result
            .key(self.key(review_id, "results"))
            .key(self.key(review_id, "state"))
            .arg(&result.agent)
            .arg(&json)
            .arg(self.ttl_seconds())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if stored < 0 {
            // Written before the check; remove it so an unknown review leaves no trace.
            let _removed: Result<(), _> = redis::cmd("DEL")
                .arg(self.key(review_id, "results"))
                .query_async(&mut connection)
                .await;
            return Err(TransportError::UnknownReview(review_id.to_string()));
        }
        if completed == 1 {
            // Outside the script: the list is global and may live in another cluster slot.
            // Should this push be lost, the deadline sweep still finds the review.
            redis::cmd("LPUSH")
                .arg(self.global("completed"))
                .arg(review_id)
                .query_async::<()>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(StoreOutcome {
            stored: stored == 1,
            completed_review: completed == 1,
        })
    }

    async fn results(&self, review_id: &str) -> Result<Vec<AgentResult>, TransportError> {
        let mut connection = self.connection();
        let values: Vec<String> = redis::cmd("HVALS")
            .arg(self.key(review_id, "results"))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        values
            .iter()
            .map(|text| {
                parse_agent_result(text).map_err(|error| TransportError::Corrupt {
                    what: "agent result",
                    reason: error.to_string(),
                })
            })
            .collect()
    }

    async fn next_completed(&self, timeout: Duration) -> Result<Option<String>, TransportError> {
        let mut guard = self.blocking.lock().await;
        if guard.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_response_timeout(Some(timeout + Duration::from_secs(5)))
                .set_connection_timeout(Some(Duration::from_secs(3)));
            *guard = Some(
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(unavailable)?,
            );
        }
        let Some(connection) = guard.as_mut() else {
            return Err(unavailable("no blocking connection"));
        };
        let moved: Result<Option<String>, _> = redis::cmd("BLMOVE")
            .arg(self.global("completed"))
            .arg(self.global("completing"))
            .arg("RIGHT")
            .arg("LEFT")
            .arg(timeout.as_secs_f64().max(0.01))
            .query_async(connection)
            .await;
        match moved {
            Ok(review_id) => Ok(review_id),
            Err(error) => {
                // Rebuild the connection next time.
                *guard = None;
                Err(unavailable(error))
            }
        }
    }

    async fn overdue_reviews(&self, now: DateTime<Utc>) -> Result<Vec<String>, TransportError> {
        let mut connection = self.connection();
        let (mut due, completing): (Vec<String>, Vec<String>) = redis::pipe()
            .cmd("ZRANGEBYSCORE")
            .arg(self.global("deadlines"))
            .arg("-inf")
            .arg(now.timestamp_millis())
            .cmd("LRANGE")
            .arg(self.global("completing"))
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        // Complete reviews a crashed consolidator had taken are due again; the claim
        // keeps a live one from being processed twice.
        for review_id in completing.into_iter().rev() {
            if !due.contains(&review_id) {
                due.push(review_id);
            }
        }
        Ok(due)
    }

    async fn claim_consolidation(
        &self,
        review_id: &str,
        lease: Duration,
    ) -> Result<bool, TransportError> {
        let mut connection = self.connection();
        let claimed: i64 = self
            .claim
            .key(self.key(review_id, "state"))
            .key(self.key(review_id, "claim"))
            .arg(&self.claimant)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if claimed == 0 {
            // Already published: make sure it is not swept again.
            let published: Option<String> = redis::cmd("HGET")
                .arg(self.key(review_id, "state"))
                .arg("published")
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            if published.as_deref() == Some("1") {
                self.forget_due(review_id).await?;
            }
        }
        Ok(claimed == 1)
    }

    async fn finish_consolidation(&self, review_id: &str) -> Result<(), TransportError> {
        let mut connection = self.connection();
        redis::pipe()
            .cmd("HSET")
            .arg(self.key(review_id, "state"))
            .arg("published")
            .arg("1")
            .ignore()
            .cmd("DEL")
            .arg(self.key(review_id, "claim"))
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        self.forget_due(review_id).await
    }

    async fn cancel_review(&self, review_id: &str) -> Result<(), TransportError> {
        let mut connection = self.connection();
        redis::cmd("HSET")
            .arg(self.key(review_id, "state"))
            .arg("cancelled")
            .arg("1")
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn save_report(&self, report: &Report) -> Result<(), TransportError> {
        let json = serde_json::to_string(report).map_err(|error| TransportError::Corrupt {
            what: "report",
            reason: error.to_string(),
        })?;
        let mut connection = self.connection();
        redis::pipe()
            .cmd("SET")
            .arg(self.key(&report.review_id, "report"))
            .arg(&json)
            .arg("EX")
            .arg(self.ttl_seconds())
            .ignore()
            .cmd("HINCRBY")
            .arg(self.key(&report.review_id, "state"))
            .arg("publications")
            .arg(1)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn report(&self, review_id: &str) -> Result<Option<Report>, TransportError> {
        let mut connection = self.connection();
        let text: Option<String> = redis::cmd("GET")
            .arg(self.key(review_id, "report"))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        text.map(|text| {
            parse_json::<Report>("report", &text).map_err(|error| TransportError::Corrupt {
                what: "report",
                reason: error.to_string(),
            })
        })
        .transpose()
    }

    async fn status(&self, review_id: &str) -> Result<Option<ReviewStatus>, TransportError> {
        let mut connection = self.connection();
        let (state, results): (std::collections::HashMap<String, String>, usize) = redis::pipe()
            .cmd("HGETALL")
            .arg(self.key(review_id, "state"))
            .cmd("HLEN")
            .arg(self.key(review_id, "results"))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if state.is_empty() {
            return Ok(None);
        }
        let flag = |name: &str| state.get(name).map(String::as_str) == Some("1");
        let number = |name: &str| {
            state
                .get(name)
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Some(ReviewStatus {
            results,
            expected: usize::try_from(number("expected")).unwrap_or(usize::MAX),
            cancelled: flag("cancelled"),
            published: flag("published"),
            publications: number("publications"),
            cost_usd: state
                .get("cost")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0.0),
        }))
    }

    async fn next_round(
        &self,
        pull_request_key: &str,
        review_id: &str,
    ) -> Result<(u32, Option<String>), TransportError> {
        let mut connection = self.connection();
        let (round, previous): (u32, String) = self
            .next_round
            .key(self.global(&format!("pr:{pull_request_key}")))
            .arg(review_id)
            .arg(self.ttl_seconds())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok((round, (!previous.is_empty()).then_some(previous)))
    }

    async fn repository_context(&self, repository: &str) -> Result<Vec<String>, TransportError> {
        let mut connection = self.connection();
        redis::cmd("LRANGE")
            .arg(self.global(&format!("context:{repository}")))
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn add_repository_context(
        &self,
        repository: &str,
        notes: &[String],
    ) -> Result<(), TransportError> {
        if notes.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection();
        let mut arguments = self
            .add_context
            .key(self.global(&format!("context:{repository}")));
        arguments
            .arg(crate::REPOSITORY_CONTEXT_LIMIT)
            .arg(self.context_ttl_seconds());
        for note in notes {
            arguments.arg(note);
        }
        arguments
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn claim_delivery(
        &self,
        delivery_id: &str,
        ttl: Duration,
    ) -> Result<bool, TransportError> {
        let mut connection = self.connection();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.global(&format!("delivery:{delivery_id}")))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }

    async fn release_delivery(&self, delivery_id: &str) -> Result<(), TransportError> {
        let mut connection = self.connection();
        redis::cmd("DEL")
            .arg(self.global(&format!("delivery:{delivery_id}")))
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn record_ledger(&self, entries: &[LedgerEntry]) -> Result<(), TransportError> {
        if entries.is_empty() {
            return Ok(());
        }
        // Entries by key (HSETNX: a second publication of a report changes nothing) and an
        // index by time; one hash tag, so Redis Cluster keeps both on one node.
        let (entries_key, index_key) = self.ledger_keys();
        let mut pipeline = redis::pipe();
        for entry in entries {
            let value = serde_json::to_string(entry).map_err(|error| TransportError::Corrupt {
                what: "ledger entry",
                reason: error.to_string(),
            })?;
            pipeline
                .cmd("HSETNX")
                .arg(&entries_key)
                .arg(entry.key())
                .arg(value)
                .ignore()
                .cmd("ZADD")
                .arg(&index_key)
                .arg("NX")
                .arg(entry.recorded_at.timestamp_millis())
                .arg(entry.key())
                .ignore();
            // Per repository too: the scheduler's line-up policy reads one repository.
            if let Some(repository) = &entry.repository {
                pipeline
                    .cmd("ZADD")
                    .arg(self.ledger_repository_index(repository))
                    .arg("NX")
                    .arg(entry.recorded_at.timestamp_millis())
                    .arg(entry.key())
                    .ignore();
            }
        }
        let mut connection = self.connection();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        // Entries past the retention go, a few at a time as reports come in.
        let cutoff =
            (Utc::now() - chrono::Duration::days(crate::LEDGER_RETENTION_DAYS)).timestamp_millis();
        let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index_key)
            .arg("-inf")
            .arg(cutoff)
            .arg("LIMIT")
            .arg(0)
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if !expired.is_empty() {
            let mut cleanup = redis::pipe();
            cleanup
                .cmd("HDEL")
                .arg(&entries_key)
                .arg(&expired)
                .ignore()
                .cmd("ZREM")
                .arg(&index_key)
                .arg(&expired)
                .ignore();
            for repository in entries.iter().filter_map(|entry| entry.repository.as_ref()) {
                cleanup
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(self.ledger_repository_index(repository))
                    .arg("-inf")
                    .arg(cutoff)
                    .ignore();
            }
            cleanup
                .query_async::<()>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn ledger(
        &self,
        since: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<Vec<LedgerEntry>, TransportError> {
        let (entries_key, index_key) = self.ledger_keys();
        let index_key = match repository {
            Some(repository) => self.ledger_repository_index(repository),
            None => index_key,
        };
        let mut connection = self.connection();
        let keys: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index_key)
            .arg(since.timestamp_millis())
            .arg("+inf")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // In slices: one HMGET of a month of entries would hold Redis, and every worker
        // and scheduler waiting on it, for as long as its reply takes to build.
        let mut entries = Vec::with_capacity(keys.len());
        for slice in keys.chunks(LEDGER_READ_SLICE) {
            let values: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(&entries_key)
                .arg(slice)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            for value in values.into_iter().flatten() {
                entries.push(serde_json::from_str(&value).map_err(|error| {
                    TransportError::Corrupt {
                        what: "ledger entry",
                        reason: error.to_string(),
                    }
                })?);
            }
        }
        Ok(entries)
    }

    async fn add_cost(
        &self,
        review_id: &str,
        repository: Option<&str>,
        day: chrono::NaiveDate,
        usd: f64,
    ) -> Result<(), TransportError> {
        // Daily totals are kept 40 days, long enough for a monthly view.
        const DAILY_TTL_SECONDS: u64 = 40 * 24 * 3600;
        let mut connection = self.connection();
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("HINCRBYFLOAT")
            .arg(self.key(review_id, "state"))
            .arg("cost")
            .arg(usd)
            .ignore()
            .cmd("INCRBYFLOAT")
            .arg(self.cost_key(None, day))
            .arg(usd)
            .ignore()
            .cmd("EXPIRE")
            .arg(self.cost_key(None, day))
            .arg(DAILY_TTL_SECONDS)
            .ignore();
        if let Some(repository) = repository {
            pipeline
                .cmd("INCRBYFLOAT")
                .arg(self.cost_key(Some(repository), day))
                .arg(usd)
                .ignore()
                .cmd("EXPIRE")
                .arg(self.cost_key(Some(repository), day))
                .arg(DAILY_TTL_SECONDS)
                .ignore();
        }
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn cost(
        &self,
        repository: Option<&str>,
        day: chrono::NaiveDate,
    ) -> Result<f64, TransportError> {
        let mut connection = self.connection();
        let value: Option<String> = redis::cmd("GET")
            .arg(self.cost_key(repository, day))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        value.map_or(Ok(0.0), |text| {
            text.parse().map_err(|error| TransportError::Corrupt {
                what: "daily cost",
                reason: format!("{text}: {error}"),
            })
        })
    }

    async fn is_cancelled(&self, review_id: &str) -> Result<bool, TransportError> {
        let mut connection = self.connection();
        let cancelled: Option<String> = redis::cmd("HGET")
            .arg(self.key(review_id, "state"))
            .arg("cancelled")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(cancelled.as_deref() == Some("1"))
    }
}

/// Deletes every key under `prefix` (a deployment or test prefix no longer used), with
/// `SCAN` so a large keyspace is not blocked.
pub async fn delete_prefix(url: &str, prefix: &str) -> Result<(), TransportError> {
    let client = redis::Client::open(url).map_err(unavailable)?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(unavailable)?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

impl RedisResultStore {
    /// Removes a review from the deadline index and the in-progress list.
    async fn forget_due(&self, review_id: &str) -> Result<(), TransportError> {
        let mut connection = self.connection();
        redis::pipe()
            .cmd("ZREM")
            .arg(self.global("deadlines"))
            .arg(review_id)
            .ignore()
            .cmd("LREM")
            .arg(self.global("completing"))
            .arg(0)
            .arg(review_id)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }
}
