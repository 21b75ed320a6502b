//! `form`: the buyer's form each short's input type expects.

use std::io::Write as _;
use std::process::ExitCode;

use super::{USAGE, fail};
use crate::short::Short;

/// Prints the form of each short, or of `only`; see `Command::Form`.
pub(super) fn print(shorts: &[Short], only: Option<&str>, json: bool) -> ExitCode {
    let chosen: Vec<&Short> = shorts
        .iter()
        .filter(|s| only.is_none_or(|name| s.name() == name))
        .collect();
    if let (Some(name), true) = (only, chosen.is_empty()) {
        return fail(USAGE, &format!("no short named `{name}`; `list` shows them"));
    }
    if chosen.is_empty() {
        println!("no shorts: annotate an `async fn` with `#[ai_short]`");
        return ExitCode::SUCCESS;
    }
    let mut problems = 0;
    let mut out = std::io::stdout().lock();
    for short in chosen {
        let form = match short.read_form() {
            Ok(form) => form,
            Err(error) => {
                eprintln!("error: {error}");
                problems += 1;
                continue;
            }
        };
        problems += form.problems().count();
        let written = if json {
            let line = serde_json::json!({
                "short": short.name(),
                "path": short.path(),
                "inputs": form.inputs,
                "problems": form.problems,
                "notes": form.notes,
            });
            writeln!(out, "{line}")
        } else {
            let mut text = format!("{}  POST {}\n{form}", short.name(), short.path());
            for problem in form.problems() {
                text.push_str(&format!("  error: {problem}\n"));
            }
            for note in form.notes() {
                text.push_str(&format!("  note: {note}\n"));
            }
            writeln!(out, "{text}")
        };
        if written.is_err() {
            return ExitCode::from(1);
        }
    }
    drop(out);
    if problems > 0 {
        return fail(
            1,
            &format!("{problems} input(s) the platform's form cannot send as this type reads them (above)"),
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fails_on_an_input_the_platform_cannot_send() {
        #[derive(serde::Deserialize)]
        struct Good {
            #[allow(dead_code)]
            topic: String,
        }
        #[derive(serde::Deserialize)]
        struct Bad {
            #[allow(dead_code)]
            #[serde(rename = "Topic")]
            topic: String,
        }
        let good = Short::new("good", |_: Good, _: crate::Order| async {
            Ok::<_, crate::Error>("ok")
        });
        let bad = Short::new("bad", |_: Bad, _: crate::Order| async {
            Ok::<_, crate::Error>("ok")
        });
        assert_eq!(print(std::slice::from_ref(&good), None, false), ExitCode::SUCCESS);
        assert_eq!(print(std::slice::from_ref(&good), None, true), ExitCode::SUCCESS);
        assert_eq!(
            print(&[good.clone(), bad.clone()], None, false),
            ExitCode::from(1)
        );
        assert_eq!(
            print(&[good.clone(), bad], Some("good"), false),
            ExitCode::SUCCESS
        );
        assert_eq!(print(&[good], Some("nope"), false), ExitCode::from(USAGE));
    }
}
