/// How a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New file.
    Added,
    /// File removed; it has no head-side lines.
    Deleted,
    /// Content changed in place.
    Modified,
    /// Moved, possibly with changes.
    Renamed,
}

/// Whether a diff line was added, removed or is unchanged context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Present only on the head side.
    Added,
    /// Present only on the base side.
    Removed,
    /// Present on both sides.
    Context,
}

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// Added, removed or context.
    pub kind: LineKind,
    /// Line number on the head side; absent for removed lines.
    pub new_line: Option<u32>,
    /// The text without the leading marker.
    pub text: String,
}

/// One `@@` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// First head-side line the hunk covers.
    pub new_start: u32,
    /// The hunk's lines in order.
    pub lines: Vec<DiffLine>,
}

/// Everything the diff says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// Base-side path; absent for an added file.
    pub old_path: Option<String>,
    /// Head-side path; absent for a deleted file.
    pub new_path: Option<String>,
    /// How the file changed.
    pub change: ChangeKind,
    /// True when git reported a binary change with no text hunks.
    pub binary: bool,
    /// Text hunks.
    pub hunks: Vec<Hunk>,
}

impl FileDiff {
    /// The path a reviewer should cite: head side, or base side for a deleted file.
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or_default()
    }

    /// Added lines with their head-side line numbers.
    pub fn added_lines(&self) -> impl Iterator<Item = (u32, &str)> {
        self.hunks.iter().flat_map(|hunk| {
            hunk.lines
                .iter()
                .filter_map(|line| match (line.kind, line.new_line) {
                    (LineKind::Added, Some(number)) => Some((number, line.text.as_str())),
                    _ => None,
                })
        })
    }

    /// Number of added and removed lines.
    pub fn line_counts(&self) -> (usize, usize) {
        let mut added = 0;
        let mut removed = 0;
        for line in self.hunks.iter().flat_map(|hunk| &hunk.lines) {
            match line.kind {
                LineKind::Added => added += 1,
                LineKind::Removed => removed += 1,
                LineKind::Context => {}
            }
        }
        (added, removed)
    }
}

/// One file's part of a unified diff, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSection<'a> {
    /// The path a reviewer should cite (see [`FileDiff::path`]).
    pub path: String,
    /// The section's lines, header included, exactly as in the diff.
    pub text: &'a str,
}

/// Splits a unified diff into one section per file, so that whole files can be kept or
/// left out. Text before the first file header (e.g. a commit message) is dropped.
pub fn split_by_file(diff: &str) -> Vec<FileSection<'_>> {
    let git_headers = diff.starts_with("diff --git ") || diff.contains("\ndiff --git ");
    let lines: Vec<&str> = diff.split_inclusive('\n').collect();
    let mut starts = Vec::new();
    let mut offset = 0;
    // Lines of the current hunk still to come (base side, head side): inside a hunk a
    // removed line may itself start with `--- `.
    let mut remaining = (0u32, 0u32);
    for (index, line) in lines.iter().enumerate() {
        if remaining != (0, 0) {
            match line.as_bytes().first() {
                Some(b' ') => {
                    remaining = (remaining.0.saturating_sub(1), remaining.1.saturating_sub(1))
                }
                Some(b'-') => remaining.0 = remaining.0.saturating_sub(1),
                Some(b'+') => remaining.1 = remaining.1.saturating_sub(1),
                Some(b'\\') => {}
                _ => remaining = (0, 0),
            }
        } else if line.starts_with("@@ ") {
            remaining = hunk_lengths(line);
        } else if if git_headers {
            line.starts_with("diff --git ")
        } else {
            line.starts_with("--- ")
                && lines
                    .get(index + 1)
                    .is_some_and(|next| next.starts_with("+++ "))
        } {
            starts.push(offset);
        }
        offset += line.len();
    }
    let mut sections = Vec::new();
    for (index, &start) in starts.iter().enumerate() {
        let end = starts.get(index + 1).copied().unwrap_or(diff.len());
        let text = &diff[start..end];
        let path = parse_unified_diff(text)
            .first()
            .map(|file| file.path().to_string())
            .unwrap_or_default();
        sections.push(FileSection { path, text });
    }
    sections
}

