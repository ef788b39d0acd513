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

/// The variable the scheduler reads its API token from, and the token test clusters use.
pub const API_TOKEN_VARIABLE: &str = "DEEPREVIEW_API_TOKEN";
pub const API_TOKEN: &str = "test-api-token-2f9c1d7a5b3e";

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
    // Embedded reviews append to the agent ledger; the tests' go to the target folder,
    // never to the developer's.
    command.env(
        "DEEP_REVIEW_REVIEW__LEDGER_FILE",
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("ledger.jsonl"),
    );
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
        deep_review_transport::delete_prefix(&self.redis_url(), prefix)
            .await
            .expect("delete test keys");
    }

    /// Deletes the queues and exchange of `settings`.
    pub async fn cleanup_rabbitmq(&self, settings: &deep_review_transport::RabbitSettings) {
        deep_review_transport::delete_topology(settings)
            .await
            .expect("delete test queues");
    }
}

/// The three services as child processes of the real binary, with their own prefix,
/// port and report directory; stopped and cleaned up by [`Cluster::shutdown`].
pub struct Cluster {
    pub directory: tempfile::TempDir,
    pub config: PathBuf,
    pub prefix: String,
    pub port: u16,
    children: Vec<(String, std::process::Child)>,
    /// Set once `shutdown` deleted the cluster's queues and keys.
    cleaned: bool,
}

impl Cluster {
    /// Writes a configuration with `agents_toml` (the line-up) and `extra_distributed`
    /// lines for the `[distributed]` table.
    pub fn new(agents_toml: &str, extra_distributed: &str) -> Self {
        Services::ensure();
        let directory = tempfile::tempdir().expect("temporary directory");
        let prefix = unique_prefix("cluster");
        let config = directory.path().join("deep-review.toml");
        // Tests share this machine's filesystem, unless one says otherwise.
        let sharing = if extra_distributed.contains("shared_filesystem") {
            ""
        } else {
            "shared_filesystem = true\n"
        };
        // Two quorum queues rather than one per runner kind: tests run many clusters at
        // once against one broker on a small machine.
        let sharing = if extra_distributed.contains("runners") {
            sharing.to_string()
        } else {
            format!("{sharing}runners = [\"builtin\", \"command\"]\n")
        };
        let text = format!(
            "{agents_toml}\n[review]\ndeadline_grace = \"2s\"\n\n[distributed]\nprefix = \"{prefix}\"\n{sharing}scheduler_listen = \"127.0.0.1:0\"\nscheduler_url = \"http://127.0.0.1:0\"\nreports_directory = \"{}\"\nworker_telemetry_listen = \"127.0.0.1:0\"\nconsolidator_telemetry_listen = \"127.0.0.1:0\"\nwebhook_listen = \"127.0.0.1:0\"\nconsolidation_lease = \"3s\"\nsweep_interval = \"300ms\"\ndrain_timeout = \"5s\"\nmax_backoff = \"1s\"\n{extra_distributed}\n",
            directory.path().join("reports").display()
        );
        std::fs::write(&config, text).expect("write config");
        Cluster {
            directory,
            config,
            prefix,
            port: 0,
            children: Vec::new(),
            cleaned: false,
        }
    }

