//! Anthropic's Messages API (`POST /v1/messages`).

use serde_json::{json, Value};

use super::{ModelReply, ModelRequest, ToolCall, ToolChoice, Turn, WireFormat};

/// The API version this wire format follows.
const ANTHROPIC_VERSION: &str = "2023-06-01";

pub(crate) struct Messages;

impl WireFormat for Messages {
    fn provider(&self) -> &'static str {
        "Anthropic"
    }

    fn default_base_url(&self) -> &'static str {
        "https://api.anthropic.com"
    }

    fn request(
        &self,
        client: &reqwest::Client,
        base_url: &str,
        api_key: &str,
        request: &ModelRequest<'_>,
    ) -> reqwest::RequestBuilder {
        let messages: Vec<Value> = request
            .turns
            .iter()
            .map(|turn| match turn {
                Turn::User(text) => json!({
                    "role": "user",
                    "content": [{"type": "text", "text": text}],
                }),
                Turn::Assistant { text, calls, .. } => {
                    let mut content = Vec::new();
                    if !text.is_empty() {
                        content.push(json!({"type": "text", "text": text}));
                    }
                    content.extend(calls.iter().map(|call| {
                        json!({
                            "type": "tool_use",
                            "id": call.id,
                            "name": call.name,
                            "input": call.arguments,
                        })
                    }));
                    json!({"role": "assistant", "content": content})
                }
                Turn::ToolResults(outputs) => json!({
                    "role": "user",
                    "content": outputs.iter().map(|output| json!({
                        "type": "tool_result",
                        "tool_use_id": output.call_id,
                        "content": output.content,
                        "is_error": output.is_error,
                    })).collect::<Vec<_>>(),
                }),
            })
            .collect();
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": tool.parameters,
                })
            })
            .collect();
        let tool_choice = match request.choice {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::Force(name) => json!({"type": "tool", "name": name}),
        };
        let mut body = json!({
            "model": request.model,
            "max_tokens": request.max_output_tokens,
            "system": request.system,
            "messages": messages,
            "tools": tools,
            "tool_choice": tool_choice,
        });
        if let Some(effort) = request.effort {
            body["output_config"] = json!({"effort": effort});
        }
        client
            .post(format!("{base_url}/v1/messages"))
            .header("x-api-key", api_key)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&body)
    }

    fn reply(&self, response: &Value) -> Result<ModelReply, String> {
        let content = response
            .get("content")
            .and_then(Value::as_array)
            .ok_or("no `content` array")?;
        let mut reply = ModelReply {
            text: String::new(),
            calls: Vec::new(),
            provider_content: None,
            input_tokens: 0,
            output_tokens: 0,
        };
        for block in content {
            match block.get("type").and_then(Value::as_str) {
                Some("text") => {
                    reply.text.push_str(
                        block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    );
                }
                Some("tool_use") => reply.calls.push(ToolCall {
                    id: block
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or("a `tool_use` block has no `id`")?
                        .to_string(),
                    name: block
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or("a `tool_use` block has no `name`")?
                        .to_string(),
                    arguments: block.get("input").cloned().unwrap_or(Value::Null),
                }),
                _ => {}
            }
        }
        if let Some(usage) = response.get("usage") {
            let count = |field: &str| usage.get(field).and_then(Value::as_u64).unwrap_or(0);
            // Cached prompt tokens are prompt tokens, billed at their own rate.
            reply.input_tokens = count("input_tokens")
                + count("cache_creation_input_tokens")
                + count("cache_read_input_tokens");
            reply.output_tokens = count("output_tokens");
        }
        Ok(reply)
    }
}
