//! Phase 3: code generation, the only place that writes tokens.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::args::{self, Args};
use crate::model::Handler;

/// Entry point: on any mistake, the user's function is still emitted next to the errors, so that
/// only the real mistake shows.
pub(crate) fn ai_short(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let error = syn::Error::new_spanned(&item, "`#[ai_short]` goes on an `async fn`");
            let error = error.to_compile_error();
            return quote!(#item #error);
        }
    };
    let args = args::parse(args);
    let handler = Handler::from_item(&item);
    match (args, handler) {
        (Ok(args), Ok(handler)) => expand(&args, &handler),
        (args, handler) => {
            let mut errors = TokenStream::new();
            for error in [args.err(), handler.err()].into_iter().flatten() {
                errors.extend(error.to_compile_error());
            }
            quote!(#item #errors)
        }
    }
}

fn expand(args: &Args, handler: &Handler<'_>) -> TokenStream {
    let item = handler.item;
    let ident = &item.sig.ident;
    let krate = match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::shorts_runtime),
    };
    let private = quote!(#krate::__private);

    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let path = match &args.path {
        Some(lit) => quote!(#private::Some(#lit)),
        None => quote!(#private::None),
    };
    let timeout = match &args.timeout {
        Some((_, millis)) => quote!(#private::Some(#millis)),
        None => quote!(#private::None),
    };
    let concurrency = match &args.concurrency {
        Some((_, n)) => quote!(#private::Some(#n)),
        None => quote!(#private::None),
    };
    let doc = doc_summary(item);

    // Each step is spanned at the user's token it depends on, so that a type that does not fit is
    // reported there, once.
    let input_ty = handler.input;
    let input = quote_spanned! {input_ty.span()=>
        #private::input::<#input_ty>(&__shorts_call)
    };
    let mut call_args = vec![quote!(__shorts_input)];
    if let Some(order_ty) = handler.order {
        call_args.push(quote_spanned! {order_ty.span()=>
            <#order_ty as #private::FromCall>::from_call(&__shorts_call)
        });
    }
    let output_ty = handler.output;
    let split = quote_spanned! {output_ty.span()=>
        #private::HandlerResult::into_result(__shorts_result)
    };
    let ok_span = handler.ok_type.map_or_else(|| output_ty.span(), Spanned::span);
    let err_span = handler.err_type.map_or_else(|| output_ty.span(), Spanned::span);
    let into_output = quote_spanned!(ok_span=> #private::into_output(__shorts_value));
    let into_error = quote_spanned!(err_span=> #private::into_error(__shorts_error));

    quote! {
        #item

        const _: () = {
            fn __shorts_handler(__shorts_call: #private::Call) -> #private::HandlerFuture {
                #private::Box::pin(async move {
                    let __shorts_input = match #input {
                        #private::Ok(__shorts_input) => __shorts_input,
                        #private::Err(__shorts_error) => return #private::Err(__shorts_error),
                    };
                    let __shorts_result = #ident(#(#call_args),*).await;
                    match #split {
                        #private::Ok(__shorts_value) => #into_output,
                        #private::Err(__shorts_error) => #private::Err(#into_error),
                    }
                })
            }

            #private::inventory::submit! {
                #private::ShortDef {
                    name: #name,
                    doc: #doc,
                    path: #path,
                    timeout_ms: #timeout,
                    concurrency: #concurrency,
                    handler: __shorts_handler,
                    module: #private::module_path!(),
                    file: #private::file!(),
                    line: #private::line!(),
                }
            }
        };
    }
}

/// The first line of the function's doc comment, shown by `list`.
fn doc_summary(item: &ItemFn) -> String {
    item.attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .find_map(|attr| match &attr.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(lit),
                        ..
                    }),
                ..
            }) => {
                let line = lit.value().trim().to_owned();
                (!line.is_empty()).then_some(line)
            }
            _ => None,
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_function() {
        let out = ai_short(
            quote!(nope = 1),
            quote!(
                fn f() {}
            ),
        )
        .to_string();
        assert!(out.contains("fn f"), "{out}");
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("unknown `#[ai_short]` option `nope`"), "{out}");
        assert!(out.contains("must be `async`"), "{out}");
    }

    #[test]
    fn expansion_names_the_runtime_by_path_only() {
        let out = ai_short(
            quote!(crate = "my_rt"),
            quote!(
                async fn f(input: In) -> Result<String, E> {
                    todo!()
                }
            ),
        )
        .to_string();
        assert!(out.contains("my_rt :: __private :: ShortDef"), "{out}");
        assert!(!out.contains("shorts_runtime"), "{out}");
    }
}
