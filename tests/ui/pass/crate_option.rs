//! The runtime under another name, and re-exported from a module: the expansion finds it through
//! `crate = "..."` only.
#![allow(unreachable_pub, reason = "a framework re-exports the runtime with `pub use`")]

extern crate shorts_runtime as renamed;

use renamed::prelude::Deserialize;

mod framework {
    pub use ::shorts_runtime as runtime;
}

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[renamed::ai_short(crate = "renamed")]
async fn echo(input: Input) -> renamed::Result<String> {
    Ok(input.text)
}

#[framework::runtime::ai_short(crate = "crate::framework::runtime", path = "/again")]
async fn again(input: Input, order: renamed::Order) -> renamed::Result<String> {
    Ok(format!("{} {}", input.text, order.id()))
}

mod nested {
    use super::Input;

    #[crate::framework::runtime::ai_short(crate = "::shorts_runtime")]
    pub(crate) async fn nested(input: Input) -> renamed::Result<renamed::Html> {
        Ok(renamed::Html(input.text))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let input = || Input {
        text: "hi".to_owned(),
    };
    assert_eq!(echo(input()).await.ok().as_deref(), Some("hi"));
    assert!(nested::nested(input()).await.is_ok());
    let shorts = renamed::Short::registered();
    let names: Vec<&str> = shorts.iter().map(renamed::Short::name).collect();
    assert_eq!(names, ["again", "echo", "nested"]);
}
