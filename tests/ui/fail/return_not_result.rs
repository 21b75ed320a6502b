use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input) -> String {
    input.text
}

fn main() {}
