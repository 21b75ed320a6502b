//! The model's answer, read tolerantly, and the two files made from it.

use std::fmt::Write as _;

use serde_json::Value;
use shorts_runtime::{Csv, Error, Html, Result};

use crate::Tone;

/// Items kept from one answer.
const MAX_ITEMS: usize = 100;

/// What the model was asked for: `{"summary": "...", "items": [{"name": ..., "detail": ...}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The summary, in the tone asked for.
    pub summary: String,
    /// The items the document mentions.
    pub items: Vec<Item>,
}

/// One item the model found in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// What it is called.
    pub name: String,
    /// A sentence about it.
    pub detail: String,
}

impl Summary {
    /// Reads the model's answer. It is taken as it comes: inside a code fence or after a line of
    /// prose, with `items` missing or `null`, with numbers where strings were asked for, or with
    /// an item given as a bare string.
    ///
    /// # Errors
    ///
    /// When the answer holds no JSON object with a `summary` string.
    pub fn parse(answer: &str) -> Result<Self> {
        Self::parse_redacted(answer, str::to_owned)
    }

    /// As [`Summary::parse`], with the start of the answer an error quotes passed whole through
    /// `redact` before it is cut short.
    ///
    /// # Errors
    ///
    /// As [`Summary::parse`].
    pub fn parse_redacted(answer: &str, redact: impl Fn(&str) -> String) -> Result<Self> {
        let expected = r#"the model's answer is not the expected JSON ({"summary": "...", "items": [...]})"#;
        let began = || began(&redact(answer));
        let json = match (answer.find('{'), answer.rfind('}')) {
            (Some(start), Some(end)) if start < end => &answer[start..=end],
            _ => return Err(Error::msg(format!("{expected}: it began {}", began()))),
        };
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::msg(format!("{expected}: {e}; it began {}", began())))?;
        let summary = match &value["summary"] {
            Value::String(summary) if !summary.trim().is_empty() => summary.trim().to_owned(),
            _ => {
                return Err(Error::msg(format!(
                    "{expected}: it has no `summary` text; it began {}",
                    began()
                )));
            }
        };
        let items = match &value["items"] {
            Value::Array(items) => items
                .iter()
                .filter_map(Item::from_value)
                .take(MAX_ITEMS)
                .collect(),
            Value::Null => Vec::new(),
            _ => return Err(Error::msg(format!("{expected}: `items` is not a list"))),
        };
        Ok(Self { summary, items })
    }
}

impl Item {
    fn from_value(value: &Value) -> Option<Self> {
        let item = match value {
            Value::Object(_) => Self {
                name: text(&value["name"]),
                detail: text(&value["detail"]),
            },
            other => Self {
                name: text(other),
                detail: String::new(),
            },
        };
        (!item.name.is_empty() || !item.detail.is_empty()).then_some(item)
    }
}

/// A string as is, a number or a boolean written out, anything else as nothing.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// The first characters of an answer, quoted, for an error message.
fn began(answer: &str) -> String {
    let line = answer.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(80) {
        Some((end, _)) => format!("\"{}…\"", &line[..end]),
        None => format!("\"{line}\""),
    }
}

