//! Orders in this process's memory: the same semantics as the databases, nothing survives a
//! restart. For tests and `SHORTS_STORE=memory`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::wire::webhook::without_job_token;

use super::{
    Claimed, KEPT_BODY_LIMIT, NewOrder, OrderRecord, OrderState, Settle, Started, Store, StoreError, ms,
    now_ms,
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
        let row = Row {
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
            owner: Some(owner.to_owned()),
            lease_until: now + ms(lease),
            seq: *seq,
            runs: i32::from(order.started),
            received_at: now,
        };
        let mut claim = claimed(&row);
        claim.started = order.started;
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
                Started {
                    run: row.runs,
                    payload: row.payload.clone(),
                }
            }))
    }

    async fn save_result(&self, id: &str, fence: i64, body: Bytes) -> Result<bool, StoreError> {
        let mut guard = self.rows();
        match guard.rows.get_mut(id) {
            Some(row) if row.fence == fence => {
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

    async fn settle(&self, id: &str, fence: i64, settle: Settle, posts: i32) -> Result<bool, StoreError> {
        let mut guard = self.rows();
        let Some(row) = guard.rows.get_mut(id).filter(|row| row.fence == fence) else {
            return Ok(false);
        };
        row.owner = None;
        row.record.attempts += posts;
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

    async fn count_by_state(&self) -> Result<[u64; 5], StoreError> {
        let mut counts = [0; OrderState::ALL.len()];
        for row in self.rows().rows.values() {
            if let Some(i) = OrderState::ALL.iter().position(|s| *s == row.record.state) {
                counts[i] += 1;
            }
        }
        Ok(counts)
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

    async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        let mut guard = self.rows();
        let old: Vec<String> = guard
            .rows
            .values()
            .filter(|row| row.record.state == OrderState::Delivered && row.received_at < before)
            .map(|row| row.record.id.clone())
            .collect();
        for id in &old {
            guard.rows.remove(id);
        }
        Ok(old.len() as u64)
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
}
