//! Phase 2: the annotated function, checked against what a short may be.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, PatType, ReturnType, Token, Type};

use crate::args::Errors;

/// A function that can be served as a short. Borrowed from the user's item.
pub(crate) struct Handler<'a> {
    pub(crate) item: &'a ItemFn,
    /// The function's `async`, where its future is reported (e.g. when it is not `Send`).
    pub(crate) asyncness: Token![async],
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
    /// Checks the signature, reporting every mistake at once.
    pub(crate) fn from_item(item: &'a ItemFn) -> Result<Self, syn::Error> {
        let sig = &item.sig;
        let mut errors = Errors::default();

        if sig.asyncness.is_none() {
            errors.push(syn::Error::new(
                sig.fn_token.span,
                "`#[ai_short]` functions must be `async`",
            ));
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

        let mut typed = Vec::new();
        for arg in &sig.inputs {
            match arg {
                FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                    receiver,
                    "`#[ai_short]` functions cannot take `self`; write a free function",
                )),
                FnArg::Typed(PatType { ty, .. }) => typed.push(&**ty),
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

        let output = match &sig.output {
            ReturnType::Type(_, ty) => Some(&**ty),
            ReturnType::Default => {
                errors.push(syn::Error::new(
                    sig.ident.span(),
                    "`#[ai_short]` functions must return `Result<T, E>`, e.g. `-> Result<String>`",
                ));
                None
            }
        };

        let handler = match (sig.asyncness, typed.first(), output) {
            (Some(asyncness), Some(input), Some(output)) => {
                let (ok_type, err_type) = result_arguments(output);
                Some(Handler {
                    item,
                    asyncness,
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
        match Handler::from_item(&item) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn accepts_input_and_order() {
        let item: ItemFn = parse_quote!(
            async fn f(input: In, order: Order) -> Result<String, E> {}
        );
        let handler = Handler::from_item(&item).unwrap_or_else(|e| panic!("{e}"));
        assert!(handler.order.is_some());
        assert!(handler.ok_type.is_some() && handler.err_type.is_some());
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
