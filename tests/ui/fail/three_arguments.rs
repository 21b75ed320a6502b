use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short]
async fn echo(input: Input, order: Order, times: usize) -> Result<String> {
    let _ = order;
    Ok(input.text.repeat(times))
}

fn main() {}
