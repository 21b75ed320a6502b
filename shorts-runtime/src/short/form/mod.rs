//! The buyer's form a short's input type expects: each key, its platform input type, whether it
//! is required, and its label. `form` prints it; `serve` warns about keys the platform refuses.
//!
//! The keys, types and whether each is required are read from the type's `Deserialize`
//! implementation ([`trace`]). The labels come from the fields' doc comments, which only a derive
//! can see: with the `schemars` feature, a type that also derives `schemars::JsonSchema` gets its
//! labels, and its `date` and `url` fields, from its schema ([`schema`]).

#[cfg(feature = "schemars")]
mod schema;
mod trace;

use std::fmt::{self, Write as _};
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::trace::{Shape, TEXTS, Traced};

/// A platform input type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InputType {
    Text,
    Textarea,
    Number,
    Boolean,
    Date,
    DateRange,
    Select,
    Multiselect,
    Tags,
    Url,
    /// Any of the `file_*` types (`file_pdf`, `file_csv`, ...): the type cannot tell which.
    #[serde(rename = "file_*")]
    File,
}

impl InputType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InputType::Text => "text",
            InputType::Textarea => "textarea",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Date => "date",
            InputType::DateRange => "date_range",
            InputType::Select => "select",
            InputType::Multiselect => "multiselect",
            InputType::Tags => "tags",
            InputType::Url => "url",
            InputType::File => "file_*",
        }
    }

    /// The type a schema's `x-input-type` (or `format`) names.
    #[cfg_attr(not(feature = "schemars"), allow(dead_code))]
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "text" => InputType::Text,
            "textarea" => InputType::Textarea,
            "number" => InputType::Number,
            "boolean" => InputType::Boolean,
            "date" => InputType::Date,
            "date_range" => InputType::DateRange,
            "select" => InputType::Select,
            "multiselect" => InputType::Multiselect,
            "tags" => InputType::Tags,
            "url" => InputType::Url,
            _ if name.starts_with("file_") => InputType::File,
            _ => return None,
        })
    }
}

/// One input of the form.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct FormInput {
    pub(crate) key: String,
    /// `None` when the field's type is none of the platform's.
    #[serde(rename = "type")]
    pub(crate) input_type: Option<InputType>,
    pub(crate) required: bool,
    /// From the field's doc comment; `None` without one (or without `JsonSchema`).
    pub(crate) label: Option<String>,
    /// A `select`'s or `multiselect`'s choices, when the type lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) options: Vec<String>,
    /// What the platform or this type makes of the input that loses orders.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) problems: Vec<String>,
    /// What `form` cannot tell of the input, though orders work.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notes: Vec<String>,
}

/// The form an input type expects.
#[doc(hidden)]
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Form {
    pub(crate) inputs: Vec<FormInput>,
    /// Problems of the type as a whole (it is not a struct with named fields).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) problems: Vec<String>,
    /// What `form` cannot tell of the type as a whole (it reads any object).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) notes: Vec<String>,
}

impl Form {
    /// Every problem, each naming its key.
    pub(crate) fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.problems
            .iter()
            .cloned()
            .chain(self.inputs.iter().flat_map(|input| {
                input
                    .problems
                    .iter()
                    .map(move |p| format!("`{}`: {p}", input.key))
            }))
    }

    /// Every note, each naming its key.
    pub(crate) fn notes(&self) -> impl Iterator<Item = String> + '_ {
        self.notes.iter().cloned().chain(
            self.inputs
                .iter()
                .flat_map(|input| input.notes.iter().map(move |n| format!("`{}`: {n}", input.key))),
        )
    }
}

/// Why a short's form could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the form of {short} could not be read: its input type's `Deserialize` panicked on a stand-in value")]
pub(crate) struct Unreadable {
    /// The short, as [`Short::origin`](crate::Short) names it.
    pub(crate) short: String,
}

/// How a short's form is read: a plain function, so that `ShortDef` can hold it.
pub type FormFn = fn() -> Form;