    /// Lets this cluster's agents write to `folder` (the markers slow stand-ins leave):
    /// sandboxed agents write nowhere outside their checkout otherwise.
    pub fn let_agents_write(&self, folder: &Path) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let text = text.replacen(
            "[review]\n",
            &format!(
                "[review]\nagent_writable_paths = [\"{}\"]\n",
                folder.display()
            ),
            1,
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Starts `deep-review <role>` with this cluster's configuration (or `config`).
    pub fn start(&mut self, role: &str) -> usize {
        let config = self.config.clone();
        self.start_with_config(role, &config)
    }

    /// Starts `deep-review <role>` with `config`.
    pub fn start_with_config(&mut self, role: &str, config: &Path) -> usize {
        self.start_with(role, config, &[])
    }

    /// Starts `deep-review <role>` with `config` and extra environment (configuration
    /// overrides such as `DEEP_REVIEW_DISTRIBUTED__WORKER_TELEMETRY_LISTEN`).
    pub fn start_with(&mut self, role: &str, config: &Path, environment: &[(&str, &str)]) -> usize {
        let log = std::fs::File::create(
            self.directory
                .path()
                .join(format!("{role}-{}.log", self.children.len())),
        )
        .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_deep-review"))
            .args([
                "--config",
                config.to_str().expect("utf-8"),
                "--log",
                "info",
                role,
            ])
            .env(API_TOKEN_VARIABLE, API_TOKEN)
            .envs(environment.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start service");
        self.children.push((role.to_string(), child));
        self.children.len() - 1
    }

    /// Kills service `index` with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        let (_, child) = &mut self.children[index];
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends SIGTERM to service `index` without waiting for it to stop.
    pub fn signal_terminate(&mut self, index: usize) {
        let (_, child) = &mut self.children[index];
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits for service `index` to exit.
    pub fn wait(&mut self, index: usize) -> std::process::ExitStatus {
        self.children[index].1.wait().expect("wait")
    }

    /// Stops service `index` with SIGTERM and returns its exit status.
    pub fn terminate(&mut self, index: usize) -> std::process::ExitStatus {
        let (_, child) = &mut self.children[index];
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        child.wait().expect("wait")
    }

    /// The port service `index` logged in its line containing `message` (its listening
    /// address). Services bind port 0 and say which port they got: a port picked free
    /// beforehand could be taken by another test's server before the service binds it.
    pub async fn logged_port(&self, index: usize, message: &str) -> u16 {
        let (role, _) = &self.children[index];
        let path = self.directory.path().join(format!("{role}-{index}.log"));
        for _ in 0..200 {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let port = log
                .lines()
                .filter(|line| line.contains(message))
                .find_map(|line| {
                    let after = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
                    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                });
            if let Some(port) = port {
                return port;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{role} #{index} never logged `{message}`:\n{}", self.logs());
    }

    /// Waits until the scheduler last started answers, and points `port` and the
    /// configuration's `scheduler_url` (what `submit` uses) at it.
    pub async fn wait_ready(&mut self) {
        let scheduler = self
            .children
            .iter()
            .rposition(|(role, _)| role == "scheduler")
            .expect("a scheduler was started");
        self.port = self.logged_port(scheduler, "scheduler listening").await;
        let config = std::fs::read_to_string(&self.config).expect("config");
        let config: Vec<String> = config
            .lines()
            .map(|line| {
                if line.starts_with("scheduler_url = ") {
                    format!("scheduler_url = \"http://127.0.0.1:{}\"", self.port)
                } else {
                    line.to_string()
                }
            })
            .collect();
        std::fs::write(&self.config, config.join("\n") + "\n").expect("config");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(response) = client
                .get(format!("http://127.0.0.1:{}/healthz", self.port))
                .send()
                .await
            {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the scheduler did not come up:\n{}", self.logs());
    }

    /// `deep-review submit` against this cluster, with the API token.
    pub fn submit(&self, arguments: &[&str]) -> Output {
        let mut all = vec!["--config", self.config.to_str().expect("utf-8"), "submit"];
        all.extend(arguments);
        deep_review_with(&all, &[(API_TOKEN_VARIABLE, API_TOKEN)], None)
    }

    /// The port the scheduler serves GitHub webhooks on, apart from the API.
    pub async fn webhook_port(&self) -> u16 {
        let scheduler = self
            .children
            .iter()
            .rposition(|(role, _)| role == "scheduler")
            .expect("a scheduler was started");
        self.logged_port(scheduler, "GitHub webhooks listening")
            .await
    }

    /// `submit --repo REPOSITORY --base BASE --wait --timeout 60s --out OUT`, plus `extra`.
    pub fn submit_and_wait(
        &self,
        repository: &Path,
        base: &str,
        out: &Path,
        extra: &[&str],
    ) -> Output {
        let (repository, out) = (
            repository.to_str().expect("utf-8"),
            out.to_str().expect("utf-8"),
        );
        let mut arguments = vec![
            "--repo",
            repository,
            "--base",
            base,
            "--wait",
            "--timeout",
            "60s",
            "--out",
            out,
        ];
        arguments.extend(extra);
        self.submit(&arguments)
    }

    /// `GET /v1/reviews/{id}`.
    pub async fn state(&self, review_id: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{}/v1/reviews/{review_id}",
                self.port
            ))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET review")
            .json()
            .await
            .expect("JSON state")
    }

    /// Polls the review until its status is `wanted`, or panics with the logs.
    pub async fn wait_for_status(
        &self,
        review_id: &str,
        wanted: &str,
        within: std::time::Duration,
    ) -> serde_json::Value {
        let started = std::time::Instant::now();
        loop {
            let state = self.state(review_id).await;
            if state["status"] == wanted {
                return state;
            }
            if started.elapsed() > within {
                panic!(
                    "review {review_id} is {} after {within:?}, not {wanted} (the API answered {state}):\n{}",
                    state["status"],
                    self.logs()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Every service's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (index, (role, _)) in self.children.iter().enumerate() {
            let path = self.directory.path().join(format!("{role}-{index}.log"));
            all.push_str(&format!(
                "--- {role} #{index}\n{}\n",
                std::fs::read_to_string(path).unwrap_or_default()
            ));
        }
        all
    }

    /// The report directory of `review_id`.
    pub fn report_directory(&self, review_id: &str) -> PathBuf {
        self.directory.path().join("reports").join(review_id)
    }

    /// Stops every service and deletes this cluster's queues and keys.
    pub async fn shutdown(mut self) {
        for (_, child) in &mut self.children {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
        Self::delete_servers_state(&self.prefix).await;
        self.cleaned = true;
    }

    async fn delete_servers_state(prefix: &str) {
        let services = Services;
        services.cleanup_redis(prefix).await;
        services
            .cleanup_rabbitmq(&deep_review_transport::RabbitSettings {
                url: services.amqp_url(),
                prefix: prefix.to_string(),
                delivery_limit: 5,
                runners: vec![
                    deep_review_protocol::RunnerKind::Builtin,
                    deep_review_protocol::RunnerKind::Command,
                ],
                max_backoff: std::time::Duration::from_secs(1),
            })
            .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test must not leave services running, nor queues and keys behind.
        for (_, child) in &mut self.children {
            let _killed = child.kill();
            let _reaped = child.wait();
        }
        if !self.cleaned {
            let prefix = self.prefix.clone();
            // Drop cannot await: run the teardown on a runtime of its own thread, where a
            // failure (a panic) is contained instead of aborting an unwinding test.
            let _finished = std::thread::spawn(move || {
                if let Ok(runtime) = tokio::runtime::Runtime::new() {
                    runtime.block_on(Cluster::delete_servers_state(&prefix));
                }
            })
            .join();
        }
    }
}

/// The id in `submit`'s "Review <id> accepted" line.
pub fn accepted_id(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("Review ")
                .and_then(|rest| rest.split_whitespace().next())
        })
        .unwrap_or_else(|| {
            panic!(
                "no review id in: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .to_string()
}