/// The base-side and head-side line counts of a hunk header `@@ -a,b +c,d @@`.
fn hunk_lengths(header: &str) -> (u32, u32) {
    let mut parts = header.split_whitespace().skip(1);
    let mut length = |prefix: char| {
        parts
            .next()
            .and_then(|range| range.strip_prefix(prefix))
            .map(|range| match range.split_once(',') {
                Some((_, count)) => count.parse().unwrap_or(0),
                None => 1,
            })
            .unwrap_or(0)
    };
    let base = length('-');
    let head = length('+');
    (base, head)
}

/// Parses a unified diff, as `git diff` or `diff -u` print it, into files and hunks.
///
/// Git's extended headers are understood, so binary files, renames, mode-only changes and
/// new or deleted files all appear in the result; nothing in the input is dropped.
pub fn parse_unified_diff(text: &str) -> Vec<FileDiff> {
    let mut files: Vec<FileDiff> = Vec::new();
    let lines = text.lines();
    // Remaining old/new line counts of the hunk being read; zero means "between hunks".
    let mut old_remaining = 0u32;
    let mut new_remaining = 0u32;
    let mut next_new_line = 0u32;

    for line in lines {
        if old_remaining > 0 || new_remaining > 0 {
            let Some(file) = files.last_mut() else { break };
            let Some(hunk) = file.hunks.last_mut() else {
                break;
            };
            let (kind, body) = match line.as_bytes().first() {
                Some(b'+') => (LineKind::Added, &line[1..]),
                Some(b'-') => (LineKind::Removed, &line[1..]),
                Some(b' ') => (LineKind::Context, &line[1..]),
                // `\ No newline at end of file` belongs to the previous line.
                Some(b'\\') => continue,
                // Some tools drop the space of empty context lines.
                None => (LineKind::Context, ""),
                Some(_) => {
                    // A malformed count: stop the hunk here rather than misread headers.
                    old_remaining = 0;
                    new_remaining = 0;
                    continue;
                }
            };
            let new_line = match kind {
                LineKind::Removed => {
                    old_remaining = old_remaining.saturating_sub(1);
                    None
                }
                LineKind::Added => {
                    new_remaining = new_remaining.saturating_sub(1);
                    let line = next_new_line;
                    next_new_line = next_new_line.saturating_add(1);
                    Some(line)
                }
                LineKind::Context => {
                    old_remaining = old_remaining.saturating_sub(1);
                    new_remaining = new_remaining.saturating_sub(1);
                    let line = next_new_line;
                    next_new_line = next_new_line.saturating_add(1);
                    Some(line)
                }
            };
            hunk.lines.push(DiffLine {
                kind,
                new_line,
                text: body.to_string(),
            });
            continue;
        }

        if let Some(rest) = line.strip_prefix("diff --git ") {
            let (old_path, new_path) = split_git_header_paths(rest);
            files.push(FileDiff {
                old_path: Some(old_path),
                new_path: Some(new_path),
                change: ChangeKind::Modified,
                binary: false,
                hunks: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("--- ") {
            // A plain `diff -u` file starts here; a git one already has its entry.
            let path = strip_side_prefix(header_path(rest), "a/");
            let starts_new_file = files
                .last()
                .is_none_or(|file| !file.hunks.is_empty() || file.binary);
            if starts_new_file {
                files.push(FileDiff {
                    old_path: path.clone(),
                    new_path: None,
                    change: ChangeKind::Modified,
                    binary: false,
                    hunks: Vec::new(),
                });
            } else if let Some(file) = files.last_mut() {
                if path.is_none() {
                    file.old_path = None;
                    file.change = ChangeKind::Added;
                }
            }
        } else if let Some(rest) = line.strip_prefix("+++ ") {
            if let Some(file) = files.last_mut() {
                match strip_side_prefix(header_path(rest), "b/") {
                    Some(path) => file.new_path = Some(path),
                    None => {
                        file.new_path = None;
                        file.change = ChangeKind::Deleted;
                    }
                }
                if file.old_path.is_none() && file.new_path.is_some() {
                    file.change = ChangeKind::Added;
                }
            }
        } else if let Some(rest) = line.strip_prefix("@@ ") {
            if let (Some(file), Some((old_count, new_start, new_count))) =
                (files.last_mut(), parse_hunk_header(rest))
            {
                file.hunks.push(Hunk {
                    new_start,
                    lines: Vec::new(),
                });
                old_remaining = old_count;
                new_remaining = new_count;
                next_new_line = new_start;
            }
        } else if let Some(file) = files.last_mut() {
            if line.starts_with("new file mode") {
                file.change = ChangeKind::Added;
                file.old_path = None;
            } else if line.starts_with("deleted file mode") {
                file.change = ChangeKind::Deleted;
                file.new_path = None;
            } else if let Some(path) = line.strip_prefix("rename from ") {
                file.change = ChangeKind::Renamed;
                file.old_path = Some(path.to_string());
            } else if let Some(path) = line.strip_prefix("rename to ") {
                file.change = ChangeKind::Renamed;
                file.new_path = Some(path.to_string());
            } else if line.starts_with("Binary files ") || line == "GIT binary patch" {
                file.binary = true;
            }
        }
    }
    files
}

/// Splits `a/x b/x` from a `diff --git` line. Paths with spaces are ambiguous there; the
/// `---`/`+++`/rename lines that follow refine them.
fn split_git_header_paths(rest: &str) -> (String, String) {
    if let Some(index) = rest.find(" b/") {
        let old = rest[..index].trim_start_matches("a/").to_string();
        let new = rest[index + 3..].to_string();
        return (old, new);
    }
    (rest.to_string(), rest.to_string())
}

fn header_path(rest: &str) -> &str {
    // `diff -u` appends a tab and a timestamp.
    rest.split('\t').next().unwrap_or(rest).trim_end()
}

fn strip_side_prefix(path: &str, prefix: &str) -> Option<String> {
    if path == "/dev/null" {
        return None;
    }
    Some(path.strip_prefix(prefix).unwrap_or(path).to_string())
}

/// Parses `-a,b +c,d @@ …` into (old count, new start, new count).
fn parse_hunk_header(rest: &str) -> Option<(u32, u32, u32)> {
    let mut parts = rest.split_whitespace();
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    let count = |range: &str| -> Option<(u32, u32)> {
        match range.split_once(',') {
            Some((start, count)) => Some((start.parse().ok()?, count.parse().ok()?)),
            None => Some((range.parse().ok()?, 1)),
        }
    };
    let (_, old_count) = count(old)?;
    let (new_start, new_count) = count(new)?;
    // A hunk reaching past the last line number is not a real hunk: numbering it would
    // wrap around.
    new_start.checked_add(new_count)?;
    Some((old_count, new_start, new_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hunk_past_the_last_line_number_is_not_numbered_around() {
        let diff = "--- a/x\n+++ b/x\n@@ -1 +4294967295,3 @@\n+a\n+b\n+c\n";
        // Parsing must neither panic nor number lines from zero again.
        for file in parse_unified_diff(diff) {
            for hunk in &file.hunks {
                let numbers: Vec<u32> =
                    hunk.lines.iter().filter_map(|line| line.new_line).collect();
                assert!(
                    numbers.windows(2).all(|pair| pair[0] <= pair[1]),
                    "{numbers:?}"
                );
            }
        }
        assert_eq!(parse_hunk_header("-1 +4294967295,3 @@"), None);
        assert_eq!(
            parse_hunk_header("-1 +4294967290,3 @@"),
            Some((1, 4294967290, 3))
        );
    }

    const GIT_DIFF: &str = "\
diff --git a/src/lib.rs b/src/lib.rs
index 1111111..2222222 100644
--- a/src/lib.rs
+++ b/src/lib.rs
@@ -1,3 +1,4 @@
 fn a() {}
-fn b() {}
+fn b() { x(); }
+fn c() {}
 fn d() {}
@@ -10,2 +11,2 @@ impl X {
--- removed line that looks like a header
+++ added line that looks like a header
 tail
diff --git a/new.py b/new.py
new file mode 100644
index 0000000..3333333
--- /dev/null
+++ b/new.py
@@ -0,0 +1,2 @@
+print('x')
+pass
\\ No newline at end of file
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
index 4444444..0000000
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/logo.png b/logo.png
index 5555555..6666666 100644
Binary files a/logo.png and b/logo.png differ
diff --git a/old name.rs b/new name.rs
similarity index 100%
rename from old name.rs
rename to new name.rs
";

    #[test]
    fn split_by_file_keeps_every_byte_once_in_file_order() {
        let sections = split_by_file(GIT_DIFF);
        let paths: Vec<&str> = sections
            .iter()
            .map(|section| section.path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "src/lib.rs",
                "new.py",
                "gone.txt",
                "logo.png",
                "new name.rs"
            ]
        );
        let joined: String = sections.iter().map(|section| section.text).collect();
        assert_eq!(joined, GIT_DIFF);
        assert!(sections[0]
            .text
            .contains("--- removed line that looks like a header"));
    }

    #[test]
    fn split_by_file_handles_plain_diffs_with_header_like_lines() {
        let plain = "--- a/one.txt\n+++ b/one.txt\n@@ -1,2 +1,2 @@\n--- not a header\n+++ not a header\n same\n--- a/two.txt\n+++ b/two.txt\n@@ -1 +1 @@\n-x\n+y\n";
        let sections = split_by_file(plain);
        let paths: Vec<&str> = sections
            .iter()
            .map(|section| section.path.as_str())
            .collect();
        assert_eq!(paths, ["one.txt", "two.txt"]);
        assert!(sections[0].text.ends_with(" same\n"));
    }

    #[test]
    fn git_diff_files_lines_and_numbers() {
        let files = parse_unified_diff(GIT_DIFF);
        assert_eq!(files.len(), 5, "{files:#?}");
        let lib = &files[0];
        assert_eq!(lib.path(), "src/lib.rs");
        assert_eq!(lib.change, ChangeKind::Modified);
        let added: Vec<_> = lib.added_lines().collect();
        assert_eq!(
            added,
            vec![
                (2, "fn b() { x(); }"),
                (3, "fn c() {}"),
                (11, "++ added line that looks like a header"),
            ]
        );
        assert_eq!(lib.line_counts(), (3, 2));

        assert_eq!(files[1].change, ChangeKind::Added);
        assert_eq!(files[1].path(), "new.py");
        assert_eq!(files[1].added_lines().count(), 2);

        assert_eq!(files[2].change, ChangeKind::Deleted);
        assert_eq!(files[2].path(), "gone.txt");
        assert_eq!(files[2].added_lines().count(), 0);

        assert!(files[3].binary);
        assert_eq!(files[3].path(), "logo.png");

        assert_eq!(files[4].change, ChangeKind::Renamed);
        assert_eq!(files[4].path(), "new name.rs");
        assert_eq!(files[4].old_path.as_deref(), Some("old name.rs"));
    }

    #[test]
    fn plain_diff_u_output() {
        let text = "\
--- a.txt\t2026-01-01 00:00:00
+++ a.txt\t2026-01-02 00:00:00
@@ -1 +1,2 @@
 one
+two
--- b.txt
+++ b.txt
@@ -5,0 +6 @@
+six
";
        let files = parse_unified_diff(text);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path(), "a.txt");
        assert_eq!(files[0].added_lines().collect::<Vec<_>>(), vec![(2, "two")]);
        assert_eq!(files[1].added_lines().collect::<Vec<_>>(), vec![(6, "six")]);
    }

    #[test]
    fn empty_and_garbage_input_give_no_files() {
        assert!(parse_unified_diff("").is_empty());
        assert!(parse_unified_diff("hello\nworld\n").is_empty());
    }
}
