//! The read-only tools a model may call, confined to the checkout of the head commit.

use std::path::{Component, Path, PathBuf};

use deep_review_git::{GitError, Repository};
use serde_json::{json, Value};

use super::ToolDefinition;

/// The tool a model calls to hand in its review.
pub(crate) const SUBMIT_TOOL: &str = "submit_review";

/// Characters of one tool's output a model is shown; more is cut with a note.
const OUTPUT_LIMIT: usize = 40_000;

/// Lines `read_file` returns when no range is asked for.
const DEFAULT_LINES: usize = 2_000;

/// Matches `grep` returns.
const GREP_MATCHES: usize = 200;

/// Revisions a model may name: commit ids, refs and `~`/`^` suffixes, nothing that git
/// could read as an option.
fn valid_revision(revision: &str) -> bool {
    !revision.is_empty()
        && !revision.starts_with('-')
        && revision.len() <= 200
        && revision
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./~^@{}-".contains(c))
}

/// The tools over one worktree.
pub(crate) struct WorktreeTools {
    root: PathBuf,
    repository: Repository,
}

impl WorktreeTools {
    /// Tools reading `worktree`.
    pub(crate) async fn open(worktree: &Path) -> Result<Self, GitError> {
        let repository = Repository::open(worktree).await?;
        let root = worktree
            .canonicalize()
            .unwrap_or_else(|_| worktree.to_path_buf());
        Ok(WorktreeTools { root, repository })
    }

