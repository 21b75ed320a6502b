//! `GET /orders`: the list, filtered and paged.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    PAGE_SIZE, Section, layout, order_path, problem, respond, state_badge, store_failed, time, truncate,
};
use crate::admin::{Access, Admin};
use crate::store::history::{IdMatch, OrderSummary};
use crate::store::{OrderFilter, OrderState, PageCursor, Store as _};

/// Characters of an error the list shows (the order's page has all of it).
const ERROR_CHARS: usize = 80;

/// The query of the list: what the filter form sends, and the cursor of the "Older" link.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    /// A state's name, or `any`.
    state: Option<String>,
    /// A short's name, or `any`.
    short: Option<String>,
    /// The start of an `order_id`.
    q: Option<String>,
    /// Where the page starts: [`PageCursor::encode`]'s text.
    after: Option<String>,
}

impl ListQuery {
    /// The value of a select, `None` for "any".
    fn chosen(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|v| !v.is_empty() && *v != "any")
    }

    fn search(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|q| !q.is_empty())
    }

    /// The link to the list with these filters, starting after `after`.
    fn link(&self, after: Option<&PageCursor>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(state) = Self::chosen(self.state.as_deref()) {
            query.append_pair("state", state);
        }
        if let Some(short) = Self::chosen(self.short.as_deref()) {
            query.append_pair("short", short);
        }
        if let Some(q) = self.search() {
            query.append_pair("q", q);
        }
        if let Some(after) = after {
            query.append_pair("after", &after.encode());
        }
        let query = query.finish();
        if query.is_empty() {
            "/orders".to_owned()
        } else {
            format!("/orders?{query}")
        }
    }
}

pub(super) async fn orders(
    State(admin): State<Arc<Admin>>,
    Extension(access): Extension<Access>,
    Query(query): Query<ListQuery>,
) -> Response {
    let state = match ListQuery::chosen(query.state.as_deref()) {
        None => None,
        Some(name) => match OrderState::parse(name) {
            Some(state) => Some(state),
            None => {
                return problem(
                    &admin,
                    &access,
                    StatusCode::BAD_REQUEST,
                    "Unknown state",
                    html! { "There is no state " code { (name) } "." },
                );
            }
        },
    };
    let after = match query.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(text) => match PageCursor::decode(text) {
            Some(cursor) => Some(cursor),
            None => {
                return problem(
                    &admin,
                    &access,
                    StatusCode::BAD_REQUEST,
                    "Not a page of the list",
                    html! { code { (text) } " is not a cursor of the list." },
                );
            }
        },
    };
    let filter = OrderFilter {
        state,
        short: ListQuery::chosen(query.short.as_deref()).map(str::to_owned),
        id: query.search().map(|q| IdMatch::Prefix(q.to_owned())),
    };
    let page = match admin
        .intake
        .engine
        .store
        .orders_page(&filter, after.as_ref(), PAGE_SIZE)
        .await
    {
        Ok(page) => page,
        Err(error) => return store_failed(&admin, &access, &error),
    };
    let mut shorts: Vec<&str> = admin.intake.lanes.iter().map(|l| &*l.short.name).collect();
    if let Some(short) = filter.short.as_deref().filter(|s| !shorts.contains(s)) {
        shorts.push(short);
    }
    let body = html! {
        h1 { "Orders" }
        (filter_form(&filter, &shorts, query.search().unwrap_or_default()))
        @if page.orders.is_empty() {
            p #no-orders { @if after.is_some() { "No older orders." } @else { "No orders match." } }
        } @else {
            (table(&page.orders))
        }
        nav.pager aria-label="Pages" {
            @if after.is_some() {
                a #newest href=(query.link(None)) { "← Newest" }
            }
            @if let Some(next) = &page.next {
                a #next href=(query.link(Some(next))) { "Older →" }
            }
        }
    };
    respond(
        StatusCode::OK,
        layout(&admin, &access, Some(Section::Orders), "Orders", body),
    )
}

/// The filter form: state, short and `order_id`; sent with GET, so a filtered list is a link.
fn filter_form(filter: &OrderFilter, shorts: &[&str], q: &str) -> Markup {
    html! {
        form #filter method="get" action="/orders" {
            label {
                "State"
                select name="state" {
                    option value="any" selected[filter.state.is_none()] { "any" }
                    @for state in OrderState::ALL {
                        option value=(state.as_str()) selected[filter.state == Some(state)] { (state.as_str()) }
                    }
                }
            }
            label {
                "Short"
                select name="short" {
                    option value="any" selected[filter.short.is_none()] { "any" }
                    @for short in shorts {
                        option value=(short) selected[filter.short.as_deref() == Some(*short)] { (short) }
                    }
                }
            }
            label {
                "Order id (or its start)"
                input type="search" name="q" value=(q) autocomplete="off" spellcheck="false";
            }
            button #apply type="submit" { "Apply" }
            a href="/orders" { "Clear" }
        }
    }
}

/// The columns of the list, each with the field of `orders --json` it shows.
pub(super) const COLUMNS: [(&str, &str); 6] = [
    ("Order id", "id"),
    ("Short", "short"),
    ("State", "state"),
    ("Received", "received_at"),
    ("Runs", "runs"),
    ("Last error", "last_error"),
];

/// One row per order, newest first; each cell's `data-field` names the field of `orders --json`
/// it shows.
fn table(orders: &[OrderSummary]) -> Markup {
    html! {
        table #orders {
            thead {
                tr {
                    @for (title, field) in COLUMNS {
                        th.num[field == "runs"] data-field=(field) { (title) }
                    }
                }
            }
            tbody {
                @for order in orders {
                    @let running = running(order);
                    tr data-order=(order.id) data-state=(order.state.as_str()) data-running[running] {
                        td data-field="id" { a href=(order_path(&order.id)) { code { (order.id) } } }
                        td data-field="short" { (order.short) }
                        td data-field="state" {
                            (state_badge(order.state))
                            @if running {
                                " " span.muted title="A run started and has not ended: the short is running (or the process ended while it ran, and the order runs again)." { "running" }
                            }
                        }
                        td data-field="received_at" { (time(order.received_at)) }
                        td.num data-field="runs" { (order.runs) }
                        td data-field="last_error" { (last_error(order)) }
                    }
                }
            }
        }
    }
}

/// Whether a run of a received order started and has not ended: it is running (or was, when
/// its process ended; it then runs again). A received order waiting for a slot has no run.
fn running(order: &OrderSummary) -> bool {
    order.state == OrderState::Received && order.runs > 0
}

/// The order's last error, cut short; on a delivered order it is history, and says so.
fn last_error(order: &OrderSummary) -> Markup {
    html! {
        @if let Some(error) = &order.last_error {
            @let shown = truncate(error, ERROR_CHARS);
            @if order.state == OrderState::Delivered {
                span.muted title=(truncate(error, 1000)) { "earlier: " (shown) }
            } @else {
                span.error title=(truncate(error, 1000)) { (shown) }
            }
        }
    }
}
