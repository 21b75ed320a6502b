use shorts_runtime::prelude::*;

#[ai_short]
async fn hello() -> Result<String> {
    Ok("hello".to_owned())
}

fn main() {}
