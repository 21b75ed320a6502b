//! `#[ai_short(blocking)]` on a plain `fn`, with and without the order, and with other options.

use std::time::Duration;

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[ai_short(blocking)]
fn shout(input: Input) -> Result<String> {
    Ok(input.text.to_uppercase())
}

#[ai_short(timeout = "2s", blocking, concurrency = 2)]
fn report(input: Input, order: Order) -> Result<String> {
    Ok(format!("{} {}", input.text, order.id()))
}

fn main() {
    // The functions are unchanged: plain calls.
    let input = || Input {
        text: "rust".to_owned(),
    };
    assert_eq!(shout(input()).ok().as_deref(), Some("RUST"));
    assert_eq!(
        report(input(), Order::new("o-1", "s-1")).ok().as_deref(),
        Some("rust o-1")
    );

    let shorts = Short::registered();
    let find = |name: &str| {
        shorts
            .iter()
            .find(|short| short.name() == name)
            .unwrap_or_else(|| panic!("`{name}` is not registered"))
    };
    assert_eq!(find("shout").path(), "/shorts/shout");
    let report = find("report");
    assert_eq!(report.timeout(), Duration::from_secs(2));
    assert_eq!(report.concurrency(), 2);
}
