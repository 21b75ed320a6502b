use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short(timeout = "30s", timeout = "1m")]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

fn main() {}
