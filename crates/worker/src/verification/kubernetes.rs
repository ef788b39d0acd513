//! Verification in a Kubernetes Job, in a namespace created for the run.
//!
//! Per run, through the Kubernetes API (the `kube` crate):
//! 1. a namespace labelled with the review, and in it
//! 2. a NetworkPolicy that denies all ingress and egress, so the check has no network;
//! 3. a ServiceAccount bound (Role, RoleBinding) to read-only access in that namespace
//!    alone, whose token is mounted only when the operator asks for live-cluster checks;
//! 4. a ConfigMap with the head commit (`git archive`, gzipped) and the proposed test;
//! 5. a Job of one non-root pod, with a read-only root filesystem, no capabilities, the
//!    RuntimeDefault seccomp profile, CPU and memory limits, and `activeDeadlineSeconds`;
//! 6. a watch on the Job until it completes or fails, then the pod's exit code and the end
//!    of its log.
//!
//! The namespace is deleted afterwards whatever happened, which removes everything in it.
//! A ConfigMap holds at most 1 MiB, so larger repositories need the local backend.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;

use super::{
    limit_name, output_excerpt, RunEvidence, VerificationBackend, VerificationError,
    VerificationRun,
};

const BACKEND: &str = "kubernetes";

/// The name of the check's container, its ServiceAccount and its ConfigMap.
const CHECK: &str = "verification";

/// Most bytes of gzipped source a ConfigMap can carry, leaving room for the test file and
/// the object's metadata under the API server's 1 MiB limit.
const ARCHIVE_LIMIT_BYTES: usize = 900 * 1024;

/// Exit code of the Job's script when it could not unpack the source.
const SETUP_FAILED: i32 = 125;

/// The `[verification.kubernetes]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesSettings {
    /// The image the check runs in. It needs `sh`, `tar` with gzip, and the repository's
    /// toolchain; it runs as a non-root user (uid 65532 unless the image says otherwise).
    pub image: String,
    /// The kubeconfig to use; empty uses the in-cluster ServiceAccount, or `KUBECONFIG`
    /// and `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Prefix of the namespace each run gets (a random suffix follows).
    pub namespace_prefix: String,
    /// CPU limit of the check's container, in Kubernetes units (`1`, `500m`).
    pub cpu: String,
    /// How long the Job may wait for its pod to be scheduled and pulled, on top of the
    /// run's time limit.
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Mount the namespace's ServiceAccount token in the check, for live-cluster checks
    /// (`kubectl` against the run's own namespace). Off: the check cannot reach the API.
    pub mount_service_account_token: bool,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            image: String::new(),
            kubeconfig: None,
            namespace_prefix: "deep-review-verify".to_string(),
            cpu: "1".to_string(),
            start_timeout: Duration::from_secs(120),
            mount_service_account_token: false,
        }
    }
}

/// The Kubernetes Job backend.
pub struct KubernetesBackend {
    settings: KubernetesSettings,
    /// Made on first use: building a client needs the runtime, and reading the
    /// kubeconfig may wait for an exec credential plugin.
    client: OnceCell<Client>,
}

impl KubernetesBackend {
    /// The backend for `settings`; an error when they cannot work (no image).
    pub fn from_settings(settings: &KubernetesSettings) -> Result<Self, VerificationError> {
        if settings.image.trim().is_empty() {
            return Err(VerificationError::Configuration(
                "kubernetes.image is empty: name the image the checks run in (it needs sh, tar and the repositories' toolchains)"
                    .to_string(),
            ));
        }
        if settings.namespace_prefix.is_empty()
            || settings.namespace_prefix.len() > 40
            || !settings.namespace_prefix.chars().all(|character| {
                character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
            })
        {
            return Err(VerificationError::Configuration(format!(
                "kubernetes.namespace_prefix `{}` must be 1 to 40 lowercase letters, digits or dashes",
                settings.namespace_prefix
            )));
        }
        Ok(KubernetesBackend {
            settings: settings.clone(),
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&Client, VerificationError> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.settings.kubeconfig {
                    Some(path) => {
                        let kubeconfig =
                            kube::config::Kubeconfig::read_from(path).map_err(|error| {
                                failed(format!(
                                    "could not read the kubeconfig {}: {error}",
                                    path.display()
                                ))
                            })?;
                        kube::Config::from_custom_kubeconfig(
                            kubeconfig,
                            &kube::config::KubeConfigOptions::default(),
                        )
                        .await
                        .map_err(|error| {
                            failed(format!(
                                "the kubeconfig {} is unusable: {error}",
                                path.display()
                            ))
                        })?
                    }
                    None => kube::Config::infer().await.map_err(|error| {
                        failed(format!("no cluster configuration found: {error}"))
                    })?,
                };
                Client::try_from(config)
                    .map_err(|error| failed(format!("could not build the client: {error}")))
            })
            .await
    }
}

