//! Phase 1: the attribute's arguments, parsed and checked one by one.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitInt, LitStr, Meta, MetaNameValue, Token};

/// The options of one `#[ai_short(...)]`, each kept with the literal it came from.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) path: Option<LitStr>,
    pub(crate) timeout: Option<(LitStr, u64)>,
    pub(crate) concurrency: Option<(LitInt, u32)>,
    pub(crate) krate: Option<syn::Path>,
    /// `blocking`: the function is a plain `fn`, run on the blocking thread pool.
    pub(crate) blocking: Option<syn::Ident>,
}

const OPTIONS: &str = "`path`, `timeout`, `concurrency`, `blocking`, `crate`";

/// Each option written correctly, for error messages; `None` for an unknown option.
fn example(name: &str) -> Option<&'static str> {
    Some(match name {
        "path" => "path = \"/report\"",
        "timeout" => "timeout = \"10m\"",
        "concurrency" => "concurrency = 4",
        "blocking" => "blocking",
        "crate" => "crate = \"::shorts_runtime\"",
        _ => return None,
    })
}

/// Parses the options, reporting every mistake at once.
#[cfg(test)]
pub(crate) fn parse(tokens: TokenStream) -> Result<Args, syn::Error> {
    let (args, errors) = parse_all(tokens);
    errors.finish(args)
}

/// Parses the options: those written correctly, and the mistakes in the others. The function is
/// checked against the options that parsed, so that a mistake in one option does not also show as
/// a mistake in the function (e.g. `blocking` beside an unknown option).
pub(crate) fn parse_all(tokens: TokenStream) -> (Args, Errors) {
    let mut args = Args::default();
    let mut errors = Errors::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push(error);
            return (args, errors);
        }
    };
    for meta in metas {
        let name = meta.path().get_ident().map(ToString::to_string);
        let Some(example) = name.as_deref().and_then(example) else {
            let name = name.map(|name| format!(" `{name}`")).unwrap_or_default();
            errors.push(syn::Error::new_spanned(
                meta.path(),
                format!("unknown `#[ai_short]` option{name}; expected one of {OPTIONS}"),
            ));
            continue;
        };
        if name.as_deref() == Some("blocking") {
            let result = match &meta {
                Meta::Path(path) => match path.get_ident() {
                    Some(ident) => set(&mut args.blocking, ident.clone(), &meta),
                    None => Ok(()),
                },
                _ => Err(syn::Error::new_spanned(
                    &meta,
                    "`blocking` takes no value; write `#[ai_short(blocking)]`",
                )),
            };
            if let Err(error) = result {
                errors.push(error);
            }
            continue;
        }
        let Meta::NameValue(MetaNameValue { value, .. }) = &meta else {
            errors.push(syn::Error::new_spanned(
                &meta,
                format!("`#[ai_short]` options are written `name = value`, e.g. `{example}`"),
            ));
            continue;
        };
        let result = match name.as_deref() {
            Some("path") => string(value, example)
                .and_then(check_path)
                .map(|lit| set(&mut args.path, lit, &meta)),
            Some("timeout") => string(value, example)
                .and_then(|lit| {
                    let millis = parse_duration(&lit.value()).map_err(|why| {
                        syn::Error::new(lit.span(), format!("invalid `timeout` {:?}: {why}", lit.value()))
                    })?;
                    Ok((lit, millis))
                })
                .map(|v| set(&mut args.timeout, v, &meta)),
            Some("concurrency") => integer(value, example)
                .and_then(|lit| {
                    let n: u32 = lit.base10_parse()?;
                    if n == 0 {
                        return Err(syn::Error::new(lit.span(), "`concurrency` must be at least 1"));
                    }
                    Ok((lit, n))
                })
                .map(|v| set(&mut args.concurrency, v, &meta)),
            // `crate`, the last option `example` knows.
            _ => string(value, example)
                .and_then(|lit| lit.parse::<syn::Path>())
                .map(|path| set(&mut args.krate, path, &meta)),
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(duplicate)) | Err(duplicate) => errors.push(duplicate),
        }
    }
    (args, errors)
}

/// Stores an option, refusing a second occurrence.
fn set<T>(slot: &mut Option<T>, value: T, meta: &Meta) -> Result<(), syn::Error> {
    if slot.is_some() {
        let name = meta
            .path()
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(syn::Error::new(
            meta.path().span(),
            format!("duplicate `#[ai_short]` option `{name}`"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// The option's value as a string literal; `example` shows the option written correctly.
fn string(value: &Expr, example: &str) -> Result<LitStr, syn::Error> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected a string literal, e.g. `{example}`"),
        )),
    }
}

/// The option's value as an integer literal; `example` shows the option written correctly.
fn integer(value: &Expr, example: &str) -> Result<LitInt, syn::Error> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => Ok(lit.clone()),
        other => Err(syn::Error::new_spanned(
            other,
            format!("expected an integer literal, e.g. `{example}`"),
        )),
    }
}

