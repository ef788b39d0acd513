//! Sending one model request: retries with exponential backoff and jitter on 429, 5xx,
//! timeouts and broken bodies, honouring `Retry-After`; clear errors for the rest.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use super::ModelSettings;

/// Longest wait a `Retry-After` header can impose; the agent's timeout bounds the rest.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why a model request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ModelError {
    /// 401 or 403: the key is missing, wrong or not allowed this model.
    #[error(
        "{provider} refused the API key (HTTP {status}): {message}; check the key in `{key_variable}`"
    )]
    Unauthorized {
        provider: &'static str,
        status: u16,
        message: String,
        key_variable: String,
    },
    /// The prompt is over the model's context window.
    #[error(
        "{provider} says the prompt is too long for the model's context: {message}; lower the \
         agent's `prompt_tokens` so that more of the diff is left out"
    )]
    ContextTooLong {
        provider: &'static str,
        message: String,
    },
    /// Any other 4xx: the request itself is wrong, and retrying cannot help.
    #[error("{provider} rejected the request (HTTP {status}): {message}")]
    Rejected {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// Retryable failures that outlasted every attempt.
    #[error("{provider} failed {attempts} times; last: {last}")]
    Exhausted {
        provider: &'static str,
        attempts: u32,
        last: String,
    },
}

/// One failed attempt, and whether another may succeed.
struct AttemptFailure {
    description: String,
    retry_after: Option<Duration>,
}

/// POSTs `body` built by `request` and returns the JSON response, retrying what can be
/// retried.
pub(crate) async fn send(
    provider: &'static str,
    settings: &ModelSettings,
    key_variable: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<Value, ModelError> {
    let attempts = settings.attempts.max(1);
    let mut last = String::new();
    for attempt in 0..attempts {
        let failure = match request().timeout(settings.request_timeout).send().await {
            Err(error) => AttemptFailure {
                description: describe_transport_error(&error),
                retry_after: None,
            },
            Ok(response) => {
                let status = response.status();
                let retry_after = retry_after(response.headers());
                let body = response.text().await.unwrap_or_default();
                if status.is_success() {
                    match serde_json::from_str::<Value>(&body) {
                        Ok(value) => return Ok(value),
                        Err(error) => AttemptFailure {
                            description: format!(
                                "the response is not JSON ({error}): {}",
                                excerpt(&body)
                            ),
                            retry_after: None,
                        },
                    }
                } else {
                    let message = error_message(&body);
                    classify(provider, status, message.clone(), key_variable)?;
                    AttemptFailure {
                        description: format!("HTTP {}: {message}", status.as_u16()),
                        retry_after,
                    }
                }
            }
        };
        last = failure.description;
        if attempt + 1 < attempts {
            let delay = failure
                .retry_after
                .map(|delay| delay.min(LONGEST_RETRY_AFTER))
                .unwrap_or_else(|| backoff(settings, attempt));
            tracing::warn!(provider, attempt = attempt + 1, delay_ms = delay.as_millis() as u64, error = %last, "model request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }
    Err(ModelError::Exhausted {
        provider,
        attempts,
        last,
    })
}

/// Full jitter: a random delay up to the exponential bound, so workers that failed
/// together do not retry together.
fn backoff(settings: &ModelSettings, attempt: u32) -> Duration {
    let bound = settings
        .initial_backoff
        .saturating_mul(1u32 << attempt.min(16))
        .min(settings.max_backoff);
    let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(millis / 2..=millis.max(1)))
}

/// Returns the error of a response that must not be retried; `Ok` for retryable ones.
fn classify(
    provider: &'static str,
    status: StatusCode,
    message: String,
    key_variable: &str,
) -> Result<(), ModelError> {
    let code = status.as_u16();
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        return Ok(());
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ModelError::Unauthorized {
            provider,
            status: code,
            message,
            key_variable: key_variable.to_string(),
        });
    }
    let lowered = message.to_lowercase();
    if status == StatusCode::PAYLOAD_TOO_LARGE
        || [
            "too long",
            "context length",
            "context_length",
            "maximum context",
            "exceeds the maximum",
            "input token count",
        ]
        .iter()
        .any(|phrase| lowered.contains(phrase))
    {
        return Err(ModelError::ContextTooLong { provider, message });
    }
    Err(ModelError::Rejected {
        provider,
        status: code,
        message,
    })
}

/// The delay a 429 or 503 asks for: `retry-after-ms`, or `Retry-After` in seconds or as
/// an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(millis) =
        header("retry-after-ms").and_then(|value| value.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_secs_f64(millis.max(0.0) / 1000.0));
    }
    let value = header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Some(Duration::from_secs_f64(seconds.max(0.0)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The message of a provider's error body: all three put it at `error.message`.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| {
            value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| excerpt(body))
}

fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_string();
    }
    let mut end = trimmed.len().min(300);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    trimmed[..end].to_string()
}

fn describe_transport_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    // A URL may carry a key in its query; errors name the endpoint instead.
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "(endpoint)");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if error.is_timeout() {
        format!("timed out: {text}")
    } else if error.is_connect() {
        format!("could not connect: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut headers = HeaderMap::new();
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        headers.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let delay = retry_after(&headers).unwrap();
        assert!(
            delay > Duration::from_secs(25) && delay <= Duration::from_secs(30),
            "{delay:?}"
        );
    }

    #[test]
    fn errors_are_classified_by_status_and_message() {
        let classify = |status: u16, message: &str| {
            classify(
                "P",
                StatusCode::from_u16(status).unwrap(),
                message.to_string(),
                "KEY",
            )
        };
        assert!(classify(429, "slow down").is_ok());
        assert!(classify(529, "overloaded").is_ok());
        assert!(classify(500, "oops").is_ok());
        assert!(matches!(
            classify(401, "bad key"),
            Err(ModelError::Unauthorized { .. })
        ));
        assert!(matches!(
            classify(403, "no"),
            Err(ModelError::Unauthorized { .. })
        ));
        assert!(matches!(
            classify(400, "prompt is too long: 250000 tokens > 200000 maximum"),
            Err(ModelError::ContextTooLong { .. })
        ));
        assert!(matches!(
            classify(400, "bad field"),
            Err(ModelError::Rejected { .. })
        ));
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let settings = ModelSettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..ModelSettings::default()
        };
        for attempt in 0..20 {
            let delay = backoff(&settings, attempt);
            let bound =
                Duration::from_millis(100 * (1 << attempt.min(16))).min(Duration::from_secs(2));
            assert!(delay <= bound && delay >= bound / 2, "{attempt}: {delay:?}");
        }
    }
}