/// `text` safe inside HTML text and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report: the summary (a paragraph per blank-line-separated block) and a table of the items.
/// Everything the model wrote is escaped, so its answer cannot add markup or scripts.
pub fn render_html(file_name: &str, tone: Tone, summary: &Summary) -> Html {
    let title = format!("Summary of {}", escape_html(file_name));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n\
         body {{ font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.5; }}\n\
         table {{ border-collapse: collapse; width: 100%; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 0.4rem 0.6rem; text-align: left; vertical-align: top; }}\n\
         th {{ background: #f4f4f4; }}\n\
         .tone {{ color: #666; }}\n\
         </style>\n</head>\n<body>\n<h1>{title}</h1>\n<p class=\"tone\">Tone: {tone}</p>\n\
         <h2>Summary</h2>\n",
        tone = tone.as_str(),
    );
    for paragraph in summary
        .summary
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let lines: Vec<String> = paragraph.lines().map(|l| escape_html(l.trim())).collect();
        let _ = writeln!(html, "<p>{}</p>", lines.join("<br>\n"));
    }
    let _ = writeln!(html, "<h2>Items</h2>");
    if summary.items.is_empty() {
        let _ = writeln!(html, "<p>No items were found.</p>");
    } else {
        let _ = writeln!(
            html,
            "<table>\n<thead><tr><th>Name</th><th>Detail</th></tr></thead>\n<tbody>"
        );
        for item in &summary.items {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape_html(&item.name),
                escape_html(&item.detail)
            );
        }
        let _ = writeln!(html, "</tbody>\n</table>");
    }
    let _ = writeln!(html, "</body>\n</html>");
    Html(html)
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line break or surrounding
/// spaces, with its quotes doubled. A field that a spreadsheet would run as a formula (starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, so that text from
/// the buyer's document cannot become one.
pub fn csv_cell(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    let needs_quotes = field.contains([',', '"', '\n', '\r']) || field.trim() != field;
    if needs_quotes {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// The items as CSV: a `name,detail` header, then a row per item, lines ending in CRLF.
pub fn render_csv(items: &[Item]) -> Csv {
    let mut csv = String::from("name,detail\r\n");
    for item in items {
        let _ = write!(csv, "{},{}\r\n", csv_cell(&item.name), csv_cell(&item.detail));
    }
    Csv(csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, detail: &str) -> Item {
        Item {
            name: name.to_owned(),
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn a_plain_answer_is_read() {
        let summary = Summary::parse(r#"{"summary": "Short.", "items": [{"name": "A", "detail": "first"}]}"#);
        assert_eq!(
            summary.ok(),
            Some(Summary {
                summary: "Short.".to_owned(),
                items: vec![item("A", "first")],
            })
        );
    }

    #[test]
    fn answers_are_read_tolerantly() {
        let fenced = "Here it is:\n```json\n{\"summary\": \" S \", \"items\": [\"bare\", {\"name\": 42, \"detail\": true}, {}]}\n```";
        let summary = Summary::parse(fenced).ok();
        assert_eq!(
            summary,
            Some(Summary {
                summary: "S".to_owned(),
                items: vec![item("bare", ""), item("42", "true")],
            })
        );
        let no_items = Summary::parse(r#"{"summary": "S"}"#).ok();
        assert_eq!(no_items.map(|s| s.items.len()), Some(0));
    }

    #[test]
    fn other_answers_are_clear_errors() {
        let message = |answer: &str| Summary::parse(answer).err().map(|e| e.message().to_owned());
        assert_eq!(
            message("I cannot do that.").as_deref(),
            Some(
                r#"the model's answer is not the expected JSON ({"summary": "...", "items": [...]}): it began "I cannot do that.""#
            )
        );
        assert!(message(r#"{"title": "x"}"#).is_some_and(|m| m.contains("no `summary` text")));
        assert!(
            message(r#"{"summary": "x", "items": 3}"#).is_some_and(|m| m.contains("`items` is not a list"))
        );
        assert!(message("{not json}").is_some_and(|m| m.contains("key must be a string")));
    }

    #[test]
    fn a_quoted_answer_is_redacted_before_it_is_cut() {
        let key = "sk-unit-KEY-0123456789";
        let redact = |text: &str| text.replace(key, "<redacted>");
        // The key straddles the 80th character: cut first, its start would show.
        let answer = format!("{} {key} and more", "z".repeat(75));
        let message = Summary::parse_redacted(&answer, redact)
            .err()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.ends_with(" <red…\""), "{message}");
        assert!(!message.contains("sk-"), "{message}");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        let summary = Summary {
            summary: "<script>alert(1)</script>\n\nsecond".to_owned(),
            items: vec![item("<b>", "&")],
        };
        let html = render_html("<notes>.txt", Tone::Formal, &summary).0;
        assert!(html.contains("<title>Summary of &lt;notes&gt;.txt</title>"));
        assert!(html.contains("<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>\n<p>second</p>"));
        assert!(html.contains("<tr><td>&lt;b&gt;</td><td>&amp;</td></tr>"));
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a, b"), "\"a, b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell(" padded"), "\" padded\"");
        assert_eq!(csv_cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(csv_cell("-1, or less"), "\"'-1, or less\"");
        assert_eq!(csv_cell(""), "");
        assert_eq!(
            render_csv(&[item("A", "x,y"), item("B", "")]).0,
            "name,detail\r\nA,\"x,y\"\r\nB,\r\n"
        );
    }
}
