//! The builtin reviewer's rules. Each looks at head-side lines of the diff's hunks and fires
//! only on added lines, so pre-existing code is never blamed on the change.

use std::sync::LazyLock;

use deep_review_git::{is_test_path, FileDiff, LineKind};
use deep_review_protocol::Severity;
use regex::Regex;

use super::BuiltinSettings;

/// A rule's fixed texts.
#[derive(Debug, PartialEq)]
pub(crate) struct Rule {
    /// Stable id, used to group hits.
    pub id: &'static str,
    /// Finding title.
    pub title: &'static str,
    /// Why it matters.
    pub explanation: &'static str,
    /// How to fix it.
    pub fix: &'static str,
    /// Finding category.
    pub category: &'static str,
    /// How often the rule is right when it fires, as a 0–1 confidence.
    pub confidence: f64,
}

/// One place a rule fired.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuleHit {
    pub rule: &'static Rule,
    pub severity: Severity,
    pub line: u32,
    pub end_line: u32,
    /// The offending code, with any secret masked.
    pub excerpt: String,
}

/// Languages the rules distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Language {
    Rust,
    Python,
    JavaScript,
    Go,
    /// Java, Kotlin, C#, Swift, Scala, C, C++, PHP: brace blocks and `catch`.
    BraceFamily,
    Ruby,
    Shell,
    /// Documentation, configuration and anything else.
    Other,
}

impl Language {
    pub(crate) fn from_path(path: &str) -> Language {
        let extension = path
            .rsplit_once('.')
            .map(|(_, extension)| extension)
            .unwrap_or("");
        match extension {
            "rs" => Language::Rust,
            "py" | "pyi" => Language::Python,
            "js" | "jsx" | "ts" | "tsx" | "mjs" | "cjs" | "vue" | "svelte" => Language::JavaScript,
            "go" => Language::Go,
            "java" | "kt" | "kts" | "cs" | "swift" | "scala" | "c" | "h" | "cc" | "cpp" | "hpp"
            | "cxx" | "php" | "m" | "mm" | "dart" => Language::BraceFamily,
            "rb" => Language::Ruby,
            "sh" | "bash" | "zsh" => Language::Shell,
            _ => Language::Other,
        }
    }

    /// Whether changes to such files call for tests.
    pub(crate) fn is_source(self) -> bool {
        !matches!(self, Language::Other | Language::Shell)
    }

    fn hash_comments(self) -> bool {
        matches!(
            self,
            Language::Python | Language::Ruby | Language::Shell | Language::Other
        )
    }
}

/// A head-side line of a hunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewLine<'a> {
    pub number: u32,
    pub text: &'a str,
    pub added: bool,
}

/// A file as the rules see it.
pub(crate) struct FileUnderReview<'a> {
    pub language: Language,
    /// Test code calibrates lower and is exempt from some rules.
    pub is_test: bool,
    /// Head-side lines of each hunk, in order.
    pub hunks: Vec<Vec<NewLine<'a>>>,
    /// In Rust, lines from here on are inside the `#[cfg(test)]` module.
    pub test_module_from: Option<u32>,
}

impl<'a> FileUnderReview<'a> {
    pub(crate) fn new(file: &'a FileDiff, head_content: Option<&str>) -> Self {
        let path = file.path();
        let language = Language::from_path(path);
        let hunks: Vec<Vec<NewLine<'a>>> = file
            .hunks
            .iter()
            .map(|hunk| {
                hunk.lines
                    .iter()
                    .filter_map(|line| {
                        Some(NewLine {
                            number: line.new_line?,
                            text: &line.text,
                            added: line.kind == LineKind::Added,
                        })
                    })
                    .collect()
            })
            .collect();
        let mut test_module_from = None;
        if language == Language::Rust {
            let is_test_attribute = |text: &str| text.trim_start().starts_with("#[cfg(test)]");
            let from_content = head_content.and_then(|content| {
                content
                    .lines()
                    .position(is_test_attribute)
                    .and_then(|index| u32::try_from(index + 1).ok())
            });
            let from_hunks = hunks
                .iter()
                .flatten()
                .find(|line| is_test_attribute(line.text))
                .map(|line| line.number);
            test_module_from = match (from_content, from_hunks) {
                (Some(left), Some(right)) => Some(left.min(right)),
                (left, right) => left.or(right),
            };
        }
        FileUnderReview {
            language,
            is_test: is_test_path(path),
            hunks,
            test_module_from,
        }
    }

    /// Whether head-side `line` is test code: a test file, or Rust's test module.
    pub(crate) fn in_test_code(&self, line: u32) -> bool {
        self.is_test || self.test_module_from.is_some_and(|from| line >= from)
    }

