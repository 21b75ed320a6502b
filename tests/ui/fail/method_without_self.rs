use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

struct Shorts;

impl Shorts {
    #[ai_short]
    async fn echo(input: Input) -> Result<String> {
        Ok(input.text)
    }
}

fn main() {}
