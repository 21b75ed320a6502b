//! One suite for every store: the same calls, the same answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::history::{IdMatch, KEPT_ATTEMPTS, OrderSummary, TimelineEvent};
use super::{
    AttemptResult, CallbackAttempt, Claimed, FailedNow, KEPT_BODY_LIMIT, NewOrder, OrderFilter, OrderState,
    PageCursor, Retried, RunEnd, RunOutcome, Settle, Store, fail_now, now_ms, retry,
};
use crate::wire::webhook::{Webhook, job_token_span};

const LONG: Duration = Duration::from_secs(60);
const EXPIRED: Duration = Duration::ZERO;

pub(crate) fn order(id: &str) -> NewOrder {
    NewOrder {
        id: id.to_owned(),
        short: "echo".to_owned(),
        payload: Bytes::from_static(br#"{"order_id":"x"}"#),
        callback_url: "https://api.sellershorts.com/api/orders/callback".to_owned(),
        job_token: None,
        hold: super::Hold::Wait,
    }
}

/// `n` callback POSTs, numbered from 1, that the platform answered 200.
fn posts(n: i32) -> Vec<CallbackAttempt> {
    (1..=n)
        .map(|number| CallbackAttempt {
            number,
            at: now_ms(),
            status: Some(200),
            error: None,
            result: AttemptResult::Accepted,
        })
        .collect()
}

/// Starts a run; its number, or `None` for a stale fence.
async fn started<S: Store>(store: &S, id: &str, fence: i64) -> Option<i32> {
    let started = store.start_run(id, fence).await.expect("start");
    started.map(|started| started.run)
}

async fn runs<S: Store>(store: &S, id: &str) -> u32 {
    store.get(id).await.expect("get").expect("record").runs
}

async fn claim_ids<S: Store>(store: &S, owner: &str, lease: Duration) -> Vec<String> {
    let claimed = store.claim(owner, lease, 100).await.expect("claim");
    claimed.into_iter().map(|c| c.id).collect()
}

/// A new, empty store for one case, and what to check and remove once the case has passed.
pub(crate) trait Fixture: Sized {
    type Store: Store;

    /// Opens a new, empty store.
    async fn open() -> Self;

    fn store(&self) -> &Arc<Self::Store>;

    /// Checks what the store keeps beyond the case, and removes what it left.
    async fn close(self);
}

/// Defines a `#[tokio::test]` per case of the suite, each on a store of its own that the
/// [`Fixture`] `$fixture` opens, so that a failing case hides none of the others.
macro_rules! cases {
    ($fixture:ty) => {
        $crate::store::suite::cases!(@each $fixture, |store| &**store; accept_once, leases_and_fences, results_and_retries, long_bodies_dropped_once_delivered, dead_and_retry, paused, heartbeat_and_release, release_one, accepted_without_a_lease, ordering_and_limits, job_token_erased_with_the_result, dead_payloads_purged, purge, history_of_runs_and_attempts, attempts_kept_are_bounded, history_purged_with_the_order, pages_of_orders, overview_counts, fail_now_stuck_orders);
        $crate::store::suite::cases!(@each $fixture, |store| store; concurrent_accepts, concurrent_claims, concurrent_saves_and_settles);
    };
    (@each $fixture:ty, |$store:ident| $arg:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let fixture = <$fixture as $crate::store::suite::Fixture>::open().await;
                let $store = $crate::store::suite::Fixture::store(&fixture);
                $crate::store::suite::$case($arg).await;
                $crate::store::suite::Fixture::close(fixture).await;
            }
        )*
    };
}

pub(crate) use cases;

