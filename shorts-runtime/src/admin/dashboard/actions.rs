//! The operator's actions on an order, each confirmed on a page of its own (no JavaScript):
//! `GET /orders/{order_id}/retry` asks, `POST` retries; `GET /orders/{order_id}/fail` asks for
//! the message, `POST` fails the order with it.
//!
//! A `POST` passes the admin guard first, which refuses it (403) without the session's CSRF
//! token. Each action is written to the log at INFO with the target `shorts::admin`: the action,
//! the `order_id`, what it did, what let the request in (`token`, `session` or `open`) and, for a
//! failure, the operator's message (`buyer_message`). The answer sends the browser back to the
//! order's page, which says what happened.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::header::LOCATION;
use http::{HeaderValue, StatusCode};
use maud::{Markup, html};
use tracing::info;

use super::{
    Section, csrf_field, failable, layout, order_path, problem, respond, retryable, store_failed,
    unknown_order,
};
use crate::admin::{Access, Admin, MAX_FORM, form_field, text};
use crate::store::{FailedNow, OrderRecord, Retried, Store as _};

/// The longest message an operator may type; the failure callback carries at most 8 KiB of it.
const MAX_MESSAGE: usize = 8 * 1024;

/// The order, or the page that answers for its absence or the store's failure.
async fn order(admin: &Admin, access: &Access, id: &str) -> Result<OrderRecord, Response> {
    match admin.intake.engine.store.get(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(unknown_order(admin, access, id)),
        Err(error) => Err(store_failed(admin, access, &error)),
    }
}

/// The page refusing an action the order's state does not allow.
fn not_allowed(admin: &Admin, access: &Access, record: &OrderRecord, what: &str) -> Response {
    problem(
        admin,
        access,
        StatusCode::CONFLICT,
        "Not possible in this state",
        html! {
            "Order " a href=(order_path(&record.id)) { code { (record.id) } } " is "
            strong { (record.state.as_str()) } "; " (what)
        },
    )
}

/// A confirmation page: `body`, then a form that POSTs to the order's `action` (`retry` or
/// `fail`, which asks for a message too).
fn confirmation(
    admin: &Admin,
    access: &Access,
    status: StatusCode,
    title: &str,
    record: &OrderRecord,
    action: &str,
    body: Markup,
) -> Response {
    let back = order_path(&record.id);
    let page = html! {
        h1 { (title) }
        (body)
        form #action method="post" action={ (back) "/" (action) } {
            (csrf_field(access))
            @if action == "fail" {
                label for="message" { "Message for the buyer (the failure callback's error)" }
                textarea #message name="message" required maxlength=(MAX_MESSAGE) rows="4" {}
            }
            div.actions {
                button #confirm type="submit" class=(if action == "fail" { "danger" } else { "primary" }) {
                    (title)
                }
                a.button #cancel href=(back) { "Cancel" }
            }
        }
    };
    respond(status, layout(admin, access, Some(Section::Orders), title, page))
}

pub(super) async fn confirm_retry(
    State(admin): State<Arc<Admin>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    let record = match order(&admin, &access, &id).await {
        Ok(record) => record,
        Err(page) => return page,
    };
    if !retryable(record.state) {
        return not_allowed(
            &admin,
            &access,
            &record,
            "only dead or paused orders are retried.",
        );
    }
    confirmation(
        &admin,
        &access,
        StatusCode::OK,
        "Retry the order",
        &record,
        "retry",
        html! {
            p {
                "Order " code { (record.id) } " is " strong { (record.state.as_str()) } ". "
                "Its stored callback is delivered again, from the first step of the retry schedule. "
                "The short does not run again."
            }
            @if let Some(error) = &record.last_error {
                p { "Its last error: " span.error { (super::truncate(error, 500)) } }
            }
        },
    )
}

pub(super) async fn retry(
    State(admin): State<Arc<Admin>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    let retried = match admin.intake.engine.retry(&id).await {
        Ok(retried) => retried,
        Err(error) => return store_failed(&admin, &access, &error),
    };
    let done = match retried {
        Retried::Redelivering { .. } => "retried",
        Retried::NoResult { .. } => "no-result",
        Retried::NotStuck(_) => "not-stuck",
        Retried::Unknown => return unknown_order(&admin, &access, &id),
    };
    info!(
        target: "shorts::admin",
        action = "retry",
        order_id = %id.escape_debug(),
        result = done,
        who = access.via().as_str(),
        "admin action"
    );
    back_to(&id, done)
}

pub(super) async fn confirm_fail(
    State(admin): State<Arc<Admin>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
) -> Response {
    let record = match order(&admin, &access, &id).await {
        Ok(record) => record,
        Err(page) => return page,
    };
    if !failable(record.state) {
        return not_allowed(
            &admin,
            &access,
            &record,
            "only received, delivering and paused orders can be failed.",
        );
    }
    fail_form(&admin, &access, StatusCode::OK, &record, None)
}

/// The page that asks for the message of a failure; `problem` says what was wrong with the last.
fn fail_form(
    admin: &Admin,
    access: &Access,
    status: StatusCode,
    record: &OrderRecord,
    problem: Option<&str>,
) -> Response {
    confirmation(
        admin,
        access,
        status,
        "Fail the order",
        record,
        "fail",
        html! {
            @if let Some(problem) = problem {
                p.notice.warn #notice { (problem) }
            }
            p {
                "Order " code { (record.id) } " is " strong { (record.state.as_str()) } ". "
                "Failing it sends the platform a failure callback (" code { "ok: false" } ") with your "
                "message as its error, so that the buyer's order ends instead of hanging. "
                "It cannot be undone."
            }
        },
    )
}

pub(super) async fn fail(
    State(admin): State<Arc<Admin>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_FORM).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    };
    let message = form_field(&body, "message").unwrap_or_default();
    let message = message.trim();
    if message.is_empty() || message.len() > MAX_MESSAGE {
        let record = match order(&admin, &access, &id).await {
            Ok(record) => record,
            Err(page) => return page,
        };
        let problem = if message.is_empty() {
            "Type the message the buyer gets.".to_owned()
        } else {
            format!("The message is too long: at most {MAX_MESSAGE} bytes.")
        };
        return fail_form(&admin, &access, StatusCode::BAD_REQUEST, &record, Some(&problem));
    }
    let failed = match admin.intake.engine.fail_now(&id, message).await {
        Ok(failed) => failed,
        Err(error) => return store_failed(&admin, &access, &error),
    };
    let done = match failed {
        FailedNow::Failing => "failed",
        FailedNow::Busy => "busy",
        FailedNow::NotStuck(_) => "not-stuck",
        FailedNow::Unknown => return unknown_order(&admin, &access, &id),
    };
    info!(
        target: "shorts::admin",
        action = "fail",
        order_id = %id.escape_debug(),
        result = done,
        who = access.via().as_str(),
        buyer_message = %message.escape_debug(),
        "admin action"
    );
    back_to(&id, done)
}

/// 303 to the order's page, which says what was `done`.
fn back_to(id: &str, done: &str) -> Response {
    let location = format!("{}?done={done}", order_path(id));
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}
