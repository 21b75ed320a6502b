//! The expansion must not depend on the user's names: the prelude items it could reach for are
//! shadowed here, and any warning in the generated code fails the build.
#![deny(warnings)]
#![deny(rust_2018_idioms, unused_qualifications, unused_results, trivial_casts)]

use ::shorts_runtime::Order;

type Result<T> = core::result::Result<T, ::shorts_runtime::Error>;

#[derive(Debug)]
struct Ok;
#[derive(Debug)]
struct Err;
#[derive(Debug)]
struct Some;
#[derive(Debug)]
struct None;
#[derive(Debug)]
struct Box;
#[derive(Debug)]
struct Option;
#[derive(Debug)]
struct Vec;
#[derive(Debug)]
struct String;
#[derive(Debug)]
struct Send;
#[derive(Debug)]
struct Sync;
#[derive(Debug)]
struct Into;
#[derive(Debug)]
struct From;
#[derive(Debug)]
struct Call;
#[derive(Debug)]
struct HandlerFuture;
#[derive(Debug)]
struct ShortDef;

mod inventory {}
mod shorts_runtime {}

#[allow(unused_macros)]
macro_rules! file {
    () => {
        compile_error!("the expansion used the user's `file!`")
    };
}
#[allow(unused_macros)]
macro_rules! line {
    () => {
        compile_error!("the expansion used the user's `line!`")
    };
}
#[allow(unused_macros)]
macro_rules! module_path {
    () => {
        compile_error!("the expansion used the user's `module_path!`")
    };
}

#[derive(serde::Deserialize)]
struct Input {
    text: std::string::String,
}

/// Echo the buyer's text back.
#[::shorts_runtime::ai_short]
async fn echo(input: Input) -> Result<std::string::String> {
    core::result::Result::Ok(input.text)
}

#[::shorts_runtime::ai_short(path = "/with-order", timeout = "30s", concurrency = 2)]
async fn with_order(input: Input, order: Order) -> Result<std::string::String> {
    core::result::Result::Ok(format!("{} {}", input.text, order.id()))
}

#[::shorts_runtime::ai_short]
async fn fallible(input: Input) -> core::result::Result<::shorts_runtime::Html, std::string::String> {
    core::result::Result::Ok(::shorts_runtime::Html(input.text))
}

// Shorts written by a `macro_rules!`, with the return type's tokens coming from two contexts.
macro_rules! short {
    ($name:ident -> $output:ty) => {
        #[::shorts_runtime::ai_short]
        async fn $name(input: Input) -> Result<$output> {
            core::result::Result::Ok(core::convert::From::from(input.text))
        }
    };
}

type Text = std::string::String;

macro_rules! short_named {
    ($name:ident($input:ident, $order:ident) -> $output:ident) => {
        #[::shorts_runtime::ai_short]
        async fn $name(input: $input, order: $order) -> Result<$output> {
            core::result::Result::Ok(format!("{} {}", input.text, order.id()))
        }
    };
}

short!(from_macro -> std::string::String);
short!(value_from_macro -> serde_json::Value);
short_named!(idents_from_macro(Input, Order) -> Text);

fn main() {
    let shadows = (
        Ok, Err, Some, None, Box, Option, Vec, String, Send, Sync, Into, From,
    );
    let more = (Call, HandlerFuture, ShortDef);
    assert!(!format!("{shadows:?} {more:?}").is_empty());
    assert_eq!(::shorts_runtime::Short::registered().len(), 6);
}
