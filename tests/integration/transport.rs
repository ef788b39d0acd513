//! The queue and store contracts, run against the in-memory doubles and the real RabbitMQ
//! and Redis, so both behave alike.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use deep_review_protocol::{
    AgentResult, AgentSpec, AgentTask, ReviewJob, ReviewManifest, RunnerKind, Source,
};
use deep_review_transport::{
    MemoryResultStore, MemoryTaskQueue, RabbitSettings, RabbitTaskQueue, RedisResultStore,
    RedisSettings, ResultStore, TaskQueue,
};

use crate::util::{unique_prefix, Services};

pub fn job(review_id: &str, agents: &[&str], deadline_in: chrono::Duration) -> ReviewJob {
    ReviewJob::new(
        review_id.to_string(),
        Utc::now(),
        Source::InlineDiff {
            diff: "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n".into(),
        },
        agents
            .iter()
            .map(|name| AgentSpec {
                timeout: Duration::from_secs(10),
                ..AgentSpec::new(name.to_string(), RunnerKind::Builtin)
            })
            .collect(),
        Utc::now() + deadline_in,
    )
}

async fn store_contract(store: Arc<dyn ResultStore>) {
    let future = job("r-complete", &["a", "b"], chrono::Duration::hours(1));
    store
        .create_review(&ReviewManifest::for_job(&future))
        .await
        .unwrap();
    assert_eq!(
        store
            .manifest("r-complete")
            .await
            .unwrap()
            .unwrap()
            .expected_agents,
        vec!["a", "b"]
    );
    assert!(store.manifest("r-none").await.unwrap().is_none());

    // First write per agent wins; completion fires once, on the last expected agent.
    let first = store
        .put_result(
            "r-complete",
            &AgentResult::unsuccessful("a", deep_review_protocol::AgentStatus::Failed, "first"),
        )
        .await
        .unwrap();
    assert!(first.stored && !first.completed_review);
    let duplicate = store
        .put_result("r-complete", &AgentResult::new("a"))
        .await
        .unwrap();
    assert!(!duplicate.stored && !duplicate.completed_review);
    let last = store
        .put_result("r-complete", &AgentResult::new("b"))
        .await
        .unwrap();
    assert!(last.stored && last.completed_review);
    assert!(
        !store
            .put_result("r-complete", &AgentResult::new("b"))
            .await
            .unwrap()
            .completed_review
    );
    let results = store.results("r-complete").await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(
        results
            .iter()
            .find(|result| result.agent == "a")
            .unwrap()
            .error
            .as_deref(),
        Some("first")
    );

    // The completion signal is delivered once; a blocking wait longer than redis-rs's
    // default 500 ms response timeout works.
    assert_eq!(
        store
            .next_completed(Duration::from_secs(2))
            .await
            .unwrap()
            .as_deref(),
        Some("r-complete")
    );
    let started = std::time::Instant::now();
    assert_eq!(
        store
            .next_completed(Duration::from_millis(1200))
            .await
            .unwrap(),
        None
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the wait blocked"
    );

    // Taken but unpublished: due again (as after a consolidator crash) until published.
    assert!(store
        .overdue_reviews(Utc::now())
        .await
        .unwrap()
        .contains(&"r-complete".to_string()));
    assert!(store
        .claim_consolidation("r-complete", Duration::from_secs(30))
        .await
        .unwrap());
    assert!(
        !store
            .claim_consolidation("r-complete", Duration::from_secs(30))
            .await
            .unwrap(),
        "claims are exclusive"
    );
    store.finish_consolidation("r-complete").await.unwrap();
    assert!(
        !store
            .claim_consolidation("r-complete", Duration::from_secs(30))
            .await
            .unwrap(),
        "published once"
    );
    assert!(!store
        .overdue_reviews(Utc::now())
        .await
        .unwrap()
        .contains(&"r-complete".to_string()));

    // An expired claim can be taken over.
    let lapsed = job("r-lapsed", &["a"], chrono::Duration::seconds(-1));
    store
        .create_review(&ReviewManifest::for_job(&lapsed))
        .await
        .unwrap();
    assert!(store
        .overdue_reviews(Utc::now())
        .await
        .unwrap()
        .contains(&"r-lapsed".to_string()));
    assert!(store
        .claim_consolidation("r-lapsed", Duration::from_millis(200))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store
        .claim_consolidation("r-lapsed", Duration::from_secs(30))
        .await
        .unwrap());

    // Cancellation, and writes for unknown reviews.
    store.cancel_review("r-lapsed").await.unwrap();
    assert!(store.is_cancelled("r-lapsed").await.unwrap());
    assert!(!store.is_cancelled("r-complete").await.unwrap());
    let unknown = store
        .put_result("r-unknown", &AgentResult::new("a"))
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("r-unknown"), "{unknown}");

    // Reports, status and rounds.
    let manifest = store.manifest("r-complete").await.unwrap().unwrap();
    let report = deep_review_consolidator::consolidate(
        &manifest,
        store.results("r-complete").await.unwrap(),
        &Default::default(),
        Utc::now(),
    );
    assert!(store.report("r-complete").await.unwrap().is_none());
    store.save_report(&report).await.unwrap();
    assert_eq!(
        store.report("r-complete").await.unwrap().unwrap().review_id,
        "r-complete"
    );
    let status = store.status("r-complete").await.unwrap().unwrap();
    assert_eq!(
        (
            status.results,
            status.expected,
            status.published,
            status.cancelled,
            status.publications
        ),
        (2, 2, true, false, 1)
    );
    assert!(store.status("r-none").await.unwrap().is_none());
    assert_eq!(
        store.next_round("acme/shop#7", "first").await.unwrap(),
        (1, None)
    );
    assert_eq!(
        store.next_round("acme/shop#7", "second").await.unwrap(),
        (2, Some("first".to_string()))
    );
    assert_eq!(
        store.next_round("acme/shop#8", "other").await.unwrap(),
        (1, None)
    );

    // Repository context: kept in order, without duplicates, newest kept past the limit.
    assert!(store
        .repository_context("acme/shop")
        .await
        .unwrap()
        .is_empty());
    store
        .add_repository_context("acme/shop", &["first".to_string(), "second".to_string()])
        .await
        .unwrap();
    store
        .add_repository_context("acme/shop", &["second".to_string(), "third".to_string()])
        .await
        .unwrap();
    assert_eq!(
        store.repository_context("acme/shop").await.unwrap(),
        vec!["first", "second", "third"]
    );
    let many: Vec<String> = (0..deep_review_transport::REPOSITORY_CONTEXT_LIMIT)
        .map(|index| format!("note {index}"))
        .collect();
    store
        .add_repository_context("acme/shop", &many)
        .await
        .unwrap();
    let kept = store.repository_context("acme/shop").await.unwrap();
    assert_eq!(kept.len(), deep_review_transport::REPOSITORY_CONTEXT_LIMIT);
    assert_eq!(
        kept.first().map(String::as_str),
        Some("note 0"),
        "the oldest gave way"
    );
    assert!(store
        .repository_context("acme/other")
        .await
        .unwrap()
        .is_empty());

    // Cost per review, per repository and in total, per UTC day.
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let tomorrow = today.succ_opt().unwrap();
    store
        .add_cost("r-complete", Some("acme/shop"), today, 1.25)
        .await
        .unwrap();
    store
        .add_cost("r-lapsed", Some("acme/shop"), today, 0.5)
        .await
        .unwrap();
    store.add_cost("r-other", None, today, 2.0).await.unwrap();
    assert!((store.cost(Some("acme/shop"), today).await.unwrap() - 1.75).abs() < 1e-9);
    assert!((store.cost(None, today).await.unwrap() - 3.75).abs() < 1e-9);
    assert_eq!(store.cost(Some("acme/shop"), tomorrow).await.unwrap(), 0.0);
    assert!((store.status("r-complete").await.unwrap().unwrap().cost_usd - 1.25).abs() < 1e-9);

    ledger_contract(store.as_ref()).await;
}