    fn is_comment(&self, text: &str) -> bool {
        let trimmed = text.trim_start();
        trimmed.starts_with("//")
            || trimmed.starts_with("/*")
            || trimmed.starts_with("* ")
            || trimmed == "*"
            || trimmed.starts_with("<!--")
            || (self.language.hash_comments() && trimmed.starts_with('#'))
    }
}

pub(crate) static SECRET: Rule = Rule {
    id: "secret",
    title: "Secret committed in source",
    explanation: "The added line contains what looks like a live credential. Anyone with read access to the repository (and its history) can use it.",
    fix: "Remove the secret, **revoke and rotate it** (it is in git history now), and load it from the environment or a secret store.",
    category: "security",
    confidence: 0.9,
};

pub(crate) static HARD_CODED_CREDENTIAL: Rule = Rule {
    id: "hard-coded-credential",
    title: "Hard-coded credential",
    explanation: "A password, token or API key is assigned a literal value in the code.",
    fix:
        "Read the value from configuration or the environment; keep literals out of the repository.",
    category: "security",
    confidence: 0.6,
};

pub(crate) static MERGE_CONFLICT: Rule = Rule {
    id: "merge-conflict",
    title: "Merge-conflict marker left in file",
    explanation: "The file contains an unresolved merge conflict; it will not build or will behave unpredictably.",
    fix: "Resolve the conflict and remove the `<<<<<<<`, `=======` and `>>>>>>>` lines.",
    category: "correctness",
    confidence: 0.95,
};

pub(crate) static EMPTY_HANDLER: Rule = Rule {
    id: "swallowed-error",
    title: "Error swallowed by an empty handler",
    explanation: "The error is caught and discarded; failures become silent and the code continues in an unknown state.",
    fix: "Handle the error, return or re-raise it, or at the least log it with context and say in a comment why continuing is safe.",
    category: "error-handling",
    confidence: 0.8,
};

pub(crate) static LOGGED_NOT_RETURNED: Rule = Rule {
    id: "error-logged-not-returned",
    title: "Error logged but not returned",
    explanation: "The error is logged, then execution continues as if nothing failed. Callers cannot react, and later code may use an invalid value.",
    fix: "Return (or re-raise) the error after logging it, or document why continuing is correct.",
    category: "error-handling",
    confidence: 0.7,
};

pub(crate) static DISCARDED_RESULT: Rule = Rule {
    id: "discarded-result",
    title: "Result discarded",
    explanation: "`let _ =` or `.ok();` throws away a `Result`, so a failure of the call goes unnoticed.",
    fix: "Propagate the error with `?`, handle it, or bind it to a named variable with a comment saying why it can be ignored.",
    category: "error-handling",
    confidence: 0.5,
};

pub(crate) static DEBUGGER_STATEMENT: Rule = Rule {
    id: "debugger-statement",
    title: "Debugger breakpoint left in code",
    explanation:
        "The statement stops execution in a debugger (or hangs a process waiting for one).",
    fix: "Remove the breakpoint.",
    category: "debug-leftover",
    confidence: 0.9,
};

pub(crate) static DEBUG_PRINT: Rule = Rule {
    id: "debug-print",
    title: "Leftover debug print",
    explanation: "Debug output added during development clutters logs and may leak data.",
    fix: "Remove it, or use the project's logger at an appropriate level.",
    category: "debug-leftover",
    confidence: 0.7,
};

pub(crate) static UNWRAP: Rule = Rule {
    id: "unwrap",
    title: "`unwrap()`/`expect()` in non-test code",
    explanation: "A `None` or `Err` here panics the thread instead of returning an error the caller can handle.",
    fix: "Propagate with `?` (adding context), or handle the empty/error case explicitly.",
    category: "error-handling",
    confidence: 0.5,
};

pub(crate) static TODO: Rule = Rule {
    id: "todo",
    title: "TODO/FIXME added",
    explanation: "The change adds a marker for unfinished work.",
    fix: "Finish the work in this change, or link the comment to a tracked issue.",
    category: "maintainability",
    confidence: 0.6,
};

static SECRET_PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
        ("AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        (
            "AWS secret access key",
            r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?[A-Za-z0-9/+=]{40}\b"#,
        ),
        ("GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
        ("GitHub fine-grained token", r"\bgithub_pat_[A-Za-z0-9_]{60,}\b"),
        ("Slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
        ("Google API key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
        ("Stripe live key", r"\b[sr]k_live_[0-9A-Za-z]{20,}\b"),
        ("Anthropic API key", r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
        ("OpenAI API key", r"\bsk-(?:proj-)?[A-Za-z0-9]{20,}T3BlbkFJ[A-Za-z0-9]{20,}|\bsk-proj-[A-Za-z0-9_\-]{40,}"),
    ]
    .into_iter()
    .filter_map(|(name, pattern)| Regex::new(pattern).ok().map(|regex| (name, regex)))
    .collect()
});

static CREDENTIAL_ASSIGNMENT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(password|passwd|pwd|secret|api_?key|access_?token|auth_?token|client_?secret)\b["']?\s*[:=]\s*["']([^"'\s]{8,})["']"#,
    )
    .ok()
});

