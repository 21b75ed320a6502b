use shorts_runtime::prelude::*;

struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(input.text)
}

fn main() {}
