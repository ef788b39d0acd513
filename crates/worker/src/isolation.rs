//! Keeping agent processes away from the worker's secrets.
//!
//! An agent is started with a cleared environment, but the worker's own environment (its
//! GitHub token, API keys, the broker password) stays readable in `/proc/<worker>/environ`
//! to any process of the same user. Two defences:
//! - the worker marks itself non-dumpable, so processes of its user that lack
//!   `CAP_SYS_PTRACE` (every agent of a non-root deployment) cannot read its `/proc` files;
//! - each agent runs in its own PID namespace, so `/proc` shows the agent only its own
//!   processes, even when the worker runs as root.
//!
//! Where bubblewrap works, the agent also gets a filesystem of its own (the sandbox): the
//! system read-only, and empty in place of the temporary directory, the worker's home and
//! its scratch directory (other reviews' checkouts, the mirrors), with only what the agent
//! needs mounted back: its checkout and run directory writable, its checkout's git
//! directory and its own installation read-only. Without bubblewrap, `unshare` gives the
//! PID namespace alone (inside a user namespace when the worker is not root).
//!
//! The agent keeps the network (its model API); see `docs/security.md` for what each
//! runner can reach.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// How agent processes are isolated from the worker's other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentIsolation {
    /// The sandbox where bubblewrap works, else a PID namespace where the machine allows
    /// one, else none (with a warning).
    #[default]
    Auto,
    /// The sandbox (bubblewrap), or the worker refuses to start.
    Sandbox,
    /// A PID namespace, or the worker refuses to start.
    PidNamespace,
    /// None: agents see every process of their user.
    None,
}

/// What this process does for each agent, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// bubblewrap: a PID namespace and a filesystem view of the agent's own.
    Sandbox,
    /// `unshare` with a new PID namespace; inside a user namespace too when not root.
    PidNamespace { user_namespace: bool },
    /// Agents run as plain child processes.
    Unisolated,
}

static CHOSEN: OnceLock<Isolation> = OnceLock::new();

/// The operator's part of what the sandbox shows, set once at start.
static FOLDERS: OnceLock<SandboxFolders> = OnceLock::new();

/// What the sandbox hides and mounts back besides each agent's own folders.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxFolders {
    /// Where checkouts and mirrors go: emptied like the temporary directory and the
    /// worker's home, but for each agent's own checkout.
    pub scratch_directory: PathBuf,
    /// Folders every agent may read though they lie in an emptied one.
    pub readable: Vec<PathBuf>,
    /// Folders every agent may write (shared caches).
    pub writable: Vec<PathBuf>,
}

/// Decides the isolation for this process's agents from `mode` (probing what the machine
/// allows) and makes the process non-dumpable. Call once at start; the first decision
/// stands. `folders` says what sandboxed agents find emptied and mounted back. An error
/// when `mode` demands an isolation the machine cannot give.
pub fn configure_agent_isolation(
    mode: AgentIsolation,
    folders: SandboxFolders,
) -> Result<Isolation, String> {
    protect_process();
    let _first = FOLDERS.set(folders);
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
        AgentIsolation::Sandbox => works(Isolation::Sandbox)
            .then_some(Isolation::Sandbox)
            .ok_or_else(|| {
                "agent_isolation = \"sandbox\", but bubblewrap (`bwrap`) is missing or cannot \
             create namespaces here"
                    .to_string()
            }),
        AgentIsolation::Auto if works(Isolation::Sandbox) => Ok(Isolation::Sandbox),
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
    candidates
        .iter()
        .map(|&user_namespace| Isolation::PidNamespace { user_namespace })
        .find(|&isolation| works(isolation))
}

