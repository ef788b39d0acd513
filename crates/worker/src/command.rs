use std::process::Stdio;

use async_trait::async_trait;
use deep_review_protocol::{
    parse_agent_result, AgentInput, AgentResult, AgentTask, SCHEMA_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::{AgentRunner, PreparedChange, RunnerError};

/// Output beyond this is refused rather than buffered without bound; the error says so.
const MAXIMUM_OUTPUT_BYTES: usize = 32 * 1024 * 1024;

/// Environment variables an agent process inherits; everything else (tokens, broker
/// credentials) is withheld.
const INHERITED_ENVIRONMENT: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM"];

/// Runs any executable as an agent: an [`AgentInput`] as JSON on stdin, an `AgentResult`
/// as JSON on stdout.
///
/// The process runs in its own process group, in the worktree when there is one, with a
/// minimal environment. When the worker's timeout drops the run, the whole group is killed.
#[derive(Debug, Default)]
pub struct CommandRunner;

impl CommandRunner {
    /// A command runner.
    pub fn new() -> Self {
        CommandRunner
    }
}

#[async_trait]
impl AgentRunner for CommandRunner {
    fn needs_worktree(&self) -> bool {
        true
    }

    async fn run(
        &self,
        task: &AgentTask,
        change: &PreparedChange,
    ) -> Result<AgentResult, RunnerError> {
        let Some((program, arguments)) = task.agent.command.split_first() else {
            return Err(RunnerError::failed(format!(
                "agent `{}` has an empty command",
                task.agent.name
            )));
        };
        let input = AgentInput {
            schema_version: SCHEMA_VERSION,
            task: task.clone(),
            diff: change.diff.clone(),
            worktree: change.worktree().map(|path| path.display().to_string()),
        };
        let input = serde_json::to_vec(&input)
            .map_err(|error| RunnerError::failed(format!("could not encode the task: {error}")))?;
        let ProcessOutput {
            status,
            stdout,
            stderr,
        } = run_agent_process(AgentProcess {
            program,
            arguments,
            stdin: input,
            environment: vec![
                ("DEEP_REVIEW_TASK_ID".to_string(), task.task_id.clone()),
                ("DEEP_REVIEW_AGENT".to_string(), task.agent.name.clone()),
            ],
            inherited: &[],
            worktree: change.worktree(),
        })
        .await?;

        if !status.success() {
            return Err(RunnerError {
                message: format!("`{program}` exited with {status}{}", stderr_tail(&stderr)),
                raw_output: Some(stdout),
                usage: None,
            });
        }
        match parse_output(&stdout) {
            Ok(mut result) => {
                result.raw_output = Some(stdout);
                Ok(result)
            }
            Err(error) => Err(RunnerError {
                message: format!(
                    "`{program}` printed output that is not a valid agent result: {error}"
                ),
                raw_output: Some(stdout),
                usage: None,
            }),
        }
    }
}

/// One run of an agent's executable.
pub(crate) struct AgentProcess<'a> {
    /// The executable.
    pub program: &'a str,
    /// Its arguments.
    pub arguments: &'a [String],
    /// Written to its stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// Variables set for it.
    pub environment: Vec<(String, String)>,
    /// Variables it inherits from the worker beyond [`INHERITED_ENVIRONMENT`], e.g. the
    /// one API key it needs.
    pub inherited: &'a [&'a str],
    /// Its working directory and `DEEP_REVIEW_WORKTREE`, when there is a checkout.
    pub worktree: Option<&'a std::path::Path>,
}

/// What an agent process left behind.
pub(crate) struct ProcessOutput {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// Its stdout, lossily decoded.
    pub stdout: String,
    /// Its stderr, lossily decoded.
    pub stderr: String,
}

