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
            writable: Vec::new(),
            deadline: change.deadline,
        })
        .await?;

        if !status.success() {
            return Err(RunnerError {
                message: format!("`{program}` exited with {status}{}", stderr_tail(&stderr)),
                raw_output: Some(stdout),
                usage: None,
                timed_out: false,
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
                timed_out: false,
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
    /// Folders it may write to besides its working directory (a sandboxed agent writes
    /// nowhere else), e.g. the run directory a CLI's configuration was written to.
    pub writable: Vec<std::path::PathBuf>,
    /// When to stop it (the worker's deadline for the agent). Stopping it here, rather than
    /// letting the worker drop the run, keeps what it printed so far: a timed-out agent's
    /// stream often holds the diagnosis (retries, refused keys).
    pub deadline: Option<tokio::time::Instant>,
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

/// Runs an agent process in its own process group (and PID namespace, where the machine
/// allows: see [`crate::isolation`]), with a minimal environment, in the worktree when there
/// is one and in an empty directory of its own otherwise. When the returned future is
/// dropped (the worker's timeout), or the agent prints more than the output cap, the whole
/// group is killed.
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
        writable: extra_writable,
        deadline,
    } = process;
    let resolved = crate::isolation::resolve_program(program)
        .map_err(|error| RunnerError::failed(format!("could not start `{program}`: {error}")))?;
    let isolation = crate::isolation::isolation();
    // With no checkout, the agent still gets a directory of its own (empty, removed
    // afterwards) rather than the worker's working directory.
    let empty_directory = match worktree {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("deep-review-agent-")
                .tempdir()
                .map_err(|error| {
                    RunnerError::failed(format!("could not create the agent's directory: {error}"))
                })?,
        ),
    };
    let working_directory = worktree.or(empty_directory.as_ref().map(|directory| directory.path()));
    // Only a sandboxed agent has a filesystem view to work out. It writes only to its own
    // folders, and to config homes the operator gave its CLI (their variables are among
    // those it inherits).
    let view = if isolation == crate::isolation::Isolation::Sandbox {
        let mut writable: Vec<std::path::PathBuf> = working_directory
            .map(std::path::Path::to_path_buf)
            .into_iter()
            .chain(extra_writable)
            .collect();
        writable.extend(
            inherited
                .iter()
                .filter_map(std::env::var_os)
                .map(std::path::PathBuf::from)
                .filter(|path| path.is_absolute() && path.is_dir()),
        );
        crate::isolation::FilesystemView::for_agent(&resolved, working_directory, writable)
    } else {
        crate::isolation::FilesystemView::default()
    };
    let (wrapper, wrapped_arguments) =
        crate::isolation::wrap(isolation, &resolved, arguments, &view);
    let mut pause = SPAWN_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let mut command = Command::new(&wrapper);
        command
            .args(&wrapped_arguments)
            .env_clear()
            .envs(
                INHERITED_ENVIRONMENT
                    .iter()
                    .chain(inherited)
                    .filter_map(|name| std::env::var_os(name).map(|value| (*name, value))),
            )
            .envs(environment.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        match (worktree, &empty_directory) {
            (Some(worktree), _) => {
                command
                    .current_dir(worktree)
                    .env("DEEP_REVIEW_WORKTREE", worktree);
            }
            (None, Some(directory)) => {
                command.current_dir(directory.path());
            }
            (None, None) => {}
        }
        let output = run_started(&mut command, program, input.clone(), deadline).await?;
        // Under `unshare` or bubblewrap the agent's own exec happens in the wrapper, which
        // reports a busy executable (ETXTBSY) as exit status 126 (bubblewrap: 1, with
        // `execvp`); nothing of the agent ran, so it is tried again as a direct start
        // would be.
        let busy = match isolation {
            crate::isolation::Isolation::Unisolated => false,
            crate::isolation::Isolation::Sandbox => {
                output.stderr.contains("bwrap: execvp") && output.stderr.contains("Text file busy")
            }
            crate::isolation::Isolation::PidNamespace { .. } => {
                output.status.code() == Some(126) && output.stderr.contains("Text file busy")
            }
        };
        if busy && attempt < SPAWN_ATTEMPTS {
            tracing::warn!(attempt, "the agent's executable is busy; trying again");
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
            continue;
        }
        return Ok(output);
    }
}

/// Starts `command`, feeds it `input`, and collects its output within the cap. At
/// `deadline` the agent is killed and what it printed until then is returned as a timed-out
/// [`RunnerError`].
async fn run_started(
    command: &mut Command,
    program: &str,
    input: Vec<u8>,
    deadline: Option<tokio::time::Instant>,
) -> Result<ProcessOutput, RunnerError> {
    let mut child = spawn_with_retries(command)
        .await
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
        Ok::<(), RunnerError>(())
    };
    let mut stdout_bytes = Vec::new();
    let mut stderr_bytes = Vec::new();
    let finished = {
        let wait = async {
            child.wait().await.map_err(|error| {
                RunnerError::failed(format!("waiting for `{program}` failed: {error}"))
            })
        };
        // The first failure (output past the cap) ends the run at once: returning drops the
        // child and the group guard, which kill the agent, rather than waiting for its
        // timeout.
        let run = async {
            tokio::try_join!(
                write_input,
                read_bounded(stdout.as_mut(), &mut stdout_bytes),
                read_bounded(stderr.as_mut(), &mut stderr_bytes),
                wait
            )
        };
        match deadline {
            Some(deadline) => tokio::select! {
                outcome = run => Some(outcome),
                () = tokio::time::sleep_until(deadline) => None,
            },
            None => Some(run.await),
        }
    };
    let stdout = String::from_utf8_lossy(&stdout_bytes).into_owned();
    let stderr = String::from_utf8_lossy(&stderr_bytes).into_owned();
    match finished {
        Some(outcome) => {
            let ((), (), (), status) = outcome?;
            Ok(ProcessOutput {
                status,
                stdout,
                stderr,
            })
        }
        None => Err(RunnerError {
            message: stderr_tail(&stderr),
            raw_output: (!stdout.is_empty()).then_some(stdout),
            usage: None,
            timed_out: true,
        }),
    }
}

