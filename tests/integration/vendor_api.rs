//! A local model API for the real vendor CLIs: Anthropic Messages (SSE, and the plain JSON
//! Claude Code falls back to), OpenAI Responses (SSE, as Codex streams it) and Gemini
//! `generateContent` / `streamGenerateContent?alt=sse`. Unlike [`crate::model_server`],
//! which replays a script, it answers what each request asks: a CLI makes requests of its
//! own (retries, fallbacks), so the conversation decides the answer. The first request of
//! a review asks for one tool call (a grep the CLI really runs in its checkout); once the
//! tool's result comes back, the review is answered. Requests without the key are refused
//! with 401, and a fault can be injected into the first review request.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The key the CLIs must send.
pub const KEY: &str = "sk-vendor-test-7d1c";

/// The finding every CLI hands in, on the known-problems repository.
pub const TITLE: &str = "Failures of charge() are swallowed by except/pass";

/// What the fake does to the first review request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Answers it.
    None,
    /// Starts a 200 event stream and cuts the connection half-way through an event.
    DropStream,
    /// Answers with this status (429 with `Retry-After: 0`, or 500).
    Status(u16),
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

struct State {
    fault: Fault,
    faulted: bool,
    requests: Vec<Recorded>,
}

/// The server; it stops when dropped.
pub struct VendorApi {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl VendorApi {
    /// Serves on a free local port.
    pub async fn start(fault: Fault) -> Self {
        let state = Arc::new(Mutex::new(State {
            fault,
            faulted: false,
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = Arc::clone(&shared);
            async move { answer(&state, &uri, headers, &body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        VendorApi { url, state, task }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for VendorApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    Anthropic,
    OpenAi,
    Gemini,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

fn answer(state: &Mutex<State>, uri: &Uri, headers: HeaderMap, body: &[u8]) -> Response {
    let path = uri.path().to_string();
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut state = state.lock().unwrap();
    state.requests.push(Recorded {
        path: path.clone(),
        headers: headers.clone(),
        body: request.clone(),
    });
    let provider = if path.ends_with("/v1/messages") {
        Provider::Anthropic
    } else if path.ends_with("/responses") {
        Provider::OpenAi
    } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
        Provider::Gemini
    } else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    };
    let key = match provider {
        Provider::Anthropic => header(&headers, "x-api-key").to_string(),
        Provider::OpenAi => header(&headers, "authorization")
            .trim_start_matches("Bearer ")
            .to_string(),
        Provider::Gemini => header(&headers, "x-goog-api-key").to_string(),
    };
    if key != KEY {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    let conversation = request.to_string();
    let (tool, result_marker) = match provider {
        Provider::Anthropic => ("\"Grep\"", "\"tool_result\""),
        Provider::OpenAi => ("\"exec_command\"", "\"function_call_output\""),
        Provider::Gemini => ("\"grep_search\"", "\"functionResponse\""),
    };
    // A review request offers the tool; side requests (routing, titles) do not.
    let reviewing = request
        .get("tools")
        .is_some_and(|tools| tools.to_string().contains(tool));
    let stage = if !reviewing {
        Stage::Aside
    } else if conversation.contains(result_marker) {
        Stage::Answer
    } else {
        Stage::CallTool
    };
    if reviewing && !state.faulted && state.fault != Fault::None {
        state.faulted = true;
        match state.fault {
            Fault::Status(status) => {
                let status = StatusCode::from_u16(status).unwrap();
                let mut response = error(status, "rate_limit_error", "slow down, test");
                response
                    .headers_mut()
                    .insert("retry-after", "0".parse().unwrap());
                return response;
            }
            Fault::DropStream => return dropped_stream(provider),
            Fault::None => {}
        }
    }
    let streaming = match provider {
        Provider::Anthropic => request.get("stream").and_then(Value::as_bool) == Some(true),
        Provider::OpenAi => true,
        Provider::Gemini => path.contains(":streamGenerateContent"),
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gemini-test")
        .to_string();
    match provider {
        Provider::Anthropic => anthropic(stage, &model, streaming),
        Provider::OpenAi => openai(stage, &model),
        Provider::Gemini => gemini(stage, streaming),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// Not a review request: a short text answer.
    Aside,
    /// The first review request: one tool call.
    CallTool,
    /// The tool's result came back: the review.
    Answer,
}

/// The review every CLI hands in.
pub fn review_json() -> String {
    json!({
        "findings": [{
            "severity": "important",
            "title": TITLE,
            "body": "A failed charge is silently ignored, so the order looks paid.",
            "tag": "regression",
            "category": "error-handling",
            "locations": [{"path": "app/service.py", "start_line": 8, "end_line": 9}],
        }],
        "files_reviewed": [{"path": "app/service.py", "status": "has_findings"}],
    })
    .to_string()
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message, "code": status.as_u16()}});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn event_stream(events: Vec<(Option<&str>, Value)>) -> Response {
    let text: String = events
        .into_iter()
        .map(|(name, data)| match name {
            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        })
        .collect();
    (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        text,
    )
        .into_response()
}

/// A 200 stream that breaks off inside its first event.
fn dropped_stream(provider: Provider) -> Response {
    let partial = match provider {
        Provider::Anthropic => "event: message_start\ndata: {\"type\":\"message_start\",\"mess",
        Provider::OpenAi => "event: response.created\ndata: {\"type\":\"response.crea",
        Provider::Gemini => "data: {\"candidates\":[{\"content\":{\"ro",
    };
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(partial.as_bytes())),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the test drops the stream",
        )),
    ];
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap()
}

/// Token counts per review request, so a test can check the CLI's sums: the tool call,
/// then the answer.
pub mod usage {
    /// Anthropic: input, cache reads, output.
    pub const ANTHROPIC: [(u64, u64, u64); 2] = [(1000, 200, 40), (1500, 200, 60)];
    /// OpenAI: input (cached part included), cached part, output (reasoning included).
    pub const OPENAI: [(u64, u64, u64); 2] = [(1200, 200, 70), (1800, 300, 90)];
    /// Gemini: prompt, candidates, thoughts.
    pub const GEMINI: [(u64, u64, u64); 2] = [(900, 60, 15), (1100, 80, 20)];
}

fn counts(stage: Stage, table: &[(u64, u64, u64); 2]) -> (u64, u64, u64) {
    match stage {
        Stage::Answer => table[1],
        _ => table[0],
    }
}

fn anthropic(stage: Stage, model: &str, streaming: bool) -> Response {
    let (input, cache_read, output) = counts(stage, &usage::ANTHROPIC);
    let (block, stop_reason) = match stage {
        Stage::CallTool => (
            json!({"type": "tool_use", "id": "toolu_grep_1", "name": "Grep",
                   "input": {"pattern": "except Exception", "output_mode": "content", "-n": true}}),
            "tool_use",
        ),
        Stage::Answer => (json!({"type": "text", "text": review_json()}), "end_turn"),
        Stage::Aside => (json!({"type": "text", "text": "Review"}), "end_turn"),
    };
    let usage = json!({"input_tokens": input, "cache_creation_input_tokens": 0,
                       "cache_read_input_tokens": cache_read, "output_tokens": output});
    if !streaming {
        return axum::Json(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let (start_block, delta) = if block["type"] == "tool_use" {
        (
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
            json!({"type": "input_json_delta", "partial_json": block["input"].to_string()}),
        )
    } else {
        (
            json!({"type": "text", "text": ""}),
            json!({"type": "text_delta", "text": block["text"]}),
        )
    };
    event_stream(vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": cache_read, "output_tokens": 1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": start_block}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": output}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ])
}

fn openai(stage: Stage, model: &str) -> Response {
    let (input, cached, output) = counts(stage, &usage::OPENAI);
    let item = match stage {
        Stage::CallTool => json!({
            "type": "function_call", "id": "fc_grep_1", "call_id": "call_grep_1",
            "name": "exec_command", "status": "completed",
            "arguments": json!({"cmd": "grep -rn 'except Exception' app"}).to_string(),
        }),
        Stage::Answer | Stage::Aside => json!({
            "type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": review_json(), "annotations": []}],
        }),
    };
    let response = json!({"id": "resp_fake", "object": "response", "created_at": 1_700_000_000,
                          "status": "in_progress", "model": model, "output": []});
    let mut completed = response.clone();
    completed["status"] = json!("completed");
    completed["output"] = json!([item]);
    completed["usage"] = json!({
        "input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": input + output,
    });
    event_stream(vec![
        (
            Some("response.created"),
            json!({"type": "response.created", "response": response}),
        ),
        (
            Some("response.output_item.added"),
            json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
        ),
        (
            Some("response.output_item.done"),
            json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        ),
        (
            Some("response.completed"),
            json!({"type": "response.completed", "response": completed}),
        ),
    ])
}

fn gemini(stage: Stage, streaming: bool) -> Response {
    let (prompt, candidates, thoughts) = counts(stage, &usage::GEMINI);
    let part = match stage {
        Stage::CallTool => json!({"functionCall": {"name": "grep_search",
                                  "args": {"pattern": "except Exception"}},
                                  "thoughtSignature": "signature-grep"}),
        Stage::Answer => json!({"text": review_json()}),
        Stage::Aside => json!({"text": "{\"reasoning\": \"simple\", \"model_choice\": \"flash\"}"}),
    };
    let chunk = json!({
        "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
                          "thoughtsTokenCount": thoughts,
                          "totalTokenCount": prompt + candidates + thoughts},
        "modelVersion": "gemini-test",
    });
    if streaming {
        event_stream(vec![(None, chunk)])
    } else {
        axum::Json(chunk).into_response()
    }
}
