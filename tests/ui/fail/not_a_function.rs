use shorts_runtime::prelude::*;

#[ai_short]
struct Echo;

fn main() {}