/// Runs an agent process in its own process group, with a minimal environment, in the
/// worktree when there is one. When the returned future is dropped (the worker's timeout),
/// the whole group is killed.
pub(crate) async fn run_agent_process(
    process: AgentProcess<'_>,
) -> Result<ProcessOutput, RunnerError> {
    let AgentProcess {
        program,
        arguments,
        stdin: input,
        environment,
        inherited,
        worktree,
    } = process;
    let mut command = Command::new(program);
    command
        .args(arguments)
        .env_clear()
        .envs(
            INHERITED_ENVIRONMENT
                .iter()
                .chain(inherited)
                .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
        )
        .envs(environment)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(worktree) = worktree {
        command
            .current_dir(worktree)
            .env("DEEP_REVIEW_WORKTREE", worktree);
    }
    let mut child = command
        .spawn()
        .map_err(|error| RunnerError::failed(format!("could not start `{program}`: {error}")))?;
    let _group = child.id().map(ProcessGroupGuard);

    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let write_input = async move {
        if let Some(stdin) = stdin.as_mut() {
            // An agent that ignores its input may close stdin early; that is its choice.
            let _ignored = stdin.write_all(&input).await;
            let _ignored = stdin.shutdown().await;
        }
        drop(stdin);
    };
    let (_, stdout, stderr, status) = tokio::join!(
        write_input,
        read_bounded(stdout.as_mut()),
        read_bounded(stderr.as_mut()),
        child.wait()
    );
    let status = status
        .map_err(|error| RunnerError::failed(format!("waiting for `{program}` failed: {error}")))?;
    Ok(ProcessOutput {
        status,
        stdout: stdout?,
        stderr: stderr?,
    })
}

/// Parses the whole output as a result, or else its last line (agents that log first).
fn parse_output(stdout: &str) -> Result<AgentResult, deep_review_protocol::ParseError> {
    let whole = parse_agent_result(stdout.trim());
    if whole.is_ok() {
        return whole;
    }
    let last_line = stdout.lines().rev().find(|line| !line.trim().is_empty());
    match last_line {
        Some(line) if line.trim_start().starts_with('{') && line.len() < stdout.trim().len() => {
            parse_agent_result(line.trim()).or(whole)
        }
        _ => whole,
    }
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<&mut R>,
) -> Result<String, RunnerError> {
    let Some(reader) = reader else {
        return Ok(String::new());
    };
    let mut buffer = Vec::new();
    let mut limited = reader.take(MAXIMUM_OUTPUT_BYTES as u64 + 1);
    limited.read_to_end(&mut buffer).await.map_err(|error| {
        RunnerError::failed(format!("reading the agent's output failed: {error}"))
    })?;
    if buffer.len() > MAXIMUM_OUTPUT_BYTES {
        return Err(RunnerError::failed(format!(
            "the agent printed more than {} MiB; refusing to buffer it",
            MAXIMUM_OUTPUT_BYTES / (1024 * 1024)
        )));
    }
    Ok(String::from_utf8_lossy(&buffer).into_owned())
}

pub(crate) fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(5);
    format!("; stderr: {}", lines[start..].join(" | "))
}

/// Kills the agent's whole process group when the run ends for any reason, so helpers the
/// agent spawned do not outlive it.
struct ProcessGroupGuard(u32);

impl Drop for ProcessGroupGuard {
    fn drop(&mut self) {
        if let Ok(group) = libc::pid_t::try_from(self.0) {
            // SAFETY: killpg only sends a signal; a group that is already gone gives ESRCH,
            // which is fine to ignore.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_with_leading_log_lines_parses_from_last_line() {
        let result = parse_output("starting\nthinking\n{\"agent\":\"x\"}\n").unwrap();
        assert_eq!(result.agent, "x");
    }

    #[test]
    fn garbage_output_names_the_problem() {
        let error = parse_output("I found no issues!").unwrap_err();
        assert!(error.to_string().contains("agent result"), "{error}");
    }

    #[test]
    fn stderr_tail_keeps_last_lines() {
        let text = (1..=8).map(|n| format!("line {n}\n")).collect::<String>();
        assert_eq!(
            stderr_tail(&text),
            "; stderr: line 4 | line 5 | line 6 | line 7 | line 8"
        );
        assert_eq!(stderr_tail(""), "");
    }
}