static PLACEHOLDER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?i)example|changeme|placeholder|dummy|sample|fake|redacted|xxxx|\*\*\*|\$\{|\{\{|<[a-z_-]+>|your[_-]")
        .ok()
});

fn matches(regex: &LazyLock<Option<Regex>>, text: &str) -> bool {
    regex.as_ref().is_some_and(|regex| regex.is_match(text))
}

/// Runs every rule on `file`.
pub(crate) fn check(file: &FileUnderReview<'_>, settings: &BuiltinSettings) -> Vec<RuleHit> {
    let mut hits = Vec::new();
    let has_conflict_start = file
        .hunks
        .iter()
        .flatten()
        .any(|line| line.added && line.text.starts_with("<<<<<<<"));
    for hunk in &file.hunks {
        for (index, line) in hunk.iter().enumerate() {
            if !line.added {
                continue;
            }
            let mut hit =
                |rule: &'static Rule, severity: Severity, end_line: u32, excerpt: String| {
                    hits.push(RuleHit {
                        rule,
                        severity,
                        line: line.number,
                        end_line,
                        excerpt,
                    });
                };
            let text = line.text;
            let excerpt = || text.trim_end().to_string();

            let in_test_code = file.in_test_code(line.number);
            if let Some(masked) = secret_in(text) {
                let severity = if in_test_code {
                    Severity::Important
                } else {
                    Severity::Critical
                };
                hit(&SECRET, severity, line.number, masked);
                continue;
            }
            if let Some(masked) = credential_assignment_in(text) {
                if !in_test_code {
                    hit(
                        &HARD_CODED_CREDENTIAL,
                        Severity::Important,
                        line.number,
                        masked,
                    );
                }
                continue;
            }
            if is_conflict_marker(text, has_conflict_start) {
                hit(&MERGE_CONFLICT, Severity::Critical, line.number, excerpt());
                continue;
            }
            if file.is_comment(text) {
                if settings.report_todos && has_todo(text) {
                    hit(&TODO, Severity::Suggestion, line.number, excerpt());
                }
                continue;
            }
            if settings.report_todos && has_trailing_todo(text, file.language) {
                hit(&TODO, Severity::Suggestion, line.number, excerpt());
            }
            // Tests swallow errors on purpose (asserting failure paths); judge only product code.
            let swallowed = if in_test_code {
                None
            } else {
                swallowed_error(file, hunk, index)
            };
            if let Some((rule, severity, end_line)) = swallowed {
                let excerpt = hunk
                    .iter()
                    .filter(|other| other.number >= line.number && other.number <= end_line)
                    .map(|other| other.text.trim_end())
                    .collect::<Vec<_>>()
                    .join("\n");
                hit(rule, severity, end_line, excerpt);
            }
            if file.language == Language::Rust
                && is_discarded_result(text)
                && !file.in_test_code(line.number)
            {
                hit(
                    &DISCARDED_RESULT,
                    Severity::Suggestion,
                    line.number,
                    excerpt(),
                );
            }
            if is_debugger_statement(text, file.language) {
                hit(
                    &DEBUGGER_STATEMENT,
                    Severity::Important,
                    line.number,
                    excerpt(),
                );
            } else if !in_test_code && is_debug_print(text, file.language) {
                hit(&DEBUG_PRINT, Severity::Suggestion, line.number, excerpt());
            }
            if settings.report_unwrap
                && file.language == Language::Rust
                && !in_test_code
                && has_unwrap(text)
            {
                hit(&UNWRAP, Severity::Suggestion, line.number, excerpt());
            }
        }
    }
    hits
}

/// `text` with every secret the builtin reviewer recognises masked as the report shows it
/// (the first four characters kept), line by line: for files that quote the change, such as
/// the review job.
pub fn mask_secrets(text: &str) -> String {
    let mut masked = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (content, ending) = match line.strip_suffix('\n') {
            Some(content) => (content, "\n"),
            None => (line, ""),
        };
        match secret_in(content).or_else(|| credential_assignment_in(content)) {
            Some(hidden) => masked.push_str(&hidden),
            None => masked.push_str(content),
        }
        masked.push_str(ending);
    }
    masked
}

