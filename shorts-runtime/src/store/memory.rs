//! Orders in this process's memory: the same semantics as the databases, nothing survives a
//! restart. For tests and `SHORTS_STORE=memory`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::webhook::without_job_token;

use super::history::{self, HistoryRow, KEPT_ATTEMPTS, OrderSummary, RUN_TIMES_LIMIT};
use super::{
    CallbackAttempt, CallbackRate, Claimed, FailedNow, HourCount, KEPT_BODY_LIMIT, NewOrder, OrderDetail,
    OrderFilter, OrderPage, OrderRecord, OrderState, PageCursor, Purged, RunEnd, RunOutcome, RunTimes,
    Settle, Started, Store, StoreError, ms, now_ms,
};

#[derive(Debug, Clone)]
struct Row {
    record: OrderRecord,
    payload: Bytes,
    callback_url: String,
    fence: i64,
    /// Steps of the retry schedule used.
    steps: i32,
    /// Where the `job_token` sits in `payload`, until it is erased.
    job_token: Option<std::ops::Range<usize>>,
    owner: Option<String>,
    lease_until: i64,
    seq: u64,
    /// Times the short was started, as the SQL stores count them.
    runs: i32,
    /// When it was received, in ms since the Unix epoch.
    received_at: i64,
    /// How its last run ended, or `operator` (as the SQL stores keep it).
    outcome: Option<String>,
    /// Its runs, callback attempts and operator actions, oldest first.
    history: Vec<HistoryRow>,
}

impl Row {
    /// The record with its run count and reception time.
    fn record(&self) -> OrderRecord {
        OrderRecord {
            runs: super::runs_from_stored(self.runs),
            received_at: super::time_from_stored(self.received_at),
            ..self.record.clone()
        }
    }

    /// The order as the list shows it.
    fn summary(&self) -> OrderSummary {
        OrderSummary {
            id: self.record.id.clone(),
            short: self.record.short.clone(),
            state: self.record.state,
            received_at: self.received_at,
            runs: super::runs_from_stored(self.runs),
            attempts: self.record.attempts,
            last_error: self.record.last_error.clone(),
            next_at: self.record.next_at,
            payload_purged: self.record.payload_purged,
            outcome: self.outcome.as_deref().and_then(RunOutcome::parse),
            failed_by_operator: self.outcome.as_deref() == Some("operator"),
        }
    }

    /// Records the start of run `number` at `at`.
    fn run_started(&mut self, number: i32, at: i64) {
        self.history.push(HistoryRow {
            kind: "run".to_owned(),
            number,
            at,
            ended_at: None,
            outcome: None,
            status: None,
            detail: None,
        });
    }

    /// The row of run `number`, while it has no end.
    fn open_run(&mut self, number: i32) -> Option<&mut HistoryRow> {
        self.history
            .iter_mut()
            .find(|h| h.kind == "run" && h.number == number && h.ended_at.is_none())
    }

    /// Whether the row's failure counts in [`Store::hourly`].
    fn failed(&self) -> bool {
        self.record.state == OrderState::Dead || self.outcome.as_deref().is_some_and(|o| o != "ok")
    }
}

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    rows: Mutex<Rows>,
}

#[derive(Debug, Default)]
struct Rows {
    rows: HashMap<String, Row>,
    seq: u64,
    /// Orders that may still need work, so that a claim does not scan finished ones.
    active: HashSet<String>,
}

