//! `deep-review bench`: throughput and orchestration overhead of the pipeline, against a
//! bare RabbitMQ + Redis fan-out/fan-in (`baseline`) measured in the same invocation.
//!
//! Overhead is the time from request accepted to report written, minus the agents' own
//! latency. Stand-in agents answer after a fixed latency; the scheduler, workers and
//! consolidator are the real ones, in one process (over the in-memory or the real
//! queue and store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use deep_review_consolidator::{Consolidator, ConsolidatorSettings, Publisher, StorePublisher};
use deep_review_protocol::{AgentResult, AgentSpec, AgentTask, ReviewRequest, RunnerKind, Source};
use deep_review_scheduler::{Scheduler, SchedulerSettings};
use deep_review_transport::{
    CancellationToken, MemoryResultStore, MemoryTaskQueue, RabbitSettings, RabbitTaskQueue,
    RedisResultStore, RedisSettings, ResultStore, TaskQueue,
};
use deep_review_worker::{
    AgentRunner, PreparedChange, RunnerError, RunnerSet, Worker, WorkerSettings,
};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::{mpsc, Semaphore};

use crate::settings::Settings;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// deep-review over RabbitMQ and Redis (also runs `baseline` for the ratio).
    Distributed,
    /// deep-review over the in-memory queue and store.
    Embedded,
    /// A bare lapin + redis fan-out/fan-in with no deep-review code.
    Baseline,
}

/// `deep-review bench`.
#[derive(Debug, Args)]
pub struct BenchArguments {
    /// What to measure.
    #[arg(long, value_enum, default_value = "distributed")]
    mode: BenchMode,
    /// Reviews to run.
    #[arg(long, default_value_t = 2000)]
    reviews: usize,
    /// Agents per review.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// How long each stand-in agent takes.
    #[arg(long = "agent-latency-ms", default_value_t = 0)]
    agent_latency_ms: u64,
    /// Submit at this many reviews per second (latency mode); all at once when absent
    /// (throughput mode).
    #[arg(long)]
    rate: Option<f64>,
    /// Size of each task's payload (the inline diff).
    #[arg(long, default_value_t = 2048)]
    payload_bytes: usize,
    /// Tasks in flight per worker (queue prefetch) and submissions in flight.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Measurement {
    label: String,
    reviews_per_second: f64,
    /// Overhead per review (latency minus agent time), sorted.
    overheads: Vec<Duration>,
}

impl Measurement {
    fn percentile(&self, fraction: f64) -> Duration {
        if self.overheads.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((fraction * self.overheads.len() as f64).ceil() as usize)
            .clamp(1, self.overheads.len());
        self.overheads[rank - 1]
    }

    fn print(&self) {
        println!(
            "{:<12} {:>9.0} reviews/s   overhead p50 {:>8.2} ms  p95 {:>8.2} ms  p99 {:>8.2} ms",
            self.label,
            self.reviews_per_second,
            milliseconds(self.percentile(0.50)),
            milliseconds(self.percentile(0.95)),
            milliseconds(self.percentile(0.99)),
        );
    }
}