/// Whether `true` runs under `isolation` here.
fn works(isolation: Isolation) -> bool {
    let (program, arguments) = wrap(
        isolation,
        Path::new("true"),
        &[],
        &FilesystemView::default(),
    );
    std::process::Command::new(program)
        .args(arguments)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What a sandboxed agent sees of the filesystem besides the read-only system.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct FilesystemView {
    /// Mounted back writable: its checkout or empty directory, its run directory, config
    /// homes the operator gave its CLI.
    pub writable: Vec<PathBuf>,
    /// Mounted back read-only: its checkout's git directory, its own installation.
    pub readable: Vec<PathBuf>,
    /// Its working directory.
    pub working_directory: Option<PathBuf>,
}

impl FilesystemView {
    /// What an agent started as `program` needs: `writable` folders, and read-only its
    /// installation, the `PATH` folders it may run tools from, and the git directory of
    /// its checkout, where any of them lies in a hidden folder.
    pub(crate) fn for_agent(
        program: &Path,
        working_directory: Option<&Path>,
        writable: Vec<PathBuf>,
    ) -> FilesystemView {
        let hidden = hidden_folders();
        let is_hidden = |path: &Path| hidden.iter().any(|folder| path.starts_with(folder));
        let operator = FOLDERS.get().cloned().unwrap_or_default();
        let mut writable = writable;
        writable.extend(
            operator
                .writable
                .iter()
                .filter(|path| path.is_dir())
                .cloned(),
        );
        let mut readable: Vec<PathBuf> = operator
            .readable
            .iter()
            .filter(|path| path.exists())
            .cloned()
            .collect();
        if let Ok(real) = program.canonicalize() {
            // An npm-installed CLI needs its whole `node_modules`, a plain one its folder.
            let installation = real
                .ancestors()
                .filter(|ancestor| {
                    ancestor
                        .file_name()
                        .is_some_and(|name| name == "node_modules")
                })
                .last()
                .or_else(|| real.parent())
                .map(Path::to_path_buf);
            readable.extend(installation);
        }
        readable.extend(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .filter(|folder| folder.is_dir()),
        );
        if let Some(git_directory) = working_directory.and_then(worktree_git_directory) {
            readable.push(git_directory);
        }
        readable.retain(|path| is_hidden(path));
        readable.sort();
        readable.dedup();
        FilesystemView {
            writable,
            readable,
            working_directory: working_directory.map(Path::to_path_buf),
        }
    }
}

/// The folders a sandboxed agent finds empty: the temporary directory, the worker's home
/// and its scratch directory.
fn hidden_folders() -> Vec<PathBuf> {
    let mut folders = vec![std::env::temp_dir()];
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        if home.is_absolute() && home != Path::new("/") {
            folders.push(home);
        }
    }
    folders.extend(
        FOLDERS
            .get()
            .map(|folders| folders.scratch_directory.clone()),
    );
    folders
        .into_iter()
        .filter_map(|folder| folder.canonicalize().ok())
        .filter(|folder| folder != Path::new("/"))
        .collect()
}

/// The repository's git directory behind a linked worktree (its `.git` file names
/// `<git directory>/worktrees/<name>`), or the checkout's own `.git` folder.
fn worktree_git_directory(worktree: &Path) -> Option<PathBuf> {
    let marker = worktree.join(".git");
    if marker.is_dir() {
        return marker.canonicalize().ok();
    }
    let text = std::fs::read_to_string(&marker).ok()?;
    let linked = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    let linked = if linked.is_absolute() {
        linked
    } else {
        worktree.join(linked)
    };
    // `<git directory>/worktrees/<name>`: the common directory holds the objects.
    let common = linked.parent()?.parent()?;
    common.canonicalize().ok()
}

