//! A local stub of the GitHub REST API (and the two GraphQL operations deep-review uses),
//! answering with the JSON shapes of GitHub's documented examples, trimmed to the fields
//! that matter. It checks credentials on every request, as GitHub does: the App's JWT on
//! the App routes and the installation token (or the plain token) everywhere else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The installation id the stub's App is installed as.
pub const INSTALLATION_ID: u64 = 4242;
/// The token the stub mints for the installation.
pub const INSTALLATION_TOKEN: &str = "ghs_stubInstallationToken4242";
/// The plain token the stub accepts in token mode.
pub const PLAIN_TOKEN: &str = "ghp_stubPersonalToken";
/// The user the plain token belongs to, and so the author of what it posts.
pub const PLAIN_TOKEN_USER: &str = "review-robot";
/// The stub App's slug; its comments appear under `<slug>[bot]`.
pub const APP_SLUG: &str = "deep-review";
pub const APP_BOT_LOGIN: &str = "deep-review[bot]";

/// A pull request on the stub.
#[derive(Debug, Clone)]
pub struct StubPull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub author: String,
    pub head_ref: String,
    pub head_sha: String,
    pub base_sha: String,
    pub draft: bool,
    pub state: String,
    pub updated_at: String,
    /// GitHub's `files` entries (`filename`, `status`, `patch`).
    pub files: Vec<Value>,
    /// (sha, message) oldest first.
    pub commits: Vec<(String, String)>,
    /// The diff GitHub renders; `None` answers 406 like a diff too large.
    pub diff: Option<String>,
}

/// A repository on the stub.
#[derive(Debug, Clone, Default)]
pub struct StubRepository {
    pub clone_url: String,
    pub archived: bool,
    /// `.deep-review.toml` on the default branch.
    pub config: Option<String>,
    pub pulls: BTreeMap<u64, StubPull>,
}

/// Everything deep-review wrote, and what the stub serves.
#[derive(Debug, Default)]
pub struct StubState {
    pub repositories: BTreeMap<String, StubRepository>,
    pub issue_comments: Vec<Value>,
    pub review_comments: Vec<Value>,
    pub reviews: Vec<Value>,
    pub check_runs: Vec<Value>,
    /// Every check run payload in order, to see in-progress then completed.
    pub check_run_history: Vec<Value>,
    pub resolved_threads: Vec<String>,
    /// Threads reopened with `unresolveReviewThread`.
    pub reopened_threads: Vec<String>,
    /// Most check runs in progress at one time.
    pub most_in_progress: usize,
    /// (method, path and query) of every request.
    pub requests: Vec<(String, String)>,
    /// Requests refused for missing or wrong credentials.
    pub unauthorised: Vec<String>,
    /// Installation tokens minted.
    pub tokens_minted: usize,
    /// Whether the stub answers like an Enterprise Server (GraphQL only at /api/graphql).
    pub enterprise: bool,
    /// An error every repository route answers with, as (status, message).
    pub fail_with: Option<(u16, String)>,
    next_id: u64,
}

impl StubState {
    /// The body of the one comment on the PR; panics if there are several.
    pub fn sticky_comment(&self) -> &str {
        assert_eq!(
            self.issue_comments.len(),
            1,
            "the sticky comment was duplicated"
        );
        self.issue_comments[0]["body"].as_str().unwrap_or("")
    }
}

/// The stub; it stops when dropped.
pub struct GitHubStub {
    pub url: String,
    pub state: Arc<Mutex<StubState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHubStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lists are served this many items a page at most, so every list is paginated.
const PAGE_SIZE: usize = 2;

impl GitHubStub {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(StubState {
            next_id: 1000,
            ..StubState::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::clone(&state);
        let base = url.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&shared);
                let base = base.clone();
                async move { handle(&state, &base, method, uri, headers, body) }
            },
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        GitHubStub { url, state, task }
    }

    /// Settings pointing at the stub, for a client built with [`GitHubStub::github`].
    pub fn settings(&self) -> deep_review_github::GitHubSettings {
        deep_review_github::GitHubSettings {
            api_url: self.url.clone(),
            ..Default::default()
        }
    }

    /// A client of the stub with the plain token (no process environment involved:
    /// tests run in parallel, and the services they start inherit it).
    pub fn github(&self) -> deep_review_github::GitHub {
        deep_review_github::GitHub::with_token(&self.url, PLAIN_TOKEN).expect("connect")
    }

