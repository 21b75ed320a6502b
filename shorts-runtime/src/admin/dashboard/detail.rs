//! `GET /orders/{order_id}`: one order, what happened to it, its inputs and its result.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Section, duration_ms, failable, layout, order_path, respond, retryable, store_failed, time, truncate,
    unknown_order,
};
use crate::admin::{Access, Admin};
use crate::store::history::{OrderDetail, TimelineEvent};
use crate::store::{OrderState, Store as _};

/// Characters of a JSON document (inputs, result) the page shows at most.
const SHOWN_JSON: usize = 64 * 1024;

/// What the page was sent to after an action (see [`super::actions`]).
#[derive(Debug, Default, Deserialize)]
pub(super) struct DetailQuery {
    done: Option<String>,
}

pub(super) async fn detail(
    State(admin): State<Arc<Admin>>,
    Extension(access): Extension<Access>,
    Path(id): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Response {
    let detail = match admin.intake.engine.store.detail(&id).await {
        Ok(Some(detail)) => detail,
        Ok(None) => return unknown_order(&admin, &access, &id),
        Err(error) => return store_failed(&admin, &access, &error),
    };
    let order = &detail.summary;
    let body = html! {
        h1 { "Order " code { (order.id) } " " span #state data-state=(order.state.as_str()) class={ "state state-" (order.state.as_str()) } { (order.state.as_str()) } }
        @if let Some(notice) = query.done.as_deref().and_then(|done| notice(done, order.state)) {
            (notice)
        }
        (actions(&order.id, order.state))
        dl.facts #facts {
            dt { "Short" } dd { (order.short) }
            dt { "Received" } dd { (time(order.received_at)) }
            dt { "Runs" } dd { (order.runs) }
            dt { "Callback POSTs" } dd { (order.attempts) }
            @if let Some(outcome) = order.outcome {
                dt { "Last run" } dd { (outcome.as_str()) }
            }
            @if order.failed_by_operator {
                dt { "Failed by hand" } dd { "yes" }
            }
            @if let Some(next) = order.next_at.filter(|_| waiting(order.state)) {
                dt { "Next attempt" } dd { (time(next)) }
            }
        }
        h2 { "Error" }
        @match &order.last_error {
            Some(error) => {
                @if order.state == OrderState::Delivered {
                    p.muted { "Delivered in the end; the last error met on the way:" }
                }
                pre.error #error { (truncate(error, SHOWN_JSON)) }
            },
            None => @match failure_message(&detail) {
                // Failed by hand, or a run's error the buyer was sent: the order ended in failure.
                Some(message) => {
                    p.muted {
                        @if order.failed_by_operator { "Failed by an operator; the buyer was sent:" }
                        @else { "The order failed; the buyer was sent:" }
                    }
                    pre.error #error { (truncate(message, SHOWN_JSON)) }
                },
                None => p.muted #error { "No error." },
            },
        }
        h2 { "Timeline" }
        (timeline(&detail))
        h2 { "Inputs" }
        (inputs(&detail))
        h2 { "Result" }
        (result(&detail))
    };
    let title = format!("Order {}", order.id);
    respond(
        StatusCode::OK,
        layout(&admin, &access, Some(Section::Orders), &title, body),
    )
}

/// The failure message of the stored callback, when it reports a failure (`ok: false`).
fn failure_message(detail: &OrderDetail) -> Option<&str> {
    let result = detail.result.as_ref()?;
    if result.get("ok").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    result.get(crate::wire::platform::FAILURE_MESSAGE_FIELD)?.as_str()
}

/// The order waits for a delivery attempt in this state (its next time is meaningful).
fn waiting(state: OrderState) -> bool {
    matches!(state, OrderState::Delivering | OrderState::Paused)
}

/// What an action did, as the page after it says (see [`super::actions`]).
fn notice(done: &str, state: OrderState) -> Option<Markup> {
    let (warn, text) = match done {
        "retried" => (
            false,
            "Retried: the stored callback was queued for delivery again, from the start of the retry schedule.",
        ),
        "failed" => (
            false,
            "Failed: a failure callback (ok: false) with your message was queued for delivery.",
        ),
        "busy" => (
            true,
            "Not failed: an instance is working on this order right now (the short is running, or its callback is being sent). Try again once that ends.",
        ),
        "no-result" => (true, "Not retried: the order has no stored result to deliver."),
        "not-stuck" => (true, "Nothing was done: the order's state no longer allows it."),
        _ => return None,
    };
    Some(html! {
        p.notice.warn[warn] #notice role="status" data-done=(done) data-state=(state.as_str()) {
            (text) " " a href="?" { "Dismiss" }
        }
    })
}

/// The actions the order's state allows.
fn actions(id: &str, state: OrderState) -> Markup {
    let path = order_path(id);
    html! {
        @if retryable(state) || failable(state) {
            div.actions {
                @if retryable(state) {
                    a.button.primary #retry href={ (path) "/retry" } { "Retry…" }
                }
                @if failable(state) {
                    a.button.danger #fail href={ (path) "/fail" } { "Fail now…" }
                }
            }
        }
    }
}

/// One item per event, oldest first, and the next delivery attempt when one is due.
fn timeline(detail: &OrderDetail) -> Markup {
    let order = &detail.summary;
    html! {
        ol #timeline {
            @for event in &detail.timeline {
                (timeline_event(event))
            }
            @if let Some(next) = order.next_at.filter(|_| waiting(order.state)) {
                li.next data-event="next" {
                    "Next attempt " span.when { (time(next)) }
                }
            }
        }
    }
}

