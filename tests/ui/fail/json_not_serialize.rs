use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

struct Summary {
    words: usize,
}

#[ai_short]
async fn summary(input: Input) -> Result<Json<Summary>> {
    Ok(Json(Summary {
        words: input.text.split_whitespace().count(),
    }))
}

fn main() {}
