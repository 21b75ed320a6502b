use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input<'a> {
    text: &'a str,
}

#[ai_short]
async fn echo(input: Input<'_>) -> Result<String> {
    Ok(input.text.to_owned())
}

fn main() {}
