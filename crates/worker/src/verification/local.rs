//! Verification in a bubblewrap sandbox on the worker's machine.
//!
//! Each run unpacks the head commit into a folder of its own, adds the reproduction, and
//! runs the command under `bwrap` with every namespace unshared (so no network), the
//! system read-only, the worker's home, temporary and scratch folders empty, a cleared
//! environment, and rlimits on address space, CPU time, file size and core dumps. The
//! folder is removed afterwards. Without a working bubblewrap the backend refuses to start:
//! a check must never run with the worker's files and network in reach.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use async_trait::async_trait;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

use super::{
    limit_name, output_excerpt, RunEvidence, VerificationBackend, VerificationError,
    VerificationRun, VerificationSettings,
};

const BACKEND: &str = "local";

/// Environment every run gets besides what the operator lets it inherit.
const BASE_ENVIRONMENT: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// Largest file a run may write: enough for a build, not enough to fill the disk.
const FILE_SIZE_LIMIT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The local sandbox backend.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    readable: Vec<PathBuf>,
    writable: Vec<PathBuf>,
    inherited: Vec<String>,
}

impl LocalBackend {
    /// The backend for `settings`; an error when bubblewrap cannot sandbox here.
    pub fn new(settings: &VerificationSettings) -> Result<Self, VerificationError> {
        if !crate::isolation::verification_sandbox_works() {
            return Err(VerificationError::Configuration(
                "backend = \"local\" needs bubblewrap (`bwrap`) able to create every namespace \
                 (user, PID, network, mount); install it (Debian: bubblewrap) or use \
                 backend = \"kubernetes\""
                    .to_string(),
            ));
        }
        Ok(LocalBackend {
            readable: settings.readable_paths.clone(),
            writable: settings.writable_paths.clone(),
            inherited: settings.inherit_environment.clone(),
        })
    }

    fn failed(reason: impl std::fmt::Display) -> VerificationError {
        VerificationError::Backend {
            backend: BACKEND,
            reason: reason.to_string(),
        }
    }
}

