//! The task queue on RabbitMQ (lapin).
//!
//! Topology, declared idempotently on every (re)connect, all names under a prefix so test
//! runs and deployments can share a broker:
//! - `{prefix}.tasks.{runner}`: one durable quorum queue per runner kind, so each can be
//!   scaled and rate-limited apart; `x-delivery-limit` dead-letters poison messages,
//!   with at-least-once dead-lettering (`x-overflow: reject-publish`).
//! - `{prefix}.dead-letter`: a fanout exchange and its quorum queue.
//!
//! Publishing is mandatory and confirmed; a task counts as dispatched only once the broker
//! confirmed it. Consumers use manual acks with a prefetch window. A lost connection is
//! re-established with exponential backoff, the topology re-declared and the consumers
//! restarted; unacknowledged deliveries of the dead channel are redelivered by the broker.

use std::time::Duration;

use async_trait::async_trait;
use deep_review_protocol::{parse_json, redact_url, AgentTask, RunnerKind};
use futures_util::stream::{SelectAll, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Acker, BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::sync::Mutex;

use crate::{Acknowledger, Delivery, TaskConsumer, TaskQueue, TransportError};

const BACKEND: &str = "RabbitMQ";

/// Where and how the queues live.
#[derive(Debug, Clone)]
pub struct RabbitSettings {
    /// `amqp://user:password@host:port/vhost`.
    pub url: String,
    /// Prefix of every exchange and queue name.
    pub prefix: String,
    /// Deliveries of one task before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Runner kinds this process consumes (workers) or may publish to (scheduler).
    pub runners: Vec<RunnerKind>,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl RabbitSettings {
    /// The task queue of `runner`.
    pub fn task_queue(&self, runner: RunnerKind) -> String {
        format!("{}.tasks.{}", self.prefix, runner.as_str())
    }

    /// The dead-letter exchange and queue.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }
}

fn unavailable(reason: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable {
        backend: BACKEND,
        reason: reason.to_string(),
    }
}

/// An open connection with a channel on which the topology is declared.
struct Link {
    /// Kept so the connection lives as long as the channel.
    _connection: Connection,
    channel: Channel,
}

/// Connects to the broker, naming the connection after this process for the management UI.
async fn connect(settings: &RabbitSettings) -> Result<Connection, TransportError> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(
        format!("deep-review {}", std::process::id()),
    ));
    Connection::connect(&settings.url, properties)
        .await
        .map_err(|error| {
            unavailable(format!(
                "connecting to {}: {error}",
                redact_url(&settings.url)
            ))
        })
}

/// Connects and declares the topology.
async fn open(settings: &RabbitSettings, confirms: bool) -> Result<Link, TransportError> {
    let connection = connect(settings).await?;
    let channel = connection.create_channel().await.map_err(unavailable)?;
    declare_topology(&channel, settings).await?;
    if confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
    }
    Ok(Link {
        _connection: connection,
        channel,
    })
}

async fn declare_topology(
    channel: &Channel,
    settings: &RabbitSettings,
) -> Result<(), TransportError> {
    let dead_letter = settings.dead_letter_queue();
    channel
        .exchange_declare(
            dead_letter.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|error| unavailable(format!("declaring exchange {dead_letter}: {error}")))?;
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    declare_queue(channel, &dead_letter, quorum).await?;
    channel
        .queue_bind(
            dead_letter.as_str().into(),
            dead_letter.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|error| unavailable(format!("binding {dead_letter}: {error}")))?;
    for runner in &settings.runners {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(settings.delivery_limit).unwrap_or(i32::MAX)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dead_letter.as_str().into()),
        );
        arguments.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        // At-least-once dead-lettering requires reject-publish overflow.
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        declare_queue(channel, &settings.task_queue(*runner), arguments).await?;
    }
    Ok(())
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), TransportError> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .map(|_| ())
        .map_err(|error| unavailable(format!("declaring queue {name}: {error}")))
}

/// Messages ready in `queue`, by a passive declare (which fails, closing the channel, when
/// the queue does not exist).
async fn ready_messages(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|declared| declared.message_count())
}

