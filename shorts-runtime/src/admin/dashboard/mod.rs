//! The orders dashboard: pages rendered on the server from the store, on the admin listener.
//!
//! - `GET /`: counts per state, orders and failures per hour over the last 24 hours (an inline SVG
//!   chart), p50 and p95 handler time per short, the callback acceptance rate, the webhook routes.
//! - `GET /orders`: the orders, newest first, 50 a page, filtered by state, short and `order_id`
//!   prefix; the "Older" link carries the keyset cursor and the filters.
//! - `GET /orders/{order_id}`: one order, its timeline, error, inputs and result. Files show as
//!   name, type, size (and `object_key`), never their contents.
//! - `GET`/`POST /orders/{order_id}/retry` and `/fail`: the actions, each confirmed on a page of
//!   its own, so that they work without JavaScript.
//!
//! HTML is written with `maud`, which escapes every value spliced into it: the buyer's inputs,
//! errors and order ids are text, never markup. The pages load nothing: the style is inline and
//! the chart is inline SVG, as the admin listener's content security policy requires.

mod actions;
mod detail;
mod orders;
mod overview;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use http::StatusCode;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{Access, Admin, CSRF_FIELD};
use crate::store::{OrderState, time_from_stored};

/// The dashboard's routes, added to the guarded admin routes.
pub(super) fn routes(router: Router<Arc<Admin>>) -> Router<Arc<Admin>> {
    router
        .route("/", get(overview::overview))
        .route("/orders", get(orders::orders))
        .route("/orders/{order_id}", get(detail::detail))
        .route(
            "/orders/{order_id}/retry",
            get(actions::confirm_retry).post(actions::retry),
        )
        .route(
            "/orders/{order_id}/fail",
            get(actions::confirm_fail).post(actions::fail),
        )
}

/// Orders a page of the list shows.
pub(super) const PAGE_SIZE: u32 = 50;

/// The page of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Overview,
    Orders,
}

