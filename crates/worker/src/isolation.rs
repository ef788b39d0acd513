//! Keeping agent processes away from the worker's secrets.
//!
//! An agent is started with a cleared environment, but the worker's own environment (its
//! GitHub token, API keys, the broker password) stays readable in `/proc/<worker>/environ`
//! to any process of the same user. Two defences:
//! - the worker marks itself non-dumpable, so processes of its user that lack
//!   `CAP_SYS_PTRACE` (every agent of a non-root deployment) cannot read its `/proc` files;
//! - each agent runs in its own PID namespace (`unshare --pid --mount-proc`, inside a user
//!   namespace when the worker is not root), so `/proc` shows the agent only its own
//!   processes, even when the worker runs as root.
//!
//! The agent keeps the network (its model API) and the filesystem (its CLI installation and
//! the checkout); see `docs/security.md` for what each runner can reach.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// How agent processes are isolated from the worker's other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentIsolation {
    /// A PID namespace where the machine allows one, otherwise none (with a warning).
    #[default]
    Auto,
    /// A PID namespace, or the worker refuses to start.
    PidNamespace,
    /// None: agents see every process of their user.
    None,
}

/// What this process does for each agent, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// `unshare` with a new PID namespace; inside a user namespace too when not root.
    PidNamespace { user_namespace: bool },
    /// Agents run as plain child processes.
    Unisolated,
}

static CHOSEN: OnceLock<Isolation> = OnceLock::new();

/// Decides the isolation for this process's agents from `mode` (probing what the machine
/// allows) and makes the process non-dumpable. Call once at start; the first decision
/// stands. An error when `mode` demands a namespace the machine cannot give.
pub fn configure_agent_isolation(mode: AgentIsolation) -> Result<Isolation, String> {
    protect_process();
    let wanted = decide(mode)?;
    Ok(*CHOSEN.get_or_init(|| wanted))
}

/// The isolation in force: as configured, or what `Auto` finds.
pub(crate) fn isolation() -> Isolation {
    *CHOSEN.get_or_init(|| decide(AgentIsolation::Auto).unwrap_or(Isolation::Unisolated))
}

fn decide(mode: AgentIsolation) -> Result<Isolation, String> {
    match mode {
        AgentIsolation::None => Ok(Isolation::Unisolated),
        AgentIsolation::PidNamespace | AgentIsolation::Auto => match probe() {
            Some(isolation) => Ok(isolation),
            None if mode == AgentIsolation::PidNamespace => Err(
                "agent_isolation = \"pid-namespace\", but `unshare --pid` does not work here \
                 (util-linux missing, or user namespaces disabled)"
                    .to_string(),
            ),
            None => {
                tracing::warn!("agents cannot get their own PID namespace here (`unshare` missing or namespaces disabled); they run as plain child processes");
                Ok(Isolation::Unisolated)
            }
        },
    }
}

/// Whether `unshare` can give a process its own PID namespace here.
fn probe() -> Option<Isolation> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let candidates: &[bool] = if root { &[false, true] } else { &[true] };
    candidates.iter().copied().find_map(|user_namespace| {
        let isolation = Isolation::PidNamespace { user_namespace };
        let (program, arguments) = wrap(isolation, Path::new("true"), &[]);
        let works = std::process::Command::new(program)
            .args(arguments)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        works.then_some(isolation)
    })
}

/// The program and arguments that run `program` with `arguments` under `isolation`.
pub(crate) fn wrap(
    isolation: Isolation,
    program: &Path,
    arguments: &[String],
) -> (PathBuf, Vec<String>) {
    match isolation {
        Isolation::Unisolated => (program.to_path_buf(), arguments.to_vec()),
        Isolation::PidNamespace { user_namespace } => {
            let mut wrapped: Vec<String> = Vec::new();
            if user_namespace {
                wrapped.extend(["--user".to_string(), "--map-root-user".to_string()]);
            }
            wrapped.extend(
                ["--pid", "--fork", "--mount-proc", "--kill-child", "--"]
                    .into_iter()
                    .map(str::to_string),
            );
            wrapped.push(program.display().to_string());
            wrapped.extend(arguments.iter().cloned());
            (PathBuf::from("unshare"), wrapped)
        }
    }
}

/// `program` as a path to an executable file, searched in `PATH` when it names no
/// directory, so a missing agent is reported as missing rather than as a failure of the
/// `unshare` wrapper.
pub(crate) fn resolve_program(program: &str) -> std::io::Result<PathBuf> {
    let executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    };
    let not_found = || {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such executable file (or it is not executable)",
        )
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if executable(&path) {
            Ok(path)
        } else {
            Err(not_found())
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|directory| directory.join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(not_found)
}

/// Makes this process non-dumpable: processes of the same user without `CAP_SYS_PTRACE`
/// can then no longer read its `/proc/<pid>/environ` or memory. Children reset this when
/// they exec, so it binds only the worker.
fn protect_process() {
    // SAFETY: PR_SET_DUMPABLE with 0 takes no pointers and only changes this process's
    // dumpable flag.
    let outcome = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if outcome != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not make the process non-dumpable");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_puts_the_agent_after_the_unshare_flags() {
        let (program, arguments) = wrap(
            Isolation::PidNamespace {
                user_namespace: true,
            },
            Path::new("/usr/bin/agent"),
            &["--fast".to_string()],
        );
        assert_eq!(program, PathBuf::from("unshare"));
        assert_eq!(
            arguments.join(" "),
            "--user --map-root-user --pid --fork --mount-proc --kill-child -- /usr/bin/agent --fast"
        );
        let (program, arguments) = wrap(Isolation::Unisolated, Path::new("agent"), &[]);
        assert_eq!((program, arguments), (PathBuf::from("agent"), Vec::new()));
    }

    #[test]
    fn programs_resolve_through_path_or_not_at_all() {
        assert!(resolve_program("sh").is_ok_and(|path| path.is_absolute()));
        assert!(resolve_program("/nonexistent/agent").is_err());
        assert!(resolve_program("no-such-agent-anywhere").is_err());
    }

    #[test]
    fn the_process_becomes_non_dumpable() {
        protect_process();
        // SAFETY: PR_GET_DUMPABLE takes no pointers.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }
}
