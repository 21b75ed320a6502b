//! A second argument that receives the order.

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    topic: String,
}

#[ai_short]
async fn report(input: Input, order: Order) -> Result<String> {
    Ok(format!("{} for order {}", input.topic, order.id()))
}

fn main() {
    // Only the runtime builds an `Order`, so the end-to-end suites run this one through an app.
    let shorts = Short::registered();
    assert_eq!(shorts.len(), 1);
    assert_eq!(shorts[0].name(), "report");
}