fn ledger_entry(
    review_id: &str,
    agent: &str,
    recorded_at: chrono::DateTime<Utc>,
) -> deep_review_protocol::LedgerEntry {
    deep_review_protocol::LedgerEntry {
        review_id: review_id.to_string(),
        recorded_at,
        repository: Some("acme/shop".to_string()),
        agent: agent.to_string(),
        runner: "builtin".to_string(),
        model: None,
        status: Some(deep_review_protocol::AgentStatus::Completed),
        findings: Default::default(),
        unique_insights: 1,
        confirmed: 0,
        false_positives: 0,
        coverage_misses: 0,
        input_tokens: 10,
        output_tokens: 1,
        cost_usd: Some(0.25),
        duration_ms: 100,
    }
}

/// Each entry is kept once however often a report is published, and read back by time.
async fn ledger_contract(store: &dyn ResultStore) {
    let now = Utc::now();
    let old = ledger_entry("r-old", "a", now - chrono::Duration::days(40));
    let first = ledger_entry("r-1", "a", now - chrono::Duration::minutes(5));
    let second = ledger_entry("r-1", "b", now - chrono::Duration::minutes(5));
    store
        .record_ledger(&[old.clone(), first.clone(), second.clone()])
        .await
        .unwrap();
    // The same report published again (another consolidator, a retry): nothing doubles.
    let mut again = first.clone();
    again.unique_insights = 99;
    store.record_ledger(&[again]).await.unwrap();
    let recent = store
        .ledger(now - chrono::Duration::days(30), None)
        .await
        .unwrap();
    assert_eq!(recent.len(), 2, "{recent:?}");
    assert_eq!(recent.iter().filter(|entry| entry.agent == "a").count(), 1);
    assert_eq!(
        recent
            .iter()
            .find(|entry| entry.agent == "a")
            .unwrap()
            .unique_insights,
        1
    );
    let everything = store
        .ledger(now - chrono::Duration::days(365), None)
        .await
        .unwrap();
    assert_eq!(everything.len(), 3);
    assert_eq!(everything[0].review_id, "r-old", "oldest first");
    let mut elsewhere = ledger_entry("r-2", "a", now);
    elsewhere.repository = Some("acme/other".to_string());
    store.record_ledger(&[elsewhere]).await.unwrap();
    let shop = store
        .ledger(now - chrono::Duration::days(365), Some("acme/shop"))
        .await
        .unwrap();
    assert_eq!(shop.len(), 3, "one repository's entries: {shop:?}");
    assert_eq!(
        store
            .ledger(now - chrono::Duration::days(365), Some("acme/other"))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    store_contract(Arc::new(MemoryResultStore::new())).await;
    // The embedded mode's ledger lives in a file, across runs.
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("ledger/ledger.jsonl");
    let store = MemoryResultStore::new();
    store.keep_ledger_in(&path);
    ledger_contract(&store).await;
    let next_run = MemoryResultStore::new();
    next_run.keep_ledger_in(&path);
    let kept = next_run
        .ledger(Utc::now() - chrono::Duration::days(365), None)
        .await
        .unwrap();
    assert_eq!(kept.len(), 4);
    std::fs::write(&path, "{ not json\n").unwrap();
    let error = next_run
        .ledger(Utc::now(), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("ledger.jsonl line 1"), "{error}");
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let services = Services::ensure();
    let prefix = unique_prefix("store");
    let store = RedisResultStore::connect(RedisSettings {
        url: services.redis_url(),
        prefix: prefix.clone(),
        ttl: Duration::from_secs(600),
    })
    .await
    .unwrap();
    store_contract(Arc::new(store)).await;
    services.cleanup_redis(&prefix).await;
}

fn task(review_id: &str, agent: &str) -> AgentTask {
    let job = job(review_id, &[agent], chrono::Duration::hours(1));
    AgentTask::new(&job, &job.agents[0])
}

async fn queue_contract(queue: Arc<dyn TaskQueue>) {
    // A delivery dropped with its consumer comes back, marked redelivered.
    queue.publish(&task("q1", "a")).await.unwrap();
    let mut first_consumer = queue.consume(1).await.unwrap();
    let delivery = first_consumer.next().await.unwrap().unwrap();
    assert_eq!(delivery.task.task_id, "q1:a");
    assert_eq!(delivery.previous_deliveries, 0);
    drop(delivery);
    drop(first_consumer);
    let mut consumer = queue.consume(2).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(again.task.task_id, "q1:a");
    assert!(again.previous_deliveries >= 1);
    again.ack().await.unwrap();

    // Rejected with requeue until the delivery limit (2 here), then dead-lettered.
    queue.publish(&task("q2", "poison")).await.unwrap();
    for _ in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(delivery.task.task_id, "q2:poison");
        delivery.reject(true).await.unwrap();
    }
    // Nothing further is delivered.
    queue.publish(&task("q3", "after")).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next.task.task_id, "q3:after",
        "the poison task is gone from the queue"
    );
    next.ack().await.unwrap();
}