pub(crate) async fn accept_once<S: Store>(store: &S) {
    // Stored to the millisecond.
    let before = std::time::SystemTime::now() - Duration::from_millis(1);
    let first = store.accept(order("a1"), "one", LONG).await.expect("accept");
    let after = std::time::SystemTime::now();
    let first = first.expect("new");
    assert_eq!((first.id.as_str(), first.fence), ("a1", 1));
    assert_eq!(first.payload_len, order("a1").payload.len() as u64);
    let run = store.start_run("a1", first.fence).await.expect("start");
    let run = run.expect("current fence");
    assert_eq!(run.run, 1);
    assert_eq!(run.payload, Bytes::from_static(br#"{"order_id":"x"}"#));
    assert!(first.result.is_none());
    assert!(
        store
            .accept(order("a1"), "two", LONG)
            .await
            .expect("accept")
            .is_none()
    );
    let record = store.get("a1").await.expect("get").expect("record");
    assert_eq!(
        (record.state, record.runs, record.attempts),
        (OrderState::Received, 1, 0)
    );
    assert!(
        before <= record.received_at && record.received_at <= after,
        "{:?}",
        record.received_at
    );
    assert!(store.get("nope").await.expect("get").is_none());
    // Leased: nobody else takes it.
    assert!(!claim_ids(store, "two", LONG).await.contains(&"a1".to_owned()));
    settle_delivered(store, "a1", first.fence).await;
}

async fn settle_delivered<S: Store>(store: &S, id: &str, fence: i64) {
    assert!(
        store
            .save_result(id, fence, Bytes::from_static(b"{}"), None)
            .await
            .expect("save")
    );
    assert!(
        store
            .settle(id, fence, Settle::Delivered, posts(1))
            .await
            .expect("settle")
    );
}

pub(crate) async fn leases_and_fences<S: Store>(store: &S) {
    let first = store
        .accept(order("b1"), "one", EXPIRED)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(started(store, "b1", first.fence).await, Some(1));
    // The lease has expired: another instance takes the order, which knows of the first run.
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let again = taken.into_iter().find(|c| c.id == "b1").expect("claimed by two");
    assert_eq!(again.fence, first.fence + 1);
    assert_eq!(runs(store, "b1").await, 1, "the first run is remembered");
    // The first instance's late writes are refused.
    assert_eq!(started(store, "b1", first.fence).await, None);
    assert_eq!(started(store, "b1", again.fence).await, Some(2));
    assert!(
        !store
            .save_result("b1", first.fence, Bytes::from_static(b"late"), None)
            .await
            .expect("save")
    );
    assert!(
        !store
            .settle("b1", first.fence, Settle::Delivered, posts(1))
            .await
            .expect("settle")
    );
    assert!(
        store
            .save_result("b1", again.fence, Bytes::from_static(b"{\"ok\":true}"), None)
            .await
            .expect("save")
    );
    let record = store.get("b1").await.expect("get").expect("record");
    assert_eq!(record.result.as_deref(), Some(&b"{\"ok\":true}"[..]));
    assert_eq!(record.state, OrderState::Delivering);
    assert!(
        store
            .settle("b1", again.fence, Settle::Delivered, posts(1))
            .await
            .expect("settle")
    );
    assert_eq!(
        store.get("b1").await.expect("get").map(|r| r.state),
        Some(OrderState::Delivered)
    );
    assert!(!claim_ids(store, "three", LONG).await.contains(&"b1".to_owned()));
}

/// A long body is kept while it is being delivered (a retry needs it) and dropped once the
/// platform has it; a short one stays.
pub(crate) async fn long_bodies_dropped_once_delivered<S: Store>(store: &S) {
    let long = Bytes::from(vec![b'x'; KEPT_BODY_LIMIT + 1]);
    let short = Bytes::from(vec![b'y'; KEPT_BODY_LIMIT]);
    for (id, body) in [("l1", &long), ("l2", &short)] {
        let claimed = store
            .accept(order(id), "one", LONG)
            .await
            .expect("accept")
            .expect("new");
        assert!(
            store
                .save_result(id, claimed.fence, body.clone(), None)
                .await
                .expect("save")
        );
        let retry = Settle::Retry {
            at: now_ms() - 1,
            steps: 1,
            error: "503".to_owned(),
        };
        assert!(
            store
                .settle(id, claimed.fence, retry, posts(1))
                .await
                .expect("settle")
        );
        let record = store.get(id).await.expect("get").expect("record");
        assert_eq!(record.result.as_ref(), Some(body), "kept while delivering");
        let again = store.claim("one", LONG, 100).await.expect("claim");
        let again = again.into_iter().find(|c| c.id == id).expect("due retry claimed");
        assert_eq!(again.result.as_ref(), Some(body));
        assert!(
            store
                .settle(id, again.fence, Settle::Delivered, posts(1))
                .await
                .expect("settle")
        );
    }
    let dropped = store.get("l1").await.expect("get").expect("record");
    assert_eq!((dropped.state, dropped.result), (OrderState::Delivered, None));
    let kept = store.get("l2").await.expect("get").expect("record");
    assert_eq!((kept.state, kept.result), (OrderState::Delivered, Some(short)));

    // A dead order keeps its body for a retry, and a stale settle drops nothing.
    let claimed = store
        .accept(order("l3"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .save_result("l3", claimed.fence, long.clone(), None)
            .await
            .expect("save")
    );
    assert!(
        !store
            .settle("l3", claimed.fence - 1, Settle::Delivered, posts(1))
            .await
            .expect("settle")
    );
    assert!(
        store
            .settle("l3", claimed.fence, Settle::Dead("400".to_owned()), posts(1))
            .await
            .expect("settle")
    );
    let dead = store.get("l3").await.expect("get").expect("record");
    assert_eq!((dead.state, dead.result), (OrderState::Dead, Some(long)));
    // A retry by hand delivers it after all.
    assert!(store.retry("l3").await.expect("retry"));
    let again = store.claim("one", LONG, 100).await.expect("claim");
    let again = again
        .into_iter()
        .find(|c| c.id == "l3")
        .expect("retried order claimed");
    assert!(
        store
            .settle("l3", again.fence, Settle::Delivered, posts(1))
            .await
            .expect("settle")
    );
}

pub(crate) async fn results_and_retries<S: Store>(store: &S) {
    let claimed = store
        .accept(order("c1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .save_result("c1", claimed.fence, Bytes::from_static(b"body"), None)
            .await
            .expect("save")
    );
    let later = now_ms() + 60_000;
    let retry = Settle::Retry {
        at: later,
        steps: 1,
        error: "503".to_owned(),
    };
    assert!(
        store
            .settle("c1", claimed.fence, retry, posts(1))
            .await
            .expect("settle")
    );
    let record = store.get("c1").await.expect("get").expect("record");
    assert_eq!(
        (record.state, record.attempts, record.next_at),
        (OrderState::Delivering, 1, Some(later))
    );
    assert_eq!(record.last_error.as_deref(), Some("503"));
    // Not due yet.
    assert!(!claim_ids(store, "two", LONG).await.contains(&"c1".to_owned()));
    let due = Settle::Retry {
        at: now_ms() - 1,
        steps: 2,
        error: "503".to_owned(),
    };
    // A settle without the lease is refused; with a fresh claim it is taken.
    assert!(
        !store
            .settle("c1", claimed.fence - 1, due.clone(), posts(1))
            .await
            .expect("settle")
    );
    assert!(
        store
            .settle("c1", claimed.fence, due, posts(1))
            .await
            .expect("settle")
    );
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let retried = taken
        .into_iter()
        .find(|c| c.id == "c1")
        .expect("due retry claimed");
    assert_eq!(retried.result.as_deref(), Some(&b"body"[..]));
    assert_eq!((retried.attempts, retried.steps), (2, 2));
    assert_eq!(runs(store, "c1").await, 0, "a delivery claim is not a run");
    settle_delivered(store, "c1", retried.fence).await;
}

pub(crate) async fn dead_and_retry<S: Store>(store: &S) {
    let claimed = store
        .accept(order("d1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        !store.retry("d1").await.expect("retry"),
        "only dead or paused orders are retried"
    );
    assert!(
        store
            .save_result("d1", claimed.fence, Bytes::from_static(b"body"), None)
            .await
            .expect("save")
    );
    assert!(
        store
            .settle("d1", claimed.fence, Settle::Dead("400".to_owned()), posts(1))
            .await
            .expect("settle")
    );
    let dead = store.list(Some(OrderState::Dead), 100).await.expect("list");
    assert_eq!(dead.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["d1"]);
    assert_eq!(dead[0].last_error.as_deref(), Some("400"));
    // The refused POST counts.
    assert_eq!(dead[0].attempts, 1);
    assert!(!claim_ids(store, "two", LONG).await.contains(&"d1".to_owned()));
    assert!(store.retry("d1").await.expect("retry"));
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let again = taken
        .into_iter()
        .find(|c| c.id == "d1")
        .expect("retried order claimed");
    // A retry by hand starts the schedule over and keeps the POSTs made.
    assert_eq!((again.attempts, again.steps), (1, 0));
    settle_delivered(store, "d1", again.fence).await;
    let delivered = store.get("d1").await.expect("get").expect("record");
    assert_eq!((delivered.state, delivered.attempts), (OrderState::Delivered, 2));
    assert!(
        store
            .list(Some(OrderState::Dead), 100)
            .await
            .expect("list")
            .is_empty()
    );
}

pub(crate) async fn paused<S: Store>(store: &S) {
    let claimed = store
        .accept(order("e1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .save_result("e1", claimed.fence, Bytes::from_static(b"body"), None)
            .await
            .expect("save")
    );
    let probe = Settle::Paused { at: now_ms() - 1 };
    assert!(
        store
            .settle("e1", claimed.fence, probe, posts(1))
            .await
            .expect("settle")
    );
    assert_eq!(
        store.get("e1").await.expect("get").map(|r| (r.state, r.attempts)),
        Some((OrderState::Paused, 1))
    );
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let again = taken
        .into_iter()
        .find(|c| c.id == "e1")
        .expect("due probe claimed");
    // A 401 is a POST, not a step of the schedule.
    assert_eq!((again.attempts, again.steps), (1, 0));
    settle_delivered(store, "e1", again.fence).await;
}

pub(crate) async fn heartbeat_and_release<S: Store>(store: &S) {
    let first = store
        .accept(order("f1"), "one", EXPIRED)
        .await
        .expect("accept")
        .expect("new");
    let waiting = store
        .accept(order("f2"), "one", EXPIRED)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(started(store, "f1", first.fence).await, Some(1));
    assert_eq!(started(store, "f2", waiting.fence).await, Some(1));
    // The heartbeat renews the expired leases before anyone took them.
    assert!(store.heartbeat("one", LONG).await.expect("heartbeat") >= 2);
    assert!(!claim_ids(store, "two", LONG).await.contains(&"f1".to_owned()));
    // Released at shutdown: another instance takes them at once; the run the shutdown
    // interrupted is not counted against its order, the other one is.
    assert!(store.release("one", &["f1".to_owned()]).await.expect("release") >= 2);
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let again = taken
        .iter()
        .find(|c| c.id == "f1")
        .expect("released order claimed");
    let other = taken
        .iter()
        .find(|c| c.id == "f2")
        .expect("released order claimed");
    assert_eq!((runs(store, "f1").await, runs(store, "f2").await), (0, 1));
    settle_delivered(store, "f1", again.fence).await;
    settle_delivered(store, "f2", other.fence).await;
}

/// An order accepted without a lease belongs to nobody: no heartbeat renews it, and the first
/// claim takes it, with a new fence.
pub(crate) async fn accepted_without_a_lease<S: Store>(store: &S) {
    let queued = store
        .accept(
            NewOrder {
                hold: super::Hold::Store,
                ..order("q1")
            },
            "one",
            LONG,
        )
        .await
        .expect("accept")
        .expect("new");
    let held = store
        .accept(order("q2"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(store.heartbeat("one", LONG).await.expect("heartbeat"), 1);
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let ids: Vec<&str> = taken.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["q1"]);
    assert!(taken[0].fence > queued.fence);
    // Its first claim starts it as any other: the stale fence of the accept writes nothing.
    assert_eq!(started(store, "q1", queued.fence).await, None);
    assert_eq!(started(store, "q1", taken[0].fence).await, Some(1));
    settle_delivered(store, "q1", taken[0].fence).await;
    settle_delivered(store, "q2", held.fence).await;
}

pub(crate) async fn release_one<S: Store>(store: &S) {
    let held = store
        .accept(order("r1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    // A stale fence releases nothing; the current one releases the order at once.
    store.release_order("r1", held.fence - 1).await.expect("release");
    assert!(!claim_ids(store, "two", LONG).await.contains(&"r1".to_owned()));
    store.release_order("r1", held.fence).await.expect("release");
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let again = taken
        .iter()
        .find(|c| c.id == "r1")
        .expect("released order claimed");
    settle_delivered(store, "r1", again.fence).await;
}

pub(crate) async fn ordering_and_limits<S: Store>(store: &S) {
    for i in 0..5 {
        store
            .accept(order(&format!("g{i}")), "one", EXPIRED)
            .await
            .expect("accept")
            .expect("new");
    }
    let ids = |claimed: &[super::Claimed]| {
        let mut ids: Vec<String> = claimed.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        ids
    };
    let first = store.claim("two", LONG, 2).await.expect("claim");
    assert_eq!(ids(&first), ["g0", "g1"], "oldest first");
    let rest = store.claim("two", LONG, 100).await.expect("claim");
    assert_eq!(ids(&rest), ["g2", "g3", "g4"]);
    for claimed in first.into_iter().chain(rest) {
        settle_delivered(store, &claimed.id, claimed.fence).await;
    }
    let all = store.list(None, 1000).await.expect("list");
    assert!(all.iter().all(|r| r.state == OrderState::Delivered), "{all:?}");
    assert_eq!(store.list(None, 3).await.expect("list").len(), 3);
}

/// The webhook body of a claimed order, as a run reads it (counting a run).
async fn payload_of<S: Store>(store: &S, claimed: &Claimed) -> Bytes {
    store
        .start_run(&claimed.id, claimed.fence)
        .await
        .expect("start run")
        .expect("fence current")
        .payload
}

/// The `job_token` (a bearer token for the buyer's Amazon account) is replaced by `null` in the
/// stored webhook body by the write that stores the result, under the current fence only; a body
/// without one (a `job_token` among the inputs is not one) is left as it is.
pub(crate) async fn job_token_erased_with_the_result<S: Store>(store: &S) {
    let with: &'static [u8] = br#"{"order_id":"t1", "job_token": "secret-token", "inputs": {"a": 1}}"#;
    let without: &'static [u8] = br#"{"order_id":"t2","inputs":{"job_token":"an input"}}"#;
    let stale: &'static [u8] = br#"{"order_id":"t3","job_token":"other-token"}"#;
    for (id, payload) in [("t1", with), ("t2", without), ("t3", stale)] {
        let mut new = order(id);
        new.payload = Bytes::from_static(payload);
        new.job_token = job_token_span(payload);
        let accepted = store.accept(new, "one", EXPIRED).await.expect("accept");
        assert!(accepted.is_some());
    }
    let old = store.claim("two", EXPIRED, 100).await.expect("claim");
    let old_fence = |id: &str| old.iter().find(|c| c.id == id).expect("claimed").fence;
    let late = Bytes::from_static(b"late");
    assert!(
        !store
            .save_result("t3", old_fence("t3") - 1, late, None)
            .await
            .expect("save")
    );
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let claimed = |id: &str| taken.iter().find(|c| c.id == id).expect("claimed").clone();
    // Kept until there is a result (a run after a crash needs it), and a stale write erases nothing.
    assert_eq!(payload_of(store, &claimed("t1")).await, with);
    assert_eq!(payload_of(store, &claimed("t3")).await, stale);
    settle_delivered(store, "t3", claimed("t3").fence).await;
    for id in ["t1", "t2"] {
        let fence = claimed(id).fence;
        let body = Bytes::from_static(b"{}");
        assert!(
            store
                .save_result(id, fence, body.clone(), None)
                .await
                .expect("save")
        );
        // A replacement body (after a 413) leaves the erased webhook body as it is.
        assert!(store.save_result(id, fence, body, None).await.expect("save"));
        let due = Settle::Retry {
            at: now_ms() - 1,
            steps: 1,
            error: "503".to_owned(),
        };
        assert!(store.settle(id, fence, due, posts(1)).await.expect("settle"));
    }
    let again = store.claim("one", LONG, 100).await.expect("claim");
    let stored = |id: &str| again.iter().find(|c| c.id == id).expect("claimed").clone();
    let erased = payload_of(store, &stored("t1")).await;
    assert_eq!(
        erased,
        Bytes::from_static(br#"{"order_id":"t1", "job_token": null, "inputs": {"a": 1}}"#)
    );
    let webhook = Webhook::parse(&erased).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((webhook.order_id.as_str(), webhook.job_token), ("t1", None));
    assert_eq!(payload_of(store, &stored("t2")).await, without);
    for id in ["t1", "t2"] {
        assert!(
            store
                .settle(id, stored(id).fence, Settle::Delivered, posts(1))
                .await
                .expect("settle")
        );
    }
}

/// Dead orders lose their webhook body past the dead retention, and nothing else: the record and
/// the stored result stay, and a retry delivers that result. Other orders keep their bodies.
pub(crate) async fn dead_payloads_purged<S: Store>(store: &S) {
    let body = Bytes::from_static(b"{\"ok\":false}");
    // q1 dead with a result, q2 delivering, q3 dead without a result.
    let mut fences = HashMap::new();
    for id in ["q1", "q2", "q3"] {
        let claimed = store.accept(order(id), "one", LONG).await.expect("accept");
        fences.insert(id, claimed.expect("new").fence);
    }
    for id in ["q1", "q2"] {
        assert!(
            store
                .save_result(id, fences[id], body.clone(), None)
                .await
                .expect("save")
        );
    }
    let dead = |error: &str| Settle::Dead(error.to_owned());
    assert!(
        store
            .settle("q1", fences["q1"], dead("400"), posts(1))
            .await
            .expect("settle")
    );
    let later = Settle::Retry {
        at: now_ms() + 60_000,
        steps: 1,
        error: "503".to_owned(),
    };
    assert!(
        store
            .settle("q2", fences["q2"], later, posts(1))
            .await
            .expect("settle")
    );
    assert!(
        store
            .settle("q3", fences["q3"], dead("gone"), posts(0))
            .await
            .expect("settle")
    );

    // Only orders received before the cut-off.
    assert_eq!(store.purge_dead(now_ms() - 60_000).await.expect("purge"), 0);
    assert!(
        !store
            .get("q1")
            .await
            .expect("get")
            .expect("record")
            .payload_purged
    );
    assert_eq!(store.purge_dead(now_ms() + 60_000).await.expect("purge"), 2);
    assert_eq!(store.purge_dead(now_ms() + 60_000).await.expect("purge"), 0);
    let purged = store.get("q1").await.expect("get").expect("record");
    assert_eq!(
        (
            purged.state,
            purged.attempts,
            purged.payload_purged,
            purged.result
        ),
        (OrderState::Dead, 1, true, Some(body.clone()))
    );
    let listed = store.list(Some(OrderState::Dead), 100).await.expect("list");
    assert!(listed.iter().all(|r| r.payload_purged), "{listed:?}");
    let kept = store.get("q2").await.expect("get").expect("record");
    assert_eq!((kept.state, kept.payload_purged), (OrderState::Delivering, false));

    assert_eq!(
        retry(store, "q1").await.expect("retry"),
        Retried::Redelivering { payload_purged: true }
    );
    assert_eq!(
        retry(store, "q3").await.expect("retry"),
        Retried::NoResult { payload_purged: true }
    );
    assert_eq!(
        retry(store, "q2").await.expect("retry"),
        Retried::NotStuck(OrderState::Delivering)
    );
    assert_eq!(retry(store, "q-none").await.expect("retry"), Retried::Unknown);
    // The retry delivers the stored result; there is nothing to run.
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let again = taken
        .iter()
        .find(|c| c.id == "q1")
        .expect("retried order claimed");
    assert_eq!((again.result.as_ref(), again.payload_len), (Some(&body), 0));
    assert!(
        store
            .settle("q1", again.fence, Settle::Delivered, posts(1))
            .await
            .expect("settle")
    );
    let due = Settle::Retry {
        at: now_ms() - 1,
        steps: 1,
        error: "503".to_owned(),
    };
    assert!(
        store
            .settle("q2", fences["q2"], due, posts(1))
            .await
            .expect("settle")
    );
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let q2 = taken.iter().find(|c| c.id == "q2").expect("due retry claimed");
    assert_eq!(
        payload_of(store, q2).await,
        Bytes::from_static(br#"{"order_id":"x"}"#)
    );
    assert!(
        store
            .settle("q2", q2.fence, Settle::Delivered, posts(1))
            .await
            .expect("settle")
    );
}

pub(crate) async fn purge<S: Store>(store: &S) {
    for id in ["a1", "p-delivered"] {
        let claimed = store
            .accept(order(id), "one", LONG)
            .await
            .expect("accept")
            .expect("new");
        settle_delivered(store, id, claimed.fence).await;
    }
    let dead = store
        .accept(order("p-dead"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .save_result("p-dead", dead.fence, Bytes::from_static(b"x"), None)
            .await
            .expect("save")
    );
    assert!(
        store
            .settle("p-dead", dead.fence, Settle::Dead("400".to_owned()), posts(1))
            .await
            .expect("settle")
    );
    let delivered = store
        .list(Some(OrderState::Delivered), 10_000)
        .await
        .expect("list")
        .len() as u64;
    assert_eq!(delivered, 2);
    // Nothing is older than a minute ago; everything delivered is older than a minute from now,
    // deleted a batch at a time, oldest first.
    assert_eq!(store.purge(now_ms() - 60_000, 10).await.expect("purge").orders, 0);
    assert_eq!(store.purge(now_ms() + 60_000, 1).await.expect("purge").orders, 1);
    assert!(
        store.get("a1").await.expect("get").is_none(),
        "the older one first"
    );
    assert!(store.get("p-delivered").await.expect("get").is_some());
    assert_eq!(
        store.purge(now_ms() + 60_000, 10).await.expect("purge").orders,
        delivered - 1
    );
    assert!(
        store
            .list(Some(OrderState::Delivered), 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(store.get("a1").await.expect("get").is_none());
    // Dead letters stay.
    assert_eq!(
        store.get("p-dead").await.expect("get").map(|r| r.state),
        Some(OrderState::Dead)
    );
    // A purged order id is new again to the store; the platform never reuses one.
    assert!(
        store
            .accept(order("a1"), "one", LONG)
            .await
            .expect("accept")
            .is_some()
    );
}

pub(crate) async fn concurrent_accepts<S: Store>(store: &Arc<S>) {
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = Arc::clone(store);
        // Every order twice, each copy with a body of its own: exactly one of each pair is new,
        // and the body stored is the new one's.
        tasks.push(tokio::spawn(async move {
            let mut order = order(&format!("h{}", i / 2));
            order.payload = Bytes::from(format!(r#"{{"copy":{i}}}"#));
            let payload = order.payload.clone();
            let accepted = store.accept(order, "one", EXPIRED).await.expect("accept");
            accepted.map(|claimed| (claimed.id, payload))
        }));
    }
    let mut new = HashMap::new();
    for task in tasks {
        if let Some((id, payload)) = task.await.expect("task") {
            assert!(new.insert(id, payload).is_none(), "an order accepted twice");
        }
    }
    assert_eq!(new.len(), 100);
    let claimed: Vec<Claimed> = store
        .claim("two", LONG, 500)
        .await
        .expect("claim")
        .into_iter()
        .filter(|claimed| claimed.id.starts_with('h'))
        .collect();
    assert_eq!(claimed.len(), 100);
    for claimed in claimed {
        // A claim carries the body's length; the start of a run reads the body.
        let payload = new.get(&claimed.id).expect("accepted");
        assert_eq!(claimed.payload_len, payload.len() as u64, "{}", claimed.id);
        let run = store.start_run(&claimed.id, claimed.fence).await.expect("start");
        assert_eq!(
            run.map(|run| run.payload).as_ref(),
            Some(payload),
            "{}",
            claimed.id
        );
    }
}

pub(crate) async fn concurrent_claims<S: Store>(store: &Arc<S>) {
    for i in 0..200 {
        store
            .accept(order(&format!("k{i}")), "one", EXPIRED)
            .await
            .expect("accept")
            .expect("new");
    }
    let mut tasks = Vec::new();
    for owner in 0..4 {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..20 {
                let batch = store.claim(&format!("w{owner}"), LONG, 16).await.expect("claim");
                mine.extend(batch.into_iter().map(|c| c.id).filter(|id| id.starts_with('k')));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.expect("task") {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 200, "every order claimed exactly once");
}

/// Bodies and settles of many orders at once (grouped into few statements by SQLite), some under
/// a stale fence: each answer and each order as if they had come one by one.
pub(crate) async fn concurrent_saves_and_settles<S: Store>(store: &Arc<S>) {
    let mut fences = Vec::new();
    for i in 0..100 {
        let claimed = store.accept(order(&format!("m{i}")), "one", LONG).await;
        fences.push(claimed.expect("accept").expect("new").fence);
    }
    let mut tasks = Vec::new();
    for (i, fence) in fences.into_iter().enumerate() {
        let id = format!("m{i}");
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let stale = i % 10 == 9;
            let body = Bytes::from(format!("body {i}"));
            let saved = store
                .save_result(&id, if stale { fence - 1 } else { fence }, body, None)
                .await
                .expect("save");
            assert_eq!(saved, !stale, "{id}");
            let settle = match i % 3 {
                0 => Settle::Delivered,
                1 => Settle::Dead(format!("400 {i}")),
                _ => Settle::Retry {
                    at: now_ms() + 60_000,
                    steps: 1,
                    error: format!("503 {i}"),
                },
            };
            let settled = store
                .settle(&id, if stale { fence - 1 } else { fence }, settle, posts(1))
                .await
                .expect("settle");
            assert_eq!(settled, !stale, "{id}");
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    for i in 0..100 {
        let record = store.get(&format!("m{i}")).await.expect("get").expect("record");
        if i % 10 == 9 {
            assert_eq!(
                (record.state, record.result),
                (OrderState::Received, None),
                "m{i}"
            );
            continue;
        }
        assert_eq!(record.result, Some(Bytes::from(format!("body {i}"))), "m{i}");
        // Every outcome counts its POST.
        let expected = match i % 3 {
            0 => (OrderState::Delivered, None, 1),
            1 => (OrderState::Dead, Some(format!("400 {i}")), 1),
            _ => (OrderState::Delivering, Some(format!("503 {i}")), 1),
        };
        assert_eq!(
            (record.state, record.last_error, record.attempts),
            expected,
            "m{i}"
        );
    }
}

/// A callback POST numbered `number`, made now.
fn post(number: i32, status: Option<u16>, error: Option<&str>, result: AttemptResult) -> CallbackAttempt {
    CallbackAttempt {
        number,
        at: now_ms(),
        status,
        error: error.map(str::to_owned),
        result,
    }
}

/// The timeline of an order, without times: what happened, in order.
async fn events<S: Store>(store: &S, id: &str) -> Vec<String> {
    let detail = store.detail(id).await.expect("detail").expect("known order");
    let mut last = 0;
    detail
        .timeline
        .into_iter()
        .map(|event| {
            assert!(event.at() >= last, "the timeline is in order of time");
            last = event.at();
            match event {
                TimelineEvent::Received { .. } => "received".to_owned(),
                TimelineEvent::Run {
                    number,
                    started_at,
                    ended_at,
                    outcome,
                    error,
                } => {
                    assert!(ended_at.is_none_or(|end| end >= started_at));
                    let outcome = match (ended_at, outcome) {
                        (Some(_), Some(outcome)) => outcome.as_str(),
                        (None, None) => "open",
                        (ended, outcome) => panic!("a run ended {ended:?} with {outcome:?}"),
                    };
                    format!("run {number} {outcome} {}", error.unwrap_or_default())
                }
                TimelineEvent::Callback {
                    number,
                    status,
                    error,
                    result,
                    ..
                } => format!(
                    "callback {number} {} {} {}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    result.as_str(),
                    error.unwrap_or_default()
                ),
                TimelineEvent::FailedByOperator { message, .. } => format!("operator {message}"),
            }
        })
        .collect()
}

/// Each run (its start with the write that counts it, its end with the result) and each callback
/// POST (with the settle) is in the order's timeline; stale writes add nothing.
pub(crate) async fn history_of_runs_and_attempts<S: Store>(store: &S) {
    let before = now_ms();
    let claimed = store
        .accept(order("h1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(events(store, "h1").await, ["received"]);
    assert_eq!(started(store, "h1", claimed.fence - 1).await, None);
    assert_eq!(started(store, "h1", claimed.fence).await, Some(1));
    assert_eq!(events(store, "h1").await, ["received", "run 1 open "]);
    let run = RunEnd {
        run: 1,
        outcome: RunOutcome::Error,
        error: Some("boom".to_owned()),
    };
    let stale = store
        .save_result(
            "h1",
            claimed.fence - 1,
            Bytes::from_static(b"{}"),
            Some(run.clone()),
        )
        .await
        .expect("save");
    assert!(!stale);
    assert_eq!(events(store, "h1").await, ["received", "run 1 open "]);
    let body = Bytes::from_static(br#"{"ok":false,"order_id":"h1","error":"boom"}"#);
    assert!(
        store
            .save_result("h1", claimed.fence, body, Some(run))
            .await
            .expect("save")
    );
    let retry_later = Settle::Retry {
        at: now_ms() - 1,
        steps: 1,
        error: "the platform answered 503".to_owned(),
    };
    let failed = vec![
        post(1, Some(413), None, AttemptResult::Replaced),
        post(2, None, Some("connection refused"), AttemptResult::Retry),
    ];
    assert!(
        !store
            .settle("h1", claimed.fence - 1, retry_later.clone(), failed.clone())
            .await
            .expect("settle")
    );
    assert!(
        store
            .settle("h1", claimed.fence, retry_later, failed)
            .await
            .expect("settle")
    );
    let again = store.claim("one", LONG, 10).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    let accepted = vec![post(3, Some(200), None, AttemptResult::Accepted)];
    assert!(
        store
            .settle("h1", again[0].fence, Settle::Delivered, accepted)
            .await
            .expect("settle")
    );
    assert_eq!(
        events(store, "h1").await,
        [
            "received",
            "run 1 error boom",
            "callback 1 413 replaced ",
            "callback 2  retry connection refused",
            "callback 3 200 accepted ",
        ]
    );
    let detail = store.detail("h1").await.expect("detail").expect("known");
    assert_eq!(detail.summary.state, OrderState::Delivered);
    assert_eq!(detail.summary.outcome, Some(RunOutcome::Error));
    assert!(!detail.summary.failed_by_operator);
    assert_eq!((detail.summary.runs, detail.summary.attempts), (1, 3));
    assert!(detail.summary.received_at >= before && detail.summary.received_at <= now_ms());
    assert_eq!(
        detail.result,
        Some(serde_json::json!({"ok": false, "order_id": "h1", "error": "boom"}))
    );
    assert_eq!(detail.inputs, Some(serde_json::Value::Null));
    assert!(store.detail("nobody").await.expect("detail").is_none());

    // An order accepted with its run started has that run's start; a run stopped by a shutdown
    // says so, and the order's next run takes its number again.
    let mut new = order("h2");
    new.hold = super::Hold::Start;
    new.payload = Bytes::from_static(
        br#"{"order_id":"h2","inputs":{"doc":{"filename":"a.pdf","mime_type":"application/pdf","file_base64":"aGVsbG8="}}}"#,
    );
    store
        .accept(new, "two", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(events(store, "h2").await, ["received", "run 1 open "]);
    assert_eq!(
        store.release("two", &["h2".to_owned()]).await.expect("release"),
        1
    );
    assert_eq!(events(store, "h2").await, ["received", "run 1 interrupted "]);
    let claimed = store.claim("one", LONG, 10).await.expect("claim");
    assert_eq!(started(store, "h2", claimed[0].fence).await, Some(1));
    let ok = RunEnd {
        run: 1,
        outcome: RunOutcome::Ok,
        error: None,
    };
    let body = Bytes::from_static(
        br#"{"ok":true,"order_id":"h2","output_type":"file","filename":"r.txt","mime_type":"text/plain","file_base64":"YWJj"}"#,
    );
    assert!(
        store
            .save_result("h2", claimed[0].fence, body, Some(ok))
            .await
            .expect("save")
    );
    assert_eq!(
        events(store, "h2").await,
        ["received", "run 1 interrupted ", "run 1 ok "]
    );
    let detail = store.detail("h2").await.expect("detail").expect("known");
    assert_eq!(detail.summary.outcome, Some(RunOutcome::Ok));
    assert_eq!(
        detail.inputs,
        Some(
            serde_json::json!({"doc": {"filename": "a.pdf", "mime_type": "application/pdf", "size_bytes": 5}})
        )
    );
    assert_eq!(
        detail.result,
        Some(
            serde_json::json!({"ok": true, "order_id": "h2", "output_type": "file", "filename": "r.txt", "mime_type": "text/plain", "size_bytes": 3})
        )
    );
}

/// An order keeps its last [`KEPT_ATTEMPTS`] callback attempts; its runs stay.
pub(crate) async fn attempts_kept_are_bounded<S: Store>(store: &S) {
    let claimed = store
        .accept(order("k1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(started(store, "k1", claimed.fence).await, Some(1));
    let ok = RunEnd {
        run: 1,
        outcome: RunOutcome::Ok,
        error: None,
    };
    assert!(
        store
            .save_result("k1", claimed.fence, Bytes::from_static(b"{}"), Some(ok))
            .await
            .expect("save")
    );
    let mut fence = claimed.fence;
    let total = KEPT_ATTEMPTS + 10;
    for first in (1..=total).step_by(6) {
        let attempts = (first..first + 6)
            .map(|n| {
                post(
                    n,
                    Some(503),
                    Some("the platform answered 503"),
                    AttemptResult::Retry,
                )
            })
            .collect();
        let due = Settle::Retry {
            at: now_ms() - 1,
            steps: 1,
            error: "the platform answered 503".to_owned(),
        };
        assert!(store.settle("k1", fence, due, attempts).await.expect("settle"));
        let again = store.claim("one", LONG, 10).await.expect("claim");
        fence = again[0].fence;
    }
    let timeline = store.detail("k1").await.expect("detail").expect("known").timeline;
    let numbers: Vec<i32> = timeline
        .iter()
        .filter_map(|event| match event {
            TimelineEvent::Callback { number, .. } => Some(*number),
            _ => None,
        })
        .collect();
    assert_eq!(numbers, ((total - KEPT_ATTEMPTS + 1)..=total).collect::<Vec<_>>());
    assert!(
        matches!(timeline[1], TimelineEvent::Run { number: 1, .. }),
        "{timeline:?}"
    );
    assert_eq!(
        store.get("k1").await.expect("get").expect("record").attempts,
        total
    );
}

/// A purged order's history goes with it: an order later received under the same `order_id`
/// starts a timeline of its own.
pub(crate) async fn history_purged_with_the_order<S: Store>(store: &S) {
    let claimed = store
        .accept(order("g1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(started(store, "g1", claimed.fence).await, Some(1));
    settle_delivered(store, "g1", claimed.fence).await;
    assert_eq!(events(store, "g1").await.len(), 3);
    assert_eq!(store.purge(now_ms() + 1, 10).await.expect("purge").orders, 1);
    assert!(store.detail("g1").await.expect("detail").is_none());
    store
        .accept(order("g1"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(events(store, "g1").await, ["received"]);
}

/// Every order of `filter`, page by page (`size` at a time), following the cursors.
async fn all_pages<S: Store>(store: &S, filter: &OrderFilter, size: u32) -> Vec<OrderSummary> {
    let mut all = Vec::new();
    let mut after: Option<PageCursor> = None;
    for _ in 0..100 {
        let page = store
            .orders_page(filter, after.as_ref(), size)
            .await
            .expect("page");
        assert!(page.orders.len() <= size as usize);
        all.extend(page.orders);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
    panic!("more than 100 pages");
}

/// Pages list the orders newest first, each once, filtered by state, short and `order_id`.
pub(crate) async fn pages_of_orders<S: Store>(store: &S) {
    for i in 0..7 {
        let mut new = order(&format!("n{i}"));
        if i % 3 == 0 {
            new.short = "report".to_owned();
        }
        store
            .accept(new, "one", LONG)
            .await
            .expect("accept")
            .expect("new");
        if i % 2 == 0 {
            // Orders received at different milliseconds, and some at the same.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut other = order("x-other");
    other.short = "report".to_owned();
    let dead = store
        .accept(other, "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .settle("x-other", dead.fence, Settle::Dead("400".to_owned()), posts(1))
            .await
            .expect("settle")
    );

    let everything = all_pages(store, &OrderFilter::default(), 100).await;
    assert_eq!(everything.len(), 8);
    let keys: Vec<(i64, &str)> = everything
        .iter()
        .map(|o| (o.received_at, o.id.as_str()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "newest first");
    assert_eq!(everything[0].id, "x-other");
    for size in [1, 3, 8] {
        assert_eq!(
            all_pages(store, &OrderFilter::default(), size).await,
            everything,
            "pages of {size}"
        );
    }
    let last = store
        .orders_page(&OrderFilter::default(), None, 8)
        .await
        .expect("page");
    assert_eq!(last.next, None);

    let ids = |orders: Vec<OrderSummary>| -> Vec<String> {
        let mut ids: Vec<String> = orders.into_iter().map(|o| o.id).collect();
        ids.sort();
        ids
    };
    let report = OrderFilter {
        short: Some("report".to_owned()),
        ..OrderFilter::default()
    };
    assert_eq!(
        ids(all_pages(store, &report, 2).await),
        ["n0", "n3", "n6", "x-other"]
    );
    let dead_reports = OrderFilter {
        state: Some(OrderState::Dead),
        ..report.clone()
    };
    let dead = all_pages(store, &dead_reports, 2).await;
    assert_eq!(ids(dead.clone()), ["x-other"]);
    assert_eq!(dead[0].last_error.as_deref(), Some("400"));
    assert_eq!(
        (dead[0].attempts, dead[0].runs, dead[0].payload_purged),
        (1, 0, false)
    );
    let received = OrderFilter {
        state: Some(OrderState::Received),
        ..OrderFilter::default()
    };
    assert_eq!(all_pages(store, &received, 3).await.len(), 7);
    let exact = OrderFilter {
        id: Some(IdMatch::Exact("n4".to_owned())),
        ..OrderFilter::default()
    };
    assert_eq!(ids(all_pages(store, &exact, 3).await), ["n4"]);
    let prefix = OrderFilter {
        id: Some(IdMatch::Prefix("n".to_owned())),
        ..report
    };
    assert_eq!(ids(all_pages(store, &prefix, 3).await), ["n0", "n3", "n6"]);
    let none = OrderFilter {
        id: Some(IdMatch::Exact("n".to_owned())),
        ..OrderFilter::default()
    };
    assert!(all_pages(store, &none, 3).await.is_empty());
}

/// Counts per state, per hour, run times per short and the callback acceptance rate.
pub(crate) async fn overview_counts<S: Store>(store: &S) {
    let since = now_ms() - 1;
    assert!(store.state_counts().await.expect("counts").is_empty());
    assert!(store.hourly(since).await.expect("hourly").is_empty());
    assert!(store.run_times(since).await.expect("times").is_empty());
    assert_eq!(store.callback_rate(since).await.expect("rate").attempts, 0);
    let outcomes = [
        RunOutcome::Ok,
        RunOutcome::Ok,
        RunOutcome::Timeout,
        RunOutcome::Ok,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let id = format!("v{i}");
        let mut new = order(&id);
        if i == 3 {
            new.short = "report".to_owned();
        }
        let claimed = store
            .accept(new, "one", LONG)
            .await
            .expect("accept")
            .expect("new");
        assert_eq!(started(store, &id, claimed.fence).await, Some(1));
        let run = RunEnd {
            run: 1,
            outcome,
            error: None,
        };
        assert!(
            store
                .save_result(&id, claimed.fence, Bytes::from_static(b"{}"), Some(run))
                .await
                .expect("save")
        );
        let (settle, attempts) = match i {
            0 | 2 => (
                Settle::Delivered,
                vec![post(1, Some(200), None, AttemptResult::Accepted)],
            ),
            _ => (
                Settle::Dead("400".to_owned()),
                vec![
                    post(1, Some(503), None, AttemptResult::Replaced),
                    post(2, Some(400), Some("bad"), AttemptResult::Dead),
                ],
            ),
        };
        assert!(
            store
                .settle(&id, claimed.fence, settle, attempts)
                .await
                .expect("settle")
        );
    }
    store
        .accept(order("v4"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(
        store.state_counts().await.expect("counts"),
        [
            (OrderState::Received, 1),
            (OrderState::Delivered, 2),
            (OrderState::Dead, 2)
        ]
    );
    let hourly = store.hourly(since).await.expect("hourly");
    let received: u64 = hourly.iter().map(|h| h.received).sum();
    let failed: u64 = hourly.iter().map(|h| h.failed).sum();
    // v2 timed out; v1 and v3 are dead.
    assert_eq!((received, failed), (5, 3));
    assert!(
        hourly
            .iter()
            .all(|h| h.hour % super::history::HOUR_MS == 0 && h.hour <= now_ms())
    );
    assert!(store.hourly(now_ms() + 1).await.expect("hourly").is_empty());
    let times = store.run_times(since).await.expect("times");
    let shorts: Vec<(&str, u64)> = times.iter().map(|t| (t.short.as_str(), t.runs)).collect();
    assert_eq!(shorts, [("echo", 3), ("report", 1)]);
    assert!(
        times.iter().all(|t| 0 <= t.p50_ms && t.p50_ms <= t.p95_ms),
        "{times:?}"
    );
    let rate = store.callback_rate(since).await.expect("rate");
    assert_eq!((rate.attempts, rate.accepted), (6, 2));
    assert_eq!(store.callback_rate(now_ms() + 1).await.expect("rate").attempts, 0);
}

/// Failing an order by hand: received, delivering and paused orders nobody works on get a failure
/// callback delivered by the normal path; a running order, or one whose callback is being sent,
/// is left alone; the action is in the history.
pub(crate) async fn fail_now_stuck_orders<S: Store>(store: &S) {
    assert_eq!(
        fail_now(store, "nobody", "stuck").await.expect("fail"),
        FailedNow::Unknown
    );

    // Waiting for a slot under a live lease: failed, and the holder's run is refused.
    let payload: &'static [u8] = br#"{"order_id":"f1","job_token":"secret-token"}"#;
    let mut new = order("f1");
    new.payload = Bytes::from_static(payload);
    new.job_token = job_token_span(payload);
    let waiting = store
        .accept(new, "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(
        fail_now(store, "f1", "stuck on a bad input").await.expect("fail"),
        FailedNow::Failing
    );
    assert_eq!(started(store, "f1", waiting.fence).await, None);
    assert_eq!(
        fail_now(store, "f1", "twice").await.expect("fail"),
        FailedNow::Failing
    );
    let claimed = store.claim("two", LONG, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let body: serde_json::Value =
        serde_json::from_slice(claimed[0].result.as_deref().expect("a result")).expect("json");
    assert_eq!(
        body,
        serde_json::json!({"ok": false, "order_id": "f1", "error": "twice"})
    );
    assert_eq!(
        payload_of(store, &claimed[0]).await,
        Bytes::from_static(br#"{"order_id":"f1","job_token":null}"#)
    );
    // Its callback is being sent: left alone.
    assert_eq!(
        fail_now(store, "f1", "again").await.expect("fail"),
        FailedNow::Busy
    );
    let accepted = vec![post(1, Some(200), None, AttemptResult::Accepted)];
    assert!(
        store
            .settle("f1", claimed[0].fence, Settle::Delivered, accepted)
            .await
            .expect("settle")
    );
    assert_eq!(
        fail_now(store, "f1", "again").await.expect("fail"),
        FailedNow::NotStuck(OrderState::Delivered)
    );
    assert_eq!(
        events(store, "f1").await,
        [
            "received",
            "operator stuck on a bad input",
            "operator twice",
            "run 1 open ",
            "callback 1 200 accepted "
        ]
    );
    let detail = store.detail("f1").await.expect("detail").expect("known");
    assert!(detail.summary.failed_by_operator);
    assert_eq!(detail.summary.outcome, None);

    // Running under a live lease: left alone; once the lease expired (the instance is gone), failed.
    let running = store
        .accept(order("f2"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(started(store, "f2", running.fence).await, Some(1));
    assert_eq!(
        fail_now(store, "f2", "stuck").await.expect("fail"),
        FailedNow::Busy
    );
    let gone = store
        .accept(order("f3"), "one", EXPIRED)
        .await
        .expect("accept")
        .expect("new");
    assert_eq!(started(store, "f3", gone.fence).await, Some(1));
    assert_eq!(
        fail_now(store, "f3", "stuck").await.expect("fail"),
        FailedNow::Failing
    );

    // Paused, not leased: failed; dead: not stuck (a retry redelivers it).
    let paused = store
        .accept(order("f4"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .save_result("f4", paused.fence, Bytes::from_static(b"{}"), None)
            .await
            .expect("save")
    );
    let probe = Settle::Paused {
        at: now_ms() + 60_000,
    };
    assert!(
        store
            .settle("f4", paused.fence, probe, posts(1))
            .await
            .expect("settle")
    );
    assert_eq!(
        fail_now(store, "f4", "refunded").await.expect("fail"),
        FailedNow::Failing
    );
    let record = store.get("f4").await.expect("get").expect("record");
    assert_eq!(record.state, OrderState::Delivering);
    assert!(record.next_at.is_some_and(|at| at <= now_ms()));
    let dead = store
        .accept(order("f5"), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .settle("f5", dead.fence, Settle::Dead("400".to_owned()), posts(1))
            .await
            .expect("settle")
    );
    assert_eq!(
        fail_now(store, "f5", "x").await.expect("fail"),
        FailedNow::NotStuck(OrderState::Dead)
    );
    let hourly = store.hourly(0).await.expect("hourly");
    // f1, f3, f4 were failed by hand; f5 is dead.
    assert_eq!(hourly.iter().map(|h| h.failed).sum::<u64>(), 4);
}
