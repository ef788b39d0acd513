use async_trait::async_trait;
use deep_review_protocol::{AgentResult, AgentTask, Usage};

use crate::PreparedChange;

/// Why an agent produced no usable result. The worker turns it into a failed result that
/// keeps `raw_output`, so nothing the agent printed is lost.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RunnerError {
    /// What went wrong, for the report.
    pub message: String,
    /// What the agent printed, when it printed anything.
    pub raw_output: Option<String>,
    /// Tokens, cost and tool calls spent before the failure: a failed run still costs.
    pub usage: Option<Usage>,
    /// The run was stopped at the agent's deadline (rather than failing by itself); the
    /// worker reports it as timed out, keeping what it printed and spent until then, and
    /// `message` is then a detail appended to the timeout's own (e.g. its stderr's tail).
    pub timed_out: bool,
}

impl RunnerError {
    /// An error with no output to keep.
    pub fn failed(message: impl Into<String>) -> Self {
        RunnerError {
            message: message.into(),
            raw_output: None,
            usage: None,
            timed_out: false,
        }
    }
}

/// One way of running an agent (builtin, a command, a vendor CLI, a model API).
#[async_trait]
pub trait AgentRunner: Send + Sync {
    /// Whether the agent needs a checkout of the head commit to read files from.
    fn needs_worktree(&self) -> bool {
        false
    }

    /// Reviews `change` as `task.agent` and returns its result. The worker enforces the
    /// agent's timeout by dropping this future, so runners must clean up on drop.
    async fn run(
        &self,
        task: &AgentTask,
        change: &PreparedChange,
    ) -> Result<AgentResult, RunnerError>;
}
