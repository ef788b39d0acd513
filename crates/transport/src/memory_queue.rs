use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use deep_review_protocol::AgentTask;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::{Acknowledger, Delivery, TaskConsumer, TaskQueue, TransportError};

/// An in-process task queue with broker semantics: at-least-once delivery, requeue on
/// drop, a delivery limit and a dead-letter list. For the embedded mode and unit tests.
#[derive(Clone)]
pub struct MemoryTaskQueue {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes consumers when a task is queued or the queue closes.
    available: Notify,
    /// Deliveries beyond this many go to the dead letters instead.
    delivery_limit: u32,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Queued>,
    dead_letters: Vec<AgentTask>,
    closed: bool,
}

struct Queued {
    task: AgentTask,
    previous_deliveries: u32,
}

impl MemoryTaskQueue {
    /// A queue that dead-letters a task once it was returned more than `delivery_limit`
    /// times (so it is delivered at most `delivery_limit + 1` times).
    pub fn new(delivery_limit: u32) -> Self {
        MemoryTaskQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                available: Notify::new(),
                delivery_limit: delivery_limit.max(1),
            }),
        }
    }

    /// Stops deliveries: consumers see the end of the stream once the ready tasks are gone.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.available.notify_waiters();
    }

    /// Tasks that exceeded the delivery limit.
    pub fn dead_letters(&self) -> Vec<AgentTask> {
        self.shared.lock().dead_letters.clone()
    }

    /// Tasks waiting for a consumer.
    pub fn ready_count(&self) -> usize {
        self.shared.lock().ready.len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue half-updated (every update
        // is a single push or pop), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn requeue(&self, task: AgentTask, previous_deliveries: u32) {
        let mut state = self.lock();
        // As RabbitMQ's `x-delivery-limit`: dead-letter once returns exceed the limit.
        if previous_deliveries > self.delivery_limit {
            tracing::warn!(task = %task.task_id, deliveries = previous_deliveries, "delivery limit reached; dead-lettering task");
            state.dead_letters.push(task);
        } else {
            state.ready.push_back(Queued {
                task,
                previous_deliveries,
            });
            drop(state);
            self.available.notify_one();
        }
    }
}

#[async_trait]
impl TaskQueue for MemoryTaskQueue {
    async fn publish(&self, task: &AgentTask) -> Result<(), TransportError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(TransportError::Unavailable {
                backend: "in-memory queue",
                reason: "the queue is closed".to_string(),
            });
        }
        state.ready.push_back(Queued {
            task: task.clone(),
            previous_deliveries: 0,
        });
        drop(state);
        self.shared.available.notify_one();
        Ok(())
    }

    async fn consume(&self, prefetch: usize) -> Result<Box<dyn TaskConsumer>, TransportError> {
        Ok(Box::new(MemoryConsumer {
            shared: Arc::clone(&self.shared),
            prefetch: Arc::new(Semaphore::new(prefetch.max(1))),
        }))
    }
}

struct MemoryConsumer {
    shared: Arc<Shared>,
    /// One permit per unsettled delivery, like a channel's prefetch window.
    prefetch: Arc<Semaphore>,
}

#[async_trait]
impl TaskConsumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        let permit = Arc::clone(&self.prefetch).acquire_owned().await.ok()?;
        loop {
            let notified = self.shared.available.notified();
            tokio::pin!(notified);
            // Register interest before checking, so a publish between the check and the
            // await is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if let Some(queued) = state.ready.pop_front() {
                    let deliveries = queued.previous_deliveries;
                    let acknowledger = MemoryAcknowledger {
                        shared: Arc::clone(&self.shared),
                        pending: Some(Queued {
                            task: queued.task.clone(),
                            previous_deliveries: deliveries + 1,
                        }),
                        _permit: permit,
                    };
                    return Some(Ok(Delivery::new(
                        queued.task,
                        deliveries,
                        Box::new(acknowledger),
                    )));
                }
                if state.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

struct MemoryAcknowledger {
    shared: Arc<Shared>,
    /// The task as it would be requeued; taken when settled.
    pending: Option<Queued>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Acknowledger for MemoryAcknowledger {
    async fn ack(mut self: Box<Self>) -> Result<(), TransportError> {
        self.pending = None;
        Ok(())
    }

    async fn reject(mut self: Box<Self>, requeue: bool) -> Result<(), TransportError> {
        if let Some(queued) = self.pending.take() {
            if requeue {
                self.shared.requeue(queued.task, queued.previous_deliveries);
            } else {
                self.shared.lock().dead_letters.push(queued.task);
            }
        }
        Ok(())
    }
}

impl Drop for MemoryAcknowledger {
    fn drop(&mut self) {
        if let Some(queued) = self.pending.take() {
            self.shared.requeue(queued.task, queued.previous_deliveries);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_protocol::{AgentSpec, ReviewJob, RunnerKind, Source};

    fn task(name: &str) -> AgentTask {
        let agent = AgentSpec {
            timeout: std::time::Duration::from_secs(5),
            ..AgentSpec::new(name.to_string(), RunnerKind::Builtin)
        };
        let job = ReviewJob::new(
            "r1",
            chrono::Utc::now(),
            Source::InlineDiff {
                diff: String::new(),
            },
            vec![agent.clone()],
            chrono::Utc::now(),
        );
        AgentTask::new(&job, &agent)
    }

    #[tokio::test]
    async fn dropped_delivery_is_redelivered_then_dead_lettered() {
        let queue = MemoryTaskQueue::new(2);
        queue.publish(&task("a")).await.unwrap();
        let mut consumer = queue.consume(1).await.unwrap();
        let first = consumer.next().await.unwrap().unwrap();
        assert_eq!(first.previous_deliveries, 0);
        drop(first);
        let second = consumer.next().await.unwrap().unwrap();
        assert_eq!(second.previous_deliveries, 1);
        drop(second);
        let third = consumer.next().await.unwrap().unwrap();
        assert_eq!(third.previous_deliveries, 2);
        drop(third);
        assert_eq!(queue.ready_count(), 0);
        assert_eq!(queue.dead_letters().len(), 1);
    }

    #[tokio::test]
    async fn acked_delivery_is_gone_and_close_ends_stream() {
        let queue = MemoryTaskQueue::new(3);
        queue.publish(&task("a")).await.unwrap();
        let mut consumer = queue.consume(4).await.unwrap();
        consumer.next().await.unwrap().unwrap().ack().await.unwrap();
        queue.close();
        assert!(consumer.next().await.is_none());
        assert!(queue.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn prefetch_bounds_unsettled_deliveries() {
        let queue = MemoryTaskQueue::new(3);
        queue.publish(&task("a")).await.unwrap();
        queue.publish(&task("b")).await.unwrap();
        let mut consumer = queue.consume(1).await.unwrap();
        let first = consumer.next().await.unwrap().unwrap();
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(50), consumer.next()).await;
        assert!(
            blocked.is_err(),
            "second delivery must wait for the first to settle"
        );
        first.ack().await.unwrap();
        let second = consumer.next().await.unwrap().unwrap();
        assert_eq!(second.task.agent.name, "b");
    }

    #[tokio::test]
    async fn reject_without_requeue_dead_letters() {
        let queue = MemoryTaskQueue::new(3);
        queue.publish(&task("a")).await.unwrap();
        let mut consumer = queue.consume(1).await.unwrap();
        consumer
            .next()
            .await
            .unwrap()
            .unwrap()
            .reject(false)
            .await
            .unwrap();
        assert_eq!(queue.dead_letters().len(), 1);
    }
}
