//! The work behind the `summarize` short: read the buyer's file, ask an OpenAI-compatible model for
//! a summary and the items the file mentions, and return them as an HTML report and a CSV table.
//!
//! The short itself (`src/main.rs`) reads its [`Config`] from the environment at each order and
//! calls [`summarize`]; tests call [`summarize`] with a configuration of their own, pointed at a
//! local stand-in for the model API.

mod api;
mod config;
mod report;

use serde::Deserialize;
use shorts_runtime::{Error, File, FileInput, Result};

pub use config::{Config, DEFAULT_BASE_URL, DEFAULT_MODEL};
pub use report::{Item, Summary, csv_cell, escape_html, render_csv, render_html};

/// Largest file accepted, in bytes: about 50,000 tokens of English text, which fits the context
/// of current models with room for the answer.
pub const MAX_FILE_BYTES: usize = 200 * 1024;

/// What the buyer fills in. `form` prints it as the platform's form, with each field's doc comment
/// as its label (from `JsonSchema`).
#[derive(Deserialize, schemars::JsonSchema)]
pub struct SummarizeInput {
    /// Text or CSV file to summarize
    pub document: Vec<FileInput>,
    /// Tone of the summary
    #[serde(default)]
    pub tone: Tone,
}

/// The tone of the summary: a `select` input whose options are `neutral`, `friendly` and `formal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    /// Plain and factual.
    #[default]
    Neutral,
    /// Warm and approachable.
    Friendly,
    /// Professional, for a report or a client.
    Formal,
}

impl Tone {
    /// The option's value, as the platform sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Neutral => "neutral",
            Self::Friendly => "friendly",
            Self::Formal => "formal",
        }
    }

    fn instruction(self) -> &'static str {
        match self {
            Self::Neutral => "a neutral, factual tone",
            Self::Friendly => "a warm, friendly tone",
            Self::Formal => "a formal, professional tone",
        }
    }
}

/// The buyer's file, read as text.
struct Document {
    name: String,
    mime: String,
    text: String,
}

/// Summarizes the buyer's file with the model `config` names and returns `report.html` (the
/// summary and a table of the items) and `items.csv` (the items).
///
/// # Errors
///
/// With a message for the buyer when the file is missing, too large or not UTF-8 text, when the
/// model API fails or refuses the request, or when the model's answer is not the JSON asked for.
/// No message ever carries the API key.
pub async fn summarize(config: &Config, input: SummarizeInput) -> Result<Vec<File>> {
    let document = read_document(input.document)?;
    let messages = prompt(&document, input.tone);
    let content = api::complete(config, messages).await?;
    let summary = Summary::parse_redacted(&content, |text| config.redact(text))?;
    let report = render_html(&document.name, input.tone, &summary);
    let items = render_csv(&summary.items);
    Ok(vec![
        File::new("report.html", report.0),
        File::new("items.csv", items.0),
    ])
}

fn read_document(mut files: Vec<FileInput>) -> Result<Document> {
    let file = match files.len() {
        0 => {
            return Err(Error::msg(
                "no file was uploaded: upload a text or CSV file to summarize",
            ));
        }
        1 => files.remove(0),
        n => {
            return Err(Error::msg(format!(
                "{n} files were uploaded: upload a single text or CSV file"
            )));
        }
    };
    let name = file.filename.clone();
    let too_large = |size: u64| {
        Error::msg(format!(
            "`{name}` is too large: {} KB, and at most {} KB of text can be summarized",
            size.div_ceil(1024),
            MAX_FILE_BYTES / 1024
        ))
    };
    // Refused on the declared size before decoding, when the platform sent one.
    if let Some(size) = file.size_bytes
        && size > MAX_FILE_BYTES as u64
    {
        return Err(too_large(size));
    }
    let bytes = file
        .bytes()
        .map_err(|e| Error::msg(format!("`{name}` could not be read: {e}")))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::msg(format!(
            "`{name}` is not UTF-8 text: upload a plain text or CSV file (a PDF or a spreadsheet \
             must be exported as text or CSV first)"
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if text.trim().is_empty() {
        return Err(Error::msg(format!(
            "`{name}` is empty: there is nothing to summarize"
        )));
    }
    let mime = if file.mime_type.is_empty() {
        "text/plain".to_owned()
    } else {
        file.mime_type
    };
    Ok(Document {
        name,
        mime,
        text: text.to_owned(),
    })
}

/// The chat messages asking for the summary and the items as one JSON object.
fn prompt(document: &Document, tone: Tone) -> serde_json::Value {
    let system = format!(
        "You summarize documents. Answer with one JSON object and nothing else (no prose, no code \
         fence), of this shape: {{\"summary\": \"...\", \"items\": [{{\"name\": \"...\", \"detail\": \
         \"...\"}}]}}. \"summary\": a summary of the document in {tone}, at most 150 words. \
         \"items\": the key items the document lists or mentions (people, organisations, products, \
         dates, figures, tasks), at most 25, each with a one-sentence detail. Write in the \
         document's language.",
        tone = tone.instruction()
    );
    let user = format!(
        "Document `{}` ({}):\n\n{}",
        document.name, document.mime, document.text
    );
    serde_json::json!([
        { "role": "system", "content": system },
        { "role": "user", "content": user },
    ])
}
