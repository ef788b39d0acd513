//! Webhook deliveries: signature checks and which events ask for a review.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::{GitHubSettings, RepositoryName};

/// Why a delivery's signature was refused (answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("the delivery has no X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=` followed by hex.
    #[error("the X-Hub-Signature-256 header is malformed")]
    Malformed,
    /// The signature does not match the body and the configured secret.
    #[error("the X-Hub-Signature-256 signature does not match the webhook secret")]
    Mismatch,
    /// No secret is configured, so no delivery can be trusted.
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex HMAC-SHA256 of the body>`) in constant time.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_signature = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let signature = hex::decode(hex_signature).map_err(|_| SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::NoSecret)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `sha256=…` signature of `body`, as GitHub computes it; for tests and tools.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A pull request someone or something asked to review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewTrigger {
    /// The repository the PR belongs to (its base repository).
    pub repository: RepositoryName,
    /// PR number.
    pub number: u64,
    /// The App installation that sent the delivery, when deep-review runs as an App.
    pub installation: Option<u64>,
    /// What asked, for logs: `pull_request.synchronize`, `issue_comment by @octocat`.
    pub reason: String,
}

/// What to do with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookDecision {
    /// Review this pull request.
    Review(ReviewTrigger),
    /// Nothing to do; the text says why (logged, and answered with 202).
    Ignore(String),
}

#[derive(Deserialize)]
struct InstallationRef {
    id: u64,
}

#[derive(Deserialize)]
struct RepositoryRef {
    full_name: String,
}

#[derive(Deserialize)]
struct PullRequestRef {
    number: u64,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequestRef,
    repository: RepositoryRef,
    #[serde(default)]
    installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
struct IssueRef {
    number: u64,
    /// Present only when the issue is a pull request.
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
struct UserRef {
    login: String,
    #[serde(default, rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct CommentRef {
    body: String,
    user: UserRef,
    #[serde(default)]
    author_association: String,
}

#[derive(Deserialize)]
struct IssueCommentEvent {
    action: String,
    issue: IssueRef,
    comment: CommentRef,
    repository: RepositoryRef,
    #[serde(default)]
    installation: Option<InstallationRef>,
}

/// The JSON payload of a delivery. A repository webhook may be set to send
/// `application/x-www-form-urlencoded`, with the JSON in the `payload` field; the signature
/// covers the body as sent, so this runs after the signature is checked.
pub fn delivery_payload<'a>(
    content_type: Option<&str>,
    body: &'a [u8],
) -> Result<std::borrow::Cow<'a, [u8]>, crate::GitHubError> {
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if media_type.as_deref() != Some("application/x-www-form-urlencoded") {
        return Ok(std::borrow::Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(name, _)| name == "payload")
        .map(|(_, payload)| std::borrow::Cow::Owned(payload.into_owned().into_bytes()))
        .ok_or_else(|| {
            crate::GitHubError::Payload(
                "the form-encoded delivery has no `payload` field".to_string(),
            )
        })
}

/// Decides what a delivery of `event` (the `X-GitHub-Event` header) with `payload` asks
/// for. A payload that does not parse is an error naming the event; other events are
/// ignored.
pub fn decide(
    event: &str,
    payload: &[u8],
    settings: &GitHubSettings,
) -> Result<WebhookDecision, crate::GitHubError> {
    let malformed = |error: serde_json::Error| {
        crate::GitHubError::Payload(format!("the `{event}` delivery does not parse: {error}"))
    };
    match event {
        "pull_request" => {
            let delivery: PullRequestEvent = serde_json::from_slice(payload).map_err(malformed)?;
            let action = delivery.action.as_str();
            if !matches!(
                action,
                "opened" | "reopened" | "synchronize" | "ready_for_review"
            ) {
                return Ok(WebhookDecision::Ignore(format!(
                    "pull_request.{action} does not change the code under review"
                )));
            }
            if delivery.pull_request.state == "closed" {
                return Ok(WebhookDecision::Ignore("the pull request is closed".into()));
            }
            if delivery.pull_request.draft && !settings.review_drafts {
                return Ok(WebhookDecision::Ignore(
                    "the pull request is a draft (github.review_drafts is off)".into(),
                ));
            }
            Ok(WebhookDecision::Review(ReviewTrigger {
                repository: RepositoryName::parse(&delivery.repository.full_name)?,
                number: delivery.pull_request.number,
                installation: delivery.installation.map(|installation| installation.id),
                reason: format!("pull_request.{action}"),
            }))
        }
        "issue_comment" => {
            let delivery: IssueCommentEvent = serde_json::from_slice(payload).map_err(malformed)?;
            if delivery.action != "created" {
                return Ok(WebhookDecision::Ignore(format!(
                    "issue_comment.{} is not a new command",
                    delivery.action
                )));
            }
            if delivery.issue.pull_request.is_none() {
                return Ok(WebhookDecision::Ignore(
                    "the comment is on an issue, not a pull request".into(),
                ));
            }
            let first_line = delivery.comment.body.trim().lines().next().unwrap_or("");
            let is_command = first_line
                .split_whitespace()
                .next()
                .is_some_and(|word| word.eq_ignore_ascii_case(&settings.command));
            if !is_command {
                return Ok(WebhookDecision::Ignore(format!(
                    "the comment does not start with {}",
                    settings.command
                )));
            }
            // Bots include deep-review itself: its own comments must never trigger it.
            if delivery.comment.user.kind == "Bot" {
                return Ok(WebhookDecision::Ignore("the comment is a bot's".into()));
            }
            let association = delivery.comment.author_association.to_ascii_uppercase();
            if !settings
                .command_associations
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(&association))
            {
                return Ok(WebhookDecision::Ignore(format!(
                    "@{} ({}) may not run {}; allowed: {}",
                    delivery.comment.user.login,
                    if association.is_empty() {
                        "NONE"
                    } else {
                        &association
                    },
                    settings.command,
                    settings.command_associations.join(", ")
                )));
            }
            if delivery.issue.state == "closed" {
                return Ok(WebhookDecision::Ignore("the pull request is closed".into()));
            }
            Ok(WebhookDecision::Review(ReviewTrigger {
                repository: RepositoryName::parse(&delivery.repository.full_name)?,
                number: delivery.issue.number,
                installation: delivery.installation.map(|installation| installation.id),
                reason: format!("{} by @{}", settings.command, delivery.comment.user.login),
            }))
        }
        other => Ok(WebhookDecision::Ignore(format!(
            "`{other}` events are not handled"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let signature = sign(b"It's a Secret to Everybody", body);
        assert_eq!(
            verify_signature(b"It's a Secret to Everybody", body, Some(&signature)),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"another secret", body, Some(&signature)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"It's a Secret to Everybody", b"{}", Some(&signature)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"s", body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(b"s", body, Some("sha1=abcd")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(b"", body, Some(&signature)),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn github_documented_signature_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        assert_eq!(
            sign(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    fn pull_request(action: &str, draft: bool) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "action": action,
            "number": 42,
            "pull_request": { "number": 42, "draft": draft, "state": "open" },
            "repository": { "full_name": "acme/widgets" },
            "installation": { "id": 99 }
        }))
        .expect("json")
    }

    fn comment(body: &str, association: &str, on_pull_request: bool) -> Vec<u8> {
        let mut issue = serde_json::json!({ "number": 42, "state": "open" });
        if on_pull_request {
            issue["pull_request"] =
                serde_json::json!({ "url": "https://api.github.com/repos/acme/widgets/pulls/42" });
        }
        serde_json::to_vec(&serde_json::json!({
            "action": "created",
            "issue": issue,
            "comment": { "body": body, "user": { "login": "octocat", "type": "User" }, "author_association": association },
            "repository": { "full_name": "acme/widgets" }
        }))
        .expect("json")
    }

    #[test]
    fn form_encoded_deliveries_carry_the_json_in_payload() {
        let json = br#"{"zen":"a & b = c"}"#;
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(json).unwrap())
            .finish();
        let decoded = delivery_payload(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            form.as_bytes(),
        )
        .unwrap();
        assert_eq!(decoded.as_ref(), json);
        assert_eq!(
            delivery_payload(Some("application/json"), json)
                .unwrap()
                .as_ref(),
            json
        );
        let missing =
            delivery_payload(Some("application/x-www-form-urlencoded"), b"other=1").unwrap_err();
        assert!(
            missing.to_string().contains("no `payload` field"),
            "{missing}"
        );
    }

    #[test]
    fn pull_request_actions() {
        let settings = GitHubSettings::default();
        for action in ["opened", "reopened", "synchronize", "ready_for_review"] {
            let decision =
                decide("pull_request", &pull_request(action, false), &settings).expect("parses");
            let WebhookDecision::Review(trigger) = decision else {
                panic!("{action} ignored");
            };
            assert_eq!(trigger.repository.to_string(), "acme/widgets");
            assert_eq!((trigger.number, trigger.installation), (42, Some(99)));
        }
        for action in ["closed", "labeled", "edited"] {
            assert!(matches!(
                decide("pull_request", &pull_request(action, false), &settings),
                Ok(WebhookDecision::Ignore(_))
            ));
        }
        assert!(matches!(
            decide("pull_request", &pull_request("opened", true), &settings),
            Ok(WebhookDecision::Ignore(reason)) if reason.contains("draft")
        ));
        let drafts = GitHubSettings {
            review_drafts: true,
            ..GitHubSettings::default()
        };
        assert!(matches!(
            decide("pull_request", &pull_request("opened", true), &drafts),
            Ok(WebhookDecision::Review(_))
        ));
    }

    #[test]
    fn comment_commands() {
        let settings = GitHubSettings::default();
        assert!(matches!(
            decide("issue_comment", &comment("/deep-review please", "MEMBER", true), &settings),
            Ok(WebhookDecision::Review(trigger)) if trigger.reason.contains("@octocat")
        ));
        for (body, association, on_pull_request) in [
            ("looks good", "MEMBER", true),
            ("/deep-review", "NONE", true),
            ("/deep-review", "MEMBER", false),
            ("please /deep-review", "OWNER", true),
        ] {
            assert!(
                matches!(
                    decide(
                        "issue_comment",
                        &comment(body, association, on_pull_request),
                        &settings
                    ),
                    Ok(WebhookDecision::Ignore(_))
                ),
                "{body} {association}"
            );
        }
    }

    #[test]
    fn other_events_and_broken_payloads() {
        let settings = GitHubSettings::default();
        assert!(matches!(
            decide("push", b"{}", &settings),
            Ok(WebhookDecision::Ignore(_))
        ));
        let error = decide("pull_request", b"{\"action\": 3}", &settings).expect_err("broken");
        assert!(error.to_string().contains("pull_request"), "{error}");
    }
}
