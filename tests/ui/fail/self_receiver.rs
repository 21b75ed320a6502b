use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

struct Echo;

impl Echo {
    #[ai_short]
    async fn echo(&self, input: Input) -> Result<String> {
        Ok(input.text)
    }
}

fn main() {}
