use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn count(input: Input) -> Result<u32> {
    Ok(input.text.len() as u32)
}

fn main() {}
