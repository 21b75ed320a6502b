use shorts_runtime::prelude::*;

#[ai_short]
async fn echo(input: impl serde::de::DeserializeOwned) -> Result<String> {
    let _ = input;
    Ok(String::new())
}

fn main() {}
