use std::rc::Rc;

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

async fn pause() {}

#[ai_short]
async fn echo(input: Input) -> Result<String> {
    let shared = Rc::new(input.text);
    pause().await;
    Ok(shared.to_string())
}

fn main() {}