fn milliseconds(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints the figures (and ratios to the baseline).
pub async fn run(settings: &Settings, arguments: BenchArguments) -> anyhow::Result<()> {
    if arguments.reviews == 0 || arguments.agents == 0 {
        bail!("--reviews and --agents must be at least 1");
    }
    let shape = format!(
        "{} reviews × {} agents, agent latency {} ms, payload {} B, {}",
        arguments.reviews,
        arguments.agents,
        arguments.agent_latency_ms,
        arguments.payload_bytes,
        arguments
            .rate
            .map_or("all submitted at once".to_string(), |rate| format!(
                "{rate} reviews/s"
            ))
    );
    println!("{shape}");
    match arguments.mode {
        BenchMode::Baseline => baseline(settings, &arguments).await?.print(),
        BenchMode::Embedded => {
            let queue = MemoryTaskQueue::new(settings.review.delivery_limit);
            pipeline(
                "embedded",
                Arc::new(queue),
                Arc::new(MemoryResultStore::new()),
                &arguments,
            )
            .await?
            .print();
        }
        BenchMode::Distributed => {
            let floor = baseline(settings, &arguments).await?;
            floor.print();
            let prefix = bench_prefix("pipeline");
            let rabbit = RabbitSettings {
                url: settings.distributed.broker_url.clone(),
                prefix: prefix.clone(),
                delivery_limit: settings.review.delivery_limit,
                runners: vec![RunnerKind::Builtin],
                max_backoff: Duration::from_secs(2),
            };
            let queue = RabbitTaskQueue::connect(rabbit.clone())
                .await
                .context("connecting to RabbitMQ")?;
            let store = RedisResultStore::connect(RedisSettings {
                url: settings.distributed.redis_url.clone(),
                prefix: prefix.clone(),
                ttl: Duration::from_secs(600),
            })
            .await
            .context("connecting to Redis")?;
            let measured =
                pipeline("distributed", Arc::new(queue), Arc::new(store), &arguments).await;
            cleanup(settings, &prefix, &rabbit).await;
            let measured = measured?;
            measured.print();
            println!(
                "ratio to baseline: throughput {:.2}×, overhead p50 {:.2}×, p99 {:.2}×",
                measured.reviews_per_second / floor.reviews_per_second.max(f64::MIN_POSITIVE),
                ratio(measured.percentile(0.50), floor.percentile(0.50)),
                ratio(measured.percentile(0.99), floor.percentile(0.99)),
            );
        }
    }
    Ok(())
}

fn ratio(measured: Duration, floor: Duration) -> f64 {
    measured.as_secs_f64() / floor.as_secs_f64().max(1e-9)
}

fn bench_prefix(kind: &str) -> String {
    format!("deep-review-bench-{kind}-{}", std::process::id())
}

/// A stand-in agent: answers after a fixed latency with an empty result.
struct StandInAgent {
    latency: Duration,
}

#[async_trait]
impl AgentRunner for StandInAgent {
    async fn run(
        &self,
        task: &AgentTask,
        _change: &PreparedChange,
    ) -> Result<AgentResult, RunnerError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(AgentResult::new(&task.agent.name))
    }
}

/// A unified diff of about `bytes` bytes, so tasks carry a realistic payload.
fn synthetic_diff(bytes: usize) -> String {
    let mut diff =
        String::from("diff --git a/src/lib.rs b/src/lib.rs\n--- a/src/lib.rs\n+++ b/src/lib.rs\n");
    let lines = bytes / 40 + 1;
    diff.push_str(&format!("@@ -1,0 +1,{lines} @@\n"));
    for line in 0..lines {
        diff.push_str(&format!("+let value_{line:05} = compute({line:05});\n"));
    }
    diff
}

async fn pipeline(
    label: &str,
    queue: Arc<dyn TaskQueue>,
    store: Arc<dyn ResultStore>,
    arguments: &BenchArguments,
) -> anyhow::Result<Measurement> {
    let latency = Duration::from_millis(arguments.agent_latency_ms);
    let agents: Vec<AgentSpec> = (0..arguments.agents)
        .map(|index| AgentSpec {
            timeout: Duration::from_secs(600),
            ..AgentSpec::new(format!("agent{index}"), RunnerKind::Builtin)
        })
        .collect();
    let scheduler = Arc::new(Scheduler::new(
        Arc::clone(&queue),
        Arc::clone(&store),
        SchedulerSettings {
            default_agents: agents,
            deadline_grace: Duration::from_secs(600),
            shared_filesystem: false,
            budget: deep_review_scheduler::Budget::default(),
            lineup_policy: deep_review_scheduler::LineupPolicy::default(),
            verification_time: None,
        },
    ));
    let shutdown = CancellationToken::new();
    let worker = Worker::new(
        Arc::clone(&queue),
        Arc::clone(&store),
        RunnerSet::new().with(RunnerKind::Builtin, Arc::new(StandInAgent { latency })),
        WorkerSettings {
            concurrency: arguments.concurrency,
            scratch_directory: std::env::temp_dir(),
            drain_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(1),
        },
    );
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let publisher: Arc<dyn Publisher> = Arc::new(StorePublisher::new(Arc::clone(&store)));
    let consolidator = Arc::new(Consolidator::new(
        Arc::clone(&store),
        vec![publisher],
        ConsolidatorSettings {
            consolidation: Default::default(),
            lease: Duration::from_secs(60),
            sweep_interval: Duration::from_millis(500),
            concurrency: 32,
        },
    ));
    let (report_sender, mut reports) = mpsc::unbounded_channel();
    let consolidator_task =
        tokio::spawn(Arc::clone(&consolidator).run(shutdown.clone(), Some(report_sender)));

    let diff = synthetic_diff(arguments.payload_bytes);
    let (accepted_sender, mut accepted) = mpsc::unbounded_channel::<(String, Instant)>();
    let submissions = Arc::new(Semaphore::new(arguments.concurrency));
    let started = Instant::now();
    let interval = arguments
        .rate
        .map(|rate| Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let submitter = {
        let scheduler = Arc::clone(&scheduler);
        let reviews = arguments.reviews;
        tokio::spawn(async move {
            let mut handles = Vec::with_capacity(reviews);
            for index in 0..reviews {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(
                        started + interval.mul_f64(index as f64),
                    ))
                    .await;
                }
                let Ok(permit) = Arc::clone(&submissions).acquire_owned().await else {
                    break;
                };
                let scheduler = Arc::clone(&scheduler);
                let accepted_sender = accepted_sender.clone();
                let request = ReviewRequest::for_source(Source::InlineDiff { diff: diff.clone() });
                handles.push(tokio::spawn(async move {
                    let submitted = Instant::now();
                    let outcome = scheduler.submit(request).await;
                    drop(permit);
                    match outcome {
                        Ok(job) => {
                            let _delivered = accepted_sender.send((job.id, submitted));
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }));
            }
            for handle in handles {
                handle.await??;
            }
            anyhow::Ok(())
        })
    };

    let mut submitted_at = std::collections::HashMap::new();
    let mut finished_at = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while finished_at.len() < arguments.reviews {
        tokio::select! {
            Some((id, at)) = accepted.recv() => { submitted_at.insert(id, at); }
            Some(report) = reports.recv() => { finished_at.insert(report.review_id, Instant::now()); }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                bail!("{label}: only {} of {} reviews finished in 10 minutes", finished_at.len(), arguments.reviews);
            }
        }
    }
    let elapsed = started.elapsed();
    submitter.await??;
    while let Ok((id, at)) = accepted.try_recv() {
        submitted_at.insert(id, at);
    }
    shutdown.cancel();
    let _worker = worker_task.await;
    let _consolidator = consolidator_task.await;

    let mut overheads: Vec<Duration> = finished_at
        .iter()
        .filter_map(|(id, done)| {
            Some(
                done.duration_since(*submitted_at.get(id)?)
                    .saturating_sub(latency),
            )
        })
        .collect();
    overheads.sort();
    Ok(Measurement {
        label: label.to_string(),
        reviews_per_second: arguments.reviews as f64 / elapsed.as_secs_f64(),
        overheads,
    })
}