/// How often a start that failed for a passing reason is tried again, and the pause
/// before the first retry (doubled each time).
const SPAWN_ATTEMPTS: u32 = 5;
const SPAWN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(25);

/// Starts `command`, trying again when the failure passes by itself: the executable is
/// still open for writing somewhere (ETXTBSY: an agent installed or updated a moment ago,
/// or its file descriptor inherited by a process forked meanwhile), or the system is
/// briefly out of processes (EAGAIN). Other failures, like a missing executable, are
/// returned at once.
async fn spawn_with_retries(command: &mut Command) -> std::io::Result<tokio::process::Child> {
    let mut pause = SPAWN_RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match command.spawn() {
            Err(error)
                if attempt < SPAWN_ATTEMPTS
                    && matches!(error.raw_os_error(), Some(libc::ETXTBSY | libc::EAGAIN)) =>
            {
                tracing::warn!(%error, attempt, "could not start the agent yet; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
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

/// Reads `reader` to its end into `buffer`, which holds what was read even when the read
/// is abandoned half-way (at the deadline).
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(
    reader: Option<&mut R>,
    buffer: &mut Vec<u8>,
) -> Result<(), RunnerError> {
    let Some(reader) = reader else {
        return Ok(());
    };
    let mut limited = reader.take(MAXIMUM_OUTPUT_BYTES as u64 + 1);
    limited.read_to_end(buffer).await.map_err(|error| {
        RunnerError::failed(format!("reading the agent's output failed: {error}"))
    })?;
    if buffer.len() > MAXIMUM_OUTPUT_BYTES {
        return Err(RunnerError::failed(format!(
            "the agent printed more than {} MiB; refusing to buffer it",
            MAXIMUM_OUTPUT_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

/// The last lines of an agent's stderr, for an error message, with terminal escapes (the
/// CLIs colour their warnings) removed so they never reach a report.
pub(crate) fn stderr_tail(stderr: &str) -> String {
    let plain = strip_ansi_escapes::strip_str(stderr);
    let lines: Vec<&str> = plain
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
pub(crate) struct ProcessGroupGuard(pub(crate) u32);

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

    /// An executable still open for writing cannot start (ETXTBSY); once the writer closes
    /// it, the retry starts it.
    #[tokio::test]
    async fn an_executable_busy_for_a_moment_starts_on_a_retry() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("agent.sh");
        let mut writer = std::fs::File::create(&path).unwrap();
        writer
            .write_all(b"#!/bin/sh\ncat >/dev/null\necho started\n")
            .unwrap();
        writer.flush().unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = path.display().to_string();
        let busy = Command::new(&program).spawn().map(|_| ()).unwrap_err();
        assert_eq!(busy.raw_os_error(), Some(libc::ETXTBSY), "{busy}");

        let closer = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
            drop(writer);
        });
        let output = run_agent_process(AgentProcess {
            program: &program,
            arguments: &[],
            stdin: b"input".to_vec(),
            environment: Vec::new(),
            inherited: &[],
            worktree: None,
            writable: Vec::new(),
            deadline: None,
        })
        .await
        .map_err(|error| error.message)
        .unwrap();
        closer.await.unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout, "started\n");
    }

    #[tokio::test]
    async fn a_missing_executable_is_named() {
        let error = run_agent_process(AgentProcess {
            program: "/nonexistent/agent",
            arguments: &[],
            stdin: Vec::new(),
            environment: Vec::new(),
            inherited: &[],
            worktree: None,
            writable: Vec::new(),
            deadline: None,
        })
        .await
        .err()
        .unwrap();
        assert!(
            error
                .message
                .contains("could not start `/nonexistent/agent`"),
            "{}",
            error.message
        );
    }

    /// An agent that floods its output is killed when it passes the cap, not left to run
    /// until its timeout.
    #[tokio::test]
    async fn output_past_the_cap_ends_the_run_at_once() {
        let arguments = vec!["-c".to_string(), "yes flood".to_string()];
        let run = run_agent_process(AgentProcess {
            program: "sh",
            arguments: &arguments,
            stdin: Vec::new(),
            environment: Vec::new(),
            inherited: &[],
            worktree: None,
            writable: Vec::new(),
            deadline: None,
        });
        // Far longer than flooding the cap takes: reaching it means nothing killed the agent.
        let error = tokio::time::timeout(std::time::Duration::from_secs(120), run)
            .await
            .expect("the flooding agent was not stopped at the cap")
            .err()
            .expect("an error");
        assert!(
            error.message.contains("more than 32 MiB"),
            "{}",
            error.message
        );
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
