//! `invoke` on the file shorts: inline files and a direct upload, written to `--out`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn invoke(short: &str, input: &str, out: &PathBuf) -> (Option<i32>, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_files-short"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["invoke", short, "--input", input, "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    let callback = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&output.stderr));
    });
    (output.status.code(), callback)
}

fn out_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("files-short-{name}-{}", std::process::id()))
}

#[test]
fn several_small_files_are_inline_and_written_out() {
    let out = out_dir("several");
    let (code, callback) = invoke("several", r#"{"topic": "tea"}"#, &out);
    assert_eq!(code, Some(0));
    let names: Vec<&str> = callback["files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["filename"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["summary.txt", "data.csv", "chart.json"]);
    assert!(callback["files"][0]["file_base64"].is_string());
    assert_eq!(
        std::fs::read_to_string(out.join("data.csv")).ok().as_deref(),
        Some("topic,score\ntea,42\n")
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_large_file_is_uploaded_and_written_out() {
    let out = out_dir("video");
    let (code, callback) = invoke("video", r#"{"megabytes": 12}"#, &out);
    assert_eq!(code, Some(0));
    let file = &callback["files"][0];
    let name = file["filename"].as_str().unwrap_or_default();
    assert!(name.ends_with("-render.mp4"), "{name}");
    assert_eq!(file["mime_type"], "video/mp4");
    assert!(file["object_key"].as_str().is_some_and(|k| k.ends_with(name)));
    let written = std::fs::metadata(out.join(name)).map(|m| m.len()).unwrap_or(0);
    assert_eq!(written, 12_000_000);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_refused_size_is_an_ok_false_callback() {
    let out = out_dir("refused");
    let (code, callback) = invoke("video", r#"{"megabytes": 0}"#, &out);
    assert_eq!(code, Some(1));
    assert_eq!(callback["error"], "`megabytes` must be between 1 and 150");
}