fn timeline_event(event: &TimelineEvent) -> Markup {
    match event {
        TimelineEvent::Received { at } => html! {
            li.good data-event="received" { "Received" span.when { (time(*at)) } }
        },
        TimelineEvent::Run {
            number,
            started_at,
            ended_at,
            outcome,
            error,
        } => {
            let good = outcome.map(|o| o.as_str() == "ok");
            html! {
                li.good[good == Some(true)].bad[good == Some(false)] data-event="run" data-outcome=[outcome.map(|o| o.as_str())] {
                    "Run " (number) ": "
                    @match (outcome, ended_at) {
                        (Some(outcome), _) => strong { (outcome.as_str()) },
                        (None, None) => "running, or the process ended while it ran",
                        (None, Some(_)) => "ended",
                    }
                    @if let Some(ended) = ended_at {
                        " in " (duration_ms(ended - started_at))
                    }
                    span.when { (time(*started_at)) }
                    @if let Some(error) = error {
                        div.error { (truncate(error, SHOWN_JSON)) }
                    }
                }
            }
        }
        TimelineEvent::Callback {
            number,
            at,
            status,
            error,
            result,
        } => {
            let good = result.as_str() == "accepted";
            html! {
                li.good[good].bad[!good] data-event="callback" data-result=(result.as_str()) {
                    "Callback " (number) ": "
                    strong { (result.as_str()) }
                    @match status {
                        Some(status) => { " (HTTP " (status) ")" }
                        None => { " (no answer)" }
                    }
                    span.when { (time(*at)) }
                    @if let Some(error) = error {
                        div.error { (truncate(error, SHOWN_JSON)) }
                    }
                }
            }
        }
        TimelineEvent::FailedByOperator { at, message } => html! {
            li.bad data-event="operator" {
                "Failed by an operator: " q { (truncate(message, SHOWN_JSON)) }
                span.when { (time(*at)) }
            }
        },
    }
}

/// A file of an input or a result, found in its JSON.
struct FileEntry<'a> {
    /// Where it is: `field`, `field[2]`, `files[0]`.
    at: String,
    name: Option<&'a str>,
    mime_type: Option<&'a str>,
    size: Option<u64>,
    object_key: Option<&'a str>,
}

/// The files in `value`: objects with a `filename` and a size or an `object_key`.
fn files<'a>(value: &'a Value, at: String, found: &mut Vec<FileEntry<'a>>) {
    match value {
        Value::Object(object)
            if object.contains_key("filename")
                && (object.contains_key("size_bytes") || object.contains_key("object_key")) =>
        {
            found.push(FileEntry {
                at,
                name: object.get("filename").and_then(Value::as_str),
                mime_type: object.get("mime_type").and_then(Value::as_str),
                size: object.get("size_bytes").and_then(Value::as_u64),
                object_key: object.get("object_key").and_then(Value::as_str),
            });
        }
        Value::Object(object) => {
            for (key, value) in object {
                let at = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                files(value, at, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                files(item, format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// `value` as indented JSON, cut to [`SHOWN_JSON`] characters.
fn json(value: &Value, id: &str) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre #(id) { (truncate(&text, SHOWN_JSON)) } }
}

fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "–".to_owned(),
        Some(b) if b < 1024 => format!("{b} B"),
        Some(b) if b < 1024 * 1024 => format!("{:.1} KiB ({b} B)", b as f64 / 1024.0),
        Some(b) => format!("{:.1} MiB ({b} B)", b as f64 / (1024.0 * 1024.0)),
    }
}

/// The buyer's inputs: the files as name, type and size, then the JSON (files likewise).
fn inputs(detail: &OrderDetail) -> Markup {
    let Some(inputs) = &detail.inputs else {
        return html! {
            p.muted #inputs-gone {
                @if detail.summary.payload_purged {
                    "The webhook body was purged (dead orders keep it for SHORTS_DEAD_RETENTION)."
                } @else {
                    "The webhook body is not stored."
                }
            }
        };
    };
    let mut found = Vec::new();
    files(inputs, String::new(), &mut found);
    html! {
        @if !found.is_empty() {
            table #input-files {
                thead { tr { th { "Input" } th { "File name" } th { "Type" } th.num { "Size" } } }
                tbody {
                    @for file in &found {
                        tr {
                            td { code { (file.at) } }
                            td { (file.name.unwrap_or("–")) }
                            td { (file.mime_type.unwrap_or("–")) }
                            td.num { (size(file.size)) }
                        }
                    }
                }
            }
            p.muted { "File contents are not shown." }
        }
        (json(inputs, "inputs"))
    }
}

/// The stored callback body: the files as name, size and `object_key`, then the JSON.
fn result(detail: &OrderDetail) -> Markup {
    let Some(result) = &detail.result else {
        return html! {
            p.muted #result-none {
                @if detail.summary.state == OrderState::Delivered {
                    "The platform has the result; its body is not kept (it was over 64 KiB)."
                } @else {
                    "No result yet."
                }
            }
        };
    };
    let mut found = Vec::new();
    files(result, String::new(), &mut found);
    html! {
        @if let Some(ok) = result.get("ok").and_then(Value::as_bool) {
            p { "ok: " strong { (ok) } }
        }
        @if !found.is_empty() {
            table #result-files {
                thead { tr { th { "File name" } th { "Type" } th.num { "Size" } th { "object_key" } } }
                tbody {
                    @for file in &found {
                        tr {
                            td { (file.name.unwrap_or("–")) }
                            td { (file.mime_type.unwrap_or("–")) }
                            td.num { (size(file.size)) }
                            td { code { (file.object_key.unwrap_or("–")) } }
                        }
                    }
                }
            }
        }
        (json(result, "result"))
    }
}