    pub fn with<T>(&self, change: impl FnOnce(&mut StubState) -> T) -> T {
        change(&mut self.state.lock().expect("stub state"))
    }

    /// Waits until `ready` holds of the state, or panics with `what` and `logs`.
    pub async fn wait_for(
        &self,
        what: &str,
        ready: impl Fn(&StubState) -> bool,
        logs: impl Fn() -> String,
    ) {
        for _ in 0..600 {
            if self.with(|state| ready(state)) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let requests = self.with(|state| format!("{:#?}", state.requests));
        panic!(
            "the stub never saw {what}; requests:\n{requests}\n{}",
            logs()
        );
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({ "message": message, "documentation_url": "https://docs.github.com/rest" }),
    )
}

fn query_parameter(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// One page of `items`, with GitHub's absolute `Link` header.
fn paginated(base: &str, uri: &Uri, items: Vec<Value>) -> Response {
    let per_page = query_parameter(uri, "per_page")
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(30)
        .min(PAGE_SIZE);
    let page = query_parameter(uri, "page")
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let pages = items.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let other_parameters: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            !pair.is_empty() && !pair.starts_with("page=") && !pair.starts_with("per_page=")
        })
        .map(str::to_string)
        .collect();
    let link = |number: usize| {
        let mut query = other_parameters.clone();
        query.push(format!("per_page={per_page}"));
        query.push(format!("page={number}"));
        format!("{base}{}?{}", uri.path(), query.join("&"))
    };
    let mut links = Vec::new();
    if page < pages {
        links.push(format!("<{}>; rel=\"next\"", link(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", link(pages)));
    }
    let mut response = json_response(StatusCode::OK, Value::Array(slice));
    if !links.is_empty() {
        response
            .headers_mut()
            .insert("link", links.join(", ").parse().expect("link header"));
    }
    response
}

fn handle(
    state: &Mutex<StubState>,
    base: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().expect("stub state");
    // Enterprise Server layout: REST under /api/v3, GraphQL at /api/graphql.
    let path = match uri.path() {
        "/api/graphql" => "/graphql".to_string(),
        "/graphql" if state.enterprise => "/not-here".to_string(),
        other => other.strip_prefix("/api/v3").unwrap_or(other).to_string(),
    };
    state.requests.push((
        method.to_string(),
        uri.path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    ));
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let app_route = path == "/app" || path.starts_with("/app/") || path.ends_with("/installation");

    if app_route {
        // A JWT: three base64url parts, signed by the App's key (the signature is not
        // checked here; the shape and the issuer are).
        let jwt = authorization.strip_prefix("Bearer ").unwrap_or("");
        let parts: Vec<&str> = jwt.split('.').collect();
        if parts.len() != 3 {
            state.unauthorised.push(path.clone());
            return error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        }
    } else if authorization != format!("Bearer {INSTALLATION_TOKEN}")
        && authorization != format!("Bearer {PLAIN_TOKEN}")
    {
        state.unauthorised.push(path.clone());
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["app"]) => json_response(
            StatusCode::OK,
            json!({ "id": 1, "slug": APP_SLUG, "name": "deep-review (test)" }),
        ),
        ("GET", ["user"]) if authorization == format!("Bearer {PLAIN_TOKEN}") => json_response(
            StatusCode::OK,
            json!({ "login": PLAIN_TOKEN_USER, "id": 7, "type": "User" }),
        ),
        ("GET", ["user"]) => error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        ),
        ("POST", ["app", "installations", id, "access_tokens"]) => {
            if id.parse::<u64>().ok() != Some(INSTALLATION_ID) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            state.tokens_minted += 1;
            let expires = chrono::Utc::now() + chrono::Duration::hours(1);
            json_response(
                StatusCode::CREATED,
                json!({
                    "token": INSTALLATION_TOKEN,
                    "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "permissions": { "checks": "write", "contents": "read", "pull_requests": "write" },
                    "repository_selection": "all"
                }),
            )
        }
        ("GET", ["repos", _, _, "installation"]) | ("GET", ["orgs", _, "installation"]) => {
            json_response(
                StatusCode::OK,
                json!({ "id": INSTALLATION_ID, "app_id": 1, "target_type": "Organization", "account": { "login": "acme" } }),
            )
        }
        ("GET", ["orgs", org, "repos"]) => {
            let items: Vec<Value> = state
                .repositories
                .iter()
                .filter(|(name, _)| name.starts_with(&format!("{org}/")))
                .map(|(name, repository)| {
                    json!({
                        "id": 1296269,
                        "name": name.split('/').nth(1).unwrap_or_default(),
                        "full_name": name,
                        "private": false,
                        "archived": repository.archived,
                        "disabled": false,
                        "default_branch": "main",
                        "clone_url": repository.clone_url,
                    })
                })
                .collect();
            paginated(base, &uri, items)
        }
        (_, ["repos", owner, name, rest @ ..]) => {
            let full_name = format!("{owner}/{name}");
            repository_route(
                &mut state,
                base,
                &uri,
                &headers,
                method.as_str(),
                &full_name,
                rest,
                body,
            )
        }
        ("POST", ["graphql"]) => graphql(&mut state, &body),
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn pull_json(full_name: &str, repository: &StubRepository, pull: &StubPull) -> Value {
    json!({
        "url": format!("https://api.github.com/repos/{full_name}/pulls/{}", pull.number),
        "id": 1,
        "node_id": "MDExOlB1bGxSZXF1ZXN0MQ==",
        "number": pull.number,
        "state": pull.state,
        "locked": false,
        "title": pull.title,
        "user": { "login": pull.author, "id": 1, "type": "User" },
        "body": pull.body,
        "draft": pull.draft,
        "updated_at": pull.updated_at,
        "head": {
            "label": format!("acme:{}", pull.head_ref),
            "ref": pull.head_ref,
            "sha": pull.head_sha,
            "repo": { "full_name": full_name, "clone_url": repository.clone_url, "default_branch": "main" }
        },
        "base": {
            "label": "acme:main",
            "ref": "main",
            "sha": pull.base_sha,
            "repo": { "full_name": full_name, "clone_url": repository.clone_url, "default_branch": "main" }
        },
        "commits": pull.commits.len(),
        "changed_files": pull.files.len(),
    })
}

/// Who GitHub says wrote what a request posts: the token's user, or the App's bot.
fn author_of(headers: &HeaderMap) -> &'static str {
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if authorization == format!("Bearer {PLAIN_TOKEN}") {
        PLAIN_TOKEN_USER
    } else {
        APP_BOT_LOGIN
    }
}

#[allow(clippy::too_many_arguments)]
fn repository_route(
    state: &mut StubState,
    base: &str,
    uri: &Uri,
    headers: &HeaderMap,
    method: &str,
    full_name: &str,
    rest: &[&str],
    body: Value,
) -> Response {
    let author = author_of(headers);
    if let Some((status, message)) = &state.fail_with {
        return error(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        );
    }
    let Some(repository) = state.repositories.get(full_name).cloned() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let accept = headers
        .get("accept")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let pull_of = |number: &str| {
        number
            .parse::<u64>()
            .ok()
            .and_then(|number| repository.pulls.get(&number).cloned())
    };
    let new_id = |state: &mut StubState| {
        state.next_id += 1;
        state.next_id
    };
    match (method, rest) {
        ("GET", ["pulls"]) => {
            let items = repository
                .pulls
                .values()
                .filter(|pull| pull.state == "open")
                .map(|pull| pull_json(full_name, &repository, pull))
                .collect();
            paginated(base, uri, items)
        }
        ("GET", ["pulls", number]) => match pull_of(number) {
            None => error(StatusCode::NOT_FOUND, "Not Found"),
            Some(pull) if accept.contains("diff") => match &pull.diff {
                Some(diff) => (
                    StatusCode::OK,
                    [("content-type", "text/plain; charset=utf-8")],
                    diff.clone(),
                )
                    .into_response(),
                None => error(
                    StatusCode::NOT_ACCEPTABLE,
                    "Sorry, the diff exceeded the maximum number of lines (20000)",
                ),
            },
            Some(pull) => json_response(StatusCode::OK, pull_json(full_name, &repository, &pull)),
        },
        ("GET", ["pulls", number, "commits"]) => match pull_of(number) {
            None => error(StatusCode::NOT_FOUND, "Not Found"),
            Some(pull) => {
                let items = pull
                    .commits
                    .iter()
                    .map(|(sha, message)| json!({ "sha": sha, "commit": { "message": message, "author": { "name": pull.author } } }))
                    .collect();
                paginated(base, uri, items)
            }
        },
        ("GET", ["pulls", number, "files"]) => match pull_of(number) {
            None => error(StatusCode::NOT_FOUND, "Not Found"),
            Some(pull) => paginated(base, uri, pull.files.clone()),
        },
        ("GET", ["contents", ..]) => {
            let file = rest[1..].join("/");
            match (&repository.config, file.as_str()) {
                (Some(config), ".deep-review.toml") if accept.contains("raw") => {
                    (StatusCode::OK, config.clone()).into_response()
                }
                _ => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("GET", ["issues", number, "comments"]) => {
            let items = state
                .issue_comments
                .iter()
                .filter(|comment| {
                    comment["repository"] == full_name
                        && comment["issue_number"].as_u64() == number.parse::<u64>().ok()
                })
                .cloned()
                .collect();
            paginated(base, uri, items)
        }
        ("POST", ["issues", number, "comments"]) => {
            let id = new_id(state);
            let comment = json!({
                "id": id,
                "node_id": format!("IC_{id}"),
                "body": body["body"],
                "user": { "login": author, "type": "Bot" },
                "repository": full_name,
                "issue_number": number.parse::<u64>().unwrap_or_default(),
            });
            state.issue_comments.push(comment.clone());
            json_response(StatusCode::CREATED, comment)
        }
        ("PATCH", ["issues", "comments", id]) => {
            match state
                .issue_comments
                .iter_mut()
                .find(|comment| comment["id"].as_u64() == id.parse::<u64>().ok())
            {
                Some(comment) => {
                    comment["body"] = body["body"].clone();
                    comment["edits"] = json!(comment["edits"].as_u64().unwrap_or(0) + 1);
                    json_response(StatusCode::OK, comment.clone())
                }
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("GET", ["pulls", number, "comments"]) => {
            let items = state
                .review_comments
                .iter()
                .filter(|comment| {
                    comment["repository"] == full_name
                        && comment["pull_number"].as_u64() == number.parse::<u64>().ok()
                })
                .cloned()
                .collect();
            paginated(base, uri, items)
        }
        ("POST", ["pulls", number, "reviews"]) => {
            let Some(pull) = pull_of(number) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            let comments = body["comments"].as_array().cloned().unwrap_or_default();
            // GitHub refuses a whole review when one comment is not on a line of the diff.
            for comment in &comments {
                let on_diff = pull.files.iter().any(|file| {
                    file["filename"] == comment["path"]
                        && patch_lines(file["patch"].as_str().unwrap_or(""))
                            .contains(&comment["line"].as_u64().unwrap_or(0))
                });
                if !on_diff {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Unprocessable Entity: Line could not be resolved",
                    );
                }
            }
            let review_id = new_id(state);
            for comment in comments {
                let id = new_id(state);
                state.review_comments.push(json!({
                    "id": id,
                    "node_id": format!("PRRC_{id}"),
                    "pull_request_review_id": review_id,
                    "path": comment["path"],
                    "line": comment["line"],
                    "side": comment["side"],
                    "commit_id": body["commit_id"],
                    "body": comment["body"],
                    "user": { "login": author, "type": "Bot" },
                    "repository": full_name,
                    "pull_number": number.parse::<u64>().unwrap_or_default(),
                }));
            }
            let review = json!({ "id": review_id, "state": "COMMENTED", "body": body["body"], "commit_id": body["commit_id"] });
            state.reviews.push(review.clone());
            json_response(StatusCode::OK, review)
        }
        ("PATCH", ["pulls", "comments", id]) => {
            match state
                .review_comments
                .iter_mut()
                .find(|comment| comment["id"].as_u64() == id.parse::<u64>().ok())
            {
                Some(comment) => {
                    comment["body"] = body["body"].clone();
                    json_response(StatusCode::OK, comment.clone())
                }
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("GET", ["commits", sha, "check-runs"]) => {
            let name = query_parameter(uri, "check_name");
            let runs: Vec<Value> = state
                .check_runs
                .iter()
                .filter(|run| run["repository"] == full_name && run["head_sha"] == *sha)
                .filter(|run| {
                    name.as_ref()
                        .is_none_or(|name| run["name"] == name.as_str())
                })
                .cloned()
                .collect();
            json_response(
                StatusCode::OK,
                json!({ "total_count": runs.len(), "check_runs": runs }),
            )
        }
        ("POST", ["check-runs"]) => {
            let id = new_id(state);
            let mut run = body.clone();
            run["id"] = json!(id);
            run["repository"] = json!(full_name);
            state.check_run_history.push(run.clone());
            state.check_runs.push(run.clone());
            note_in_progress(state);
            json_response(StatusCode::CREATED, run)
        }
        ("PATCH", ["check-runs", id]) => {
            let found = state
                .check_runs
                .iter_mut()
                .find(|run| run["id"].as_u64() == id.parse::<u64>().ok());
            match found {
                Some(run) => {
                    if let (Some(run), Some(update)) = (run.as_object_mut(), body.as_object()) {
                        for (key, value) in update {
                            run.insert(key.clone(), value.clone());
                        }
                    }
                    let run = run.clone();
                    state.check_run_history.push(run.clone());
                    note_in_progress(state);
                    json_response(StatusCode::OK, run)
                }
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// Notes how many check runs created through the API are in progress now (runs a test
/// put there beforehand, marked `preloaded`, stand for other reviews).
fn note_in_progress(state: &mut StubState) {
    let running = state
        .check_runs
        .iter()
        .filter(|run| run["status"] == "in_progress" && run["preloaded"] != true)
        .count();
    state.most_in_progress = state.most_in_progress.max(running);
}

/// Head-side lines of a patch (added and context lines).
fn patch_lines(patch: &str) -> Vec<u64> {
    let mut lines = Vec::new();
    let mut next = 0u64;
    for line in patch.lines() {
        if let Some(header) = line.strip_prefix("@@ ") {
            next = header
                .split_whitespace()
                .find_map(|part| part.strip_prefix('+'))
                .and_then(|range| range.split(',').next())
                .and_then(|start| start.parse().ok())
                .unwrap_or(0);
        } else if !line.starts_with('-') && !line.starts_with('\\') {
            lines.push(next);
            next += 1;
        }
    }
    lines
}

fn graphql(state: &mut StubState, body: &Value) -> Response {
    let query = body["query"].as_str().unwrap_or("");
    if query.contains("unresolveReviewThread") {
        let thread = body["variables"]["thread"].as_str().unwrap_or("");
        state.resolved_threads.retain(|resolved| resolved != thread);
        state.reopened_threads.push(thread.to_string());
        return json_response(
            StatusCode::OK,
            json!({ "data": { "unresolveReviewThread": { "thread": { "isResolved": false } } } }),
        );
    }
    if query.contains("resolveReviewThread") {
        let thread = body["variables"]["thread"]
            .as_str()
            .unwrap_or("")
            .to_string();
        state.resolved_threads.push(thread);
        return json_response(
            StatusCode::OK,
            json!({ "data": { "resolveReviewThread": { "thread": { "isResolved": true } } } }),
        );
    }
    if query.contains("reviewThreads") {
        let threads: Vec<Value> = state
            .review_comments
            .iter()
            .map(|comment| {
                let thread = format!("PRRT_{}", comment["id"]);
                json!({
                    "id": thread,
                    "isResolved": state.resolved_threads.contains(&thread),
                    "comments": { "nodes": [ { "id": comment["node_id"] } ] }
                })
            })
            .collect();
        return json_response(
            StatusCode::OK,
            json!({ "data": { "repository": { "pullRequest": { "reviewThreads": { "nodes": threads } } } } }),
        );
    }
    json_response(
        StatusCode::OK,
        json!({ "errors": [ { "message": "unknown query" } ] }),
    )
}

/// GitHub's `files` entries and rendered diff of `base...head` in a local repository.
pub fn files_and_diff(
    repository: &crate::util::GitRepo,
    base: &str,
    head: &str,
) -> (Vec<Value>, String) {
    let range = format!("{base}...{head}");
    let diff = repository.git(&["diff", "--no-color", &range]);
    let mut files = Vec::new();
    for line in repository.git(&["diff", "--name-status", &range]).lines() {
        let (status, path) = line.split_once('\t').expect("name-status line");
        let patch = repository.git(&["diff", "--no-color", &range, "--", path]);
        let hunks = patch
            .find("\n@@")
            .map(|start| patch[start + 1..].trim_end().to_string())
            .unwrap_or_default();
        files.push(json!({
            "sha": "bbcd538c8e72b8c175046e27cc8f907076331401",
            "filename": path,
            "status": match status { "A" => "added", "D" => "removed", _ => "modified" },
            "additions": 1,
            "deletions": 0,
            "changes": 1,
            "patch": hunks,
        }));
    }
    (files, diff)
}
