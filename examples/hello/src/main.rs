//! The smallest AI Short: echo the buyer's text, shouting when asked.
//!
//! ```text
//! cargo run -p hello-short -- invoke echo --input '{"text": "hello", "shout": true}'
//! ```

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

fn main() -> std::process::ExitCode {
    shorts_runtime::run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shouts_when_asked() {
        let input = Input {
            text: "hi".into(),
            shout: true,
        };
        assert_eq!(echo(input).await.ok().as_deref(), Some("HI"));
    }
}