/// A route path: absolute, no trailing slash, no route parameters.
fn check_path(lit: LitStr) -> Result<LitStr, syn::Error> {
    let path = lit.value();
    let fail = |why: &str| {
        Err(syn::Error::new(
            lit.span(),
            format!("invalid `path` {path:?}: {why}"),
        ))
    };
    if !path.starts_with('/') {
        return fail("it must start with `/`, e.g. \"/report\"");
    }
    if path.len() > 1 && path.ends_with('/') {
        return fail("it must not end with `/`");
    }
    if path.contains("//") {
        return fail("it must not contain an empty segment");
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~')))
    {
        return fail(&format!(
            "`{c}` is not allowed; use letters, digits, `/`, `-`, `_`, `.` and `~`"
        ));
    }
    Ok(lit)
}

/// Why a `timeout` is not a duration; its `Display` is the message shown under the literal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// A number without a unit, e.g. `10`.
    NoUnit(u64),
    /// A unit humantime does not know.
    UnknownUnit(String),
    /// More milliseconds than a `u64` holds.
    TooLong,
    /// Zero.
    Zero,
    /// Anything else.
    Malformed,
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoUnit(value) => write!(f, "`{value}` needs a unit, e.g. \"{value}s\" or \"{value}m\""),
            Self::UnknownUnit(unit) => {
                write!(
                    f,
                    "unknown unit `{unit}`; expected one of `ms`, `s`, `m`, `h`, `d`"
                )
            }
            Self::TooLong => f.write_str("it is too long"),
            Self::Zero => f.write_str("it must be at least 1ms"),
            Self::Malformed => {
                f.write_str("expected a number with a unit, e.g. \"30s\", \"10m\" or \"1h 30m\"")
            }
        }
    }
}

/// Parses a duration such as `90s`, `10m`, `1h 30m` or `500ms` into milliseconds, with the same
/// syntax (humantime's) as the runtime's configuration.
pub(crate) fn parse_duration(text: &str) -> Result<u64, DurationError> {
    use humantime::DurationError as Humantime;

    let duration = humantime::parse_duration(text.trim()).map_err(|error| match error {
        Humantime::UnknownUnit { unit, value, .. } if unit.is_empty() => DurationError::NoUnit(value),
        Humantime::UnknownUnit { unit, .. } => DurationError::UnknownUnit(unit),
        Humantime::NumberOverflow => DurationError::TooLong,
        _ => DurationError::Malformed,
    })?;
    let millis = u64::try_from(duration.as_millis()).map_err(|_| DurationError::TooLong)?;
    if millis == 0 {
        return Err(DurationError::Zero);
    }
    Ok(millis)
}

/// Collects independent mistakes so they are reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(first) => first.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// The mistakes, if any.
    pub(crate) fn into_error(self) -> Option<syn::Error> {
        self.0
    }

    pub(crate) fn finish<T>(self, value: T) -> Result<T, syn::Error> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn duration_mistakes_say_what_to_write() {
        let error = |text: &str| {
            parse_duration(text)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            error("ten"),
            "expected a number with a unit, e.g. \"30s\", \"10m\" or \"1h 30m\""
        );
        assert_eq!(error("10"), "`10` needs a unit, e.g. \"10s\" or \"10m\"");
        assert_eq!(
            error("10 parsecs"),
            "unknown unit `parsecs`; expected one of `ms`, `s`, `m`, `h`, `d`"
        );
        assert_eq!(error("0s"), "it must be at least 1ms");
    }

    #[test]
    fn values_of_the_wrong_kind_show_the_option_written_correctly() {
        let Err(error) = parse(quote!(timeout = 10, concurrency = "4", path)) else {
            panic!("expected errors");
        };
        let messages: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            [
                "expected a string literal, e.g. `timeout = \"10m\"`",
                "expected an integer literal, e.g. `concurrency = 4`",
                "`#[ai_short]` options are written `name = value`, e.g. `path = \"/report\"`",
            ]
        );
    }

    #[test]
    fn options() {
        let args = parse(quote!(
            path = "/report",
            timeout = "10m",
            concurrency = 4,
            blocking,
            crate = "::my::shorts"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(args.blocking.is_some());
        assert_eq!(args.path.map(|p| p.value()).as_deref(), Some("/report"));
        assert_eq!(args.timeout.map(|t| t.1), Some(600_000));
        assert_eq!(args.concurrency.map(|c| c.1), Some(4));
        assert!(args.krate.is_some());
    }

    #[test]
    fn mistakes_are_reported_together() {
        let Err(error) = parse(quote!(foo = 1, timeout = "ten", concurrency = 0, path = "x")) else {
            panic!("expected errors");
        };
        assert_eq!(error.into_iter().count(), 4);
    }

    #[test]
    fn blocking_is_a_flag() {
        let Err(error) = parse(quote!(blocking = true)) else {
            panic!("expected an error");
        };
        assert_eq!(
            error.to_string(),
            "`blocking` takes no value; write `#[ai_short(blocking)]`"
        );
        let Err(error) = parse(quote!(blocking, blocking)) else {
            panic!("expected an error");
        };
        assert_eq!(error.to_string(), "duplicate `#[ai_short]` option `blocking`");
    }

    #[test]
    fn duplicates_are_refused() {
        let Err(error) = parse(quote!(concurrency = 1, concurrency = 2)) else {
            panic!("expected an error");
        };
        assert!(error.to_string().contains("duplicate"));
    }
}