async fn backoff(attempt: u32, max: Duration) {
    tokio::time::sleep(crate::backoff_delay(attempt, max)).await;
}

/// Deletes the queues and the dead-letter exchange of `settings` (a deployment or test
/// prefix that is no longer used). Messages in them are lost.
pub async fn delete_topology(settings: &RabbitSettings) -> Result<(), TransportError> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let connection = connect(settings).await?;
    let channel = connection.create_channel().await.map_err(unavailable)?;
    let mut queues: Vec<String> = settings
        .runners
        .iter()
        .map(|runner| settings.task_queue(*runner))
        .collect();
    queues.push(settings.dead_letter_queue());
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(|error| unavailable(format!("deleting {queue}: {error}")))?;
    }
    channel
        .exchange_delete(
            settings.dead_letter_queue().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .map_err(|error| {
            unavailable(format!(
                "deleting exchange {}: {error}",
                settings.dead_letter_queue()
            ))
        })
}

/// The task queue on RabbitMQ.
pub struct RabbitTaskQueue {
    settings: RabbitSettings,
    /// The publishing link, replaced after a failure.
    link: Mutex<Option<Link>>,
}

impl RabbitTaskQueue {
    /// Connects (once) and declares the topology.
    pub async fn connect(settings: RabbitSettings) -> Result<Self, TransportError> {
        let link = open(&settings, true).await?;
        Ok(RabbitTaskQueue {
            settings,
            link: Mutex::new(Some(link)),
        })
    }

    /// The settings in use.
    pub fn settings(&self) -> &RabbitSettings {
        &self.settings
    }

    /// Messages waiting in the dead-letter queue (poison tasks), for operators and tests.
    pub async fn dead_letter_count(&self) -> Result<u32, TransportError> {
        let channel = self.channel().await?;
        let queue = self.settings.dead_letter_queue();
        match ready_messages(&channel, &queue).await {
            Ok(count) => Ok(count),
            Err(error) => {
                self.discard(&channel).await;
                Err(unavailable(format!("inspecting {queue}: {error}")))
            }
        }
    }

    /// The publishing channel, opening a connection first when there is none. The lock is
    /// held only for this, never across a publish, so publishes run concurrently.
    async fn channel(&self) -> Result<Channel, TransportError> {
        let mut link = self.link.lock().await;
        if link.is_none() {
            *link = Some(open(&self.settings, true).await?);
        }
        link.as_ref()
            .map(|open_link| open_link.channel.clone())
            .ok_or_else(|| unavailable("no connection"))
    }

    /// Drops the link after a failure, unless another publisher already replaced it.
    async fn discard(&self, failed: &Channel) {
        let mut link = self.link.lock().await;
        if link
            .as_ref()
            .is_some_and(|open_link| open_link.channel.id() == failed.id())
        {
            *link = None;
        }
    }

    async fn publish_once(&self, task: &AgentTask, payload: &[u8]) -> Result<(), TransportError> {
        let channel = self.channel().await?;
        // The W3C trace context rides in the headers too, where tracing-aware consumers
        // and broker tooling look for it.
        let mut headers = FieldTable::default();
        for (name, value) in &task.job.trace_context {
            headers.insert(
                ShortString::from(name.clone()),
                AMQPValue::LongString(value.clone().into()),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(ShortString::from(task.task_id.clone()))
            .with_headers(headers);
        let outcome = async {
            let confirmation = channel
                .basic_publish(
                    "".into(),
                    self.settings.task_queue(task.agent.runner).into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    payload,
                    properties,
                )
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)?;
            if !confirmation.is_ack() {
                return Err(unavailable(format!(
                    "the broker refused task {}",
                    task.task_id
                )));
            }
            if confirmation.take_message().is_some() {
                return Err(unavailable(format!(
                    "task {} was unroutable: queue {} does not exist",
                    task.task_id,
                    self.settings.task_queue(task.agent.runner)
                )));
            }
            Ok(())
        }
        .await;
        if outcome.is_err() {
            // Start afresh next time: the channel may be closed.
            self.discard(&channel).await;
        }
        outcome
    }
}

#[async_trait]
impl TaskQueue for RabbitTaskQueue {
    async fn check(&self) -> Result<(), TransportError> {
        let channel = self.channel().await?;
        if channel.status().connected() {
            Ok(())
        } else {
            self.discard(&channel).await;
            Err(unavailable("the broker connection is closed"))
        }
    }