#[async_trait]
impl VerificationBackend for LocalBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn run(&self, run: VerificationRun<'_>) -> Result<RunEvidence, VerificationError> {
        let folder = tempfile::Builder::new()
            .prefix("deep-review-verify-")
            .tempdir()
            .map_err(|error| Self::failed(format!("no folder for the run: {error}")))?;
        let root = folder
            .path()
            .canonicalize()
            .map_err(|error| Self::failed(format!("no folder for the run: {error}")))?;
        let source = root.join("source");
        let home = root.join("home");
        let temporary = root.join("tmp");
        for directory in [&source, &home, &temporary] {
            std::fs::create_dir_all(directory).map_err(|error| {
                Self::failed(format!("could not create {}: {error}", directory.display()))
            })?;
        }
        let unpacked = Command::new("tar")
            .arg("-xzf")
            .arg(run.source_archive)
            .arg("-C")
            .arg(&source)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|error| Self::failed(format!("could not start tar: {error}")))?;
        if !unpacked.status.success() {
            return Err(Self::failed(format!(
                "could not unpack the head commit: {}",
                String::from_utf8_lossy(&unpacked.stderr).trim()
            )));
        }
        if let Some((path, content)) = run.extra_file {
            let destination = source.join(path);
            if let Some(parent) = destination.parent() {
                std::fs::create_dir_all(parent).map_err(|error| {
                    Self::failed(format!("could not create {}: {error}", parent.display()))
                })?;
            }
            std::fs::write(&destination, content).map_err(|error| {
                Self::failed(format!("could not write the proposed test: {error}"))
            })?;
        }
        // Interleaved as the reader would see them on a terminal.
        let script = format!("exec 2>&1\n{}", run.command);
        let arguments = crate::isolation::verification_sandbox(
            &root,
            &source,
            &self.readable,
            &self.writable,
            &script,
        );
        let mut command = Command::new("bwrap");
        command
            .args(&arguments)
            .env_clear()
            .envs(
                BASE_ENVIRONMENT
                    .iter()
                    .copied()
                    .chain(self.inherited.iter().map(String::as_str))
                    .filter_map(|name| {
                        std::env::var_os(name).map(|value| (name.to_string(), value))
                    }),
            )
            .env("HOME", &home)
            .env("TMPDIR", &temporary)
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let memory = run.limits.memory_bytes;
        let cpu_seconds = run.limits.cpu_time.as_secs().max(1);
        // SAFETY: only async-signal-safe setrlimit calls between fork and exec; the limits
        // are inherited by bubblewrap and everything the check starts.
        unsafe {
            command.pre_exec(move || {
                set_limit(libc::RLIMIT_AS, memory)?;
                // SIGXCPU at the soft limit, which tells this limit from other kills;
                // SIGKILL a second later for a check that ignores it.
                set_limits(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1)?;
                set_limit(libc::RLIMIT_FSIZE, FILE_SIZE_LIMIT_BYTES)?;
                set_limit(libc::RLIMIT_CORE, 0)?;
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|error| Self::failed(format!("could not start bwrap: {error}")))?;
        let _group = child.id().map(crate::command::ProcessGroupGuard);
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let limit = run.limits.output_bytes;
        let mut kept: Vec<u8> = Vec::new();
        let mut left_out = 0usize;
        let mut sandbox_errors = Vec::new();
        let read_output = async {
            let mut chunk = vec![0u8; 8192];
            if let Some(stdout) = stdout.as_mut() {
                loop {
                    match stdout.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            kept.extend_from_slice(&chunk[..read]);
                            // Keep only the end; trim in large steps to stay cheap.
                            if kept.len() > 2 * limit {
                                let excess = kept.len() - limit;
                                kept.drain(..excess);
                                left_out += excess;
                            }
                        }
                    }
                }
            }
        };
        let read_errors = async {
            if let Some(stderr) = stderr.as_mut() {
                let _ignored = stderr
                    .take(64 * 1024)
                    .read_to_end(&mut sandbox_errors)
                    .await;
            }
        };
        let finished = tokio::time::timeout(run.limits.timeout, async {
            tokio::join!(read_output, read_errors);
            child.wait().await
        })
        .await;
        let duration = started.elapsed();
        let (exit_code, stopped_by) = match finished {
            Err(_) => (None, Some(limit_name(run.limits.timeout, "time"))),
            Ok(Err(error)) => {
                return Err(Self::failed(format!("waiting for the run failed: {error}")))
            }
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt as _;
                match (status.code(), status.signal()) {
                    // The shell reports a command the CPU limit stopped as 128 + SIGXCPU.
                    (Some(code), _) if code == 128 + libc::SIGXCPU => {
                        (None, Some(limit_name(run.limits.cpu_time, "CPU time")))
                    }
                    (Some(code), _) => (Some(code), None),
                    (None, Some(libc::SIGXCPU)) => {
                        (None, Some(limit_name(run.limits.cpu_time, "CPU time")))
                    }
                    (None, Some(signal)) => (None, Some(format!("signal {signal}"))),
                    (None, None) => (None, None),
                }
            }
        };
        let errors = String::from_utf8_lossy(&sandbox_errors);
        if errors.contains("bwrap:") {
            return Err(Self::failed(format!(
                "the sandbox did not start: {}",
                errors.trim()
            )));
        }
        let mut output = output_excerpt(&kept, left_out, limit);
        if exit_code.is_some_and(|code| code != 0) && output.contains("memory allocation") {
            output.push_str(&format!(
                "\n(the run may have reached its {} MiB memory limit)",
                run.limits.memory_bytes / (1024 * 1024)
            ));
        }
        Ok(RunEvidence {
            exit_code,
            stopped_by,
            output,
            duration,
        })
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    set_limits(resource, value, value)
}

fn set_limits(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    if unsafe { libc::setrlimit(resource, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