/// The floor: the same message count and sizes through bare lapin and redis-rs.
/// Per review, K persistent messages to a quorum queue with confirms; consumers (prefetch)
/// run HSET + HINCRBY in one pipeline, and the one that completes the review publishes a
/// confirmed "complete" message; a consumer of those runs HGETALL.
async fn baseline(settings: &Settings, arguments: &BenchArguments) -> anyhow::Result<Measurement> {
    let prefix = bench_prefix("baseline");
    let tasks_queue = format!("{prefix}.tasks");
    let done_queue = format!("{prefix}.done");
    let connection = Connection::connect(
        &settings.distributed.broker_url,
        ConnectionProperties::default(),
    )
    .await
    .context("baseline: connecting to RabbitMQ")?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for queue in [&tasks_queue, &done_queue] {
        publisher
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                quorum.clone(),
            )
            .await?;
    }
    let redis = redis::Client::open(settings.distributed.redis_url.as_str())?;
    let agents = arguments.agents;
    let latency = Duration::from_millis(arguments.agent_latency_ms);

    // Workers.
    let worker_channel = connection.create_channel().await?;
    worker_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    worker_channel
        .basic_qos(
            u16::try_from(arguments.concurrency).unwrap_or(u16::MAX),
            BasicQosOptions::default(),
        )
        .await?;
    let mut task_consumer = worker_channel
        .basic_consume(
            tasks_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let worker_redis = redis.get_multiplexed_async_connection().await?;
    let worker_channel_handle = worker_channel.clone();
    let worker = {
        let done_queue = done_queue.clone();
        let prefix = prefix.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = task_consumer.next().await {
                let mut redis = worker_redis.clone();
                let channel = worker_channel.clone();
                let (done_queue, prefix) = (done_queue.clone(), prefix.clone());
                tokio::spawn(async move {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let text = String::from_utf8_lossy(&delivery.data);
                    let (review, rest) = text.split_once('|').unwrap_or(("", ""));
                    let (agent, _) = rest.split_once('|').unwrap_or(("", ""));
                    let key = format!("{prefix}:job:{review}");
                    let counted: Result<(u64,), _> = redis::pipe()
                        .cmd("HSET")
                        .arg(&key)
                        .arg(agent)
                        .arg(&*delivery.data)
                        .ignore()
                        .cmd("HINCRBY")
                        .arg(&key)
                        .arg("done")
                        .arg(1)
                        .query_async(&mut redis)
                        .await;
                    let done = match counted {
                        Ok((done,)) => done,
                        Err(error) => {
                            eprintln!("baseline worker: redis failed: {error}");
                            return;
                        }
                    };
                    if done == agents as u64 {
                        if let Ok(confirm) = channel
                            .basic_publish(
                                "".into(),
                                done_queue.as_str().into(),
                                BasicPublishOptions::default(),
                                review.as_bytes(),
                                BasicProperties::default().with_delivery_mode(2),
                            )
                            .await
                        {
                            let _confirmed = confirm.await;
                        }
                    }
                    let _acked = delivery.ack(BasicAckOptions::default()).await;
                });
            }
        })
    };

    // Consolidator.
    let consolidator_channel = connection.create_channel().await?;
    consolidator_channel
        .basic_qos(200, BasicQosOptions::default())
        .await?;
    let mut done_consumer = consolidator_channel
        .basic_consume(
            done_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consolidator_channel_handle = consolidator_channel.clone();
    let (finished_sender, mut finished) = mpsc::unbounded_channel::<(String, Instant)>();
    let mut consolidator_redis = redis.get_multiplexed_async_connection().await?;
    let consolidator = {
        let prefix = prefix.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = done_consumer.next().await {
                let review = String::from_utf8_lossy(&delivery.data).into_owned();
                let _job: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                    .arg(format!("{prefix}:job:{review}"))
                    .query_async(&mut consolidator_redis)
                    .await
                    .unwrap_or_default();
                let _delivered = finished_sender.send((review, Instant::now()));
                let _acked = delivery.ack(BasicAckOptions::default()).await;
            }
        })
    };

    // Publisher: up to 1,000 confirms in flight.
    let payload_padding = "x".repeat(arguments.payload_bytes);
    let confirms = Arc::new(Semaphore::new(1000));
    let started = Instant::now();
    let interval = arguments
        .rate
        .map(|rate| Duration::from_secs_f64(1.0 / rate.max(0.001)));
    let mut first_publish = std::collections::HashMap::with_capacity(arguments.reviews);
    for review in 0..arguments.reviews {
        if let Some(interval) = interval {
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                started + interval.mul_f64(review as f64),
            ))
            .await;
        }
        let review_id = format!("review{review}");
        first_publish.insert(review_id.clone(), Instant::now());
        for agent in 0..agents {
            let permit = Arc::clone(&confirms).acquire_owned().await?;
            let payload = format!("{review_id}|agent{agent}|{payload_padding}");
            let confirm = publisher
                .basic_publish(
                    "".into(),
                    tasks_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    payload.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            tokio::spawn(async move {
                let _confirmed = confirm.await;
                drop(permit);
            });
        }
    }
    let mut overheads = Vec::with_capacity(arguments.reviews);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while overheads.len() < arguments.reviews {
        let Ok(Some((review, at))) = tokio::time::timeout_at(deadline, finished.recv()).await
        else {
            bail!(
                "baseline: only {} of {} reviews finished",
                overheads.len(),
                arguments.reviews
            );
        };
        if let Some(first) = first_publish.get(&review) {
            overheads.push(at.duration_since(*first).saturating_sub(latency));
        }
    }
    let elapsed = started.elapsed();
    worker.abort();
    consolidator.abort();
    // Close the consuming channels first, so deleting the queues cancels no live consumer.
    for channel in [&worker_channel_handle, &consolidator_channel_handle] {
        let _closed = channel.close(200, "benchmark done".into()).await;
    }
    for queue in [&tasks_queue, &done_queue] {
        let _deleted = publisher
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    if let Err(error) =
        deep_review_transport::delete_prefix(&settings.distributed.redis_url, &prefix).await
    {
        eprintln!("could not delete the baseline's Redis keys under {prefix}: {error}");
    }
    overheads.sort();
    Ok(Measurement {
        label: "baseline".to_string(),
        reviews_per_second: arguments.reviews as f64 / elapsed.as_secs_f64(),
        overheads,
    })
}

async fn cleanup(settings: &Settings, prefix: &str, rabbit: &RabbitSettings) {
    if let Err(error) =
        deep_review_transport::delete_prefix(&settings.distributed.redis_url, prefix).await
    {
        eprintln!("could not delete the benchmark's Redis keys under {prefix}: {error}");
    }
    if let Err(error) = deep_review_transport::delete_topology(rabbit).await {
        eprintln!("could not delete the benchmark's queues under {prefix}: {error}");
    }
}
