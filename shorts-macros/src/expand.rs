//! Phase 3: code generation, the only place that writes tokens.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, Type};

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
    let (args, args_errors) = args::parse_all(args);
    let handler = Handler::from_item(&item, args.blocking.as_ref());
    match (args_errors.into_error(), handler) {
        (None, Ok(handler)) => expand(&args, &handler),
        (args_error, handler) => {
            let mut errors = TokenStream::new();
            for error in [args_error, handler.err()].into_iter().flatten() {
                errors.extend(error.to_compile_error());
            }
            quote!(#item #errors)
        }
    }
}

fn expand(args: &Args, handler: &Handler<'_>) -> TokenStream {
    let item = handler.item;
    let krate = match &args.krate {
        Some(path) => quote!(#path),
        None => quote!(::shorts_runtime),
    };
    let private = quote!(#krate::__private);

    let name = item.sig.ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let [path, timeout, concurrency] = options(args, &private);
    let doc = doc_summary(item);
    let future = handler_future(handler, &private);
    let form = form_fn(handler, &private);

    // A named constant rather than `const _`, which an `impl` block refuses: on a function in an
    // `impl` block (without `self`, which this macro cannot tell from a free function), the one
    // error is then the call in the handler, at the function's name, which is not in scope there.
    let register = quote::format_ident!("__shorts_register_{}", name);

    quote! {
        #item

        #[doc(hidden)]
        #[allow(dead_code, non_upper_case_globals)]
        const #register: () = {
            fn __shorts_handler(__shorts_call: #private::Call) -> #private::HandlerFuture {
                #future
            }

            #form

            #private::inventory::submit! {
                #private::ShortDef {
                    name: #name,
                    doc: #doc,
                    path: #path,
                    timeout_ms: #timeout,
                    concurrency: #concurrency,
                    handler: __shorts_handler,
                    form: __shorts_form,
                    module: #private::module_path!(),
                    file: #private::file!(),
                    line: #private::line!(),
                }
            }
        };
    }
}

/// The options of the attribute as the `ShortDef` fields `path`, `timeout_ms` and `concurrency`.
fn options(args: &Args, private: &TokenStream) -> [TokenStream; 3] {
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
    [path, timeout, concurrency]
}

// Each step that can fail to type-check is spanned at the user's token it depends on, down to the
// path of the runtime, so that a type that does not fit is reported there, once. The spans keep
// the attribute's hygiene, so that the locals resolve even when the tokens they are placed at come
// from different macro contexts.

/// The span of the attribute, located at the user's type `ty`.
fn at(ty: &Type) -> Span {
    Span::call_site().located_at(ty.span())
}

/// `__shorts_form`, which reads the input form through the input type, at the input's span: a
/// type that does not fit is reported once, at the input.
fn form_fn(handler: &Handler<'_>, private: &TokenStream) -> TokenStream {
    let input_span = at(handler.input);
    let input_ty = handler.input;
    let at_input = private_at(private, input_span);
    quote_spanned! {input_span=>
        fn __shorts_form() -> #at_input::Form {
            #[allow(unused_imports)]
            use #at_input::{ViaNothing as _, ViaSchema as _, ViaSerde as _};
            (&&#at_input::Probe::<#input_ty>::new()).form()()
        }
    }
}

/// The body of `__shorts_handler`: the input read from the call, the user's function called, its
/// result made an output.
fn handler_future(handler: &Handler<'_>, private: &TokenStream) -> TokenStream {
    let input_span = at(handler.input);
    let input_ty = handler.input;
    let at_input = private_at(private, input_span);
    let input = quote_spanned! {input_span=>
        #at_input::input::<#input_ty>(&__shorts_call)
    };
    let call = call(handler, private);
    let finish = finish(handler, private);
    // The future sits on the function's `async`: a future that is not `Send` is reported there,
    // with the compiler's note pointing at the value held across an `.await`.
    let future_span = Span::call_site().located_at(handler.send_span);
    let at_future = private_at(private, future_span);
    quote_spanned! {future_span=>
        #at_future::Box::pin(async move {
            let __shorts_input = match #input {
                #at_future::Ok(__shorts_input) => __shorts_input,
                #at_future::Err(__shorts_error) => return #at_future::Err(__shorts_error),
            };
            let __shorts_result = #call;
            #finish
        })
    }
}

/// The call of the user's function with its input and, when it takes one, its order. A blocking
/// function's call sits on its `fn`: its arguments and result cross to the blocking pool.
fn call(handler: &Handler<'_>, private: &TokenStream) -> TokenStream {
    let ident = &handler.item.sig.ident;
    let mut call_args = vec![quote!(__shorts_input)];
    if let Some(order_ty) = handler.order {
        let order_span = at(order_ty);
        let at_order = private_at(private, order_span);
        call_args.push(quote_spanned! {order_span=>
            <#order_ty as #at_order::FromCall>::from_call(&__shorts_call)
        });
    }
    let span = Span::call_site().located_at(handler.send_span);
    let at_call = private_at(private, span);
    if handler.blocking {
        quote_spanned! {span=>
            match #at_call::blocking(move || #ident(#(#call_args),*)).await {
                #at_call::Ok(__shorts_result) => __shorts_result,
                #at_call::Err(__shorts_error) => return #at_call::Err(__shorts_error),
            }
        }
    } else {
        quote_spanned!(span=> #ident(#(#call_args),*).await)
    }
}

/// The user's result made the handler's: its `Ok` value an output, its `Err` an error. The whole
/// `match` sits on the return type: when it is not a `Result`, every use of its `Ok` and `Err`
/// fails at that one span and the compiler reports it once.
fn finish(handler: &Handler<'_>, private: &TokenStream) -> TokenStream {
    let output_span = at(handler.output);
    let ok_span = handler.ok_type.map_or(output_span, at);
    let err_span = handler.err_type.map_or(output_span, at);
    let at_ok = private_at(private, ok_span);
    let into_output = quote_spanned!(ok_span=> #at_ok::into_output(__shorts_value));
    let at_err = private_at(private, err_span);
    let into_error = quote_spanned!(err_span=> #at_err::into_error(__shorts_error));
    let at_output = private_at(private, output_span);
    quote_spanned! {output_span=>
        match #at_output::HandlerResult::into_result(__shorts_result) {
            #at_output::Ok(__shorts_value) => #into_output,
            #at_output::Err(__shorts_error) => #at_output::Err(#into_error),
        }
    }
}

/// The path to the runtime's `__private` module with every token spanned at `span`, so that an
/// error in a call through it points at the user's token rather than at the attribute.
fn private_at(private: &TokenStream, span: Span) -> TokenStream {
    private
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
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