/// The line with the secret masked, when it holds one that is not an obvious example.
fn secret_in(text: &str) -> Option<String> {
    for (_, pattern) in SECRET_PATTERNS.iter() {
        if let Some(found) = pattern.find(text) {
            if matches(&PLACEHOLDER, found.as_str()) {
                continue;
            }
            return Some(mask(text, found.start(), found.end()));
        }
    }
    None
}

fn credential_assignment_in(text: &str) -> Option<String> {
    let regex = CREDENTIAL_ASSIGNMENT.as_ref()?;
    let captures = regex.captures(text)?;
    let value = captures.get(2)?;
    if matches(&PLACEHOLDER, value.as_str()) {
        return None;
    }
    Some(mask(text, value.start(), value.end()))
}

/// Keeps the first four characters of the secret so a reader can find it, masks the rest.
fn mask(text: &str, start: usize, end: usize) -> String {
    let secret = &text[start..end];
    let kept: String = secret.chars().take(4).collect();
    let masked = "*".repeat(secret.chars().count().saturating_sub(4).min(24));
    format!("{}{kept}{masked}{}", &text[..start], &text[end..])
        .trim_end()
        .to_string()
}

fn is_conflict_marker(text: &str, has_conflict_start: bool) -> bool {
    let marker = |prefix: &str| {
        text.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    };
    marker("<<<<<<<")
        || marker(">>>>>>>")
        || marker("|||||||")
        || (has_conflict_start && text == "=======")
}

/// A marker that opens the comment (`// TODO …`) or is tagged (`TODO:`, `FIXME(name)`);
/// prose that merely mentions the word (`/// Report added TODO comments`) is not one.
static TODO_MARKER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^(//+!?|#+|/?\*+|<!--|--)?\s*(TODO|FIXME|XXX|HACK)\b(?:[^/]|$)|\b(TODO|FIXME|XXX|HACK)(:|\()").ok()
});

fn has_todo(text: &str) -> bool {
    matches(&TODO_MARKER, text.trim_start())
}

/// A TODO in a comment that trails code on the same line.
fn has_trailing_todo(text: &str, language: Language) -> bool {
    let marker = if language.hash_comments() { " #" } else { "//" };
    trailing_comment_start(text, marker)
        .is_some_and(|start| has_todo(text[start..].trim_start_matches(' ')))
}

/// Where a trailing `marker` comment starts, skipping markers inside string literals
/// (`"http://…"`, `r"//"`), judged by the parity of unescaped double quotes before it.
fn trailing_comment_start(text: &str, marker: &str) -> Option<usize> {
    let mut in_string = false;
    let mut after_backslash = false;
    for (index, character) in text.char_indices() {
        if !in_string && text[index..].starts_with(marker) {
            return Some(index);
        }
        if character == '"' && !after_backslash {
            in_string = !in_string;
        }
        after_backslash = character == '\\' && !after_backslash;
    }
    None
}

static PYTHON_EXCEPT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(\s*)except\b[^:]*:\s*(.*?)\s*(#.*)?$").ok());
static BRACE_CATCH: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\bcatch\s*(\([^)]*\))?\s*\{(.*)$").ok());
static GO_ERROR_CHECK: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*(\}\s*else\s+)?if\b.*\berr\s*!=\s*nil\s*\{\s*(//.*)?$").ok());
static RUST_ERR_ARM: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\bErr\s*\(\s*[_a-z][A-Za-z0-9_]*\s*\)\s*=>\s*(.*)$").ok());
static RUST_IF_LET_ERR: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*if\s+let\s+Err\s*\(.*\)\s*=.*\{\s*$").ok());
static LOG_CALL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^\s*(console\.(log|error|warn|info|debug)|print(ln)?!?|eprint(ln)?!|(log|logger|logging|klog|slog|zap|tracing|LOG|Log)\s*(::|\.)\s*\w+|(error|warn|info|debug|trace)!|fmt\.(Print|Fprint)\w*|System\.(out|err)\.print\w*|\w+\.(Error|Warn|Info|Debug|Errorf|Warnf|Infof|Printf|error|warning|warn|info|exception)\s*\(|e\.printStackTrace)\b?",
    )
    .ok()
});
static EXITS_BLOCK: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"\b(return|raise|throw|panic!?|bail!|unreachable!|continue|break|goto|os\.Exit|log\.Fatal\w*|log\.Panic\w*|sys\.exit|exit|abort|Err\s*\()\b|\?\s*;|\berrs?\s*(=|:=)|errs\s*=\s*append",
    )
    .ok()
});

