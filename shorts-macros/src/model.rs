//! Phase 2: the annotated function, checked against what a short may be.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, PatType, ReturnType, Signature, Type};

use crate::args::Errors;

/// A function that can be served as a short. Borrowed from the user's item.
pub(crate) struct Handler<'a> {
    pub(crate) item: &'a ItemFn,
    /// The token its future (or, for `blocking`, its call) is reported at when it is not `Send`:
    /// the function's `async`, or the `fn` of a blocking function.
    pub(crate) send_span: proc_macro2::Span,
    /// `#[ai_short(blocking)]`: a plain `fn`, run on the blocking thread pool.
    pub(crate) blocking: bool,
    /// The buyer's input type (first argument).
    pub(crate) input: &'a Type,
    /// The type of the optional second argument (the order context).
    pub(crate) order: Option<&'a Type>,
    /// The whole return type, and the `T` and `E` of `Result<T, E>` when they are written out.
    pub(crate) output: &'a Type,
    pub(crate) ok_type: Option<&'a Type>,
    pub(crate) err_type: Option<&'a Type>,
}

impl<'a> Handler<'a> {
    /// Checks the signature, reporting every mistake at once. `blocking` is the attribute's
    /// `blocking` option, when given.
    pub(crate) fn from_item(item: &'a ItemFn, blocking: Option<&syn::Ident>) -> Result<Self, syn::Error> {
        let sig = &item.sig;
        let mut errors = Errors::default();

        check_qualifiers(sig, blocking, &mut errors);
        let typed = arguments(sig, &mut errors);
        let output = return_type(sig, &mut errors);

        let send_span = match sig.asyncness {
            Some(asyncness) => asyncness.span,
            None => sig.fn_token.span,
        };
        let handler = match (typed.first(), output) {
            (Some(input), Some(output)) => {
                let (ok_type, err_type) = result_arguments(output);
                Some(Handler {
                    item,
                    send_span,
                    blocking: blocking.is_some(),
                    input,
                    order: typed.get(1).copied(),
                    output,
                    ok_type,
                    err_type,
                })
            }
            _ => None,
        };
        errors.finish(handler).and_then(|handler| {
            handler.ok_or_else(|| syn::Error::new(sig.span(), "invalid `#[ai_short]` function"))
        })
    }
}

/// Checks what may precede the function's name: `async` (or `blocking` without it), and no
/// `const`, `unsafe`, ABI, generics, `where` clause or variadic.
fn check_qualifiers(sig: &Signature, blocking: Option<&syn::Ident>, errors: &mut Errors) {
    match (sig.asyncness, blocking) {
        (None, None) => errors.push(syn::Error::new(
            sig.fn_token.span,
            "`#[ai_short]` functions must be `async`; a function that blocks its thread is \
             written as a plain `fn` with `#[ai_short(blocking)]`",
        )),
        (Some(asyncness), Some(_)) => errors.push(syn::Error::new(
            asyncness.span,
            "`#[ai_short(blocking)]` functions are plain `fn`s, run on the blocking thread pool; \
             remove `async`, or remove `blocking` to run on the async runtime",
        )),
        _ => {}
    }
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new(
            constness.span,
            "`#[ai_short]` functions cannot be `const`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.push(syn::Error::new(
            unsafety.span,
            "`#[ai_short]` functions cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "`#[ai_short]` functions cannot have an ABI",
        ));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "`#[ai_short]` functions cannot be generic; name the input type, e.g. `input: Input`",
        ));
    } else if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(
            where_clause,
            "`#[ai_short]` functions cannot have a `where` clause",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(
            variadic,
            "`#[ai_short]` functions cannot be variadic",
        ));
    }
}

/// The types of the function's arguments (the input, then an optional `Order`), with an error
/// for `self`, `impl Trait`, a borrowed input, none or more than two.
fn arguments<'a>(sig: &'a Signature, errors: &mut Errors) -> Vec<&'a Type> {
    let mut typed = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                "`#[ai_short]` functions cannot take `self`; write a free function",
            )),
            FnArg::Typed(PatType { ty, .. }) => {
                let first = typed.is_empty();
                typed.push(&**ty);
                if let Type::ImplTrait(impl_trait) = &**ty {
                    let example = if first { "input: Input" } else { "order: Order" };
                    errors.push(syn::Error::new(
                        impl_trait.impl_token.span,
                        format!(
                            "`#[ai_short]` functions cannot take `impl Trait` arguments; \
                             name the type, e.g. `{example}`"
                        ),
                    ));
                } else if first && let Some(borrow) = borrowed(ty) {
                    errors.push(borrow);
                }
            }
        }
    }
    if sig.inputs.is_empty() {
        errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            "`#[ai_short]` functions take the buyer's input as their first argument, e.g. `input: Input`",
        ));
    }
    if sig.inputs.len() > 2 {
        let mut extra = TokenStream::new();
        for arg in sig.inputs.iter().skip(2) {
            arg.to_tokens(&mut extra);
        }
        errors.push(syn::Error::new_spanned(
            extra,
            "`#[ai_short]` functions take at most two arguments: the input and an `Order`",
        ));
    }
    typed
}

