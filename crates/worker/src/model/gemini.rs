//! Google's Gemini API (`POST /v1beta/models/{model}:generateContent`) with function
//! calling.

use serde_json::{json, Value};

use super::{ModelReply, ModelRequest, ToolCall, ToolChoice, Turn, WireFormat};

pub(crate) struct GenerateContent;

impl WireFormat for GenerateContent {
    fn provider(&self) -> &'static str {
        "Gemini"
    }

    fn default_base_url(&self) -> &'static str {
        "https://generativelanguage.googleapis.com"
    }

    fn request(
        &self,
        client: &reqwest::Client,
        base_url: &str,
        api_key: &str,
        request: &ModelRequest<'_>,
    ) -> reqwest::RequestBuilder {
        let contents: Vec<Value> = request
            .turns
            .iter()
            .map(|turn| match turn {
                Turn::User(text) => json!({"role": "user", "parts": [{"text": text}]}),
                Turn::Assistant {
                    text,
                    calls,
                    provider_content,
                } => {
                    // The model's own parts go back verbatim: they may carry thought
                    // signatures the API requires to see again.
                    if let Some(content) = provider_content {
                        return content.clone();
                    }
                    let mut parts = Vec::new();
                    if !text.is_empty() {
                        parts.push(json!({"text": text}));
                    }
                    parts.extend(calls.iter().map(
                        |call| json!({"functionCall": {"name": call.name, "args": call.arguments}}),
                    ));
                    json!({"role": "model", "parts": parts})
                }
                Turn::ToolResults(outputs) => json!({
                    "role": "user",
                    "parts": outputs.iter().map(|output| {
                        let response = if output.is_error {
                            json!({"error": output.content})
                        } else {
                            json!({"output": output.content})
                        };
                        json!({"functionResponse": {"name": output.name, "response": response}})
                    }).collect::<Vec<_>>(),
                }),
            })
            .collect();
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "parametersJsonSchema": tool.parameters,
                })
            })
            .collect();
        let calling = match request.choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::Force(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        let mut body = json!({
            "systemInstruction": {"parts": [{"text": request.system}]},
            "contents": contents,
            "tools": [{"functionDeclarations": declarations}],
            "toolConfig": {"functionCallingConfig": calling},
            "generationConfig": {"maxOutputTokens": request.max_output_tokens},
        });
        if let Some(effort) = request.effort {
            body["generationConfig"]["thinkingConfig"] = json!({"thinkingLevel": effort});
        }
        client
            .post(format!(
                "{base_url}/v1beta/models/{}:generateContent",
                request.model
            ))
            .header("x-goog-api-key", api_key)
            .json(&body)
    }

    fn reply(&self, response: &Value) -> Result<ModelReply, String> {
        let candidate = response.pointer("/candidates/0").ok_or_else(|| {
            match response.pointer("/promptFeedback/blockReason") {
                Some(reason) => format!("the prompt was blocked: {reason}"),
                None => "no `candidates[0]`".to_string(),
            }
        })?;
        let content = candidate.get("content").cloned().unwrap_or(json!({}));
        let mut text = String::new();
        let mut calls = Vec::new();
        for (index, part) in content
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(part_text) = part.get("text").and_then(Value::as_str) {
                text.push_str(part_text);
            }
            if let Some(call) = part.get("functionCall") {
                calls.push(ToolCall {
                    id: call
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("call_{index}")),
                    name: call
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or("a `functionCall` has no `name`")?
                        .to_string(),
                    arguments: call.get("args").cloned().unwrap_or(json!({})),
                });
            }
        }
        let usage = response.get("usageMetadata");
        let count = |field: &str| {
            usage
                .and_then(|usage| usage.get(field))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let mut provider_content = content;
        if provider_content.get("role").is_none() {
            provider_content["role"] = json!("model");
        }
        Ok(ModelReply {
            text,
            calls,
            provider_content: Some(provider_content),
            input_tokens: count("promptTokenCount"),
            // Thinking tokens are billed as output.
            output_tokens: count("candidatesTokenCount") + count("thoughtsTokenCount"),
        })
    }
}
