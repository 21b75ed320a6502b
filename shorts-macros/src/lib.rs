//! The `#[ai_short]` attribute.
//!
//! Use it through `shorts_runtime`, which re-exports it together with the types its expansion needs;
//! the documentation lives there.

mod args;
mod expand;
mod model;

use proc_macro::TokenStream;

/// Turns an `async fn` into an AI Short served by `shorts_runtime`.
///
/// See `shorts_runtime::ai_short` for the full documentation.
#[proc_macro_attribute]
pub fn ai_short(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::ai_short(args.into(), item.into()).into()
}
