use serde::de::DeserializeOwned;

use crate::{AgentResult, SCHEMA_VERSION};

/// Why a document could not be read as a protocol type.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON of the expected shape; `path` names the offending field.
    #[error("invalid {what} at `{path}`: {message}")]
    Invalid {
        /// What was being read, e.g. "agent result".
        what: &'static str,
        /// JSON path of the field that failed, `.` for the document itself.
        path: String,
        /// serde's description of the problem.
        message: String,
    },
    /// The document declares a newer format than this build understands.
    #[error("{what} has schema_version {found}, newer than the supported {supported}")]
    UnsupportedVersion {
        /// What was being read.
        what: &'static str,
        /// The version in the document.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
}

/// Parses `text` as `T`, naming the failing field on error.
pub fn parse_json<T: DeserializeOwned>(what: &'static str, text: &str) -> Result<T, ParseError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        ParseError::Invalid {
            what,
            path: error.path().to_string(),
            message: error.inner().to_string(),
        }
    })?;
    deserializer.end().map_err(|error| ParseError::Invalid {
        what,
        path: ".".to_string(),
        message: error.to_string(),
    })?;
    Ok(value)
}

/// Parses an agent result, checking its schema version.
pub fn parse_agent_result(text: &str) -> Result<AgentResult, ParseError> {
    let result: AgentResult = parse_json("agent result", text)?;
    if result.schema_version > SCHEMA_VERSION {
        return Err(ParseError::UnsupportedVersion {
            what: "agent result",
            found: result.schema_version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentStatus, Severity};

    #[test]
    fn minimal_hand_written_result_is_accepted() {
        let result = parse_agent_result(
            r#"{"agent":"me","findings":[{"severity":"important","title":"x",
                "locations":[{"path":"a.rs","start_line":3}]}]}"#,
        )
        .unwrap();
        assert_eq!(result.status, AgentStatus::Completed);
        assert_eq!(result.findings[0].severity, Severity::Important);
        assert_eq!(result.findings[0].locations[0].to_string(), "a.rs:3");
    }

    #[test]
    fn error_names_the_failing_field() {
        let error =
            parse_agent_result(r#"{"agent":"me","findings":[{"severity":"huge","title":"x"}]}"#)
                .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("findings[0].severity"), "{message}");
        assert!(message.contains("huge"), "{message}");
    }

    #[test]
    fn missing_required_field_is_named() {
        let error = parse_agent_result(r#"{"findings":[]}"#).unwrap_err();
        assert!(error.to_string().contains("agent"), "{error}");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse_agent_result(r#"{"agent":"me"} trailing"#).is_err());
    }

    #[test]
    fn newer_schema_version_is_refused() {
        let error = parse_agent_result(r#"{"agent":"me","schema_version":99}"#).unwrap_err();
        assert!(matches!(
            error,
            ParseError::UnsupportedVersion { found: 99, .. }
        ));
    }

    #[test]
    fn schemas_are_generated() {
        let schema = crate::agent_result_schema();
        assert!(schema["properties"]["findings"].is_object(), "{schema}");
        let report = crate::report_schema();
        assert!(report["properties"]["verdict"].is_object());
    }
}