    async fn publish(&self, task: &AgentTask) -> Result<(), TransportError> {
        if !self.settings.runners.contains(&task.agent.runner) {
            return Err(unavailable(format!(
                "no queue is configured for runner `{}`",
                task.agent.runner.as_str()
            )));
        }
        let payload = serde_json::to_vec(task).map_err(|error| TransportError::Corrupt {
            what: "agent task",
            reason: error.to_string(),
        })?;
        // One retry on a fresh connection covers a broker restart between publishes;
        // duplicates are harmless because result writes are idempotent per agent.
        match self.publish_once(task, &payload).await {
            Ok(()) => Ok(()),
            Err(first) => {
                tracing::warn!(error = %first, task = %task.task_id, "publish failed; reconnecting once");
                backoff(0, self.settings.max_backoff).await;
                self.publish_once(task, &payload).await
            }
        }
    }

    async fn consume(&self, prefetch: usize) -> Result<Box<dyn TaskConsumer>, TransportError> {
        let mut consumer = RabbitConsumer {
            settings: self.settings.clone(),
            prefetch: u16::try_from(prefetch.max(1)).unwrap_or(u16::MAX),
            state: None,
            outstanding: std::sync::Arc::default(),
            starved_checks: 0,
        };
        consumer.start().await?;
        Ok(Box::new(consumer))
    }
}

struct ConsumerState {
    link: Link,
    streams: SelectAll<Consumer>,
}

struct RabbitConsumer {
    settings: RabbitSettings,
    prefetch: u16,
    state: Option<ConsumerState>,
    /// Deliveries handed out and not yet settled (or dropped).
    outstanding: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Checks in a row that found tasks waiting while this consumer held none.
    starved_checks: u32,
}

/// How long a consumer waits for a delivery before it checks that it is not starved.
const STALL_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Checks in a row that must find it starved before it subscribes again.
const STARVED_CHECKS_BEFORE_RESUBSCRIBING: u32 = 2;

impl RabbitConsumer {
    async fn start(&mut self) -> Result<(), TransportError> {
        let link = open(&self.settings, false).await?;
        link.channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let mut streams = SelectAll::new();
        for runner in &self.settings.runners {
            let queue = self.settings.task_queue(*runner);
            let consumer = link
                .channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|error| unavailable(format!("consuming {queue}: {error}")))?;
            streams.push(consumer);
        }
        self.state = Some(ConsumerState { link, streams });
        Ok(())
    }

    /// Whether tasks wait in a queue while this consumer, holding none, gets nothing: a
    /// subscription made while a quorum queue was still recovering after a broker restart
    /// can stay silent for good (seen with RabbitMQ 3.10). Subscribing again revives it;
    /// with no delivery outstanding, doing so requeues nothing.
    async fn starved(&mut self) -> bool {
        use std::sync::atomic::Ordering;
        let Some(state) = &self.state else {
            return false;
        };
        if self.outstanding.load(Ordering::SeqCst) > 0 {
            self.starved_checks = 0;
            return false;
        }
        let mut waiting = 0;
        for runner in &self.settings.runners {
            let queue = self.settings.task_queue(*runner);
            match ready_messages(&state.link.channel, &queue).await {
                Ok(count) => waiting += count,
                // The channel is gone: the stream ends too, and `next` reconnects.
                Err(_) => return false,
            }
        }
        if waiting == 0 {
            self.starved_checks = 0;
            return false;
        }
        self.starved_checks += 1;
        if self.starved_checks < STARVED_CHECKS_BEFORE_RESUBSCRIBING {
            return false;
        }
        tracing::warn!(
            waiting,
            "tasks wait in the queues but none reach this idle consumer; subscribing again"
        );
        self.starved_checks = 0;
        true
    }

