//! Helpers: temporary git repositories and running the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use deep_review_protocol::Report;

/// A throwaway git repository.
pub struct GitRepo {
    directory: tempfile::TempDir,
}

impl GitRepo {
    /// An empty repository on branch `main` with a committer configured.
    pub fn new() -> Self {
        let directory = tempfile::tempdir().expect("temporary directory");
        let repository = GitRepo { directory };
        repository.git(&["init", "-q", "-b", "main"]);
        repository.git(&["config", "user.email", "dev@example.com"]);
        repository.git(&["config", "user.name", "Dev Eloper"]);
        repository.git(&["config", "commit.gpgsign", "false"]);
        repository
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        self.directory.path()
    }

    /// Writes `content` to `relative`, creating directories.
    pub fn write(&self, relative: &str, content: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create directories");
        std::fs::write(path, content).expect("write file");
    }

    /// Commits everything and returns the new head SHA.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Runs git and returns its stdout; panics on failure.
    pub fn git(&self, arguments: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(arguments)
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// Runs `deep-review` with `arguments`, with no DEEP_REVIEW_* variables of the caller.
pub fn deep_review(arguments: &[&str]) -> Output {
    deep_review_with(arguments, &[], None)
}

/// Runs `deep-review` with extra environment and optional stdin.
pub fn deep_review_with(
    arguments: &[&str],
    environment: &[(&str, &str)],
    stdin: Option<&str>,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deep-review"));
    command.args(arguments);
    for (name, _) in std::env::vars() {
        if name.starts_with("DEEP_REVIEW_") {
            command.env_remove(name);
        }
    }
    command.envs(environment.iter().copied());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("start deep-review");
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for deep-review")
}

/// Asserts success and returns stdout.
pub fn expect_success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "deep-review failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Reads `report.json` from `directory`.
pub fn read_report(directory: &Path) -> Report {
    let text = std::fs::read_to_string(directory.join("report.json")).expect("report.json written");
    serde_json::from_str(&text).expect("report.json parses as a Report")
}

/// A fixture's absolute path.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// A repository whose head commit adds files with known problems at known lines.
pub fn repository_with_known_problems() -> (GitRepo, String) {
    let repository = GitRepo::new();
    repository.write("README.md", "# Shop\n");
    let base = repository.commit("initial");
    repository.write(
        "app/service.py",
        "import billing\n\nRETRIES = 3\n\ndef charge(order):\n    try:\n        billing.charge(order)\n    except Exception:\n        pass\n    breakpoint()\n    return order\n",
    );
    repository.write(
        "src/lib.rs",
        "pub fn parse(input: &str) -> u32 {\n    // TODO: validate input\n    input.trim().parse().unwrap()\n}\n",
    );
    repository.write(
        "web/app.js",
        "export function load(url) {\n  try {\n    return fetch(url);\n  } catch (error) {\n  }\n  console.log(\"loaded\", url);\n}\n",
    );
    repository.write(
        "config/settings.toml",
        "[aws]\naws_access_key_id = \"AKIAQWERTYUIOPASDFGH\"\n",
    );
    repository.write(
        "pkg/sync.go",
        "package pkg\n\nfunc Sync() {\n\tif err := push(); err != nil {\n\t\tlog.Printf(\"push failed: %v\", err)\n\t}\n\tcommit()\n}\n",
    );
    repository.write(
        "docs/notes.md",
        "# Notes\n\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> topic\n",
    );
    repository.commit("Add billing, parser, loader and sync");
    (repository, base)
}

/// Reviews the known-problems repository into `out`, with `extra` arguments (before the
/// subcommand when `global`), and returns the repository and the command's output.
pub fn review_known_problems(
    out: &Path,
    global: &[&str],
    extra: &[&str],
    environment: &[(&str, &str)],
) -> (GitRepo, Output) {
    let (repository, base) = repository_with_known_problems();
    let repository_path = repository.path().to_str().expect("utf-8 path").to_string();
    let out_path = out.to_str().expect("utf-8 path").to_string();
    let mut arguments: Vec<&str> = global.to_vec();
    arguments.extend([
        "review",
        "--repo",
        &repository_path,
        "--base",
        &base,
        "--out",
        &out_path,
    ]);
    arguments.extend(extra);
    let output = deep_review_with(&arguments, environment, None);
    (repository, output)
}

/// A prefix no other test (or test run) uses, for queue and key names.
pub fn unique_prefix(purpose: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!("dr-test-{purpose}-{}-{nanos}", std::process::id())
}

/// The RabbitMQ and Redis the tests use; `.ci/run` (scripts/services.sh) starts them.
pub struct Services;

impl Services {
    /// Checks both are reachable, with a clear message when not.
    pub fn ensure() -> Self {
        for (name, address) in [("Redis", "127.0.0.1:6379"), ("RabbitMQ", "127.0.0.1:5672")] {
            std::net::TcpStream::connect_timeout(
                &address.parse().expect("address"),
                std::time::Duration::from_secs(2),
            )
            .unwrap_or_else(|error| {
                panic!("{name} is not reachable at {address} ({error}); run scripts/services.sh")
            });
        }
        Services
    }

    /// The broker URL.
    pub fn amqp_url(&self) -> String {
        "amqp://guest:guest@127.0.0.1:5672/%2f".to_string()
    }

    /// The Redis URL.
    pub fn redis_url(&self) -> String {
        "redis://127.0.0.1:6379/".to_string()
    }

    /// Deletes every key under `prefix`.
    pub async fn cleanup_redis(&self, prefix: &str) {
        let client = redis::Client::open(self.redis_url()).expect("redis client");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut connection)
            .await
            .expect("KEYS");
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut connection)
                .await
                .expect("DEL");
        }
    }

    /// Deletes the queues and exchange of `settings`.
    pub async fn cleanup_rabbitmq(&self, settings: &deep_review_transport::RabbitSettings) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let connection =
            lapin::Connection::connect(&settings.url, lapin::ConnectionProperties::default())
                .await
                .expect("amqp connect");
        let channel = connection.create_channel().await.expect("channel");
        let mut queues: Vec<String> = settings
            .runners
            .iter()
            .map(|runner| settings.task_queue(*runner))
            .collect();
        queues.push(settings.dead_letter_queue());
        for queue in queues {
            let _deleted = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _deleted = channel
            .exchange_delete(
                settings.dead_letter_queue().as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}
