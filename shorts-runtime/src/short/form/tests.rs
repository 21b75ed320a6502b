use serde::Deserialize;

use super::*;
use crate::{DateRange, FileInput, Tags, Url};

/// `(key, type, required, options)` of each input.
fn rows(form: &Form) -> Vec<(&str, Option<&str>, bool, Vec<&str>)> {
    form.inputs
        .iter()
        .map(|i| {
            (
                i.key.as_str(),
                i.input_type.map(InputType::as_str),
                i.required,
                i.options.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Tone {
    Neutral,
    #[serde(rename = "warm")]
    Friendly,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Every {
    title: String,
    count: u32,
    ratio: f64,
    public: bool,
    period: DateRange,
    tone: Tone,
    tones: Vec<Tone>,
    colors: Vec<String>,
    keywords: Tags,
    site: Url,
    documents: Vec<FileInput>,
    note: Option<String>,
    #[serde(default)]
    limit: u64,
    #[serde(rename = "maxWords", default)]
    max_words: Option<u32>,
    extra: Option<Vec<FileInput>>,
}

#[test]
fn every_supported_shape_maps_to_its_platform_type() {
    let form = of::<Every>();
    assert_eq!(
        rows(&form),
        [
            ("title", Some("text"), true, vec![]),
            ("count", Some("number"), true, vec![]),
            ("ratio", Some("number"), true, vec![]),
            ("public", Some("boolean"), true, vec![]),
            ("period", Some("date_range"), true, vec![]),
            ("tone", Some("select"), true, vec!["neutral", "warm"]),
            ("tones", Some("multiselect"), true, vec!["neutral", "warm"]),
            ("colors", Some("multiselect"), true, vec![]),
            ("keywords", Some("tags"), true, vec![]),
            ("site", Some("url"), true, vec![]),
            ("documents", Some("file_*"), true, vec![]),
            ("note", Some("text"), false, vec![]),
            ("limit", Some("number"), false, vec![]),
            ("maxWords", Some("number"), false, vec![]),
            ("extra", Some("file_*"), false, vec![]),
        ]
    );
    assert_eq!(
        form.problems().count(),
        0,
        "{:?}",
        form.problems().collect::<Vec<_>>()
    );
    assert!(
        form.inputs.iter().all(|i| i.label.is_none()),
        "no labels without JsonSchema"
    );
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Aliased {
    #[serde(alias = "subject")]
    topic: String,
    #[serde(alias = "n", default)]
    count: u32,
}

#[test]
fn an_alias_is_not_a_key_of_its_own() {
    assert_eq!(
        rows(&of::<Aliased>()),
        [
            ("topic", Some("text"), true, vec![]),
            ("count", Some("number"), false, vec![])
        ]
    );
}

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Renamed {
    first_name: String,
    #[serde(rename = "Bad-Key")]
    bad: String,
    x: String,
    #[serde(skip)]
    hidden: String,
}

#[test]
fn keys_are_checked_after_renames_against_the_platform_rules() {
    let form = of::<Renamed>();
    let keys: Vec<&str> = form.inputs.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["firstName", "Bad-Key", "x"]);
    let problems: Vec<String> = form.problems().collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("`Bad-Key`: the platform refuses this key"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("`x`: the platform refuses this key"),
        "{problems:?}"
    );
}

#[test]
fn the_key_rule_is_the_platforms() {
    for good in [
        "ab",
        "a1",
        "topic",
        "maxWords",
        "file_pdf_2",
        &format!("a{}", "b".repeat(39)),
    ] {
        assert!(valid_key(good), "{good}");
    }
    for bad in [
        "a",
        "",
        "Topic",
        "1a",
        "_a",
        "a-b",
        "a b",
        "ké",
        &format!("a{}", "b".repeat(40)),
    ] {
        assert!(!valid_key(bad), "{bad}");
    }
}

#[allow(dead_code)]
#[derive(Deserialize)]
enum Shape {
    Circle(f64),
    Square,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Inner {
    a: String,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Unsupported {
    one_file: FileInput,
    shape: Shape,
    later: Shape2,
    nested: Inner,
    any: serde_json::Value,
    pairs: Vec<(String, u32)>,
    fine: String,
}

#[allow(dead_code)]
#[derive(Deserialize)]
enum Shape2 {
    Square,
    Circle { radius: f64 },
}

#[test]
fn shapes_no_input_type_sends_are_problems_naming_the_key() {
    let form = of::<Unsupported>();
    let types: Vec<(&str, Option<&str>)> = form
        .inputs
        .iter()
        .map(|i| (i.key.as_str(), i.input_type.map(InputType::as_str)))
        .collect();
    assert_eq!(
        types,
        [
            ("one_file", Some("file_*")),
            ("shape", None),
            ("later", None),
            ("nested", None),
            ("any", None),
            ("pairs", None),
            ("fine", Some("text")),
        ]
    );
    let problems: Vec<String> = form.problems().collect();
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert!(problems[0].contains("`Vec<FileInput>`"), "{problems:?}");
    assert!(problems[1].contains("variants carry data"), "{problems:?}");
    assert!(
        problems[2].contains("variants carry data"),
        "a data variant after a unit one: {problems:?}"
    );
    assert!(problems[3].contains("`Inner` is an object"), "{problems:?}");
    assert!(problems[4].contains("a list of these"), "{problems:?}");
    // A field that reads any JSON value works: a note, not a problem.
    let notes: Vec<String> = form.notes().collect();
    assert_eq!(
        notes,
        ["`any`: reads any JSON value, so its input type cannot be told"]
    );
    // Each field is still found, and required, though some refuse their stand-in values.
    assert!(form.inputs.iter().all(|i| i.required));
}

#[test]
fn a_type_that_is_not_a_struct_has_no_form_and_says_why() {
    // The platform sends an object: a sequence or a single value never reads it.
    for form in [of::<Vec<String>>(), of::<String>()] {
        assert!(form.inputs.is_empty());
        let problems: Vec<String> = form.problems().collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("not a struct with named fields"),
            "{problems:?}"
        );
    }
    // Any object reads as a `Value` or a map: orders work, the keys cannot be listed.
    for form in [
        of::<serde_json::Value>(),
        of::<std::collections::HashMap<String, String>>(),
    ] {
        assert!(form.inputs.is_empty());
        assert_eq!(form.problems().count(), 0, "{:?}", form.problems);
        assert_eq!(form.notes.len(), 1, "{:?}", form.notes);
        assert!(
            form.notes[0].contains("the keys it reads cannot be listed"),
            "{:?}",
            form.notes
        );
    }
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Flattened {
    topic: String,
    #[serde(flatten)]
    rest: std::collections::HashMap<String, serde_json::Value>,
}

#[test]
fn a_flattened_struct_is_reported_not_guessed() {
    let form = of::<Flattened>();
    assert!(form.inputs.is_empty());
    assert_eq!(form.problems().count(), 0);
    assert!(form.notes[0].contains("flatten"), "{:?}", form.notes);
}

#[test]
fn the_table_lists_each_input_on_a_line() {
    let text = of::<Aliased>().to_string();
    assert_eq!(
        text,
        "  key    type    required  label\n  topic  text    yes       -\n  count  number  no        -\n"
    );
}

#[test]
fn json_names_each_field_as_the_platform_does() {
    let json = serde_json::to_value(of::<Every>()).unwrap_or_default();
    assert_eq!(json["inputs"][5]["type"], "select");
    assert_eq!(
        json["inputs"][5]["options"],
        serde_json::json!(["neutral", "warm"])
    );
    assert_eq!(json["inputs"][4]["type"], "date_range");
    assert_eq!(json["inputs"][10]["type"], "file_*");
    assert_eq!(json["inputs"][11]["required"], false);
    assert!(json["inputs"][0]["label"].is_null());
    assert!(json["inputs"][0].get("options").is_none());
}

#[cfg(feature = "schemars")]
mod with_schema {
    use schemars::JsonSchema;

    use super::*;

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    enum Mood {
        Calm,
        #[serde(alias = "noisy")]
        Loud,
        #[serde(other)]
        Unknown,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Labelled {
        /// The text to summarize
        /// (any language).
        ///
        /// Long texts are cut.
        #[schemars(extend("x-input-type" = "textarea"))]
        text: String,
        /// Mood of the answer.
        mood: Mood,
        /// The day of the report.
        #[schemars(extend("format" = "date"))]
        day: String,
        /// The shop's address.
        shop: Url,
        documents: Vec<FileInput>,
        keywords: Option<Tags>,
        period: DateRange,
    }

    #[test]
    fn labels_come_from_doc_comments_and_formats_refine_text() {
        #[allow(unused_imports)]
        use super::super::{ViaSchema as _, ViaSerde as _};
        // As the expansion of `#[ai_short]` reads it.
        let form = (&&Probe::<Labelled>::new()).form()();
        let labels: Vec<(&str, Option<&str>, Option<&str>)> = form
            .inputs
            .iter()
            .map(|i| {
                (
                    i.key.as_str(),
                    i.input_type.map(InputType::as_str),
                    i.label.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                (
                    "text",
                    Some("textarea"),
                    Some("The text to summarize (any language).")
                ),
                ("mood", Some("select"), Some("Mood of the answer.")),
                ("day", Some("date"), Some("The day of the report.")),
                ("shop", Some("url"), Some("The shop's address.")),
                ("documents", Some("file_*"), None),
                ("keywords", Some("tags"), None),
                ("period", Some("date_range"), None),
            ]
        );
        // Without the alias serde lists among the variants.
        assert_eq!(form.inputs[1].options, ["calm", "loud", "unknown"]);
        assert_eq!(
            of::<Labelled>().inputs[1].options,
            ["calm", "loud", "noisy", "unknown"]
        );
        assert!(!form.inputs[5].required);
    }

    #[test]
    #[allow(
        clippy::needless_borrow,
        reason = "the expansion's call, whose borrows choose the form"
    )]
    fn without_json_schema_the_expansion_falls_back_to_deserialize() {
        #[allow(unused_imports)]
        use super::super::{ViaSchema as _, ViaSerde as _};
        let with = (&&Probe::<Labelled>::new()).form()();
        let without = (&&Probe::<Aliased>::new()).form()();
        assert_eq!(
            with.inputs[0].label.as_deref(),
            Some("The text to summarize (any language).")
        );
        assert_eq!(without, of::<Aliased>());
    }
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Node {
    text: String,
    replies: Vec<Node>,
    parent: Option<Box<Node>>,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Thread {
    title: String,
    root: Option<Node>,
}

#[test]
fn a_recursive_type_is_traced_to_a_bounded_depth() {
    let form = of::<Thread>();
    let types: Vec<(&str, Option<&str>, bool)> = form
        .inputs
        .iter()
        .map(|i| (i.key.as_str(), i.input_type.map(InputType::as_str), i.required))
        .collect();
    assert_eq!(types, [("title", Some("text"), true), ("root", None, false)]);
    assert_eq!(form.problems().count(), 1);
}

/// A date the way a validating type reads one: `YYYY-MM-DD` or an error.
#[derive(Debug)]
struct Day(#[allow(dead_code)] String);

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let shaped = text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
        if text.len() == 10 && shaped {
            Ok(Day(text))
        } else {
            Err(serde::de::Error::custom("not a date"))
        }
    }
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Picky {
    count: std::num::NonZeroU32,
    #[serde(alias = "when")]
    day: Day,
    ip: std::net::IpAddr,
    #[serde(default)]
    limit: u32,
    period: Option<DateRange>,
    #[serde(alias = "tags")]
    keywords: Option<Tags>,
}

#[test]
fn fields_that_refuse_an_empty_stand_in_are_offered_others() {
    assert_eq!(
        rows(&of::<Picky>()),
        [
            ("count", Some("number"), true, vec![]),
            ("day", Some("date"), true, vec![]),
            ("ip", Some("text"), true, vec![]),
            ("limit", Some("number"), false, vec![]),
            ("period", Some("date_range"), false, vec![]),
            ("keywords", Some("tags"), false, vec![]),
        ]
    );
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct Wrapped(Aliased);

#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AllDefault {
    topic: String,
    count: u32,
}

impl Default for AllDefault {
    fn default() -> Self {
        AllDefault {
            topic: "x".to_owned(),
            count: 1,
        }
    }
}

#[test]
fn a_newtype_reads_as_what_it_wraps_and_a_default_container_requires_nothing() {
    assert_eq!(of::<Wrapped>(), of::<Aliased>());
    assert_eq!(
        rows(&of::<AllDefault>()),
        [
            ("topic", Some("text"), false, vec![]),
            ("count", Some("number"), false, vec![])
        ]
    );
}

/// A type whose `Deserialize` does not expect a stand-in value.
struct Fragile;

impl<'de> Deserialize<'de> for Fragile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        assert!(!text.is_empty(), "a seller's code that trusts its input");
        Ok(Fragile)
    }
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct FragileInput {
    value: Fragile,
}

#[test]
fn a_panic_while_reading_the_form_is_an_error_not_a_crash() {
    let short = crate::Short::new("fragile", |_: FragileInput, _: crate::Order| async {
        Ok::<_, crate::Error>("ok")
    });
    let error = short.read_form().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("could not be read"), "{error}");
    assert!(error.contains("`fragile`"), "{error}");
}
