//! `GET /`: how the orders are doing.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use http::StatusCode;
use maud::{Markup, html};

use super::{Section, duration_ms, layout, respond, state_badge, store_failed};
use crate::admin::{Access, Admin};
use crate::store::history::{CallbackRate, HOUR_MS, HourCount, RunTimes};
use crate::store::{OrderState, Store as _, now_ms};

/// Hours the chart shows: the current one and the 23 before it.
const HOURS: usize = 24;

pub(super) async fn overview(
    State(admin): State<Arc<Admin>>,
    Extension(access): Extension<Access>,
) -> Response {
    let store = &admin.intake.engine.store;
    let now = now_ms();
    let first_hour = (now.div_euclid(HOUR_MS) - (HOURS as i64 - 1)) * HOUR_MS;
    let day_ago = now - 24 * HOUR_MS;
    let read = tokio::try_join!(
        store.state_counts(),
        store.hourly(first_hour),
        store.run_times(day_ago),
        store.callback_rate(day_ago),
    );
    let (counts, hourly, times, rate) = match read {
        Ok(read) => read,
        Err(error) => return store_failed(&admin, &access, &error),
    };
    let shorts: Vec<&str> = admin.intake.lanes.iter().map(|l| &*l.short.name).collect();
    let body = html! {
        h1 { "Overview" }
        h2 { "Orders by state" }
        (state_cards(&counts))
        h2 { "Orders and failures per hour, last 24 hours" }
        (chart(&hours(first_hour, &hourly)))
        h2 { "Handler time per short, last 24 hours" }
        (run_times_table(&shorts, &times))
        h2 { "Callbacks, last 24 hours" }
        (callback_rate(rate))
        h2 { "Webhook routes" }
        ul {
            @for lane in &admin.intake.lanes {
                li { code { "POST " (lane.short.path) } " " span.muted { "(" (&*lane.short.name) ")" } }
            }
        }
        p { a href="/metrics" { "Metrics" } " in the Prometheus format." }
    };
    respond(
        StatusCode::OK,
        layout(&admin, &access, Some(Section::Overview), "Overview", body),
    )
}

/// A card per state, with its count and a link to its orders.
fn state_cards(counts: &[(OrderState, u64)]) -> Markup {
    let count = |state: OrderState| counts.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n);
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    html! {
        ul.cards #counts {
            @for state in OrderState::ALL {
                li data-state=(state.as_str()) {
                    a href={ "/orders?state=" (state.as_str()) } {
                        span.count { (count(state)) }
                        (state_badge(state))
                    }
                }
            }
            li data-state="any" {
                a href="/orders" { span.count { (total) } "all orders" }
            }
        }
    }
}

/// The [`HOURS`] hours from `first_hour`, each with its counts (zero for hours the store left
/// out).
fn hours(first_hour: i64, hourly: &[HourCount]) -> Vec<HourCount> {
    (0..HOURS as i64)
        .map(|i| {
            let hour = first_hour + i * HOUR_MS;
            hourly
                .iter()
                .find(|h| h.hour == hour)
                .copied()
                .unwrap_or(HourCount {
                    hour,
                    received: 0,
                    failed: 0,
                })
        })
        .collect()
}

/// The hour's start as `HH:00`, UTC.
fn hour_label(hour: i64) -> String {
    format!("{:02}:00", hour.div_euclid(HOUR_MS).rem_euclid(24))
}

