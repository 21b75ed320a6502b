use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short(blocking)]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

fn main() {}
