//! Labels and refinements from a type's `schemars::JsonSchema` (with the `schemars` feature):
//! a field's doc comment becomes its label, a `format` of `date` or `uri` makes a text field a
//! `date` or a `url`, and `#[schemars(extend("x-input-type" = "textarea"))]` names the type outright.

use schemars::JsonSchema;
use serde_json::Value;

use super::{Form, InputType};

/// Adds what `T`'s schema says to `form`, matching its inputs by key.
pub(super) fn label<T: JsonSchema>(form: &mut Form) {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for input in &mut form.inputs {
        let Some(property) = properties.get(&input.key) else {
            continue;
        };
        input.label = first_paragraph(property.get("title").or_else(|| property.get("description")));
        // Serde's list of variants holds their aliases and a `#[serde(other)]` catch-all too;
        // the schema's `enum` holds the names a buyer picks from.
        if matches!(input.input_type, Some(InputType::Select | InputType::Multiselect)) {
            let choices = property.get("items").unwrap_or(property);
            if let Some(options) = enum_values(&schema, choices) {
                input.options = options;
            }
        }
        if let Some(named) = property
            .get("x-input-type")
            .and_then(Value::as_str)
            .and_then(InputType::parse)
        {
            input.input_type = Some(named);
        } else if input.input_type == Some(InputType::Text) {
            match property.get("format").and_then(Value::as_str) {
                Some("date") => input.input_type = Some(InputType::Date),
                Some("uri" | "url") => input.input_type = Some(InputType::Url),
                _ => {}
            }
        }
    }
}

/// The string values of `schema`'s `enum`, following a `$ref` into the root's `$defs`.
fn enum_values(root: &schemars::Schema, schema: &Value) -> Option<Vec<String>> {
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.strip_prefix("#/$defs/")?;
            root.get("$defs")?.get(name)?
        }
        None => schema,
    };
    let values = resolved.get("enum")?.as_array()?;
    values.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

/// A doc comment's first paragraph on one line.
fn first_paragraph(text: Option<&Value>) -> Option<String> {
    let text = text?.as_str()?;
    let paragraph = text
        .trim()
        .split("\n\n")
        .next()?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!paragraph.is_empty()).then_some(paragraph)
}

/// The schemas of the input types shorts defines, so that a seller's input type that holds them
/// can derive `JsonSchema`.
mod types {
    use std::borrow::Cow;

    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    use crate::{DateRange, FileInput, Tags, Url};

    #[cfg_attr(docsrs, doc(cfg(feature = "schemars")))]
    impl JsonSchema for FileInput {
        fn schema_name() -> Cow<'static, str> {
            "FileInput".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "object",
                "properties": {
                    "filename": { "type": "string" },
                    "mime_type": { "type": "string" },
                    "size_bytes": { "type": ["integer", "null"], "minimum": 0 },
                    "file_base64": { "type": "string", "contentEncoding": "base64" }
                },
                "required": ["filename", "file_base64"]
            })
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "schemars")))]
    impl JsonSchema for DateRange {
        fn schema_name() -> Cow<'static, str> {
            "DateRange".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "object",
                "properties": {
                    "start": { "type": "string", "format": "date" },
                    "end": { "type": "string", "format": "date" }
                },
                "required": ["start", "end"]
            })
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "schemars")))]
    impl JsonSchema for Tags {
        fn schema_name() -> Cow<'static, str> {
            "Tags".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": ["string", "array", "null"],
                "items": { "type": "string" }
            })
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "schemars")))]
    impl JsonSchema for Url {
        fn schema_name() -> Cow<'static, str> {
            "Url".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({ "type": "string", "format": "uri" })
        }
    }
}
