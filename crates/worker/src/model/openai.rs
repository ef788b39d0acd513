//! OpenAI's Chat Completions API (`POST {base}/chat/completions`), which vLLM, Ollama and
//! LiteLLM also serve.

use serde_json::{json, Value};

use super::{ModelReply, ModelRequest, ToolCall, ToolChoice, Turn, WireFormat};

const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

pub(crate) struct ChatCompletions;

impl WireFormat for ChatCompletions {
    fn provider(&self) -> &'static str {
        "OpenAI"
    }

    fn default_base_url(&self) -> &'static str {
        OPENAI_BASE_URL
    }

    fn request(
        &self,
        client: &reqwest::Client,
        base_url: &str,
        api_key: &str,
        request: &ModelRequest<'_>,
    ) -> reqwest::RequestBuilder {
        let mut messages = vec![json!({"role": "system", "content": request.system})];
        for turn in request.turns {
            match turn {
                Turn::User(text) => messages.push(json!({"role": "user", "content": text})),
                Turn::Assistant { text, calls, .. } => {
                    let mut message = json!({
                        "role": "assistant",
                        "content": if text.is_empty() { Value::Null } else { json!(text) },
                    });
                    if !calls.is_empty() {
                        message["tool_calls"] = calls
                            .iter()
                            .map(|call| {
                                json!({
                                    "id": call.id,
                                    "type": "function",
                                    "function": {
                                        "name": call.name,
                                        // The API carries arguments as a JSON string.
                                        "arguments": match &call.arguments {
                                            Value::String(raw) => raw.clone(),
                                            other => other.to_string(),
                                        },
                                    },
                                })
                            })
                            .collect();
                    }
                    messages.push(message);
                }
                Turn::ToolResults(outputs) => {
                    messages.extend(outputs.iter().map(|output| {
                        json!({
                            "role": "tool",
                            "tool_call_id": output.call_id,
                            "content": output.content,
                        })
                    }));
                }
            }
        }
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                })
            })
            .collect();
        let tool_choice = match request.choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::Force(name) => json!({"type": "function", "function": {"name": name}}),
        };
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "tools": tools,
            "tool_choice": tool_choice,
        });
        // OpenAI itself renamed the limit; compatible servers mostly know the old name.
        if base_url == OPENAI_BASE_URL {
            body["max_completion_tokens"] = json!(request.max_output_tokens);
        } else {
            body["max_tokens"] = json!(request.max_output_tokens);
        }
        if let Some(effort) = request.effort {
            body["reasoning_effort"] = json!(effort);
        }
        let builder = client
            .post(format!("{base_url}/chat/completions"))
            .json(&body);
        if api_key.is_empty() {
            builder
        } else {
            builder.bearer_auth(api_key)
        }
    }

    fn reply(&self, response: &Value) -> Result<ModelReply, String> {
        let message = response
            .pointer("/choices/0/message")
            .ok_or("no `choices[0].message`")?;
        let mut calls = Vec::new();
        for (index, call) in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let function = call
                .get("function")
                .ok_or("a tool call has no `function`")?;
            let raw = function
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            calls.push(ToolCall {
                id: call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{index}")),
                name: function
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("a tool call has no `function.name`")?
                    .to_string(),
                // Arguments that are not JSON stay a string, so validation names the
                // problem to the model.
                arguments: serde_json::from_str(raw).unwrap_or_else(|_| json!(raw)),
            });
        }
        let usage = response.get("usage");
        let count = |field: &str| {
            usage
                .and_then(|usage| usage.get(field))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        Ok(ModelReply {
            text: message
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            calls,
            provider_content: None,
            input_tokens: count("prompt_tokens"),
            output_tokens: count("completion_tokens"),
        })
    }
}
