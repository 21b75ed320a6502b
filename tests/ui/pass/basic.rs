//! A short with the defaults: registered under its name, with its doc comment as description.

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
    #[serde(default)]
    shout: bool,
}

/// Echo the buyer's text back.
#[ai_short]
async fn echo(input: Input) -> Result<String> {
    Ok(if input.shout {
        input.text.to_uppercase()
    } else {
        input.text
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The function stays an ordinary function.
    let input = Input {
        text: "hi".to_owned(),
        shout: true,
    };
    assert_eq!(echo(input).await.ok().as_deref(), Some("HI"));

    let shorts = Short::registered();
    assert_eq!(shorts.len(), 1);
    assert_eq!(shorts[0].name(), "echo");
    assert_eq!(shorts[0].path(), "/shorts/echo");
    assert_eq!(shorts[0].description(), "Echo the buyer's text back.");
}