/// The form of `T`, from its `Deserialize` implementation alone.
pub(crate) fn of<T: DeserializeOwned>() -> Form {
    let mut form = from_trace(trace::trace::<T>());
    check_keys(&mut form);
    form
}

/// Chooses, for the input type of an `#[ai_short]` function, [`of`] or, when the type implements
/// `schemars::JsonSchema` (with the `schemars` feature), the form with its schema's labels. The
/// expansion calls `(&&Probe::<T>::new()).form()`: the method on `&&Probe<T>` applies only when
/// `T: JsonSchema`, otherwise the one on `&Probe<T>` does when `T` can be an input at all, and
/// else the one on `Probe<T>`, whose form is empty: the type is then reported once, where the
/// handler reads it, rather than here too.
#[doc(hidden)]
pub struct Probe<T>(PhantomData<fn() -> T>);

impl<T> Probe<T> {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Probe(PhantomData)
    }
}

impl<T> Clone for Probe<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Probe<T> {}

/// The empty form of a type that cannot be an input; see [`Probe`].
#[doc(hidden)]
pub trait ViaNothing {
    fn form(self) -> FormFn;
}

impl<T> ViaNothing for Probe<T> {
    fn form(self) -> FormFn {
        Form::default
    }
}

/// The form from the type's schema and `Deserialize` implementation; see [`Probe`].
#[doc(hidden)]
pub trait ViaSchema {
    fn form(self) -> FormFn;
}

/// The form from the type's `Deserialize` implementation; see [`Probe`].
#[doc(hidden)]
pub trait ViaSerde {
    fn form(self) -> FormFn;
}

impl<T: crate::short::ShortInput> ViaSerde for &Probe<T> {
    fn form(self) -> FormFn {
        of::<T>
    }
}

#[cfg(feature = "schemars")]
impl<T: crate::short::ShortInput + schemars::JsonSchema> ViaSchema for &&Probe<T> {
    fn form(self) -> FormFn {
        || {
            let mut form = of::<T>();
            schema::label::<T>(&mut form);
            form
        }
    }
}

/// The form's inputs from what the trace found.
fn from_trace(traced: Traced) -> Form {
    let fields = match traced {
        Traced::Fields(fields) => fields,
        Traced::NotAStruct(what) => {
            // A type that reads any object works, though it tells nothing of the form.
            let reads_objects = what.starts_with("a map") || what.starts_with("any JSON");
            let text = format!("the input type is {what}, not a struct with named fields");
            return Form {
                inputs: Vec::new(),
                problems: if reads_objects {
                    Vec::new()
                } else {
                    vec![format!(
                        "{text}: the platform sends an object with one key per input"
                    )]
                },
                notes: if reads_objects {
                    vec![format!("{text}: the keys it reads cannot be listed")]
                } else {
                    Vec::new()
                },
            };
        }
    };
    let inputs = fields
        .into_iter()
        .map(|field| {
            let shape = match field.shape {
                Shape::Option(inner) => *inner,
                shape => shape,
            };
            let read = input_type(&shape);
            let input_type = match (read.input_type, TEXTS.get(field.standin)) {
                (Some(InputType::Text), Some(&"2000-01-01")) => Some(InputType::Date),
                (Some(InputType::Text), Some(&"https://example.com/")) => Some(InputType::Url),
                (input_type, _) => input_type,
            };
            let (problems, notes) = match read.issue {
                Issue::None => (Vec::new(), Vec::new()),
                Issue::Problem(text) => (vec![text], Vec::new()),
                Issue::Note(text) => (Vec::new(), vec![text]),
            };
            FormInput {
                key: field.key.to_owned(),
                input_type,
                required: field.required,
                label: None,
                options: read.options,
                problems,
                notes,
            }
        })
        .collect();
    Form {
        inputs,
        problems: Vec::new(),
        notes: Vec::new(),
    }
}

/// What a field's shape reads as.
struct Read {
    input_type: Option<InputType>,
    options: Vec<String>,
    issue: Issue,
}

/// What `form` says of a field beside its type.
enum Issue {
    None,
    /// The platform's form cannot send what the type reads: orders fail.
    Problem(String),
    /// The type reads more than one input type sends, so `form` cannot name one; orders work.
    Note(String),
}