/// The program and arguments that run `program` with `arguments` under `isolation`; a
/// sandboxed one sees the filesystem as `view` says.
pub(crate) fn wrap(
    isolation: Isolation,
    program: &Path,
    arguments: &[String],
    view: &FilesystemView,
) -> (PathBuf, Vec<String>) {
    match isolation {
        Isolation::Unisolated => (program.to_path_buf(), arguments.to_vec()),
        Isolation::Sandbox => {
            let mut wrapped = bubblewrap_base(&["--unshare-pid"]);
            let mut mount = |operation: &str, path: &Path| mount(&mut wrapped, operation, path);
            // Later mounts go on top of earlier ones: first empty the hidden folders,
            // then mount back what the agent needs.
            for folder in hidden_folders() {
                mount("--tmpfs", &folder);
            }
            for path in &view.readable {
                mount("--ro-bind", path);
            }
            for path in &view.writable {
                mount("--bind", path);
            }
            if let Some(directory) = &view.working_directory {
                wrapped.extend(["--chdir".to_string(), directory.display().to_string()]);
            }
            wrapped.push("--".to_string());
            wrapped.push(program.display().to_string());
            wrapped.extend(arguments.iter().cloned());
            (PathBuf::from("bwrap"), wrapped)
        }
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

/// Adds a bubblewrap mount of `path` at the same place (`--tmpfs` takes the path once).
/// The start of every bubblewrap command line: die with the worker, `isolation` (which
/// namespaces to unshare), the system read-only, and fresh `/proc` and `/dev`.
fn bubblewrap_base(isolation: &[&str]) -> Vec<String> {
    let mut arguments = vec!["--die-with-parent".to_string()];
    arguments.extend(isolation.iter().map(|argument| argument.to_string()));
    arguments.extend(
        ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
            .into_iter()
            .map(str::to_string),
    );
    arguments
}

fn mount(arguments: &mut Vec<String>, operation: &str, path: &Path) {
    let path = path.display().to_string();
    arguments.extend([operation.to_string(), path.clone()]);
    if operation != "--tmpfs" {
        arguments.push(path);
    }
}

/// The bubblewrap arguments that run `sh -c script` as a verification: like an agent's
/// sandbox, but with every namespace unshared (no network, no view of the host's
/// processes or IPC), nothing of the worker mounted back but `PATH` folders and the
/// operator's `readable` / `writable` folders, and `directory` (a fresh copy of the head
/// commit and its home and temporary folders) as the only place to write.
pub(crate) fn verification_sandbox(
    directory: &Path,
    working_directory: &Path,
    readable: &[PathBuf],
    writable: &[PathBuf],
    script: &str,
) -> Vec<String> {
    let hidden = hidden_folders();
    let is_hidden = |path: &Path| hidden.iter().any(|folder| path.starts_with(folder));
    let mut arguments = bubblewrap_base(&["--new-session", "--unshare-all"]);
    let mut mount = |operation: &str, path: &Path| mount(&mut arguments, operation, path);
    for folder in &hidden {
        mount("--tmpfs", folder);
    }
    let mut back: Vec<PathBuf> = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .filter(|folder| folder.is_dir())
        .chain(readable.iter().filter(|path| path.exists()).cloned())
        .filter_map(|path| path.canonicalize().ok())
        .filter(|path| is_hidden(path))
        .collect();
    back.sort();
    back.dedup();
    for path in &back {
        mount("--ro-bind", path);
    }
    for path in writable.iter().filter(|path| path.is_dir()) {
        mount("--bind", path);
    }
    mount("--bind", directory);
    arguments.extend([
        "--chdir".to_string(),
        working_directory.display().to_string(),
        "--".to_string(),
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
    ]);
    arguments
}

/// Whether bubblewrap can start a verification sandbox here (every namespace unshared).
pub(crate) fn verification_sandbox_works() -> bool {
    let Ok(directory) = tempfile::tempdir() else {
        return false;
    };
    std::process::Command::new("bwrap")
        .args(verification_sandbox(
            directory.path(),
            directory.path(),
            &[],
            &[],
            "true",
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
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
            &FilesystemView::default(),
        );
        assert_eq!(program, PathBuf::from("unshare"));
        assert_eq!(
            arguments.join(" "),
            "--user --map-root-user --pid --fork --mount-proc --kill-child -- /usr/bin/agent --fast"
        );
        let (program, arguments) = wrap(
            Isolation::Unisolated,
            Path::new("agent"),
            &[],
            &FilesystemView::default(),
        );
        assert_eq!((program, arguments), (PathBuf::from("agent"), Vec::new()));
    }

    #[test]
    fn the_sandbox_empties_hidden_folders_before_mounting_back_what_the_agent_needs() {
        let view = FilesystemView {
            writable: vec![PathBuf::from("/tmp/scratch/review-1/checkout")],
            readable: vec![PathBuf::from("/tmp/scratch/mirrors/a.git")],
            working_directory: Some(PathBuf::from("/tmp/scratch/review-1/checkout")),
        };
        let (program, arguments) = wrap(
            Isolation::Sandbox,
            Path::new("/usr/bin/agent"),
            &["-v".into()],
            &view,
        );
        assert_eq!(program, PathBuf::from("bwrap"));
        let line = arguments.join(" ");
        assert!(
            line.starts_with("--die-with-parent --unshare-pid --ro-bind / / "),
            "{line}"
        );
        let position = |needle: &str| {
            line.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {line}"))
        };
        let temporary = std::env::temp_dir().canonicalize().unwrap();
        let hidden = position(&format!("--tmpfs {}", temporary.display()));
        let readable = position("--ro-bind /tmp/scratch/mirrors/a.git /tmp/scratch/mirrors/a.git");
        let writable =
            position("--bind /tmp/scratch/review-1/checkout /tmp/scratch/review-1/checkout");
        assert!(hidden < readable && readable < writable, "{line}");
        assert!(
            line.ends_with("--chdir /tmp/scratch/review-1/checkout -- /usr/bin/agent -v"),
            "{line}"
        );
    }

    #[test]
    fn a_linked_worktree_leads_to_its_repository_git_directory() {
        let repository = tempfile::tempdir().unwrap();
        let git_directory = repository.path().join(".git");
        std::fs::create_dir_all(git_directory.join("worktrees/review-1")).unwrap();
        let checkout = tempfile::tempdir().unwrap();
        std::fs::write(
            checkout.path().join(".git"),
            format!(
                "gitdir: {}\n",
                git_directory.join("worktrees/review-1").display()
            ),
        )
        .unwrap();
        assert_eq!(
            worktree_git_directory(checkout.path()),
            Some(git_directory.canonicalize().unwrap())
        );
        assert_eq!(
            worktree_git_directory(repository.path()),
            Some(git_directory.canonicalize().unwrap()),
            "a plain clone's own .git"
        );
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
