//! One module per verb.

pub mod agent;
pub mod apply;
pub mod controller;
pub mod cordon;
pub mod credentials;
pub mod delete;
pub mod describe;
pub mod drain;
pub mod get;
pub mod images;
pub mod label;
pub mod logs;
pub mod push;
pub mod rollout;
pub mod scale;
pub mod token;
pub mod up;
pub mod wait;

/// `s` with control characters escaped, for a terminal: a string a node or a workload wrote
/// (an event's message, a label, a log line) must not be able to move the cursor, retitle the
/// window or forge output (kubectl escapes them too, since CVE-2021-25743). Newlines and tabs
/// pass when `keep_lines` is set.
pub fn safe_with(s: &str, keep_lines: bool) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && !(keep_lines && (c == '\n' || c == '\t'));
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// [`safe_with`] for one-line fields (table cells).
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    safe_with(s, false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_reach_the_terminal_escaped() {
        assert_eq!(super::safe("plain text"), "plain text");
        assert_eq!(
            super::safe("\x1b]0;pwned\x07red"),
            "\\u{1b}]0;pwned\\u{7}red"
        );
        assert_eq!(super::safe_with("a\nb\x1b[2J", true), "a\nb\\u{1b}[2J");
        assert_eq!(super::safe("a\nb"), "a\\nb");
    }
}
