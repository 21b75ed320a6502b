//! A short that does real AI work: summarize the buyer's text or CSV file with a model.
//!
//! ```text
//! export OPENAI_API_KEY=sk-...
//! printf 'Ship the order to Ada by Friday.\nInvoice: 120 EUR.\n' > notes.txt
//! cargo run -p summarize-short -- invoke summarize --input "$(printf \
//!   '{"document": [{"filename": "notes.txt", "mime_type": "text/plain", "file_base64": "%s"}], "tone": "friendly"}' \
//!   "$(base64 -w0 notes.txt)")"
//! ```
//!
//! The buyer uploads a file (a `file_*` input, `document`) and picks a tone (a `select` input,
//! `tone`: `neutral`, `friendly` or `formal`). The short sends the file to an OpenAI-compatible
//! chat-completions API (`OPENAI_BASE_URL`, default OpenAI's; `OPENAI_MODEL`, default
//! `gpt-4o-mini`), asks for a summary and the items the file mentions as JSON, and returns two
//! files: `report.html` (the summary and a table of the items) and `items.csv`.
//!
//! A 429 or a 5xx from the API is retried a few times (after `Retry-After` when the API sends
//! one), within a deadline under the short's timeout (`SUMMARIZE_DEADLINE_SECS`, default 240 s);
//! every other failure, a missing `OPENAI_API_KEY` included, ends the order with an `ok: false`
//! callback that says what went wrong, never with the key in it.

use shorts_runtime::prelude::*;
use summarize_short::{Config, SummarizeInput};

/// Summarize a text or CSV file and list the items it mentions.
#[ai_short(timeout = "5m", concurrency = 8)]
async fn summarize(input: SummarizeInput) -> Result<Vec<File>> {
    let config = Config::from_env()?;
    summarize_short::summarize(&config, input).await
}

fn main() -> std::process::ExitCode {
    shorts_runtime::run()
}
