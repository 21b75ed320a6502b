use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input, times: usize) -> Result<String> {
    Ok(input.text.repeat(times))
}

fn main() {}
