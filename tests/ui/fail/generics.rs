use shorts_runtime::prelude::*;

#[ai_short]
async fn echo<T: serde::de::DeserializeOwned>(input: T) -> Result<String> {
    let _ = input;
    Ok(String::new())
}

fn main() {}
