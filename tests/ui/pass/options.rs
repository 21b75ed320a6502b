//! Every option of the attribute: path, timeout and concurrency.

use std::time::Duration;

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    topic: String,
}

#[ai_short(path = "/v1/report", timeout = "1h 30m", concurrency = 4)]
async fn report(input: Input) -> Result<String> {
    Ok(input.topic)
}

#[ai_short(timeout = "500ms")]
async fn quick(input: Input) -> Result<String> {
    Ok(input.topic)
}

#[ai_short(concurrency = 1, path = "/")]
async fn root(input: Input) -> Result<String> {
    Ok(input.topic)
}

#[ai_short()]
async fn r#loop(input: Input) -> Result<String> {
    Ok(input.topic)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let input = || Input {
        topic: "rust".to_owned(),
    };
    assert_eq!(report(input()).await.ok().as_deref(), Some("rust"));
    assert_eq!(quick(input()).await.ok().as_deref(), Some("rust"));
    assert_eq!(root(input()).await.ok().as_deref(), Some("rust"));
    assert_eq!(r#loop(input()).await.ok().as_deref(), Some("rust"));

    let shorts = Short::registered();
    let find = |name: &str| {
        shorts
            .iter()
            .find(|short| short.name() == name)
            .unwrap_or_else(|| panic!("`{name}` is not registered"))
    };

    let report = find("report");
    assert_eq!(report.path(), "/v1/report");
    assert_eq!(report.timeout(), Duration::from_secs(90 * 60));
    assert_eq!(report.concurrency(), 4);

    let quick = find("quick");
    assert_eq!(quick.path(), "/shorts/quick");
    assert_eq!(quick.timeout(), Duration::from_millis(500));
    assert_eq!(quick.concurrency(), shorts_runtime::DEFAULT_CONCURRENCY);

    let root = find("root");
    assert_eq!(root.path(), "/");
    assert_eq!(root.concurrency(), 1);
    assert_eq!(root.timeout(), shorts_runtime::DEFAULT_TIMEOUT);

    assert_eq!(find("loop").path(), "/shorts/loop");
}
