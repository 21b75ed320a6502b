use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[derive(Debug)]
struct Empty;

#[ai_short]
async fn echo(input: Input) -> Result<String, Empty> {
    if input.text.is_empty() {
        return Err(Empty);
    }
    Ok(input.text)
}

fn main() {}