/// The platform input type a field's shape reads, its options, or why it reads none.
fn input_type(shape: &Shape) -> Read {
    let read = |input_type| Read {
        input_type: Some(input_type),
        options: Vec::new(),
        issue: Issue::None,
    };
    let select = |input_type, variants: &[&str]| Read {
        input_type: Some(input_type),
        options: variants.iter().map(|v| (*v).to_owned()).collect(),
        issue: Issue::None,
    };
    let problem = |text: String| Read {
        input_type: None,
        options: Vec::new(),
        issue: Issue::Problem(text),
    };
    match shape {
        Shape::Str => read(InputType::Text),
        Shape::Number => read(InputType::Number),
        Shape::Bool => read(InputType::Boolean),
        Shape::Struct("DateRange") => read(InputType::DateRange),
        Shape::Newtype("Tags", _) => read(InputType::Tags),
        Shape::Newtype("Url", _) => read(InputType::Url),
        Shape::Struct("FileInput") => Read {
            issue: Issue::Problem(
                "a file input arrives as an array, even for one file: make the field a `Vec<FileInput>`".to_owned(),
            ),
            ..read(InputType::File)
        },
        Shape::Enum {
            variants,
            unit_only: true,
            ..
        } => select(InputType::Select, variants),
        Shape::Enum { .. } => problem(
            "an enum whose variants carry data is no platform input type; a `select` is an enum of unit variants"
                .to_owned(),
        ),
        Shape::Seq(element) => match &**element {
            Shape::Struct("FileInput") => read(InputType::File),
            Shape::Str => read(InputType::Multiselect),
            Shape::Enum {
                variants,
                unit_only: true,
                ..
            } => select(InputType::Multiselect, variants),
            _ => problem(
                "a list of these is no platform input type (a `multiselect` is a list of strings or of unit variants, a file input a `Vec<FileInput>`)".to_owned(),
            ),
        },
        Shape::Newtype(_, inner) | Shape::Option(inner) => input_type(inner),
        Shape::Struct(name) => problem(format!(
            "`{name}` is an object, which no platform input type sends (but `date_range`, read as a `DateRange`)"
        )),
        Shape::Other(what) if what.starts_with("any JSON") => Read {
            input_type: None,
            options: Vec::new(),
            issue: Issue::Note(format!("reads {what}, so its input type cannot be told")),
        },
        Shape::Other(what) => problem(format!("{what} is no platform input type")),
    }
}

/// Whether `key` is one the platform accepts: `^[a-z][a-zA-Z0-9_]{1,39}$`.
pub(crate) fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && (2..=40).contains(&key.len())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_keys(form: &mut Form) {
    for input in &mut form.inputs {
        if !valid_key(&input.key) {
            input.problems.insert(
                0,
                "the platform refuses this key: a key starts with a lowercase letter, then 1 to 39 letters, digits or underscores (rename the field, or use `#[serde(rename = \"...\")]`)".to_owned(),
            );
        }
    }
}

/// The form as a table, for `form`.
impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inputs.is_empty() {
            return Ok(());
        }
        let kind = |input: &FormInput| {
            let mut text = input.input_type.map_or("?", InputType::as_str).to_owned();
            if !input.options.is_empty() {
                let _ = write!(text, ": {}", input.options.join(" | "));
            }
            text
        };
        let key_width = self.inputs.iter().map(|i| i.key.len()).max().unwrap_or(0).max(3);
        let type_width = self
            .inputs
            .iter()
            .map(|i| kind(i).len())
            .max()
            .unwrap_or(0)
            .max(4);
        writeln!(
            f,
            "  {:key_width$}  {:type_width$}  required  label",
            "key", "type"
        )?;
        for input in &self.inputs {
            writeln!(
                f,
                "  {:key_width$}  {:type_width$}  {:8}  {}",
                input.key,
                kind(input),
                if input.required { "yes" } else { "no" },
                input.label.as_deref().unwrap_or("-"),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