    async fn restart(&mut self) {
        self.state = None;
        let mut attempt = 0;
        loop {
            match self.start().await {
                Ok(()) => {
                    tracing::info!(
                        attempts = attempt + 1,
                        "reconnected to RabbitMQ; consuming again"
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, "reconnecting to RabbitMQ failed; retrying");
                    backoff(attempt, self.settings.max_backoff).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

#[async_trait]
impl TaskConsumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        loop {
            let Some(state) = self.state.as_mut() else {
                self.restart().await;
                continue;
            };
            let Ok(next) = tokio::time::timeout(STALL_CHECK_INTERVAL, state.streams.next()).await
            else {
                if self.starved().await {
                    self.restart().await;
                }
                continue;
            };
            match next {
                Some(Ok(delivery)) => {
                    self.starved_checks = 0;
                    let previous = previous_deliveries(&delivery);
                    let trace_context = trace_context(&delivery);
                    let acker = delivery.acker.clone();
                    match parse_json::<AgentTask>(
                        "agent task",
                        &String::from_utf8_lossy(&delivery.data),
                    ) {
                        Ok(task) => {
                            return Some(Ok(Delivery::new(
                                task,
                                previous,
                                Box::new(RabbitAcknowledger {
                                    acker,
                                    _outstanding: OutstandingDelivery::new(&self.outstanding),
                                }),
                            )
                            .with_trace_context(trace_context)));
                        }
                        Err(error) => {
                            // Unreadable now means unreadable forever: dead-letter it at once.
                            tracing::error!(%error, "dead-lettering an unreadable task message");
                            if let Err(error) = acker
                                .nack(BasicNackOptions {
                                    requeue: false,
                                    ..BasicNackOptions::default()
                                })
                                .await
                            {
                                tracing::warn!(%error, "could not dead-letter the message; the broker will redeliver it");
                            }
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "RabbitMQ consumer failed; reconnecting");
                    self.restart().await;
                }
                None => {
                    tracing::warn!("RabbitMQ consumer was cancelled; reconnecting");
                    self.restart().await;
                }
            }
        }
    }
}

/// The W3C trace context headers (`traceparent`, `tracestate`) of a message.
fn trace_context(
    delivery: &lapin::message::Delivery,
) -> std::collections::BTreeMap<String, String> {
    let mut context = std::collections::BTreeMap::new();
    if let Some(headers) = delivery.properties.headers() {
        for name in ["traceparent", "tracestate"] {
            let value = match headers.inner().get(name) {
                Some(AMQPValue::LongString(value)) => value.to_string(),
                Some(AMQPValue::ShortString(value)) => value.to_string(),
                _ => continue,
            };
            context.insert(name.to_string(), value);
        }
    }
    context
}

/// Quorum queues count redeliveries in `x-delivery-count`; classic ones only flag them.
fn previous_deliveries(delivery: &lapin::message::Delivery) -> u32 {
    let counted = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned())
        .and_then(|value| match value {
            AMQPValue::LongLongInt(count) => u32::try_from(count).ok(),
            AMQPValue::LongInt(count) => u32::try_from(count).ok(),
            AMQPValue::ShortInt(count) => u32::try_from(count).ok(),
            AMQPValue::LongUInt(count) => Some(count),
            _ => None,
        });
    counted.unwrap_or(u32::from(delivery.redelivered))
}

struct RabbitAcknowledger {
    acker: Acker,
    /// Counts the delivery as outstanding until it is settled or dropped.
    _outstanding: OutstandingDelivery,
}

/// One outstanding delivery in its consumer's count, for as long as this lives.
struct OutstandingDelivery(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl OutstandingDelivery {
    fn new(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OutstandingDelivery(std::sync::Arc::clone(count))
    }
}

impl Drop for OutstandingDelivery {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl Acknowledger for RabbitAcknowledger {
    async fn ack(self: Box<Self>) -> Result<(), TransportError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), TransportError> {
        self.acker
            .nack(BasicNackOptions {
                requeue,
                ..BasicNackOptions::default()
            })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

// Dropping an unsettled lapin delivery leaves it unacknowledged on the channel; the broker
// redelivers it when the channel closes, which is the semantics `Delivery` promises.