/// A bar per hour: orders received, and of them the failed ones, with the numbers written above
/// the bars and in a table below.
fn chart(hours: &[HourCount]) -> Markup {
    const SLOT: i64 = 30;
    const BAR: i64 = 22;
    const TOP: i64 = 18;
    const PLOT: i64 = 110;
    const HEIGHT: i64 = TOP + PLOT + 20;
    let width = SLOT * hours.len() as i64 + 10;
    let max = hours.iter().map(|h| h.received).max().unwrap_or(0).max(1);
    let scale = |n: u64| i64::try_from(n.saturating_mul(PLOT as u64) / max).unwrap_or(PLOT);
    let received: u64 = hours.iter().map(|h| h.received).sum();
    let failed: u64 = hours.iter().map(|h| h.failed).sum();
    let summary = format!("{received} orders in the last 24 hours, {failed} of them failed");
    html! {
        svg.chart #hourly-chart xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox={ "0 0 " (width) " " (HEIGHT) } width=(width) height=(HEIGHT)
            aria-labelledby="hourly-title hourly-desc" {
            title #hourly-title { "Orders and failures per hour, last 24 hours (UTC)" }
            desc #hourly-desc { (summary) }
            line x1="5" x2=(width - 5) y1=(TOP + PLOT) y2=(TOP + PLOT) stroke="#d0d7de" {}
            @if received == 0 {
                text #hourly-empty x=(width / 2) y=(TOP + PLOT / 2) text-anchor="middle" font-size="13" fill="#656d76" {
                    "No orders in the last 24 hours"
                }
            }
            @for (i, hour) in hours.iter().enumerate() {
                @let x = 5 + SLOT * i as i64 + (SLOT - BAR) / 2;
                @let h = scale(hour.received);
                @let f = scale(hour.failed);
                g {
                    title { (hour_label(hour.hour)) " UTC: " (hour.received) " orders, " (hour.failed) " failed" }
                    rect x=(x) y=(TOP + PLOT - h) width=(BAR) height=(h) fill="#54aeff" {}
                    @if f > 0 {
                        rect x=(x) y=(TOP + PLOT - f) width=(BAR) height=(f) fill="#cf222e" {}
                    }
                    @if hour.received > 0 {
                        text x=(x + BAR / 2) y=(TOP + PLOT - h - 4) text-anchor="middle" font-size="10" fill="#1f2328" {
                            (hour.received)
                        }
                    }
                    // Every third hour, counted back from the current one, which is always labelled.
                    @if (hours.len() - 1 - i).is_multiple_of(3) {
                        text x=(x + BAR / 2) y=(HEIGHT - 5) text-anchor="middle" font-size="10" fill="#656d76" {
                            (hour_label(hour.hour))
                        }
                    }
                }
            }
        }
        p.legend {
            span.swatch style="background:#54aeff" {} "orders received  "
            span.swatch style="background:#cf222e" {} "failed (the run did not end well, failed by hand, or the callback is dead)"
        }
        p #hourly-total { (summary) "." }
        details {
            summary { "Per hour" }
            table #hourly {
                thead { tr { th { "Hour (UTC)" } th.num { "Orders" } th.num { "Failed" } } }
                tbody {
                    @for hour in hours {
                        tr data-hour=(hour.hour) {
                            td { (hour_label(hour.hour)) }
                            td.num { (hour.received) }
                            td.num { (hour.failed) }
                        }
                    }
                }
            }
        }
    }
}

/// p50 and p95 per short: every short served, and any other the store has runs of.
fn run_times_table(shorts: &[&str], times: &[RunTimes]) -> Markup {
    let mut names: Vec<&str> = shorts.to_vec();
    names.extend(
        times
            .iter()
            .map(|t| t.short.as_str())
            .filter(|name| !shorts.contains(name)),
    );
    html! {
        table #run-times {
            thead { tr { th { "Short" } th.num { "Finished runs" } th.num { "p50" } th.num { "p95" } } }
            tbody {
                @for name in names {
                    tr data-short=(name) {
                        td { code { (name) } }
                        @match times.iter().find(|t| t.short == name) {
                            Some(t) => {
                                td.num { (t.runs) }
                                td.num { (duration_ms(t.p50_ms)) }
                                td.num { (duration_ms(t.p95_ms)) }
                            },
                            None => {
                                td.num { "0" }
                                td.num.muted { "–" }
                                td.num.muted { "–" }
                            },
                        }
                    }
                }
            }
        }
    }
}

/// The share of callback POSTs the platform accepted.
fn callback_rate(rate: CallbackRate) -> Markup {
    html! {
        p #callback-rate data-accepted=(rate.accepted) data-attempts=(rate.attempts) {
            @if rate.attempts == 0 {
                "No callback was sent."
            } @else {
                @let percent = rate.accepted as f64 * 100.0 / rate.attempts as f64;
                strong { (format!("{percent:.1}%")) } " accepted: "
                (rate.accepted) " of " (rate.attempts) " callback POSTs."
            }
        }
    }
}
