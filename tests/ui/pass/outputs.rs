//! Every output type a short may return.

use shorts_runtime::prelude::*;

#[derive(Deserialize)]
struct Input {
    text: String,
}

#[derive(Serialize)]
struct Summary {
    words: usize,
}

#[ai_short]
async fn text(input: Input) -> Result<String> {
    Ok(input.text)
}

#[ai_short]
async fn html(input: Input) -> Result<Html> {
    Ok(Html(format!("<p>{}</p>", input.text)))
}

#[ai_short]
async fn json(input: Input) -> Result<Json<Summary>> {
    Ok(Json(Summary {
        words: input.text.split_whitespace().count(),
    }))
}

#[ai_short]
async fn csv(input: Input) -> Result<Csv> {
    Ok(Csv(format!("text\n{}\n", input.text)))
}

#[ai_short]
async fn url(input: Input) -> Result<Url> {
    Ok(Url(format!("https://example.com/{}", input.text)))
}

#[ai_short]
async fn file(input: Input) -> Result<File> {
    Ok(File::new("out.txt", input.text.into_bytes()))
}

#[ai_short]
async fn files(input: Input) -> Result<Vec<File>> {
    Ok(vec![
        File::new("a.txt", input.text.clone().into_bytes()),
        File::new("b.txt", input.text.into_bytes()),
    ])
}

#[ai_short]
async fn output(input: Input) -> Result<Output> {
    Ok(Output::Text(input.text))
}

#[ai_short]
async fn value(input: Input) -> Result<serde_json::Value> {
    Ok(serde_json::json!({ "text": input.text }))
}

#[ai_short]
async fn fully_qualified(input: Input) -> shorts_runtime::Result<shorts_runtime::Html> {
    Ok(shorts_runtime::Html(input.text))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let input = || Input {
        text: "two words".to_owned(),
    };
    assert_eq!(text(input()).await.ok().as_deref(), Some("two words"));
    assert_eq!(
        html(input()).await.ok().map(|h| h.0).as_deref(),
        Some("<p>two words</p>")
    );
    assert_eq!(json(input()).await.ok().map(|j| j.0.words), Some(2));
    assert!(csv(input()).await.is_ok());
    assert!(url(input()).await.is_ok());
    assert_eq!(
        file(input()).await.ok().map(|f| f.name().to_owned()).as_deref(),
        Some("out.txt")
    );
    assert_eq!(files(input()).await.ok().map(|f| f.len()), Some(2));
    assert!(output(input()).await.is_ok());
    assert!(value(input()).await.is_ok());
    assert!(fully_qualified(input()).await.is_ok());
    assert_eq!(Short::registered().len(), 10);
}