    /// The definitions sent to the model.
    pub(crate) fn definitions() -> Vec<ToolDefinition> {
        let path = json!({"type": "string", "description": "Repository-relative path, e.g. `src/lib.rs`."});
        let line = |what: &str| json!({"type": "integer", "minimum": 1, "description": what});
        vec![
            ToolDefinition {
                name: "read_file",
                description: "Read a file of the head commit, with line numbers. Give a line range for large files.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": path,
                        "start_line": line("First line to read (1-based)."),
                        "end_line": line("Last line to read, inclusive."),
                    },
                    "required": ["path"],
                }),
            },
            ToolDefinition {
                name: "grep",
                description: "Search tracked files of the head commit for an extended regular expression; prints path:line:text.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "pattern": {"type": "string", "description": "Extended regular expression."},
                        "path": {"type": "string", "description": "Limit the search to this file or directory."},
                    },
                    "required": ["pattern"],
                }),
            },
            ToolDefinition {
                name: "list_files",
                description: "List tracked files of the head commit, under a directory if given.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "Directory to list; the whole repository if absent."},
                    },
                }),
            },
            ToolDefinition {
                name: "git_log",
                description: "Recent commits (abbreviated id, date, author, subject), of one path if given.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "Only commits touching this path."},
                        "max_count": {"type": "integer", "minimum": 1, "maximum": 100, "description": "How many commits; 20 if absent."},
                    },
                }),
            },
            ToolDefinition {
                name: "git_show",
                description: "Show a commit's message and patch, limited to one path if given.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "revision": {"type": "string", "description": "Commit id or ref, e.g. `HEAD~1`."},
                        "path": {"type": "string", "description": "Only this path's changes."},
                    },
                    "required": ["revision"],
                }),
            },
            ToolDefinition {
                name: "git_blame",
                description: "Which commit last changed each line of a file (at the head commit): tells a regression from a pre-existing gap.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "path": path,
                        "start_line": line("First line (1-based)."),
                        "end_line": line("Last line, inclusive."),
                    },
                    "required": ["path"],
                }),
            },
        ]
    }

    /// Runs tool `name`; an `Err` is shown to the model as the tool's error.
    pub(crate) async fn call(&self, name: &str, arguments: &Value) -> Result<String, String> {
        let text = |field: &str| arguments.get(field).and_then(Value::as_str);
        let number = |field: &str| {
            arguments
                .get(field)
                .and_then(Value::as_u64)
                .and_then(|value| usize::try_from(value).ok())
        };
        let output = match name {
            "read_file" => {
                let path = text("path").ok_or("`path` is required")?;
                self.read_file(path, number("start_line"), number("end_line"))?
            }
            "grep" => {
                let pattern = text("pattern").ok_or("`pattern` is required")?;
                self.grep(pattern, text("path")).await?
            }
            "list_files" => {
                let mut arguments = vec!["ls-files".to_string()];
                if let Some(path) = text("path") {
                    arguments.push("--".to_string());
                    arguments.push(self.relative(path)?);
                }
                self.git(&arguments).await?
            }
            "git_log" => {
                let count = number("max_count").unwrap_or(20).clamp(1, 100);
                let mut arguments = vec![
                    "log".to_string(),
                    format!("--max-count={count}"),
                    "--date=short".to_string(),
                    "--format=%h %ad %an: %s".to_string(),
                ];
                if let Some(path) = text("path") {
                    arguments.push("--".to_string());
                    arguments.push(self.relative(path)?);
                }
                self.git(&arguments).await?
            }
            "git_show" => {
                let revision = text("revision").ok_or("`revision` is required")?;
                if !valid_revision(revision) {
                    return Err(format!("`{revision}` is not a revision"));
                }
                let mut arguments = vec![
                    "show".to_string(),
                    "--stat".to_string(),
                    "--patch".to_string(),
                    revision.to_string(),
                ];
                if let Some(path) = text("path") {
                    arguments.push("--".to_string());
                    arguments.push(self.relative(path)?);
                }
                self.git(&arguments).await?
            }
            "git_blame" => {
                let path = self.relative(text("path").ok_or("`path` is required")?)?;
                let mut arguments = vec!["blame".to_string(), "--date=short".to_string()];
                if let Some(start) = number("start_line") {
                    let end = number("end_line").unwrap_or(start + 50).max(start);
                    arguments.push(format!("-L{start},{end}"));
                }
                arguments.extend(["HEAD".to_string(), "--".to_string(), path]);
                self.git(&arguments).await?
            }
            other => return Err(format!("there is no tool `{other}`")),
        };
        Ok(bounded(output))
    }

    /// `path` as a repository-relative path inside the worktree, or why it is refused.
    fn relative(&self, path: &str) -> Result<String, String> {
        let trimmed = path.trim().trim_start_matches("./");
        if trimmed.is_empty() || trimmed == "." {
            return Ok(".".to_string());
        }
        let candidate = Path::new(trimmed);
        if candidate.is_absolute()
            || candidate
                .components()
                .any(|component| !matches!(component, Component::Normal(_)))
        {
            return Err(format!(
                "`{path}` is outside the repository; give a repository-relative path"
            ));
        }
        // Symbolic links may still point out of the checkout.
        if let Ok(resolved) = self.root.join(candidate).canonicalize() {
            if !resolved.starts_with(&self.root) {
                return Err(format!("`{path}` leads outside the repository"));
            }
        }
        Ok(trimmed.to_string())
    }

    fn read_file(
        &self,
        path: &str,
        start: Option<usize>,
        end: Option<usize>,
    ) -> Result<String, String> {
        let relative = self.relative(path)?;
        let full = self.root.join(&relative);
        if full.is_dir() {
            return Err(format!("`{path}` is a directory; use list_files"));
        }
        let bytes =
            std::fs::read(&full).map_err(|error| format!("cannot read `{path}`: {error}"))?;
        if bytes.contains(&0) {
            return Err(format!("`{path}` is a binary file"));
        }
        let content = String::from_utf8_lossy(&bytes);
        let start = start.unwrap_or(1).max(1);
        let end = end.unwrap_or(start + DEFAULT_LINES - 1).max(start);
        let total = content.lines().count();
        let mut output: String = content
            .lines()
            .enumerate()
            .skip(start - 1)
            .take(end - start + 1)
            .map(|(index, line)| format!("{:>6}\t{line}\n", index + 1))
            .collect();
        if end < total {
            output.push_str(&format!(
                "[{total} lines in all; ask for start_line {} to read on]\n",
                end + 1
            ));
        }
        if output.is_empty() {
            output = format!("[`{path}` has {total} lines]\n");
        }
        Ok(output)
    }

    async fn grep(&self, pattern: &str, path: Option<&str>) -> Result<String, String> {
        let mut arguments = vec![
            "grep".to_string(),
            "-n".to_string(),
            "-I".to_string(),
            "-E".to_string(),
            "-e".to_string(),
            pattern.to_string(),
        ];
        if let Some(path) = path {
            arguments.push("--".to_string());
            arguments.push(self.relative(path)?);
        }
        match self.git(&arguments).await {
            Ok(output) => {
                let lines: Vec<&str> = output.lines().collect();
                let mut shown = lines
                    .iter()
                    .take(GREP_MATCHES)
                    .copied()
                    .collect::<Vec<_>>()
                    .join("\n");
                if lines.len() > GREP_MATCHES {
                    shown.push_str(&format!(
                        "\n[{} matches in all; narrow the pattern or path]",
                        lines.len()
                    ));
                }
                Ok(shown)
            }
            // git grep exits 1, saying nothing, when nothing matches.
            Err(error) if error.is_empty() => Ok("no matches".to_string()),
            Err(error) => Err(error),
        }
    }

    async fn git(&self, arguments: &[String]) -> Result<String, String> {
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        self.repository
            .output(&arguments)
            .await
            .map_err(|error| match error {
                GitError::CommandFailed { stderr, .. } => stderr,
                other => other.to_string(),
            })
    }
}