/// The function's return type, or an error when it has none.
fn return_type<'a>(sig: &'a Signature, errors: &mut Errors) -> Option<&'a Type> {
    match &sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => {
            errors.push(syn::Error::new(
                sig.ident.span(),
                "`#[ai_short]` functions must return `Result<T, E>`, e.g. `-> Result<String>`",
            ));
            None
        }
    }
}

/// An error at the reference or lifetime that makes an input type borrowed, e.g. `&str` or
/// `Input<'a>`: the input is built from the webhook body, which it cannot borrow from, so it must
/// be owned (`DeserializeOwned`). `'static` is accepted here; serde reports what it cannot build.
fn borrowed(ty: &Type) -> Option<syn::Error> {
    let owned = "the input of an `#[ai_short]` function must be an owned type, \
                 e.g. `String` instead of `&str`";
    match ty {
        Type::Reference(reference) => Some(syn::Error::new(
            reference.and_token.span,
            format!("{owned}; it is read from the webhook body and cannot borrow from it"),
        )),
        Type::Path(path) => {
            if let Some(qself) = &path.qself
                && let Some(error) = borrowed(&qself.ty)
            {
                return Some(error);
            }
            path.path.segments.iter().find_map(|segment| {
                let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
                    return None;
                };
                args.args.iter().find_map(|arg| match arg {
                    syn::GenericArgument::Lifetime(lifetime) if lifetime.ident != "static" => {
                        Some(syn::Error::new(
                            lifetime.span(),
                            format!(
                                "{owned}; write the type without lifetimes, e.g. `Input`, not `Input<'a>`"
                            ),
                        ))
                    }
                    syn::GenericArgument::Type(ty) => borrowed(ty),
                    _ => None,
                })
            })
        }
        Type::Tuple(tuple) => tuple.elems.iter().find_map(borrowed),
        Type::Array(array) => borrowed(&array.elem),
        Type::Slice(slice) => borrowed(&slice.elem),
        Type::Paren(paren) => borrowed(&paren.elem),
        Type::Group(group) => borrowed(&group.elem),
        _ => None,
    }
}

/// The written-out `T` and `E` of a `...Result<T, E>` return type, to point errors at them.
fn result_arguments(ty: &Type) -> (Option<&Type>, Option<&Type>) {
    let Type::Path(path) = ty else { return (None, None) };
    let Some(last) = path.path.segments.last() else {
        return (None, None);
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return (None, None);
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        syn::GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    (types.next(), types.next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn errors(item: ItemFn) -> Vec<String> {
        match Handler::from_item(&item, None) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn accepts_input_and_order() {
        let item: ItemFn = parse_quote!(
            async fn f(input: In, order: Order) -> Result<String, E> {}
        );
        let handler = Handler::from_item(&item, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(handler.order.is_some());
        assert!(handler.ok_type.is_some() && handler.err_type.is_some());
    }

    #[test]
    fn refuses_borrowed_inputs_at_the_borrow() {
        for item in [
            parse_quote!(
                async fn f(input: &str) -> Result<String> {}
            ),
            parse_quote!(
                async fn f(input: Input<'a>) -> Result<String> {}
            ),
            parse_quote!(
                async fn f(input: Vec<Cow<'_, str>>) -> Result<String> {}
            ),
            parse_quote!(
                async fn f(input: (u8, &'static [u8])) -> Result<String> {}
            ),
        ] {
            let found = errors(item);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].starts_with("the input of an `#[ai_short]` function must be an owned type"));
        }
        for item in [
            parse_quote!(
                async fn f(input: Cow<'static, str>) -> Result<String> {}
            ),
            parse_quote!(
                async fn f(input: Vec<String>, order: &Order) -> Result<String> {}
            ),
        ] {
            assert_eq!(errors(item), Vec::<String>::new());
        }
    }

    #[test]
    fn blocking_functions_are_plain_fns() {
        let blocking: syn::Ident = parse_quote!(blocking);
        let plain: ItemFn = parse_quote!(
            fn f(input: In) -> Result<String> {}
        );
        let handler = Handler::from_item(&plain, Some(&blocking)).unwrap_or_else(|e| panic!("{e}"));
        assert!(handler.blocking);
        let asynchronous: ItemFn = parse_quote!(
            async fn f(input: In) -> Result<String> {}
        );
        let found: Vec<String> = match Handler::from_item(&asynchronous, Some(&blocking)) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("`#[ai_short(blocking)]` functions are plain `fn`s"));
    }

    #[test]
    fn refuses_impl_trait_arguments() {
        let found = errors(parse_quote!(
            async fn f(input: impl Deserialize, order: impl Sized) -> Result<String> {}
        ));
        assert_eq!(
            found,
            [
                "`#[ai_short]` functions cannot take `impl Trait` arguments; name the type, e.g. `input: Input`",
                "`#[ai_short]` functions cannot take `impl Trait` arguments; name the type, e.g. `order: Order`",
            ]
        );
    }

    #[test]
    fn reports_independent_mistakes_together() {
        let found = errors(parse_quote!(
            fn f<T>(a: T, b: u8, c: u8) {}
        ));
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("must be `async`"));
    }
}