/// An empty or log-only error handler opening at `hunk[index]`.
fn swallowed_error(
    file: &FileUnderReview<'_>,
    hunk: &[NewLine<'_>],
    index: usize,
) -> Option<(&'static Rule, Severity, u32)> {
    let text = hunk[index].text;
    match file.language {
        Language::Python => {
            let captures = PYTHON_EXCEPT.as_ref()?.captures(text)?;
            let indent = captures.get(1).map_or(0, |indent| indent.as_str().len());
            let inline = captures.get(2).map_or("", |inline| inline.as_str());
            let (body, end) = if inline.is_empty() {
                indented_body(hunk, index, indent)?
            } else {
                (vec![inline], hunk[index].number)
            };
            classify_body(&body, end, false)
        }
        Language::JavaScript | Language::BraceFamily => {
            let captures = BRACE_CATCH.as_ref()?.captures(text)?;
            let rest = captures.get(2).map_or("", |rest| rest.as_str());
            let (body, end) = brace_body(hunk, index, rest)?;
            classify_body(&body, end, false)
        }
        Language::Go => {
            if !matches(&GO_ERROR_CHECK, text) {
                return None;
            }
            let (body, end) = brace_body(hunk, index, "")?;
            classify_body(&body, end, true)
        }
        Language::Rust => {
            if let Some(captures) = RUST_ERR_ARM.as_ref()?.captures(text) {
                let rest = captures.get(1).map_or("", |rest| rest.as_str()).trim();
                if let Some(after_brace) = rest.strip_prefix('{') {
                    let (body, end) = brace_body(hunk, index, after_brace)?;
                    return classify_body(&body, end, false);
                }
                let expression = rest.trim_end_matches(',').trim();
                return classify_body(&[expression], hunk[index].number, false);
            }
            if matches(&RUST_IF_LET_ERR, text) {
                let (body, end) = brace_body(hunk, index, "")?;
                return classify_body(&body, end, false);
            }
            None
        }
        _ => None,
    }
}

/// Empty handler → important. Log-only handler → important where execution goes on with
/// the failed call's zero value (`continues_with_invalid_value`: Go's `if err != nil`),
/// suggestion elsewhere: a Rust `Err` arm or an exception handler that logs has no value
/// to misuse afterwards and is often a deliberate best-effort choice.
fn classify_body(
    body: &[&str],
    end: u32,
    continues_with_invalid_value: bool,
) -> Option<(&'static Rule, Severity, u32)> {
    let statements: Vec<&str> = body
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty() && !line.starts_with("//") && !line.starts_with('#'))
        .collect();
    let is_empty = statements
        .iter()
        .all(|line| matches!(*line, "pass" | "..." | "{}" | "()" | "{}," | "()," | ";"));
    if is_empty {
        return Some((&EMPTY_HANDLER, Severity::Important, end));
    }
    if statements.iter().any(|line| matches(&EXITS_BLOCK, line)) {
        return None;
    }
    let only_logs = statements.iter().all(|line| matches(&LOG_CALL, line));
    if only_logs {
        let severity = if continues_with_invalid_value {
            Severity::Important
        } else {
            Severity::Suggestion
        };
        return Some((&LOGGED_NOT_RETURNED, severity, end));
    }
    None
}

/// The lines of a `{ … }` block opening on `hunk[index]` (whose text after the `{` is
/// `rest`), and the line that closes it. `None` when the block leaves the hunk.
fn brace_body<'a>(
    hunk: &[NewLine<'a>],
    index: usize,
    rest: &'a str,
) -> Option<(Vec<&'a str>, u32)> {
    let mut depth: i64 = 1;
    let mut body = Vec::new();
    for (offset, piece) in std::iter::once(rest)
        .chain(hunk[index + 1..].iter().map(|line| line.text))
        .enumerate()
        .take(40)
    {
        let mut kept = String::new();
        for character in piece.chars() {
            match character {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                break;
            }
            kept.push(character);
        }
        let kept_length = kept.len();
        body.push(&piece[..kept_length.min(piece.len())]);
        if depth == 0 {
            let end = hunk[index + offset].number;
            return Some((body, end));
        }
    }
    None
}

/// The lines indented deeper than `indent` after `hunk[index]`, and the last of them.
/// `None` when the body runs to the end of the hunk (it may continue unseen).
fn indented_body<'a>(
    hunk: &[NewLine<'a>],
    index: usize,
    indent: usize,
) -> Option<(Vec<&'a str>, u32)> {
    let mut body = Vec::new();
    let mut end = hunk[index].number;
    for line in &hunk[index + 1..] {
        if line.text.trim().is_empty() {
            continue;
        }
        let line_indent = line.text.len() - line.text.trim_start().len();
        if line_indent <= indent {
            return (!body.is_empty()).then_some((body, end));
        }
        body.push(line.text);
        end = line.number;
    }
    None
}