fn failed(reason: impl std::fmt::Display) -> VerificationError {
    VerificationError::Backend {
        backend: BACKEND,
        reason: reason.to_string(),
    }
}

fn api_failed(step: &str, error: kube::Error) -> VerificationError {
    failed(format!("{step}: {error}"))
}

/// A DNS label from `review_id`: lowercase letters, digits and dashes, at most `length`.
fn label_value(review_id: &str, length: usize) -> String {
    let mut label: String = review_id
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    label.truncate(length);
    label.trim_matches('-').to_string()
}

/// Builds a typed object from its JSON form, which reads like the manifest it is.
fn object<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, VerificationError> {
    serde_json::from_value(value)
        .map_err(|error| failed(format!("internal: a manifest did not build: {error}")))
}

#[async_trait]
impl VerificationBackend for KubernetesBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn run(&self, run: VerificationRun<'_>) -> Result<RunEvidence, VerificationError> {
        let archive = tokio::fs::read(run.source_archive).await.map_err(|error| {
            failed(format!("could not read the head commit's archive: {error}"))
        })?;
        if archive.len() > ARCHIVE_LIMIT_BYTES {
            return Err(failed(format!(
                "the head commit is {} KiB gzipped, more than the {} KiB a ConfigMap can carry; use the local backend for this repository",
                archive.len() / 1024,
                ARCHIVE_LIMIT_BYTES / 1024
            )));
        }
        let client = self.client().await?.clone();
        let namespace = format!(
            "{}-{}-{:06x}",
            self.settings.namespace_prefix,
            label_value(run.review_id, 12),
            fastrand::u32(..0x0100_0000)
        );
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let created = namespaces
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": {
                        "name": namespace,
                        "labels": {
                            "app.kubernetes.io/managed-by": "deep-review",
                            "app.kubernetes.io/component": "verification",
                            "deep-review.dev/review": label_value(run.review_id, 63),
                        }
                    }
                }))?,
            )
            .await;
        if let Err(error) = created {
            return Err(api_failed("could not create the run's namespace", error));
        }
        let outcome = self.run_in(&client, &namespace, &run, &archive).await;
        // Whatever happened: the namespace takes the Job, its pod and the source with it.
        let deleted = namespaces
            .delete(&namespace, &DeleteParams::background())
            .await;
        if let Err(error) = deleted {
            tracing::warn!(%error, %namespace, "could not delete a verification namespace; delete it by hand (label app.kubernetes.io/managed-by=deep-review)");
        }
        outcome
    }
}