impl MemoryStore {
    fn rows(&self) -> MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn claimed(row: &Row) -> Claimed {
    Claimed {
        id: row.record.id.clone(),
        short: row.record.short.clone(),
        payload_len: row.payload.len() as u64,
        callback_url: row.callback_url.clone(),
        fence: row.fence,
        attempts: row.record.attempts,
        steps: row.steps,
        result: row.record.result.clone(),
        started: false,
        received_at: row.received_at,
    }
}

/// Whether `row` needs work and nobody holds it.
fn claimable(row: &Row, now: i64) -> bool {
    let free = row.owner.is_none() || row.lease_until <= now;
    let due = row.record.next_at.is_none_or(|at| at <= now);
    free && match row.record.state {
        OrderState::Received => true,
        OrderState::Delivering | OrderState::Paused => due,
        OrderState::Delivered | OrderState::Dead => false,
    }
}

impl Store for MemoryStore {
    async fn accept(
        &self,
        order: NewOrder,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>, StoreError> {
        let now = now_ms();
        let mut guard = self.rows();
        let Rows { rows, seq, active } = &mut *guard;
        if rows.contains_key(&order.id) {
            return Ok(None);
        }
        *seq += 1;
        active.insert(order.id.clone());
        let mut row = Row {
            record: OrderRecord {
                id: order.id.clone(),
                short: order.short,
                state: OrderState::Received,
                // Kept in the row as the SQL stores keep them; see `Row::record`.
                runs: 0,
                attempts: 0,
                result: None,
                last_error: None,
                received_at: std::time::UNIX_EPOCH,
                next_at: None,
                payload_purged: false,
            },
            payload: order.payload,
            callback_url: order.callback_url,
            fence: 1,
            steps: 0,
            job_token: order.job_token,
            owner: order.hold.leased().then(|| owner.to_owned()),
            lease_until: order.hold.lease_until(now, lease),
            seq: *seq,
            runs: i32::from(order.hold.started()),
            received_at: now,
            outcome: None,
            history: Vec::new(),
        };
        if order.hold.started() {
            row.run_started(1, now);
        }
        let mut claim = claimed(&row);
        claim.started = order.hold.started();
        rows.insert(order.id, row);
        Ok(Some(claim))
    }

    async fn claim(&self, owner: &str, lease: Duration, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        let now = now_ms();
        let mut guard = self.rows();
        let Rows { rows, active, .. } = &mut *guard;
        let mut ready: Vec<(i64, u64, String)> = active
            .iter()
            .filter_map(|id| rows.get(id).filter(|row| claimable(row, now)))
            .map(|row| {
                (
                    row.record.next_at.unwrap_or(row.received_at),
                    row.seq,
                    row.record.id.clone(),
                )
            })
            .collect();
        ready.sort_unstable();
        let mut claims = Vec::new();
        for (_, _, id) in ready.into_iter().take(limit as usize) {
            if let Some(row) = rows.get_mut(&id) {
                row.fence += 1;
                row.owner = Some(owner.to_owned());
                row.lease_until = now + ms(lease);
                claims.push(claimed(row));
            }
        }
        Ok(claims)
    }

    async fn heartbeat(&self, owner: &str, lease: Duration) -> Result<u64, StoreError> {
        let until = now_ms() + ms(lease);
        let mut guard = self.rows();
        let mut n = 0;
        for row in guard
            .rows
            .values_mut()
            .filter(|row| row.owner.as_deref() == Some(owner))
        {
            row.lease_until = until;
            n += 1;
        }
        Ok(n)
    }

    async fn start_run(&self, id: &str, fence: i64) -> Result<Option<Started>, StoreError> {
        let mut guard = self.rows();
        Ok(guard
            .rows
            .get_mut(id)
            .filter(|row| row.fence == fence)
            .map(|row| {
                row.runs += 1;
                row.run_started(row.runs, now_ms());
                Started {
                    run: row.runs,
                    payload: row.payload.clone(),
                }
            }))
    }

    async fn save_result(
        &self,
        id: &str,
        fence: i64,
        body: Bytes,
        run: Option<RunEnd>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut guard = self.rows();
        match guard.rows.get_mut(id) {
            Some(row) if row.fence == fence => {
                if let Some(run) = run {
                    if let Some(open) = row.open_run(run.run) {
                        open.ended_at = Some(now);
                        open.outcome = Some(run.outcome.as_str().to_owned());
                        open.detail = run.error;
                    }
                    row.outcome = Some(run.outcome.as_str().to_owned());
                }
                if let Some(erased) = row
                    .job_token
                    .take()
                    .and_then(|span| without_job_token(&row.payload, span))
                {
                    row.payload = Bytes::from(erased);
                }
                row.record.result = Some(body);
                row.record.state = OrderState::Delivering;
                row.record.next_at = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn settle(
        &self,
        id: &str,
        fence: i64,
        settle: Settle,
        attempts: Vec<CallbackAttempt>,
    ) -> Result<bool, StoreError> {
        let mut guard = self.rows();
        let Some(row) = guard.rows.get_mut(id).filter(|row| row.fence == fence) else {
            return Ok(false);
        };
        row.owner = None;
        row.record.attempts += attempts.len() as i32;
        if let Some(last) = attempts.iter().map(|a| a.number).max() {
            row.history
                .retain(|h| h.kind != "callback" || h.number > last - KEPT_ATTEMPTS);
        }
        row.history.extend(attempts.into_iter().map(|a| HistoryRow {
            kind: "callback".to_owned(),
            number: a.number,
            at: a.at,
            ended_at: None,
            outcome: Some(a.result.as_str().to_owned()),
            status: a.status.map(i32::from),
            detail: a.error,
        }));
        match settle {
            Settle::Delivered => {
                row.record.state = OrderState::Delivered;
                row.record.next_at = None;
                if row
                    .record
                    .result
                    .as_ref()
                    .is_some_and(|body| body.len() > KEPT_BODY_LIMIT)
                {
                    row.record.result = None;
                }
            }
            Settle::Dead(error) => {
                row.record.state = OrderState::Dead;
                row.record.next_at = None;
                row.record.last_error = Some(error);
            }
            Settle::Retry { at, steps, error } => {
                row.record.state = OrderState::Delivering;
                row.record.next_at = Some(at);
                row.steps = steps;
                row.record.last_error = Some(error);
            }
            Settle::Paused { at } => {
                row.record.state = OrderState::Paused;
                row.record.next_at = Some(at);
                row.record.last_error = Some("the platform refused the callback secret (401)".to_owned());
            }
        }
        if matches!(row.record.state, OrderState::Delivered | OrderState::Dead) {
            guard.active.remove(id);
        }
        Ok(true)
    }

    async fn release(&self, owner: &str, interrupted: &[String]) -> Result<u64, StoreError> {
        let mut guard = self.rows();
        let mut n = 0;
        for row in guard
            .rows
            .values_mut()
            .filter(|row| row.owner.as_deref() == Some(owner))
        {
            row.owner = None;
            if interrupted.contains(&row.record.id) {
                let number = row.runs;
                if let Some(open) = row.open_run(number) {
                    open.ended_at = Some(now_ms());
                    open.outcome = Some(RunOutcome::Interrupted.as_str().to_owned());
                }
                row.runs -= 1;
            }
            n += 1;
        }
        Ok(n)
    }

    async fn get(&self, id: &str) -> Result<Option<OrderRecord>, StoreError> {
        Ok(self.rows().rows.get(id).map(Row::record))
    }

    async fn list(&self, state: Option<OrderState>, limit: u32) -> Result<Vec<OrderRecord>, StoreError> {
        let guard = self.rows();
        let mut rows: Vec<&Row> = guard
            .rows
            .values()
            .filter(|row| state.is_none_or(|s| row.record.state == s))
            .collect();
        rows.sort_by_key(|row| row.seq);
        Ok(rows
            .into_iter()
            .take(limit as usize)
            .map(|row| row.record())
            .collect())
    }

    async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let mut guard = self.rows();
        match guard.rows.get_mut(id) {
            Some(row)
                if matches!(row.record.state, OrderState::Dead | OrderState::Paused)
                    && row.record.result.is_some() =>
            {
                row.record.state = OrderState::Delivering;
                row.record.next_at = Some(now_ms());
                row.steps = 0;
                guard.active.insert(id.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn purge(&self, before: i64, limit: u32) -> Result<Purged, StoreError> {
        let started = Instant::now();
        let mut guard = self.rows();
        let mut old: Vec<(i64, String)> = guard
            .rows
            .values()
            .filter(|row| row.record.state == OrderState::Delivered && row.received_at < before)
            .map(|row| (row.received_at, row.record.id.clone()))
            .collect();
        old.sort_unstable();
        old.truncate(limit as usize);
        for (_, id) in &old {
            guard.rows.remove(id);
        }
        Ok(Purged {
            orders: old.len() as u64,
            held: started.elapsed(),
        })
    }

    async fn purge_dead(&self, before: i64) -> Result<u64, StoreError> {
        let mut guard = self.rows();
        let mut purged = 0;
        for row in guard.rows.values_mut().filter(|row| {
            row.record.state == OrderState::Dead && row.received_at < before && !row.record.payload_purged
        }) {
            row.payload = Bytes::new();
            row.job_token = None;
            row.record.payload_purged = true;
            purged += 1;
        }
        Ok(purged)
    }

    async fn release_order(&self, id: &str, fence: i64) -> Result<(), StoreError> {
        if let Some(row) = self.rows().rows.get_mut(id).filter(|row| row.fence == fence) {
            row.owner = None;
        }
        Ok(())
    }

    async fn orders_page(
        &self,
        filter: &OrderFilter,
        after: Option<&PageCursor>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        use super::history::IdMatch;
        let guard = self.rows();
        let mut rows: Vec<&Row> = guard
            .rows
            .values()
            .filter(|row| filter.state.is_none_or(|s| row.record.state == s))
            .filter(|row| filter.short.as_ref().is_none_or(|s| &row.record.short == s))
            .filter(|row| match &filter.id {
                None => true,
                Some(IdMatch::Exact(id)) => &row.record.id == id,
                Some(IdMatch::Prefix(prefix)) => row.record.id.starts_with(prefix.as_str()),
            })
            .filter(|row| {
                after.is_none_or(|c| {
                    (row.received_at, row.record.id.as_str()) < (c.received_at, c.id.as_str())
                })
            })
            .collect();
        rows.sort_by(|a, b| (b.received_at, &b.record.id).cmp(&(a.received_at, &a.record.id)));
        let orders: Vec<OrderSummary> = rows
            .iter()
            .take(limit as usize)
            .map(|row| row.summary())
            .collect();
        Ok(history::page(orders, rows.len() > limit as usize))
    }

    async fn state_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        let guard = self.rows();
        Ok(OrderState::ALL
            .into_iter()
            .map(|state| {
                let n = guard
                    .rows
                    .values()
                    .filter(|row| row.record.state == state)
                    .count();
                (state, n as u64)
            })
            .filter(|(_, n)| *n > 0)
            .collect())
    }

    async fn hourly(&self, since: i64) -> Result<Vec<HourCount>, StoreError> {
        let guard = self.rows();
        let mut hours = std::collections::BTreeMap::<i64, HourCount>::new();
        for row in guard.rows.values().filter(|row| row.received_at >= since) {
            let hour = row.received_at.div_euclid(history::HOUR_MS) * history::HOUR_MS;
            let count = hours.entry(hour).or_insert(HourCount {
                hour,
                received: 0,
                failed: 0,
            });
            count.received += 1;
            count.failed += u64::from(row.failed());
        }
        Ok(hours.into_values().collect())
    }

    async fn run_times(&self, since: i64) -> Result<Vec<RunTimes>, StoreError> {
        let guard = self.rows();
        let mut runs: Vec<(i64, String, i64)> = guard
            .rows
            .values()
            .flat_map(|row| {
                row.history
                    .iter()
                    .filter(|h| h.kind == "run" && h.at >= since)
                    .filter(|h| h.outcome.as_deref() != Some(RunOutcome::Interrupted.as_str()))
                    .filter_map(|h| Some((h.at, row.record.short.clone(), h.ended_at? - h.at)))
            })
            .collect();
        runs.sort_unstable_by_key(|(at, _, _)| std::cmp::Reverse(*at));
        runs.truncate(RUN_TIMES_LIMIT as usize);
        Ok(history::run_times(
            runs.into_iter().map(|(_, short, ms)| (short, ms)).collect(),
        ))
    }

    async fn callback_rate(&self, since: i64) -> Result<CallbackRate, StoreError> {
        let guard = self.rows();
        let mut rate = CallbackRate::default();
        for h in guard
            .rows
            .values()
            .flat_map(|row| row.history.iter())
            .filter(|h| h.kind == "callback" && h.at >= since)
        {
            rate.attempts += 1;
            rate.accepted += u64::from(h.outcome.as_deref() == Some("accepted"));
        }
        Ok(rate)
    }

    async fn detail(&self, id: &str) -> Result<Option<OrderDetail>, StoreError> {
        let guard = self.rows();
        Ok(guard.rows.get(id).map(|row| OrderDetail {
            summary: row.summary(),
            timeline: history::timeline(row.received_at, row.history.clone()),
            inputs: if row.record.payload_purged {
                None
            } else {
                history::describe_inputs(&row.payload)
            },
            result: row.record.result.as_deref().and_then(history::describe_result),
        }))
    }

    async fn fail_now(&self, id: &str, message: &str, body: Bytes) -> Result<FailedNow, StoreError> {
        let now = now_ms();
        let mut guard = self.rows();
        let Some(row) = guard.rows.get_mut(id) else {
            return Ok(FailedNow::Unknown);
        };
        let state = row.record.state;
        if !matches!(
            state,
            OrderState::Received | OrderState::Delivering | OrderState::Paused
        ) {
            return Ok(FailedNow::NotStuck(state));
        }
        let leased = row.owner.is_some() && row.lease_until > now;
        let running = row
            .history
            .iter()
            .any(|h| h.kind == "run" && h.ended_at.is_none());
        if leased && (state != OrderState::Received || running) {
            return Ok(FailedNow::Busy);
        }
        if let Some(erased) = row
            .job_token
            .take()
            .and_then(|span| without_job_token(&row.payload, span))
        {
            row.payload = Bytes::from(erased);
        }
        row.fence += 1;
        row.owner = None;
        row.steps = 0;
        row.outcome = Some("operator".to_owned());
        row.record.result = Some(body);
        row.record.state = OrderState::Delivering;
        row.record.next_at = Some(now);
        row.history.push(HistoryRow {
            kind: "operator".to_owned(),
            number: 0,
            at: now,
            ended_at: None,
            outcome: Some("failed".to_owned()),
            status: None,
            detail: Some(message.to_owned()),
        });
        guard.active.insert(id.to_owned());
        Ok(FailedNow::Failing)
    }
}