static LET_UNDERSCORE_CALL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*let\s+_\s*(:[^=]+)?=\s*[^;]*\(").ok());
static OK_STATEMENT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^\s*[A-Za-z_][^=]*\.ok\(\)\s*;\s*$").ok());

fn is_discarded_result(text: &str) -> bool {
    matches(&LET_UNDERSCORE_CALL, text) || matches(&OK_STATEMENT, text)
}

static DEBUGGER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^\s*debugger\s*;?\s*$|\bbreakpoint\(\)|\b(i?pdb)\.set_trace\(\)|^\s*import\s+i?pdb\b|\bbinding\.pry\b|^\s*byebug\b").ok()
});

fn is_debugger_statement(text: &str, language: Language) -> bool {
    matches!(
        language,
        Language::JavaScript | Language::Python | Language::Ruby
    ) && matches(&DEBUGGER, text)
}

static DEBUG_PRINT_CALL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"\bdbg!\s*\(|\bconsole\.(log|debug|trace)\s*\(|\b(var_dump|print_r)\s*\(").ok()
});

fn is_debug_print(text: &str, language: Language) -> bool {
    let applies = matches!(
        language,
        Language::Rust | Language::JavaScript | Language::BraceFamily
    );
    applies && matches(&DEBUG_PRINT_CALL, text)
}

