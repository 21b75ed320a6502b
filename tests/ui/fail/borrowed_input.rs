use shorts_runtime::prelude::*;

#[ai_short]
async fn echo(input: &str) -> Result<String> {
    Ok(input.to_owned())
}

fn main() {}
