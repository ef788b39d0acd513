//! Makes text safe to post on GitHub: agents quote PR titles, code and each other, so a
//! report can carry `@someone` (which would notify them) or raw HTML (which GitHub would
//! render).

use std::sync::LazyLock;

use regex::Regex;

/// GitHub's limit on the body of a comment or check run summary, in characters.
pub const BODY_LIMIT: usize = 65_536;

/// HTML tags deep-review's own Markdown uses; every other `<` is escaped.
const ALLOWED_TAGS: [&str; 6] = [
    "<details>",
    "</details>",
    "<summary>",
    "</summary>",
    "<br>",
    "<!-- deep-review:",
];

/// The anchors deep-review's Markdown puts before each finding (`<a id="I1"></a>`).
static ANCHOR: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r#"^<a id="[A-Za-z0-9_-]+"></a>"#).ok());

static MENTION: LazyLock<Option<Regex>> = LazyLock::new(|| {
    // `@login` or `@org/team` where the `@` does not follow a word character (an e-mail
    // address does not notify anyone).
    Regex::new(r"(^|[^\w`@])@([A-Za-z0-9][A-Za-z0-9-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)?)").ok()
});

/// Stops `@login` and `@org/team` from notifying anyone: a word joiner after the `@`
/// keeps the text readable but breaks GitHub's mention syntax. Code is left alone, since
/// GitHub never resolves mentions there.
pub fn neutralise_mentions(text: &str) -> String {
    map_outside_code(text, |prose| match MENTION.as_ref() {
        Some(mention) => mention.replace_all(prose, "$1@\u{2060}$2").into_owned(),
        None => prose.replace('@', "@\u{2060}"),
    })
}

/// Escapes `<` outside code, except for the tags deep-review itself writes, so no HTML from
/// an agent or a PR (images, links, forms, tracking pixels) is rendered.
pub fn escape_html(text: &str) -> String {
    map_outside_code(text, |prose| {
        let mut escaped = String::with_capacity(prose.len());
        let mut rest = prose;
        while let Some(position) = rest.find('<') {
            escaped.push_str(&rest[..position]);
            let candidate = &rest[position..];
            if let Some(anchor) = ANCHOR.as_ref().and_then(|anchor| anchor.find(candidate)) {
                escaped.push_str(anchor.as_str());
                rest = &candidate[anchor.end()..];
                continue;
            }
            if ALLOWED_TAGS.iter().any(|tag| {
                candidate
                    .get(..tag.len())
                    .is_some_and(|start| start.eq_ignore_ascii_case(tag))
            }) {
                escaped.push('<');
            } else {
                escaped.push_str("&lt;");
            }
            rest = &candidate[1..];
        }
        escaped.push_str(rest);
        escaped
    })
}

/// Both: the text as it may be posted.
pub fn for_github(text: &str) -> String {
    escape_html(&neutralise_mentions(text))
}

/// Cuts `text` to GitHub's body limit (less `reserve` for what the caller appends), at a
/// line boundary, saying so.
pub fn truncate(text: &str, reserve: usize, where_the_rest_is: &str) -> String {
    let limit = BODY_LIMIT.saturating_sub(reserve + 400);
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let cut: String = text.chars().take(limit).collect();
    let cut = match cut.rfind('\n') {
        Some(end) => &cut[..end],
        None => &cut[..],
    };
    // An open fence or <details> would swallow the note; close them.
    let mut closed = cut.to_string();
    if cut
        .lines()
        .filter(|line| line.trim_start().starts_with("```"))
        .count()
        % 2
        == 1
    {
        closed.push_str("\n```");
    }
    let opened = cut.matches("<details>").count();
    let shut = cut.matches("</details>").count();
    for _ in shut..opened {
        closed.push_str("\n</details>");
    }
    format!("{closed}\n\n*The report is longer than GitHub allows in a comment and was cut here; {where_the_rest_is}.*\n")
}

/// Applies `transform` to the parts of Markdown `text` outside fenced code blocks and
/// inline code spans.
fn map_outside_code(text: &str, transform: impl Fn(&str) -> String) -> String {
    let mut output = String::with_capacity(text.len() + 16);
    let mut fence: Option<String> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let marker: String = trimmed
            .chars()
            .take_while(|character| *character == '`' || *character == '~')
            .collect();
        let is_fence = marker.len() >= 3
            && marker
                .chars()
                .all(|c| c == marker.chars().next().unwrap_or('`'));
        match &fence {
            Some(open) => {
                output.push_str(line);
                if is_fence
                    && marker.starts_with(open.as_str())
                    && trimmed[marker.len()..].trim().is_empty()
                {
                    fence = None;
                }
            }
            None if is_fence => {
                output.push_str(line);
                fence = Some(marker);
            }
            None => output.push_str(&map_outside_spans(line, &transform)),
        }
    }
    output
}

/// Applies `transform` outside inline code spans (runs of backticks) of one line.
fn map_outside_spans(line: &str, transform: &impl Fn(&str) -> String) -> String {
    let mut output = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        output.push_str(&transform(&rest[..start]));
        let after = &rest[start..];
        let ticks = after
            .chars()
            .take_while(|character| *character == '`')
            .count();
        let delimiter = &after[..ticks];
        match after[ticks..].find(delimiter) {
            Some(end) => {
                let span_end = ticks + end + ticks;
                output.push_str(&after[..span_end]);
                rest = &after[span_end..];
            }
            None => {
                // An unmatched backtick is literal text.
                output.push_str(delimiter);
                rest = &after[ticks..];
            }
        }
    }
    output.push_str(&transform(rest));
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_stop_notifying_but_emails_and_code_stay() {
        let text = "Ask @octocat and @acme/security-team, or mail dev@example.com; `@keep` it.";
        let safe = neutralise_mentions(text);
        assert!(safe.contains("@\u{2060}octocat"));
        assert!(safe.contains("@\u{2060}acme/security-team"));
        assert!(safe.contains("dev@example.com"));
        assert!(safe.contains("`@keep`"));
        assert!(
            !Regex::new(r"(^|\s)@[a-z]").expect("regex").is_match(&safe),
            "{safe}"
        );
    }

    #[test]
    fn html_is_escaped_outside_code_but_our_tags_survive() {
        let text = "<!-- deep-review:report -->\n<details>\n<summary>Appendix</summary>\n<a id=\"I1\"></a>\n<a id=\"x\" href=\"y\">\n<img src=x onerror=alert(1)> and <a href=\"javascript:x\">x</a>\n```html\n<b>code</b>\n```\nuse `Vec<u8>` here\n</details>\n";
        let safe = escape_html(text);
        assert!(safe.starts_with("<!-- deep-review:report -->\n<details>\n<summary>"));
        assert!(safe.contains("&lt;img src=x") && safe.contains("&lt;a href"));
        assert!(safe.contains("\n<a id=\"I1\"></a>\n"), "{safe}");
        assert!(safe.contains("&lt;a id=\"x\" href"), "{safe}");
        assert!(safe.contains("<b>code</b>"), "fenced code is untouched");
        assert!(safe.contains("`Vec<u8>`"), "inline code is untouched");
        assert!(safe.trim_end().ends_with("</details>"));
    }

    #[test]
    fn long_bodies_are_cut_with_a_note_and_closed_blocks() {
        let long = format!("<details>\n```\n{}", "line\n".repeat(20_000));
        let cut = truncate(&long, 100, "see the check run");
        assert!(cut.chars().count() < BODY_LIMIT);
        assert!(cut.contains("was cut here; see the check run"));
        assert!(cut.contains("```\n</details>"));
    }
}