static UNWRAP_CALL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\.unwrap\(\)|\.expect\(").ok());

fn has_unwrap(text: &str) -> bool {
    let code = text.split("//").next().unwrap_or(text);
    matches(&UNWRAP_CALL, code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deep_review_git::parse_unified_diff;

    /// Runs the rules on `added` lines appended to `path` after one context line.
    fn hits(path: &str, added: &[&str]) -> Vec<(&'static str, Severity, u32)> {
        hits_with_context(path, &["// context"], added, &[])
    }

    fn hits_with_context(
        path: &str,
        before: &[&str],
        added: &[&str],
        after: &[&str],
    ) -> Vec<(&'static str, Severity, u32)> {
        let mut diff = format!(
            "--- a/{path}\n+++ b/{path}\n@@ -1,{} +1,{} @@\n",
            before.len() + after.len(),
            before.len() + added.len() + after.len()
        );
        for line in before {
            diff.push_str(&format!(" {line}\n"));
        }
        for line in added {
            diff.push_str(&format!("+{line}\n"));
        }
        for line in after {
            diff.push_str(&format!(" {line}\n"));
        }
        let files = parse_unified_diff(&diff);
        let file = FileUnderReview::new(&files[0], None);
        check(&file, &BuiltinSettings::default())
            .into_iter()
            .map(|hit| (hit.rule.id, hit.severity, hit.line))
            .collect()
    }

    #[test]
    fn secrets_are_critical_and_masked() {
        let found = hits("src/config.py", &["KEY = 'AKIAQWERTYUIOPASDFGH'"]);
        assert_eq!(found, vec![("secret", Severity::Critical, 2)]);
        assert_eq!(
            hits("src/a.rs", &["-----BEGIN RSA PRIVATE KEY-----"]),
            vec![("secret", Severity::Critical, 2)]
        );
        assert_eq!(
            hits(
                "a.js",
                &["const t = 'ghp_0123456789abcdefghijABCDEFGHIJ0123456789';"]
            ),
            vec![("secret", Severity::Critical, 2)]
        );
        let text = "+token = ghp_0123456789abcdefghijABCDEFGHIJ0123456789\n+plain line\n";
        let hidden = mask_secrets(text);
        assert!(!hidden.contains("ghp_0123456789abcdef"), "{hidden}");
        assert!(hidden.ends_with("+plain line\n"), "{hidden}");
        let masked = secret_in("token = ghp_0123456789abcdefghijABCDEFGHIJ0123456789").unwrap();
        assert!(masked.starts_with("token = ghp_***"), "{masked}");
        assert!(!masked.contains("0123456789abcdef"), "{masked}");
    }

    #[test]
    fn example_keys_and_test_fixtures_calibrate_down() {
        assert!(hits("src/config.py", &["KEY = 'AKIAIOSFODNN7EXAMPLE'"]).is_empty());
        assert_eq!(
            hits("tests/fixture.py", &["KEY = 'AKIAQWERTYUIOPASDFGH'"]),
            vec![("secret", Severity::Important, 2)]
        );
    }

    #[test]
    fn rust_test_modules_count_as_test_code() {
        let found = hits_with_context(
            "src/lib.rs",
            &["#[cfg(test)]", "mod tests {"],
            &[
                "    const KEY: &str = \"AKIAQWERTYUIOPASDFGH\";",
                "    match f() { Err(_) => {} _ => {} }",
            ],
            &["}"],
        );
        assert_eq!(found, vec![("secret", Severity::Important, 3)]);
    }

    #[test]
    fn credential_assignments_skip_placeholders() {
        assert_eq!(
            hits("app/settings.py", &["password = 'hunter2hunter2'"]),
            vec![("hard-coded-credential", Severity::Important, 2)]
        );
        assert!(hits("app/settings.py", &["password = 'changeme-please'"]).is_empty());
        assert!(hits("app/settings.py", &["password = os.environ['PASSWORD']"]).is_empty());
    }

    #[test]
    fn conflict_markers_are_critical_but_lone_rules_are_not() {
        let found = hits(
            "README.md",
            &["<<<<<<< HEAD", "ours", "=======", "theirs", ">>>>>>> topic"],
        );
        assert_eq!(
            found,
            vec![
                ("merge-conflict", Severity::Critical, 2),
                ("merge-conflict", Severity::Critical, 4),
                ("merge-conflict", Severity::Critical, 6),
            ]
        );
        assert!(hits("README.md", &["Title", "======="]).is_empty());
    }

    #[test]
    fn python_empty_and_log_only_except() {
        assert_eq!(
            hits(
                "app/x.py",
                &[
                    "try:",
                    "    go()",
                    "except Exception:",
                    "    pass",
                    "done()"
                ]
            ),
            vec![("swallowed-error", Severity::Important, 4)]
        );
        assert_eq!(
            hits("app/x.py", &["try:", "    go()", "except: pass"]),
            vec![("swallowed-error", Severity::Important, 4)]
        );
        assert_eq!(
            hits(
                "app/x.py",
                &[
                    "try:",
                    "    go()",
                    "except ValueError as e:",
                    "    logger.error('bad %s', e)",
                    "x = 1"
                ]
            ),
            vec![("error-logged-not-returned", Severity::Suggestion, 4)]
        );
        assert!(hits(
            "app/x.py",
            &[
                "try:",
                "    go()",
                "except ValueError as e:",
                "    logger.error('bad')",
                "    raise",
                "x = 1"
            ]
        )
        .is_empty());
        // The body runs past the hunk: unknown, so not reported.
        assert!(hits(
            "app/x.py",
            &[
                "try:",
                "    go()",
                "except ValueError:",
                "    log.warning('x')"
            ]
        )
        .is_empty());
    }

    #[test]
    fn block_findings_span_the_handler() {
        let diff = "--- a/a.py\n+++ b/a.py\n@@ -1 +1,6 @@\n x\n+try:\n+    go()\n+except Exception:\n+    pass\n+done()\n";
        let files = parse_unified_diff(diff);
        let found = check(
            &FileUnderReview::new(&files[0], None),
            &BuiltinSettings::default(),
        );
        assert_eq!((found[0].line, found[0].end_line), (4, 5));
        assert_eq!(found[0].excerpt, "except Exception:\n    pass");
    }

    #[test]
    fn javascript_empty_catch() {
        assert_eq!(
            hits("src/a.ts", &["try { go(); } catch (e) {}"]),
            vec![("swallowed-error", Severity::Important, 2)]
        );
        assert_eq!(
            hits("src/a.ts", &["try {", "  go();", "} catch (e) {", "}"]),
            vec![("swallowed-error", Severity::Important, 4)]
        );
        assert_eq!(
            hits(
                "src/a.ts",
                &["} catch (err) {", "  console.error(err);", "}"]
            ),
            vec![("error-logged-not-returned", Severity::Suggestion, 2)]
        );
        assert!(hits(
            "src/a.ts",
            &[
                "} catch (err) {",
                "  console.error(err);",
                "  throw err;",
                "}"
            ]
        )
        .is_empty());
    }

    #[test]
    fn go_error_logged_not_returned() {
        assert_eq!(
            hits(
                "pkg/a.go",
                &[
                    "if err := f(); err != nil {",
                    "\tlog.Error(err, \"failed\")",
                    "}"
                ]
            ),
            vec![("error-logged-not-returned", Severity::Important, 2)]
        );
        assert!(hits(
            "pkg/a.go",
            &[
                "if err != nil {",
                "\tlog.Error(err, \"failed\")",
                "\treturn err",
                "}"
            ]
        )
        .is_empty());
        assert!(hits(
            "pkg/a.go",
            &["if err != nil {", "\terrs = append(errs, err)", "}"]
        )
        .is_empty());
    }

    #[test]
    fn rust_error_arms_and_discarded_results() {
        assert_eq!(
            hits(
                "src/a.rs",
                &[
                    "match f() {",
                    "    Ok(v) => use_it(v),",
                    "    Err(e) => eprintln!(\"{e}\"),",
                    "}"
                ]
            ),
            vec![("error-logged-not-returned", Severity::Suggestion, 4)]
        );
        assert_eq!(
            hits("src/a.rs", &["    Err(_) => {}"]),
            vec![("swallowed-error", Severity::Important, 2)]
        );
        assert!(hits("src/a.rs", &["    Err(e) => return Err(e.into()),"]).is_empty());
        assert_eq!(
            hits("src/a.rs", &["let _ = std::fs::remove_file(path);"]),
            vec![("discarded-result", Severity::Suggestion, 2)]
        );
        assert!(hits(
            "src/a.rs",
            &["let _guard = span.enter();", "let _ = value;"]
        )
        .is_empty());
    }

    #[test]
    fn debugger_and_debug_prints() {
        assert_eq!(
            hits("web/a.js", &["debugger;"]),
            vec![("debugger-statement", Severity::Important, 2)]
        );
        assert_eq!(
            hits("app/a.py", &["breakpoint()"]),
            vec![("debugger-statement", Severity::Important, 2)]
        );
        assert_eq!(
            hits("src/a.rs", &["let x = dbg!(y);"]),
            vec![("debug-print", Severity::Suggestion, 2)]
        );
        assert_eq!(
            hits("web/a.js", &["console.log(state);"]),
            vec![("debug-print", Severity::Suggestion, 2)]
        );
        assert!(hits("web/a.test.js", &["console.log(state);"]).is_empty());
        assert!(hits("web/a.js", &["// console.log(state);"]).is_empty());
        assert!(hits("web/a.js", &["logger.info(state);"]).is_empty());
    }

    #[test]
    fn unwrap_only_outside_tests() {
        assert_eq!(
            hits("src/lib.rs", &["let v = parse(x).unwrap();"]),
            vec![("unwrap", Severity::Suggestion, 2)]
        );
        assert_eq!(
            hits("src/lib.rs", &["let v = parse(x).expect(\"valid\");"]),
            vec![("unwrap", Severity::Suggestion, 2)]
        );
        assert!(hits("src/lib.rs", &["let v = parse(x).unwrap_or_default();"]).is_empty());
        assert!(hits("tests/it.rs", &["let v = parse(x).unwrap();"]).is_empty());
        assert!(hits_with_context(
            "src/lib.rs",
            &["#[cfg(test)]", "mod tests {"],
            &["    let v = parse(x).unwrap();"],
            &["}"]
        )
        .is_empty());
        // A head file whose test module starts before the added line.
        let diff =
            "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -40,1 +40,2 @@\n x\n+let v = y.unwrap();\n";
        let files = parse_unified_diff(diff);
        let head = (1..=50)
            .map(|n| {
                if n == 30 {
                    "#[cfg(test)]\n".to_string()
                } else {
                    "\n".to_string()
                }
            })
            .collect::<String>();
        let file = FileUnderReview::new(&files[0], Some(&head));
        assert!(check(&file, &BuiltinSettings::default()).is_empty());
    }

    #[test]
    fn todos_in_comments_only() {
        assert_eq!(
            hits("src/a.py", &["# TODO: handle retries"]),
            vec![("todo", Severity::Suggestion, 2)]
        );
        assert_eq!(
            hits("src/a.rs", &["let x = 1; // FIXME wrong unit"]),
            vec![("todo", Severity::Suggestion, 2)]
        );
        assert!(hits("src/a.rs", &["let label = \"TODO list\";"]).is_empty());
        assert!(hits("src/a.rs", &["let url = \"http://x/TODO: y\"; let z = 1;"]).is_empty());
        assert!(hits("src/a.rs", &["let s = \"a \\\" // TODO: inside\";"]).is_empty());
        assert!(hits("src/a.rs", &["// to do: nothing"]).is_empty());
        assert!(hits("src/a.rs", &["/// Report added TODO/FIXME comments."]).is_empty());
        assert!(hits("src/a.rs", &["//! | TODO/FIXME added | suggestion |"]).is_empty());
        assert_eq!(
            hits("src/a.rs", &["// see below. TODO(ana): split"]),
            vec![("todo", Severity::Suggestion, 2)]
        );
        assert_eq!(
            hits("src/a.rs", &["/// FIXME"]),
            vec![("todo", Severity::Suggestion, 2)]
        );
    }

    #[test]
    fn only_added_lines_are_judged() {
        assert!(hits_with_context(
            "src/a.js",
            &["debugger;", "console.log(1);"],
            &["ok();"],
            &[]
        )
        .is_empty());
    }
}