const STYLE: &str = "\
:root{color-scheme:light;--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--accent:#0969da}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--fg);margin:0;line-height:1.45}
header{display:flex;align-items:center;gap:1.5rem;padding:.6rem 1.5rem;background:#24292f;color:#fff}
header strong{font-size:1.05rem}
header nav{display:flex;gap:1rem;align-items:center;flex:1}
header a{color:#d0d7de;text-decoration:none}
header a[aria-current]{color:#fff;font-weight:600;border-bottom:2px solid #fff}
header form{margin:0}
header button{background:none;border:1px solid #57606a;color:#d0d7de;border-radius:6px;padding:.2rem .7rem;cursor:pointer}
main{padding:1rem 1.5rem 3rem;max-width:80rem}
h1{font-size:1.4rem;margin:.5rem 0 1rem}
h2{font-size:1.1rem;margin:1.8rem 0 .6rem}
a{color:var(--accent)}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:.7rem;overflow:auto;max-height:30rem;white-space:pre-wrap;word-break:break-word}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--bg);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:var(--muted)}
.state{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.82rem;font-weight:600;background:#eaeef2}
.state-received{background:#ddf4ff;color:#0550ae}
.state-delivering{background:#fff8c5;color:#7d4e00}
.state-paused{background:#fbefff;color:#8250df}
.state-delivered{background:#dafbe1;color:#116329}
.state-dead{background:#ffebe9;color:#cf222e}
.cards{display:flex;flex-wrap:wrap;gap:.8rem;margin:0;padding:0;list-style:none}
.cards li{border:1px solid var(--line);border-radius:8px;padding:.6rem 1rem;min-width:8rem}
.cards a{text-decoration:none;color:inherit;display:block}
.cards .count{display:block;font-size:1.6rem;font-weight:600;font-variant-numeric:tabular-nums}
.chart{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
.legend{font-size:.85rem;color:var(--muted)}
.swatch{display:inline-block;width:.8rem;height:.8rem;vertical-align:-.1rem;border-radius:2px;margin-right:.3rem}
form#filter{display:flex;flex-wrap:wrap;gap:.8rem;align-items:end;margin-bottom:1rem}
label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted);gap:.2rem}
input,select,textarea,button{font:inherit;color:inherit}
input,select,textarea{padding:.3rem .5rem;border:1px solid var(--line);border-radius:6px;background:#fff}
textarea{width:100%;max-width:40rem;min-height:6rem}
button,.button{display:inline-block;padding:.35rem .9rem;border:1px solid var(--line);border-radius:6px;background:var(--bg);cursor:pointer;text-decoration:none;color:var(--fg);font-weight:500}
.button.danger,button.danger{background:#cf222e;border-color:#a40e26;color:#fff}
.button.primary,button.primary{background:#1f883d;border-color:#1a7f37;color:#fff}
.actions{display:flex;gap:.6rem;margin:1rem 0}
.notice{border:1px solid #54aeff;background:#ddf4ff;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.notice.warn{border-color:#d4a72c;background:#fff8c5}
.pager{display:flex;gap:1rem;margin-top:1rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1.2rem;margin:0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0}
ol#timeline{list-style:none;padding:0;margin:0;border-left:2px solid var(--line)}
ol#timeline li{position:relative;padding:.3rem 0 .6rem 1.2rem}
ol#timeline li::before{content:'';position:absolute;left:-.42rem;top:.65rem;width:.7rem;height:.7rem;border-radius:50%;background:var(--line)}
ol#timeline li.good::before{background:#1f883d}
ol#timeline li.bad::before{background:#cf222e}
ol#timeline li.next::before{background:#fff;border:2px solid var(--accent)}
.error{color:#cf222e}
.when{color:var(--muted);font-size:.85rem;margin-left:.4rem}
";

/// A page of the dashboard: the navigation, then `body`.
fn layout(admin: &Admin, access: &Access, section: Option<Section>, title: &str, body: Markup) -> Markup {
    let current = |s: Section| (section == Some(s)).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · shorts admin" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "shorts admin" }
                    nav aria-label="Dashboard" {
                        a href="/" aria-current=[current(Section::Overview)] { "Overview" }
                        a href="/orders" aria-current=[current(Section::Orders)] { "Orders" }
                        a href="/metrics" { "Metrics" }
                    }
                    @if admin.token.is_some() {
                        form method="post" action="/logout" {
                            (csrf_field(access))
                            button type="submit" id="logout" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The login form, in the dashboard's style; `refused` says that the token just given was wrong.
pub(crate) fn login_page(status: StatusCode, refused: bool) -> Response {
    respond(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Log in · shorts admin" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    header { strong { "shorts admin" } }
                    main {
                        h1 { "Log in" }
                        @if refused {
                            p.notice.warn #login-refused role="alert" { "That is not the admin token." }
                        }
                        form method="post" action="/login" {
                            label {
                                "Admin token "
                                input type="password" name="token" autocomplete="current-password" required autofocus;
                            }
                            " "
                            button type="submit" id="login" { "Log in" }
                        }
                    }
                }
            }
        },
    )
}

/// The hidden CSRF field of a form, when the request needs one.
fn csrf_field(access: &Access) -> Markup {
    html! {
        @if let Some(csrf) = access.csrf() {
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
        }
    }
}

/// `markup` as the answer, with `status`.
fn respond(status: StatusCode, markup: Markup) -> Response {
    super::html_response(status, markup.into_string())
}

/// A page that says what went wrong, with a way back.
fn problem(admin: &Admin, access: &Access, status: StatusCode, title: &str, message: Markup) -> Response {
    respond(
        status,
        layout(
            admin,
            access,
            None,
            title,
            html! {
                h1 { (title) }
                p { (message) }
                p { a href="/orders" { "Back to the orders" } }
            },
        ),
    )
}

/// The page for an `order_id` the store does not know.
fn unknown_order(admin: &Admin, access: &Access, id: &str) -> Response {
    problem(
        admin,
        access,
        StatusCode::NOT_FOUND,
        "No such order",
        html! { "No order has the id " code { (id) } "." },
    )
}

/// The page for a store that failed.
fn store_failed(admin: &Admin, access: &Access, error: &crate::StoreError) -> Response {
    tracing::error!(target: "shorts::admin", %error, "a dashboard page could not read the store");
    problem(
        admin,
        access,
        StatusCode::INTERNAL_SERVER_ERROR,
        "The order store could not be read",
        html! { (error.to_string()) },
    )
}

/// The path of an order's page: its id percent-encoded as one path segment.
fn order_path(id: &str) -> String {
    let mut path = String::with_capacity(8 + id.len());
    path.push_str("/orders/");
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// A time stored in ms since the Unix epoch, shown in UTC to the second; its `datetime` is the
/// RFC 3339 text of `orders --json` (to the millisecond).
fn time(ms: i64) -> Markup {
    let at = time_from_stored(ms);
    let exact = humantime::format_rfc3339_millis(at).to_string();
    let shown = humantime::format_rfc3339_seconds(at)
        .to_string()
        .replacen('T', " ", 1)
        .replacen('Z', " UTC", 1);
    html! { time datetime=(exact) { (shown) } }
}

/// A duration in ms, as the logs show durations: `1.2s`, `350ms` (and `<1ms`).
fn duration_ms(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms > 0 => crate::logs::duration(Duration::from_millis(ms)).to_string(),
        _ => "<1ms".to_owned(),
    }
}

/// An order's state as a badge.
fn state_badge(state: OrderState) -> Markup {
    html! { span class={ "state state-" (state.as_str()) } { (state.as_str()) } }
}

/// `text` cut to `max` characters, with an ellipsis when it was longer.
fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}

/// States a retry by hand accepts.
fn retryable(state: OrderState) -> bool {
    matches!(state, OrderState::Dead | OrderState::Paused)
}

/// States failing by hand accepts (an order being worked on is refused by the store then).
fn failable(state: OrderState) -> bool {
    matches!(
        state,
        OrderState::Received | OrderState::Delivering | OrderState::Paused
    )
}
