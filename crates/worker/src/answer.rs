//! Turning a model's final answer into an [`AgentResult`]: the JSON is taken from wherever
//! the model put it (alone, in a code fence, after some prose) and common defects
//! (trailing commas, comments, single quotes) are repaired with a JSON5 parser.

use deep_review_protocol::{parse_agent_result, AgentResult};
use serde_json::Value;

/// Parses the answer `text` of `agent`. The error names what is wrong, for the re-ask and
/// for the failed result.
pub(crate) fn parse_answer_text(agent: &str, text: &str) -> Result<AgentResult, String> {
    let mut first_error = None;
    for candidate in candidates(text) {
        let value = serde_json::from_str::<Value>(candidate)
            .ok()
            .or_else(|| json5::from_str::<Value>(candidate).ok());
        match value {
            Some(value @ Value::Object(_)) => match parse_answer_value(agent, value) {
                Ok(result) => return Ok(result),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            },
            _ => continue,
        }
    }
    Err(first_error.unwrap_or_else(|| {
        "the answer holds no JSON object; reply with the review as one JSON object".to_string()
    }))
}

/// Validates an answer given as JSON (a tool call's input) against the result schema.
pub(crate) fn parse_answer_value(agent: &str, mut value: Value) -> Result<AgentResult, String> {
    let Some(object) = value.as_object_mut() else {
        return Err("the answer must be a JSON object".to_string());
    };
    // The worker, not the model, names the agent.
    object.insert("agent".to_string(), Value::String(agent.to_string()));
    parse_agent_result(&value.to_string()).map_err(|error| error.to_string())
}

/// Places a JSON object may be in `text`, most likely first.
fn candidates(text: &str) -> Vec<&str> {
    let trimmed = text.trim();
    let mut candidates = vec![trimmed];
    // The last fenced block, with or without a language tag.
    let mut rest = trimmed;
    let mut last_fenced = None;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(after.len(), |newline| newline + 1);
        let Some(end) = after[body_start..].find("```") else {
            break;
        };
        last_fenced = Some(after[body_start..body_start + end].trim());
        rest = &after[body_start + end + 3..];
    }
    candidates.extend(last_fenced);
    // From the first `{` to the last `}`: prose before and after.
    if let (Some(start), Some(end)) = (trimmed.find('{'), trimmed.rfind('}')) {
        if start < end {
            candidates.push(&trimmed[start..=end]);
        }
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_alone_fenced_or_among_prose() {
        for text in [
            r#"{"findings": []}"#,
            "Here is my review:\n```json\n{\"findings\": []}\n```\nThanks.",
            "I reviewed it. {\"findings\": [], \"testing_gaps\": [\"x\"]} Done.",
        ] {
            let result = parse_answer_text("gpt", text).unwrap();
            assert_eq!(result.agent, "gpt", "{text}");
        }
    }

    #[test]
    fn common_defects_are_repaired() {
        let text = "{\n  // my review\n  'findings': [],\n  \"testing_gaps\": [\"x\",],\n}";
        let result = parse_answer_text("gpt", text).unwrap();
        assert_eq!(result.testing_gaps, ["x"]);
    }

    #[test]
    fn schema_violations_name_the_field() {
        let text = r#"{"findings": [{"title": "t", "severity": "catastrophic"}]}"#;
        let error = parse_answer_text("gpt", text).unwrap_err();
        assert!(error.contains("findings[0]"), "{error}");
        let error = parse_answer_text("gpt", "No issues found.").unwrap_err();
        assert!(error.contains("no JSON object"), "{error}");
    }

    #[test]
    fn the_model_cannot_rename_itself() {
        let result = parse_answer_text("gpt", r#"{"agent": "claude"}"#).unwrap();
        assert_eq!(result.agent, "gpt");
    }
}