impl KubernetesBackend {
    async fn run_in(
        &self,
        client: &Client,
        namespace: &str,
        run: &VerificationRun<'_>,
        archive: &[u8],
    ) -> Result<RunEvidence, VerificationError> {
        let post = PostParams::default();
        let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
        policies
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": "deny-all" },
                    "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }
                }))?,
            )
            .await
            .map_err(|error| api_failed("could not create the deny-all NetworkPolicy", error))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        accounts
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": CHECK },
                    "automountServiceAccountToken": self.settings.mount_service_account_token
                }))?,
            )
            .await
            .map_err(|error| api_failed("could not create the ServiceAccount", error))?;
        let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
        roles
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": CHECK },
                    "rules": [{
                        "apiGroups": ["", "apps", "batch"],
                        "resources": ["pods", "pods/log", "configmaps", "services", "deployments", "jobs"],
                        "verbs": ["get", "list", "watch"]
                    }]
                }))?,
            )
            .await
            .map_err(|error| api_failed("could not create the Role", error))?;
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
        bindings
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": CHECK },
                    "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CHECK },
                    "subjects": [{ "kind": "ServiceAccount", "name": CHECK, "namespace": namespace }]
                }))?,
            )
            .await
            .map_err(|error| api_failed("could not create the RoleBinding", error))?;
        let (reproduction_path, reproduction) = run.extra_file.unwrap_or(("", ""));
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        config_maps
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": CHECK },
                    "binaryData": {
                        "head.tar.gz": base64::engine::general_purpose::STANDARD.encode(archive)
                    },
                    "data": { "reproduction": reproduction }
                }))?,
            )
            .await
            .map_err(|error| api_failed("could not create the source ConfigMap", error))?;

        let timeout_seconds = run.limits.timeout.as_secs().max(1);
        // The source is unpacked into the writable emptyDir; only then do the check's own
        // stdout and stderr begin.
        let script = format!(
            "mkdir -p /work/source /work/home /work/tmp && tar -xzf /source/head.tar.gz -C /work/source \
             || {{ echo 'deep-review: could not unpack the head commit'; exit {SETUP_FAILED}; }}\n\
             if [ -n \"$REPRODUCTION_PATH\" ]; then mkdir -p \"$(dirname \"/work/source/$REPRODUCTION_PATH\")\" \
             && cp /source/reproduction \"/work/source/$REPRODUCTION_PATH\" || exit {SETUP_FAILED}; fi\n\
             cd /work/source\nexec 2>&1\n{}",
            run.command
        );
        let memory = format!("{}Mi", (run.limits.memory_bytes / (1024 * 1024)).max(64));
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let job = jobs
            .create(
                &post,
                &object(json!({
                    "metadata": { "name": CHECK, "labels": { "app.kubernetes.io/managed-by": "deep-review" } },
                    "spec": {
                        "backoffLimit": 0,
                        "activeDeadlineSeconds": timeout_seconds,
                        "ttlSecondsAfterFinished": 600,
                        "template": {
                            "metadata": { "labels": { "app.kubernetes.io/managed-by": "deep-review" } },
                            "spec": {
                                "restartPolicy": "Never",
                                "serviceAccountName": CHECK,
                                "automountServiceAccountToken": self.settings.mount_service_account_token,
                                "enableServiceLinks": false,
                                "securityContext": {
                                    "runAsNonRoot": true,
                                    "runAsUser": 65532,
                                    "runAsGroup": 65532,
                                    "fsGroup": 65532,
                                    "seccompProfile": { "type": "RuntimeDefault" }
                                },
                                "containers": [{
                                    "name": CHECK,
                                    "image": self.settings.image,
                                    "command": ["sh", "-c", script],
                                    "workingDir": "/work",
                                    "env": [
                                        { "name": "HOME", "value": "/work/home" },
                                        { "name": "TMPDIR", "value": "/work/tmp" },
                                        { "name": "CI", "value": "true" },
                                        { "name": "REPRODUCTION_PATH", "value": reproduction_path }
                                    ],
                                    "resources": {
                                        "requests": { "cpu": self.settings.cpu, "memory": memory },
                                        "limits": { "cpu": self.settings.cpu, "memory": memory, "ephemeral-storage": "4Gi" }
                                    },
                                    "securityContext": {
                                        "allowPrivilegeEscalation": false,
                                        "readOnlyRootFilesystem": true,
                                        "capabilities": { "drop": ["ALL"] }
                                    },
                                    "volumeMounts": [
                                        { "name": "source", "mountPath": "/source", "readOnly": true },
                                        { "name": "work", "mountPath": "/work" }
                                    ]
                                }],
                                "volumes": [
                                    { "name": "source", "configMap": { "name": CHECK } },
                                    { "name": "work", "emptyDir": { "sizeLimit": "4Gi" } }
                                ]
                            }
                        }
                    }
                }))?,
            )
            .await
            .map_err(|error| api_failed("could not create the Job", error))?;
        let started = Instant::now();
        let deadline = run.limits.timeout + self.settings.start_timeout;
        let finished = tokio::time::timeout(deadline, wait_for_job(&jobs, job)).await;
        let duration = started.elapsed();
        let job = match finished {
            Err(_) => {
                return Ok(RunEvidence {
                    exit_code: None,
                    stopped_by: Some(limit_name(deadline, "time (start included)")),
                    output: String::new(),
                    duration,
                })
            }
            Ok(job) => job?,
        };
        let deadline_exceeded =
            job_condition(&job, "Failed").is_some_and(|reason| reason == "DeadlineExceeded");

        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let listed = pods
            .list(&ListParams::default().labels(&format!("job-name={CHECK}")))
            .await
            .map_err(|error| api_failed("could not find the Job's pod", error))?;
        let pod = listed.items.into_iter().next();
        let terminated = pod
            .as_ref()
            .and_then(|pod| pod.status.as_ref())
            .and_then(|status| status.container_statuses.as_ref())
            .and_then(|statuses| statuses.iter().find(|status| status.name == CHECK))
            .and_then(|status| status.state.as_ref())
            .and_then(|state| state.terminated.clone());
        let output = match pod.as_ref().and_then(|pod| pod.metadata.name.clone()) {
            Some(name) => {
                let parameters = LogParams {
                    container: Some(CHECK.to_string()),
                    tail_lines: Some(2000),
                    ..LogParams::default()
                };
                match pods.logs(&name, &parameters).await {
                    Ok(log) => output_excerpt(log.as_bytes(), 0, run.limits.output_bytes),
                    Err(error) => format!("(the pod's log could not be read: {error})"),
                }
            }
            None => String::new(),
        };
        let (exit_code, stopped_by) = match &terminated {
            Some(state) if state.reason.as_deref() == Some("OOMKilled") => {
                (None, Some(format!("the {} memory limit", memory)))
            }
            Some(state)
                if state.exit_code == SETUP_FAILED
                    && output.contains("deep-review: could not unpack") =>
            {
                return Err(failed(format!(
                    "the Job could not unpack the head commit: {}",
                    output.trim()
                )))
            }
            Some(state) => (Some(state.exit_code), None),
            None if deadline_exceeded => (None, Some(limit_name(run.limits.timeout, "time"))),
            None => (
                None,
                Some("the Job ending before its container did".to_string()),
            ),
        };
        let (exit_code, stopped_by) = if deadline_exceeded && stopped_by.is_none() {
            (None, Some(limit_name(run.limits.timeout, "time")))
        } else {
            (exit_code, stopped_by)
        };
        Ok(RunEvidence {
            exit_code,
            stopped_by,
            output,
            duration,
        })
    }
}