/// Cuts `text` to the output limit, saying so.
fn bounded(mut text: String) -> String {
    if text.len() > OUTPUT_LIMIT {
        let mut cut = OUTPUT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let dropped = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!(
            "\n[{dropped} more characters cut; ask for less, e.g. a line range]"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn repository() -> (tempfile::TempDir, WorktreeTools) {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path();
        let git = |arguments: &[&str]| crate::test_support::git(root, arguments);
        git(&["init", "-q"]);
        std::fs::create_dir(root.join("src")).unwrap();
        let body: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        std::fs::write(root.join("src/lib.rs"), &body).unwrap();
        std::fs::write(root.join("README.md"), "hello needle\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "first commit"]);
        std::fs::write(root.join("outside.txt"), "secret").unwrap();
        let tools = WorktreeTools::open(root).await.unwrap();
        (directory, tools)
    }

    #[tokio::test]
    async fn tools_read_search_and_query_history() {
        let (_directory, tools) = repository().await;
        let read = tools
            .call(
                "read_file",
                &json!({"path": "src/lib.rs", "start_line": 3, "end_line": 4}),
            )
            .await
            .unwrap();
        assert_eq!(
            read,
            "     3\tline 3\n     4\tline 4\n[30 lines in all; ask for start_line 5 to read on]\n"
        );
        let found = tools
            .call("grep", &json!({"pattern": "need+le"}))
            .await
            .unwrap();
        assert_eq!(found, "README.md:1:hello needle");
        let none = tools
            .call("grep", &json!({"pattern": "absent"}))
            .await
            .unwrap();
        assert_eq!(none, "no matches");
        let files = tools.call("list_files", &json!({})).await.unwrap();
        assert_eq!(files, "README.md\nsrc/lib.rs\n");
        let log = tools
            .call("git_log", &json!({"path": "src"}))
            .await
            .unwrap();
        assert!(log.contains("T: first commit"), "{log}");
        let show = tools
            .call(
                "git_show",
                &json!({"revision": "HEAD", "path": "README.md"}),
            )
            .await
            .unwrap();
        assert!(show.contains("+hello needle"), "{show}");
        let blame = tools
            .call(
                "git_blame",
                &json!({"path": "src/lib.rs", "start_line": 2, "end_line": 2}),
            )
            .await
            .unwrap();
        assert!(
            blame.contains("line 2") && !blame.contains("line 3"),
            "{blame}"
        );
    }

    #[tokio::test]
    async fn tools_stay_inside_the_worktree() {
        let (directory, tools) = repository().await;
        for path in ["../etc/passwd", "/etc/passwd", "src/../../x"] {
            let error = tools
                .call("read_file", &json!({"path": path}))
                .await
                .unwrap_err();
            assert!(error.contains("outside the repository"), "{path}: {error}");
        }
        std::os::unix::fs::symlink("/etc", directory.path().join("escape")).unwrap();
        let error = tools
            .call("read_file", &json!({"path": "escape/passwd"}))
            .await
            .unwrap_err();
        assert!(error.contains("leads outside"), "{error}");
        let error = tools
            .call("git_show", &json!({"revision": "--output=/tmp/x"}))
            .await
            .unwrap_err();
        assert!(error.contains("not a revision"), "{error}");
        let error = tools.call("rm", &json!({})).await.unwrap_err();
        assert!(error.contains("no tool `rm`"), "{error}");
    }
}
