//! Reads an input type's shape from its `Deserialize` implementation, with no extra derive: the
//! type is deserialized from a [`Tracer`], a deserializer that answers every request with a
//! stand-in value and writes down what was asked for.
//!
//! What a `Deserialize` implementation asks for is all that can be seen: the keys after serde's
//! renames, `Option`, sequences, enums with their variant names, and the names of structs and
//! newtype structs (which is how [`FileInput`](crate::FileInput), [`DateRange`](crate::DateRange),
//! [`Tags`](crate::Tags) and [`Url`](crate::Url) are told apart). A key is required when the
//! type cannot be built without it, which covers both `Option` and `#[serde(default)]`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
    SeqAccess, VariantAccess, Visitor,
};

/// What a type asked to be deserialized as.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shape {
    Bool,
    Number,
    Str,
    /// `Option<T>`.
    Option(Box<Shape>),
    /// A sequence of `T` (`Vec`, `HashSet`, ...).
    Seq(Box<Shape>),
    /// A struct with named fields.
    Struct(&'static str),
    /// An enum; `unit_only` until a variant that carries data is seen.
    Enum {
        name: &'static str,
        variants: &'static [&'static str],
        unit_only: bool,
    },
    /// A newtype struct, and what it wraps.
    Newtype(&'static str, Box<Shape>),
    /// Anything else: a map, a tuple, bytes, a unit, or a type that reads any JSON value.
    Other(&'static str),
}

/// The top of an input type, as [`trace`] found it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Traced {
    /// A struct with named fields: each key, its shape, and whether it is required.
    Fields(Vec<TracedField>),
    /// Not a struct with named fields: what it is instead.
    NotAStruct(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct TracedField {
    pub(super) key: &'static str,
    pub(super) shape: Shape,
    pub(super) required: bool,
    /// The stand-in text the field accepted: [`TEXTS`]`[standin]`.
    pub(super) standin: usize,
}

/// The stand-in texts a field is offered, in turn, until it accepts one: a field that refuses
/// an empty text may be a date, a URL, an id or an address. (Numbers are offered 0, then 1.)
pub(super) const TEXTS: [&str; 6] = [
    "",
    "a",
    "2000-01-01",
    "https://example.com/",
    "00000000-0000-0000-0000-000000000000",
    "127.0.0.1",
];

/// How deep values are traced: past it an option is `None`, a sequence and a struct empty, so
/// that a recursive type ends.
const MAX_DEPTH: usize = 8;

/// Passes a trace runs at most per alias, and per enum's variants.
const MAX_PASSES: usize = 256;

/// Traces `T`: see the module's documentation.
pub(super) fn trace<T: DeserializeOwned>() -> Traced {
    let state = State::default();
    let ended = shape_passes::<T>(&state);
    let top = *state.top.borrow();
    let keys = match top {
        Some(Top::Struct(keys)) => keys,
        Some(Top::Other(what)) => return Traced::NotAStruct(what),
        None if ended => return Traced::NotAStruct("a type that reads nothing"),
        None => return Traced::NotAStruct("a type whose shape could not be read"),
    };
    variant_passes::<T>(&state);
    Traced::Fields(fields::<T>(&state, keys))
}

/// The first passes, which give the keys and the shape of every field; whether the last one built
/// a value. A field whose stand-in value the type refuses ends the pass there: it is left out of
/// the next one, until a pass ends with no new refusal. A key the type reads as another's alias
/// makes it refuse a duplicate: the alias is left out of every later pass.
fn shape_passes<T: DeserializeOwned>(state: &State) -> bool {
    let mut result = T::deserialize(Tracer::top(state));
    for _ in 0..MAX_PASSES {
        if let Err(TraceError::Duplicate(key)) = result {
            let alias = state.alias_of::<T>(key);
            state.aliases.borrow_mut().insert(alias);
        } else if result.is_err() {
            // A field that refused its stand-in is offered the next one, and left out once it
            // refused them all.
            let newly: Vec<&'static str> = {
                let omitted = state.omitted.borrow();
                state
                    .refused
                    .borrow()
                    .iter()
                    .filter(|k| !omitted.contains(*k))
                    .copied()
                    .collect()
            };
            for key in newly {
                let mut standins = state.standins.borrow_mut();
                let next = standins.get(key).map_or(1, |n| n + 1);
                if next < TEXTS.len() {
                    standins.insert(key, next);
                    state.refused.borrow_mut().remove(key);
                }
            }
        }
        let omitted: BTreeSet<&'static str> = state
            .aliases
            .borrow()
            .union(&state.refused.borrow())
            .copied()
            .collect();
        let offered = state.standins.borrow().clone();
        let same = omitted == *state.omitted.borrow() && offered == state.offered.replace(offered.clone());
        if result.is_ok() || same {
            break;
        }
        *state.omitted.borrow_mut() = omitted;
        result = T::deserialize(Tracer::top(state));
    }
    result.is_ok()
}

/// A variant that carries data is only seen when it is the one chosen: one more pass per variant
/// of every enum met, each choosing that variant. The refusals of the shape passes are kept.
fn variant_passes<T: DeserializeOwned>(state: &State) {
    let refused = state.refused.borrow().clone();
    let enums: Vec<(&'static str, usize)> = state
        .enums
        .borrow()
        .iter()
        .map(|(name, variants)| (*name, variants.len()))
        .collect();
    for (name, count) in enums {
        for chosen in 1..count.min(MAX_PASSES) {
            state.choose.borrow_mut().insert(name, chosen);
            let _ = T::deserialize(Tracer::top(state));
        }
        state.choose.borrow_mut().remove(name);
    }
    *state.refused.borrow_mut() = refused;
}

/// The traced fields of the top struct, in the order of `keys`, aliases left out.
fn fields<T: DeserializeOwned>(state: &State, keys: &[&'static str]) -> Vec<TracedField> {
    let aliases = state.aliases.borrow().clone();
    keys.iter()
        .filter(|key| !aliases.contains(*key))
        .filter_map(|&key| {
            let shape = state.shapes.borrow().get(key).cloned()?;
            let shape = state.with_enums(shape);
            let required = state
                .required::<T>(key)
                .unwrap_or(!matches!(shape, Shape::Option(_)));
            let standin = state.standins.borrow().get(key).copied().unwrap_or(0);
            Some(TracedField {
                key,
                shape,
                required,
                standin,
            })
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Top {
    Struct(&'static [&'static str]),
    Other(&'static str),
}

/// What the passes found, shared by every [`Tracer`] of a trace.
#[derive(Default)]
struct State {
    top: RefCell<Option<Top>>,
    /// The shape of each top-level field, by key.
    shapes: RefCell<BTreeMap<&'static str, Shape>>,
    /// Keys whose stand-in value the type refused: left out of the passes after the first.
    refused: RefCell<BTreeSet<&'static str>>,
    /// Keys the type reads as another key's alias: left out of every pass.
    aliases: RefCell<BTreeSet<&'static str>>,
    /// Keys left out of the current pass.
    omitted: RefCell<BTreeSet<&'static str>>,
    /// The top-level key handed out last.
    last_key: Cell<&'static str>,
    /// The stand-in each top-level field is offered ([`TEXTS`]' index; 0 when absent).
    standins: RefCell<BTreeMap<&'static str, usize>>,
    /// The stand-ins of the pass before.
    offered: RefCell<BTreeMap<&'static str, usize>>,
    /// Every enum met, by name, with its variants.
    enums: RefCell<BTreeMap<&'static str, &'static [&'static str]>>,
    /// Enums with a variant that carries data.
    with_data: RefCell<BTreeSet<&'static str>>,
    /// The variant each enum answers with in this pass (the first when absent).
    choose: RefCell<BTreeMap<&'static str, usize>>,
}

impl State {
    /// Which key is an alias of `key` (or `key` of it): the one handed out last when that is not
    /// `key` itself, else the earlier key that, given only with `key`, makes the type refuse a
    /// duplicate.
    fn alias_of<T: DeserializeOwned>(&self, key: &'static str) -> &'static str {
        let last = self.last_key.get();
        if last != key {
            return last;
        }
        let Some(Top::Struct(keys)) = *self.top.borrow() else {
            return last;
        };
        let known = self.aliases.borrow().clone();
        let before = self.omitted.borrow().clone();
        let mut alias = last;
        for &other in keys.iter().take_while(|k| **k != key) {
            if known.contains(other) {
                continue;
            }
            *self.omitted.borrow_mut() = keys
                .iter()
                .copied()
                .filter(|k| *k != key && *k != other)
                .collect();
            if let Err(TraceError::Duplicate(_)) = T::deserialize(Tracer::top(self)) {
                alias = other;
                break;
            }
        }
        *self.omitted.borrow_mut() = before;
        alias
    }

    /// Whether the type needs `key`: it is built without it (and without the keys it refused and
    /// the aliases), or refuses for lack of `key`; `None` when it refuses for another reason.
    fn required<T: DeserializeOwned>(&self, key: &'static str) -> Option<bool> {
        {
            let mut omitted = self.omitted.borrow_mut();
            omitted.clone_from(&self.refused.borrow());
            omitted.extend(self.aliases.borrow().iter());
            omitted.insert(key);
        }
        match T::deserialize(Tracer::top(self)) {
            Ok(_) => Some(false),
            Err(TraceError::Missing(missing)) if missing == key => Some(true),
            Err(_) => None,
        }
    }

    /// `shape` with each enum's `unit_only` as every pass saw it.
    fn with_enums(&self, shape: Shape) -> Shape {
        match shape {
            Shape::Enum {
                name,
                variants,
                unit_only,
            } => Shape::Enum {
                name,
                variants,
                unit_only: unit_only && !self.with_data.borrow().contains(name),
            },
            Shape::Option(inner) => Shape::Option(Box::new(self.with_enums(*inner))),
            Shape::Seq(inner) => Shape::Seq(Box::new(self.with_enums(*inner))),
            Shape::Newtype(name, inner) => Shape::Newtype(name, Box::new(self.with_enums(*inner))),
            other => other,
        }
    }
}

/// The tracing error: a missing key and a duplicate one are told apart, since the passes ask
/// for them.
#[derive(Debug)]
pub(super) enum TraceError {
    Missing(&'static str),
    /// A field was given twice, under this key and under an alias of it.
    Duplicate(&'static str),
    Other(String),
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::Missing(key) => write!(f, "missing field `{key}`"),
            TraceError::Duplicate(key) => write!(f, "duplicate field `{key}`"),
            TraceError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<M: fmt::Display>(message: M) -> Self {
        TraceError::Other(message.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        TraceError::Missing(field)
    }

    fn duplicate_field(field: &'static str) -> Self {
        TraceError::Duplicate(field)
    }
}

/// Where a [`Tracer`] writes the shape it is asked for.
#[derive(Clone, Copy)]
enum Slot<'s> {
    /// The input type itself.
    Top,
    /// A top-level field's value.
    Field(&'static str),
    /// Inside a field's value: the shape goes to the caller's cell.
    Inner(&'s RefCell<Option<Shape>>),
}

/// The deserializer: see the module's documentation.
pub(super) struct Tracer<'s> {
    state: &'s State,
    slot: Slot<'s>,
    /// The top-level field this value is in, whose stand-in it answers with.
    field: Option<&'static str>,
    /// Values this one is inside of.
    depth: usize,
}

impl<'s> Tracer<'s> {
    fn top(state: &'s State) -> Self {
        Tracer {
            state,
            slot: Slot::Top,
            field: None,
            depth: 0,
        }
    }

    /// The index in [`TEXTS`] of the stand-in this value answers with.
    fn standin(&self) -> usize {
        self.field
            .and_then(|key| self.state.standins.borrow().get(key).copied())
            .unwrap_or(0)
    }

    fn text(&self) -> &'static str {
        TEXTS.get(self.standin()).copied().unwrap_or_default()
    }

    /// 0 (`false`), or 1 once the field refused 0.
    fn number(&self) -> bool {
        self.standin() > 0
    }

    /// Whether values this deep are only stand-ins, not traced further.
    fn too_deep(&self) -> bool {
        self.depth >= MAX_DEPTH
    }

    fn record(&self, shape: Shape) {
        match self.slot {
            Slot::Top => {
                let what = match shape {
                    Shape::Struct(_) => return,
                    Shape::Option(_) => "an `Option`",
                    Shape::Seq(_) => "a sequence",
                    Shape::Enum { .. } => "an enum",
                    Shape::Newtype(..) => "a newtype struct",
                    Shape::Bool | Shape::Number | Shape::Str => "a single value",
                    Shape::Other(what) => what,
                };
                self.state.top.borrow_mut().get_or_insert(Top::Other(what));
            }
            Slot::Field(key) => {
                self.state.shapes.borrow_mut().insert(key, shape);
            }
            Slot::Inner(cell) => {
                cell.borrow_mut().get_or_insert(shape);
            }
        }
    }

    /// Traces a value inside this one (an option's, a sequence's element, a newtype's), then
    /// records `wrap` of its shape here.
    fn inner<R>(
        &self,
        wrap: impl FnOnce(Shape) -> Shape,
        read: impl FnOnce(Tracer<'_>) -> Result<R, TraceError>,
    ) -> Result<R, TraceError> {
        let cell = RefCell::new(None);
        let result = read(Tracer {
            state: self.state,
            slot: Slot::Inner(&cell),
            field: self.field,
            depth: self.depth + 1,
        });
        let shape = cell.into_inner().unwrap_or(Shape::Other("nothing"));
        self.record(wrap(shape));
        result
    }
}

macro_rules! numbers {
    ($($method:ident => $visit:ident($value:ty)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
                self.record(Shape::Number);
                visitor.$visit(<$value>::from(self.number()))
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("any JSON value"));
        visitor.visit_str("")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Bool);
        visitor.visit_bool(false)
    }

    numbers! {
        deserialize_i8 => visit_i8(i8),
        deserialize_i16 => visit_i16(i16),
        deserialize_i32 => visit_i32(i32),
        deserialize_i64 => visit_i64(i64),
        deserialize_i128 => visit_i128(i128),
        deserialize_u8 => visit_u8(u8),
        deserialize_u16 => visit_u16(u16),
        deserialize_u32 => visit_u32(u32),
        deserialize_u64 => visit_u64(u64),
        deserialize_u128 => visit_u128(u128),
        deserialize_f32 => visit_f32(f32),
        deserialize_f64 => visit_f64(f64),
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Str);
        visitor.visit_char('a')
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Str);
        visitor.visit_str(self.text())
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Str);
        visitor.visit_string(self.text().to_owned())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("bytes"));
        visitor.visit_bytes(&[])
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("bytes"));
        visitor.visit_byte_buf(Vec::new())
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        if self.too_deep() {
            self.record(Shape::Option(Box::new(Shape::Other("a value nested too deep"))));
            return visitor.visit_none();
        }
        self.inner(
            |shape| Shape::Option(Box::new(shape)),
            |inner| visitor.visit_some(inner),
        )
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("a unit"));
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("a unit struct"));
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        if matches!(self.slot, Slot::Top) {
            // A newtype around the input type reads as what it wraps.
            return visitor.visit_newtype_struct(self);
        }
        self.inner(
            |shape| Shape::Newtype(name, Box::new(shape)),
            |inner| visitor.visit_newtype_struct(inner),
        )
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        if self.too_deep() {
            self.record(Shape::Seq(Box::new(Shape::Other("a value nested too deep"))));
            return visitor.visit_seq(OneElement { tracer: None });
        }
        self.inner(
            |shape| Shape::Seq(Box::new(shape)),
            |inner| visitor.visit_seq(OneElement { tracer: Some(inner) }),
        )
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("a tuple"));
        visitor.visit_seq(OneElement { tracer: None })
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("a tuple struct"));
        visitor.visit_seq(OneElement { tracer: None })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Other("a map (or a struct with `#[serde(flatten)]`)"));
        visitor.visit_map(Fields {
            state: None,
            keys: &[],
            at: 0,
            depth: self.depth + 1,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let top = matches!(self.slot, Slot::Top);
        if top {
            self.state.top.borrow_mut().get_or_insert(Top::Struct(fields));
        }
        self.record(Shape::Struct(name));
        // The structs of shorts' own input types get their keys without aliases; any other
        // struct inside a field gets all its keys (a duplicate there only refuses that field).
        let keys: &'static [&'static str] = match name {
            _ if self.too_deep() => &[],
            "DateRange" if !top => &["start", "end"],
            _ => fields,
        };
        visitor.visit_map(Fields {
            state: top.then_some(self.state),
            keys,
            at: 0,
            depth: self.depth + 1,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.state.enums.borrow_mut().insert(name, variants);
        self.record(Shape::Enum {
            name,
            variants,
            unit_only: true,
        });
        let chosen = self.state.choose.borrow().get(name).copied().unwrap_or(0);
        let Some(variant) = variants.get(chosen) else {
            return Err(TraceError::Other(format!("the enum `{name}` has no variants")));
        };
        visitor.visit_enum(Variant {
            state: self.state,
            name,
            variant,
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.record(Shape::Str);
        visitor.visit_str(self.text())
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }
}

/// A sequence of one traced element (or of none, for a tuple).
struct OneElement<'s> {
    tracer: Option<Tracer<'s>>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        match self.tracer.take() {
            Some(tracer) => seed.deserialize(tracer).map(Some),
            None => Ok(None),
        }
    }
}

/// A struct's fields, each key once with a traced value. For the input type's own fields
/// (`state` set), the keys the current pass leaves out are skipped, and each value's shape is
/// recorded under its key.
struct Fields<'s> {
    state: Option<&'s State>,
    keys: &'static [&'static str],
    at: usize,
    /// The depth of the values.
    depth: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, TraceError> {
        while let Some(&key) = self.keys.get(self.at) {
            self.at += 1;
            if let Some(state) = self.state {
                if state.omitted.borrow().contains(key) {
                    continue;
                }
                state.last_key.set(key);
            }
            let key: de::value::StrDeserializer<'_, TraceError> = key.into_deserializer();
            return seed.deserialize(key).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TraceError> {
        let key = self
            .at
            .checked_sub(1)
            .and_then(|at| self.keys.get(at))
            .copied()
            .unwrap_or_default();
        match self.state {
            Some(state) => {
                let result = seed.deserialize(Tracer {
                    state,
                    slot: Slot::Field(key),
                    field: Some(key),
                    depth: self.depth,
                });
                match result {
                    Ok(value) => Ok(value),
                    // A duplicate inside the value is not one of the input type's keys.
                    Err(TraceError::Duplicate(inner)) => {
                        state.refused.borrow_mut().insert(key);
                        Err(TraceError::Other(format!(
                            "duplicate field `{inner}` inside `{key}`"
                        )))
                    }
                    Err(error) => {
                        state.refused.borrow_mut().insert(key);
                        Err(error)
                    }
                }
            }
            None => {
                // Inside a field's value only the field's own shape matters: these are traced
                // apart, into a cell no one reads.
                let cell = RefCell::new(None);
                let state = State::default();
                seed.deserialize(Tracer {
                    state: &state,
                    slot: Slot::Inner(&cell),
                    field: None,
                    depth: self.depth,
                })
            }
        }
    }
}

/// The variant an enum answers with, and what the type asks of it.
struct Variant<'s> {
    state: &'s State,
    name: &'static str,
    variant: &'static str,
}

impl Variant<'_> {
    fn with_data<R>(self) -> Result<R, TraceError> {
        self.state.with_data.borrow_mut().insert(self.name);
        Err(TraceError::Other(format!(
            "the variant `{}` carries data",
            self.variant
        )))
    }
}

impl<'de> EnumAccess<'de> for Variant<'_> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), TraceError> {
        let key: de::value::StrDeserializer<'_, TraceError> = self.variant.into_deserializer();
        Ok((seed.deserialize(key)?, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, TraceError> {
        self.with_data()
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, TraceError> {
        self.with_data()
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, TraceError> {
        self.with_data()
    }
}
