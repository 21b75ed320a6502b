//! Shorts that return files.
//!
//! ```text
//! cargo run -p files-short -- invoke several --input '{"topic": "coffee"}'
//! cargo run -p files-short -- invoke video --input '{"megabytes": 40}'
//! ```
//!
//! `several` returns three small files, which travel inline in the callback. `video` writes a
//! large file to disk and returns it by path: it is too large for a callback, so it is streamed to
//! the platform's storage through direct upload (with a progress line on a terminal) and the
//! callback names its `object_key`.

use shorts_runtime::prelude::*;
use tokio::io::AsyncWriteExt;

#[derive(Deserialize)]
struct Topic {
    topic: String,
}

/// Return a summary, a table and a chart description about a topic.
#[ai_short]
async fn several(input: Topic) -> Result<Vec<File>> {
    let topic = input.topic;
    Ok(vec![
        File::new("summary.txt", format!("A short summary about {topic}.\n")),
        File::new("data.csv", format!("topic,score\n{topic},42\n")),
        File::new(
            "chart.json",
            format!(r#"{{"title": "{topic}", "values": [1, 2, 3]}}"#),
        ),
    ])
}

#[derive(Deserialize)]
struct VideoInput {
    /// Size of the file to render, in megabytes (at most 150, the platform's upload limit).
    #[serde(default = "default_megabytes")]
    megabytes: u64,
}

fn default_megabytes() -> u64 {
    20
}

/// Render a video-sized file and return it from disk.
#[ai_short(timeout = "30m", concurrency = 2)]
async fn video(input: VideoInput, order: Order) -> Result<File> {
    if input.megabytes == 0 || input.megabytes > 150 {
        return Err(Error::msg("`megabytes` must be between 1 and 150"));
    }
    let path = std::env::temp_dir().join(format!("render-{}.mp4", order.id()));
    let mut file = tokio::fs::File::create(&path).await?;
    // Stand-in for a real renderer: write the file a megabyte at a time.
    let mut block = vec![0u8; 1_000_000];
    for i in 0..input.megabytes {
        block
            .iter_mut()
            .enumerate()
            .for_each(|(j, b)| *b = (i as usize + j) as u8);
        file.write_all(&block).await?;
    }
    file.flush().await?;
    // Deleted once delivered.
    Ok(File::from_temp_path(path).with_name("render.mp4"))
}

fn main() -> std::process::ExitCode {
    shorts_runtime::run()
}