#[tokio::test]
async fn memory_queue_keeps_the_contract() {
    let queue = MemoryTaskQueue::new(2);
    queue_contract(Arc::new(queue.clone())).await;
    assert_eq!(queue.dead_letters().len(), 1);
}

#[tokio::test]
async fn rabbitmq_queue_keeps_the_contract() {
    let services = Services::ensure();
    let settings = RabbitSettings {
        url: services.amqp_url(),
        prefix: unique_prefix("queue"),
        delivery_limit: 2,
        runners: vec![RunnerKind::Builtin, RunnerKind::Command],
        max_backoff: Duration::from_secs(2),
    };
    let queue = Arc::new(RabbitTaskQueue::connect(settings.clone()).await.unwrap());
    queue_contract(queue.clone()).await;
    // Dead-lettering is asynchronous in quorum queues; give it a moment.
    let mut dead = 0;
    for _ in 0..50 {
        dead = queue.dead_letter_count().await.unwrap();
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead, 1, "the poison task reached the dead-letter queue");

    // Publishing to a runner with no configured queue is refused, not silently dropped.
    let mut unknown = task("q4", "x");
    unknown.agent.runner = RunnerKind::Command;
    let narrow = RabbitTaskQueue::connect(RabbitSettings {
        runners: vec![RunnerKind::Builtin],
        ..settings.clone()
    })
    .await
    .unwrap();
    assert!(narrow
        .publish(&unknown)
        .await
        .unwrap_err()
        .to_string()
        .contains("no queue is configured"));

    // The review's W3C trace context rides in the message headers.
    let mut traced = task("q5", "traced");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    traced
        .job
        .trace_context
        .insert("traceparent".to_string(), traceparent.to_string());
    queue.publish(&traced).await.unwrap();
    let connection =
        lapin::Connection::connect(&services.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let message = channel
        .basic_get(
            settings.task_queue(RunnerKind::Builtin).as_str().into(),
            lapin::options::BasicGetOptions::default(),
        )
        .await
        .unwrap()
        .expect("the traced task");
    let header = message
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("traceparent").cloned());
    assert_eq!(
        header,
        Some(lapin::types::AMQPValue::LongString(traceparent.into()))
    );
    message
        .nack(lapin::options::BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer_of(&queue))
        .await
        .unwrap();
    assert_eq!(delivery.trace_context["traceparent"], traceparent);
    delivery.ack().await.unwrap();
    services.cleanup_rabbitmq(&settings).await;
}

/// The next delivery of `queue`.
async fn consumer_of(queue: &Arc<RabbitTaskQueue>) -> deep_review_transport::Delivery {
    let mut consumer = queue.consume(1).await.unwrap();
    consumer.next().await.unwrap().unwrap()
}