/// The reason of the Job's condition `kind` (`Complete`, `Failed`) when it is true.
fn job_condition(job: &Job, kind: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == kind && condition.status == "True")
        .map(|condition| condition.reason.clone().unwrap_or_default())
}

fn is_finished(job: &Job) -> bool {
    job_condition(job, "Complete").is_some() || job_condition(job, "Failed").is_some()
}

/// Watches the Job from its creation until it completes or fails; a watch the server
/// ends is started again from the last version seen.
async fn wait_for_job(jobs: &Api<Job>, created: Job) -> Result<Job, VerificationError> {
    if is_finished(&created) {
        return Ok(created);
    }
    let mut version = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_else(|| "0".to_string());
    let parameters = WatchParams::default()
        .fields(&format!("metadata.name={CHECK}"))
        .timeout(290);
    loop {
        let mut events = jobs
            .watch(&parameters, &version)
            .await
            .map_err(|error| api_failed("could not watch the Job", error))?
            .boxed();
        while let Some(event) = events.next().await {
            match event.map_err(|error| api_failed("the watch on the Job failed", error))? {
                WatchEvent::Added(job) | WatchEvent::Modified(job) => {
                    if let Some(seen) = &job.metadata.resource_version {
                        version.clone_from(seen);
                    }
                    if is_finished(&job) {
                        return Ok(job);
                    }
                }
                WatchEvent::Deleted(_) => {
                    return Err(failed("the Job was deleted before it finished"))
                }
                WatchEvent::Bookmark(bookmark) => version = bookmark.metadata.resource_version,
                WatchEvent::Error(status) if status.code == 410 => {
                    // The version is too old: read the Job again and go on from there.
                    let job = jobs
                        .get(CHECK)
                        .await
                        .map_err(|error| api_failed("could not read the Job", error))?;
                    if is_finished(&job) {
                        return Ok(job);
                    }
                    version = job
                        .metadata
                        .resource_version
                        .clone()
                        .unwrap_or_else(|| "0".to_string());
                }
                WatchEvent::Error(status) => {
                    return Err(failed(format!(
                        "the watch on the Job failed: {}",
                        status.message
                    )))
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    //! Against a local HTTP server that answers the Kubernetes API calls the backend makes
    //! (create, watch, list, logs, delete), as the API server does, through the real
    //! `kube` client and a kubeconfig.

    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    use serde_json::{json, Value};

    use super::*;
    use crate::verification::RunLimits;

    const TOKEN: &str = "fake-cluster-token";

    /// How the fake cluster's Job ends.
    #[derive(Clone)]
    struct Ending {
        condition: (&'static str, &'static str),
        terminated: Option<Value>,
        log: &'static str,
        refuse_jobs: bool,
    }

    #[derive(Clone)]
    struct Cluster {
        requests: Arc<Mutex<Vec<(Method, String, Value)>>>,
        ending: Ending,
    }

    async fn answer(
        axum::extract::State(cluster): axum::extract::State<Cluster>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        if headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            != Some(&format!("Bearer {TOKEN}"))
        {
            return (StatusCode::UNAUTHORIZED, Json::status(401, "Unauthorized")).into_response();
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = uri.path().to_string();
        let query = uri.query().unwrap_or("").to_string();
        cluster.requests.lock().unwrap().push((
            method.clone(),
            format!("{path}?{query}"),
            body.clone(),
        ));
        let created = |mut object: Value| {
            object["metadata"]["resourceVersion"] = json!("5");
            object["metadata"]["uid"] = json!("0000");
            (StatusCode::CREATED, axum::Json(object)).into_response()
        };
        let ending = &cluster.ending;
        match (method, path.as_str()) {
            (Method::POST, path) if path.ends_with("/jobs") && ending.refuse_jobs => (
                StatusCode::FORBIDDEN,
                Json::status(403, "jobs.batch is forbidden: quota exceeded"),
            )
                .into_response(),
            (Method::POST, _) => created(body),
            (Method::GET, path) if path.ends_with("/jobs") && query.contains("watch=true") => {
                let running = json!({"type": "ADDED", "object": job(json!({"active": 1}), "6")});
                let (kind, reason) = ending.condition;
                let done = json!({"type": "MODIFIED", "object": job(json!({
                    "conditions": [{"type": kind, "status": "True", "reason": reason}]
                }), "7")});
                format!("{running}\n{done}\n").into_response()
            }
            (Method::GET, path) if path.ends_with("/pods") => {
                let mut status = json!({"phase": "Failed"});
                if let Some(terminated) = &ending.terminated {
                    status["containerStatuses"] = json!([{
                        "name": CHECK, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                        "state": {"terminated": terminated}
                    }]);
                }
                axum::Json(json!({
                    "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "8"},
                    "items": [{"metadata": {"name": "verification-x7k2p", "labels": {"job-name": CHECK}}, "status": status}]
                }))
                .into_response()
            }
            (Method::GET, path) if path.ends_with("/log") => ending.log.into_response(),
            (Method::DELETE, _) => axum::Json(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": path.rsplit('/').next().unwrap()},
                "status": {"phase": "Terminating"}
            }))
            .into_response(),
            _ => (StatusCode::NOT_FOUND, Json::status(404, "not found")).into_response(),
        }
    }

    struct Json;
    impl Json {
        fn status(code: u16, message: &str) -> axum::Json<Value> {
            axum::Json(json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": message, "reason": "Forbidden", "code": code
            }))
        }
    }

    fn job(status: Value, version: &str) -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": CHECK, "resourceVersion": version},
            "status": status
        })
    }

    /// A fake cluster ending Jobs as `ending` says, and a backend whose kubeconfig points at it.
    async fn cluster(ending: Ending) -> (Cluster, KubernetesBackend, tempfile::TempDir) {
        let cluster = Cluster {
            requests: Arc::new(Mutex::new(Vec::new())),
            ending,
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(cluster.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let folder = tempfile::tempdir().unwrap();
        let kubeconfig = folder.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{address}\n\
                 users:\n- name: ci\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: ci\n\
                 current-context: fake\n"
            ),
        )
        .unwrap();
        let backend = KubernetesBackend::from_settings(&KubernetesSettings {
            image: "registry.example.com/checks:1".to_string(),
            kubeconfig: Some(kubeconfig),
            ..KubernetesSettings::default()
        })
        .unwrap();
        (cluster, backend, folder)
    }

    /// A gzipped tar of one file, as `git archive` makes them.
    fn archive(folder: &Path) -> PathBuf {
        let source = folder.join("source");
        std::fs::create_dir_all(source.join("src")).unwrap();
        std::fs::write(
            source.join("src/cart.sh"),
            "total() { echo $(( $1 - $2 )); }\n",
        )
        .unwrap();
        let archive = folder.join("head.tar.gz");
        let status = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&source)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        archive
    }

    fn limits() -> RunLimits {
        RunLimits {
            timeout: Duration::from_secs(120),
            cpu_time: Duration::from_secs(120),
            memory_bytes: 512 * 1024 * 1024,
            output_bytes: 4096,
        }
    }

    async fn run(
        backend: &KubernetesBackend,
        archive: &Path,
    ) -> Result<RunEvidence, VerificationError> {
        let limits = limits();
        backend
            .run(VerificationRun {
                review_id: "20261203-101500-abcdef12",
                source_archive: archive,
                extra_file: Some(("tests/total_adds.sh", "echo BUG\n")),
                command: "sh check.sh",
                limits: &limits,
            })
            .await
    }

    fn failed_with(exit_code: i64, reason: &str) -> Option<Value> {
        Some(json!({"exitCode": exit_code, "reason": reason}))
    }

    #[tokio::test]
    async fn a_check_runs_as_a_locked_down_job_in_a_namespace_of_its_own() {
        let (cluster, backend, folder) = cluster(Ending {
            condition: ("Failed", "BackoffLimitExceeded"),
            terminated: failed_with(1, "Error"),
            log: "running tests/total_adds.sh\nBUG: total does not add\n",
            refuse_jobs: false,
        })
        .await;
        let archive = archive(folder.path());
        let evidence = run(&backend, &archive).await.unwrap();
        assert_eq!(evidence.exit_code, Some(1));
        assert_eq!(evidence.stopped_by, None);
        assert!(
            evidence.output.contains("BUG: total does not add"),
            "{evidence:?}"
        );

        let requests = cluster.requests.lock().unwrap().clone();
        let calls: Vec<String> = requests
            .iter()
            .map(|(method, path, _)| format!("{method} {}", path.split('?').next().unwrap()))
            .collect();
        let namespace = requests[0].2["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            namespace.starts_with("deep-review-verify-20261203-101-"),
            "{namespace}"
        );
        let scoped = |kind: &str| format!("/namespaces/{namespace}/{kind}");
        let expected = [
            "POST /api/v1/namespaces".to_string(),
            format!(
                "POST /apis/networking.k8s.io/v1{}",
                scoped("networkpolicies")
            ),
            format!("POST /api/v1{}", scoped("serviceaccounts")),
            format!("POST /apis/rbac.authorization.k8s.io/v1{}", scoped("roles")),
            format!(
                "POST /apis/rbac.authorization.k8s.io/v1{}",
                scoped("rolebindings")
            ),
            format!("POST /api/v1{}", scoped("configmaps")),
            format!("POST /apis/batch/v1{}", scoped("jobs")),
            format!("GET /apis/batch/v1{}", scoped("jobs")),
            format!("GET /api/v1{}", scoped("pods")),
            format!("GET /api/v1{}/verification-x7k2p/log", scoped("pods")),
            format!("DELETE /api/v1/namespaces/{namespace}"),
        ];
        assert_eq!(calls, expected);
        let body = |index: usize| &requests[index].2;
        assert_eq!(
            body(0)["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "deep-review"
        );
        // No network: a policy selecting every pod, with no rule allowing anything.
        assert_eq!(body(1)["spec"]["podSelector"], json!({}));
        assert_eq!(body(1)["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert!(
            body(1)["spec"].get("egress").is_none() && body(1)["spec"].get("ingress").is_none()
        );
        assert_eq!(body(2)["automountServiceAccountToken"], false);
        assert_eq!(
            body(3)["rules"][0]["verbs"],
            json!(["get", "list", "watch"])
        );
        assert_eq!(body(4)["subjects"][0]["namespace"], namespace.as_str());
        // The source: the archive as sent, and the proposed test.
        let sent = base64::engine::general_purpose::STANDARD
            .decode(body(5)["binaryData"]["head.tar.gz"].as_str().unwrap())
            .unwrap();
        assert_eq!(sent, std::fs::read(&archive).unwrap());
        assert_eq!(body(5)["data"]["reproduction"], "echo BUG\n");
        let pod = &body(6)["spec"]["template"]["spec"];
        assert_eq!(body(6)["spec"]["activeDeadlineSeconds"], 120);
        assert_eq!(body(6)["spec"]["backoffLimit"], 0);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "registry.example.com/checks:1");
        assert_eq!(container["resources"]["limits"]["memory"], "512Mi");
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(
            container["securityContext"]["capabilities"]["drop"],
            json!(["ALL"])
        );
        assert!(container["command"][2]
            .as_str()
            .unwrap()
            .ends_with("exec 2>&1\nsh check.sh"));
        assert!(container["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "REPRODUCTION_PATH", "value": "tests/total_adds.sh"})));
        // The watch starts from the Job's version, on the Job alone.
        assert!(
            requests[7].1.contains("resourceVersion=5")
                && requests[7].1.contains("metadata.name%3Dverification"),
            "{}",
            requests[7].1
        );
        assert!(
            requests[8]
                .1
                .contains("labelSelector=job-name%3Dverification"),
            "{}",
            requests[8].1
        );
    }

    #[tokio::test]
    async fn limits_that_stop_a_check_prove_nothing_and_the_namespace_goes_anyway() {
        let (_, backend, folder) = cluster(Ending {
            condition: ("Failed", "DeadlineExceeded"),
            terminated: None,
            log: "",
            refuse_jobs: false,
        })
        .await;
        let archive = archive(folder.path());
        let evidence = run(&backend, &archive).await.unwrap();
        assert_eq!(evidence.exit_code, None);
        assert_eq!(evidence.stopped_by.as_deref(), Some("the 2m time limit"));

        let (_, backend, folder) = cluster(Ending {
            condition: ("Failed", "BackoffLimitExceeded"),
            terminated: failed_with(137, "OOMKilled"),
            log: "Killed",
            refuse_jobs: false,
        })
        .await;
        let archive = super::tests::archive(folder.path());
        let evidence = run(&backend, &archive).await.unwrap();
        assert_eq!(
            evidence.stopped_by.as_deref(),
            Some("the 512Mi memory limit")
        );

        let (cluster, backend, folder) = cluster(Ending {
            condition: ("Complete", ""),
            terminated: None,
            log: "",
            refuse_jobs: true,
        })
        .await;
        let archive = super::tests::archive(folder.path());
        let error = run(&backend, &archive).await.unwrap_err().to_string();
        assert!(
            error.contains("could not create the Job") && error.contains("quota exceeded"),
            "{error}"
        );
        let requests = cluster.requests.lock().unwrap();
        assert_eq!(
            requests.last().unwrap().0,
            Method::DELETE,
            "the namespace is deleted after a failure too"
        );
    }

    #[tokio::test]
    async fn a_wrong_token_and_a_too_large_repository_are_named() {
        let (cluster, backend, folder) = cluster(Ending {
            condition: ("Complete", ""),
            terminated: failed_with(0, "Completed"),
            log: "ok",
            refuse_jobs: false,
        })
        .await;
        let large = folder.path().join("large.tar.gz");
        std::fs::write(&large, vec![7u8; ARCHIVE_LIMIT_BYTES + 1]).unwrap();
        let error = run(&backend, &large).await.unwrap_err().to_string();
        assert!(
            error.contains("more than the 900 KiB a ConfigMap can carry"),
            "{error}"
        );
        assert!(
            cluster.requests.lock().unwrap().is_empty(),
            "refused before any call"
        );

        let kubeconfig = folder.path().join("kubeconfig");
        let text = std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace(TOKEN, "wrong");
        std::fs::write(&kubeconfig, text).unwrap();
        let backend = KubernetesBackend::from_settings(&KubernetesSettings {
            image: "i".to_string(),
            kubeconfig: Some(kubeconfig),
            ..KubernetesSettings::default()
        })
        .unwrap();
        let archive = archive(folder.path());
        let error = run(&backend, &archive).await.unwrap_err().to_string();
        assert!(
            error.contains("could not create the run's namespace"),
            "{error}"
        );
        assert!(
            KubernetesBackend::from_settings(&KubernetesSettings::default())
                .err()
                .is_some_and(|error| error.to_string().contains("kubernetes.image is empty"))
        );
    }
}
