//! A local HTTP server that answers like a model provider: each test scripts the responses
//! (in the provider's real wire format) and reads back the requests it received.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One scripted response.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Scripted {
    /// A 200 with a JSON body.
    pub fn ok(body: Value) -> Self {
        Scripted {
            status: 200,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// An error status with the providers' common error body (`error.message`).
    pub fn error(status: u16, message: &str) -> Self {
        Scripted {
            status,
            headers: Vec::new(),
            body: json!({"type": "error", "error": {"type": "error", "message": message, "code": status}})
                .to_string(),
        }
    }

    /// Adds a header, e.g. `Retry-After`.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct State {
    script: VecDeque<Scripted>,
    requests: Vec<Recorded>,
}

/// The server; it stops when dropped.
pub struct ModelServer {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ModelServer {
    /// Serves `script` in order on a free local port; past its end it answers 500.
    pub async fn start(script: Vec<Scripted>) -> Self {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            requests: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = Arc::clone(&shared);
            async move {
                let mut state = state.lock().unwrap();
                state.requests.push(Recorded {
                    path: uri.path().to_string(),
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let scripted = state
                    .script
                    .pop_front()
                    .unwrap_or_else(|| Scripted::error(500, "the test's script is exhausted"));
                let mut response: Response = (
                    StatusCode::from_u16(scripted.status).unwrap(),
                    scripted.body,
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                for (name, value) in scripted.headers {
                    response.headers_mut().insert(name, value.parse().unwrap());
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ModelServer { url, state, task }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A review as a model hands it in: one finding on `path:line`.
pub fn review_answer(path: &str, line: u32, title: &str) -> Value {
    json!({
        "findings": [{
            "id": "I1",
            "severity": "important",
            "title": title,
            "body": "Found by the stand-in model.",
            "locations": [{"path": path, "start_line": line}],
        }],
        "files_reviewed": [{"path": path, "status": "has_findings"}],
    })
}

/// Anthropic Messages responses.
pub mod anthropic {
    use super::*;

    pub fn tool_use(
        id: &str,
        name: &str,
        input: Value,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Scripted {
        Scripted::ok(json!({
            "id": format!("msg_{id}"),
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": id, "name": name, "input": input},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": output_tokens},
        }))
    }
}

/// OpenAI Chat Completions responses.
pub mod openai {
    use super::*;

    pub fn tool_call(
        id: &str,
        name: &str,
        arguments: &str,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> Scripted {
        Scripted::ok(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-test",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}],
                },
                "finish_reason": "tool_calls",
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
        }))
    }

    pub fn text(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Scripted {
        Scripted::ok(json!({
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-test",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
        }))
    }
}

/// Gemini generateContent responses.
pub mod gemini {
    use super::*;

    pub fn function_call(
        name: &str,
        args: Value,
        prompt_tokens: u64,
        output_tokens: u64,
    ) -> Scripted {
        Scripted::ok(json!({
            "candidates": [{
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": name, "args": args}, "thoughtSignature": format!("signature-{name}")}],
                },
                "finishReason": "STOP",
                "index": 0,
            }],
            "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens, "totalTokenCount": prompt_tokens + output_tokens},
            "modelVersion": "gemini-test",
        }))
    }
}
