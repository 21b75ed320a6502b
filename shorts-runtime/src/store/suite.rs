//! One suite for every store: the same calls, the same answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Claimed, KEPT_BODY_LIMIT, NewOrder, OrderState, Retried, Settle, Store, now_ms, retry};
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
        started: false,
    }
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
        $crate::store::suite::cases!(@each $fixture, |store| &**store; accept_once, leases_and_fences, results_and_retries, long_bodies_dropped_once_delivered, dead_and_retry, paused, heartbeat_and_release, release_one, ordering_and_limits, job_token_erased_with_the_result, dead_payloads_purged, purge, counts_by_state);
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
            .save_result(id, fence, Bytes::from_static(b"{}"))
            .await
            .expect("save")
    );
    assert!(
        store
            .settle(id, fence, Settle::Delivered, 1)
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
            .save_result("b1", first.fence, Bytes::from_static(b"late"))
            .await
            .expect("save")
    );
    assert!(
        !store
            .settle("b1", first.fence, Settle::Delivered, 1)
            .await
            .expect("settle")
    );
    assert!(
        store
            .save_result("b1", again.fence, Bytes::from_static(b"{\"ok\":true}"))
            .await
            .expect("save")
    );
    let record = store.get("b1").await.expect("get").expect("record");
    assert_eq!(record.result.as_deref(), Some(&b"{\"ok\":true}"[..]));
    assert_eq!(record.state, OrderState::Delivering);
    assert!(
        store
            .settle("b1", again.fence, Settle::Delivered, 1)
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
                .save_result(id, claimed.fence, body.clone())
                .await
                .expect("save")
        );
        let retry = Settle::Retry {
            at: now_ms() - 1,
            steps: 1,
            error: "503".to_owned(),
        };
        assert!(store.settle(id, claimed.fence, retry, 1).await.expect("settle"));
        let record = store.get(id).await.expect("get").expect("record");
        assert_eq!(record.result.as_ref(), Some(body), "kept while delivering");
        let again = store.claim("one", LONG, 100).await.expect("claim");
        let again = again.into_iter().find(|c| c.id == id).expect("due retry claimed");
        assert_eq!(again.result.as_ref(), Some(body));
        assert!(
            store
                .settle(id, again.fence, Settle::Delivered, 1)
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
            .save_result("l3", claimed.fence, long.clone())
            .await
            .expect("save")
    );
    assert!(
        !store
            .settle("l3", claimed.fence - 1, Settle::Delivered, 1)
            .await
            .expect("settle")
    );
    assert!(
        store
            .settle("l3", claimed.fence, Settle::Dead("400".to_owned()), 1)
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
            .settle("l3", again.fence, Settle::Delivered, 1)
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
            .save_result("c1", claimed.fence, Bytes::from_static(b"body"))
            .await
            .expect("save")
    );
    let later = now_ms() + 60_000;
    let retry = Settle::Retry {
        at: later,
        steps: 1,
        error: "503".to_owned(),
    };
    assert!(store.settle("c1", claimed.fence, retry, 1).await.expect("settle"));
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
            .settle("c1", claimed.fence - 1, due.clone(), 1)
            .await
            .expect("settle")
    );
    assert!(store.settle("c1", claimed.fence, due, 1).await.expect("settle"));
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
            .save_result("d1", claimed.fence, Bytes::from_static(b"body"))
            .await
            .expect("save")
    );
    assert!(
        store
            .settle("d1", claimed.fence, Settle::Dead("400".to_owned()), 1)
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
            .save_result("e1", claimed.fence, Bytes::from_static(b"body"))
            .await
            .expect("save")
    );
    let probe = Settle::Paused { at: now_ms() - 1 };
    assert!(store.settle("e1", claimed.fence, probe, 1).await.expect("settle"));
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

/// Accepts `id` and stores a result for it; the claim's fence.
async fn with_result<S: Store>(store: &S, id: &str) -> i64 {
    let claimed = store
        .accept(order(id), "one", LONG)
        .await
        .expect("accept")
        .expect("new");
    assert!(
        store
            .save_result(id, claimed.fence, Bytes::from_static(b"body"))
            .await
            .expect("save")
    );
    claimed.fence
}

pub(crate) async fn counts_by_state<S: Store>(store: &S) {
    assert_eq!(store.count_by_state().await.expect("count"), [0; 5]);
    for id in ["k1", "k2", "k3"] {
        store.accept(order(id), "one", LONG).await.expect("accept");
    }
    with_result(store, "k4").await;
    let fence = with_result(store, "k5").await;
    let probe = Settle::Paused {
        at: now_ms() + 60_000,
    };
    assert!(store.settle("k5", fence, probe, 1).await.expect("settle"));
    for id in ["k6", "k7"] {
        let claimed = store
            .accept(order(id), "one", LONG)
            .await
            .expect("accept")
            .expect("new");
        settle_delivered(store, id, claimed.fence).await;
    }
    let fence = with_result(store, "k8").await;
    let dead = Settle::Dead("400".to_owned());
    assert!(store.settle("k8", fence, dead, 1).await.expect("settle"));
    // In the order of `OrderState::ALL`: received, delivering, paused, delivered, dead.
    assert_eq!(store.count_by_state().await.expect("count"), [3, 1, 1, 2, 1]);
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
            .save_result("t3", old_fence("t3") - 1, late)
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
        assert!(store.save_result(id, fence, body.clone()).await.expect("save"));
        // A replacement body (after a 413) leaves the erased webhook body as it is.
        assert!(store.save_result(id, fence, body).await.expect("save"));
        let due = Settle::Retry {
            at: now_ms() - 1,
            steps: 1,
            error: "503".to_owned(),
        };
        assert!(store.settle(id, fence, due, 1).await.expect("settle"));
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
                .settle(id, stored(id).fence, Settle::Delivered, 1)
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
                .save_result(id, fences[id], body.clone())
                .await
                .expect("save")
        );
    }
    let dead = |error: &str| Settle::Dead(error.to_owned());
    assert!(
        store
            .settle("q1", fences["q1"], dead("400"), 1)
            .await
            .expect("settle")
    );
    let later = Settle::Retry {
        at: now_ms() + 60_000,
        steps: 1,
        error: "503".to_owned(),
    };
    assert!(store.settle("q2", fences["q2"], later, 1).await.expect("settle"));
    assert!(
        store
            .settle("q3", fences["q3"], dead("gone"), 0)
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
            .settle("q1", again.fence, Settle::Delivered, 1)
            .await
            .expect("settle")
    );
    let due = Settle::Retry {
        at: now_ms() - 1,
        steps: 1,
        error: "503".to_owned(),
    };
    assert!(store.settle("q2", fences["q2"], due, 1).await.expect("settle"));
    let taken = store.claim("two", LONG, 100).await.expect("claim");
    let q2 = taken.iter().find(|c| c.id == "q2").expect("due retry claimed");
    assert_eq!(
        payload_of(store, q2).await,
        Bytes::from_static(br#"{"order_id":"x"}"#)
    );
    assert!(
        store
            .settle("q2", q2.fence, Settle::Delivered, 1)
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
            .save_result("p-dead", dead.fence, Bytes::from_static(b"x"))
            .await
            .expect("save")
    );
    assert!(
        store
            .settle("p-dead", dead.fence, Settle::Dead("400".to_owned()), 1)
            .await
            .expect("settle")
    );
    let delivered = store
        .list(Some(OrderState::Delivered), 10_000)
        .await
        .expect("list")
        .len() as u64;
    assert_eq!(delivered, 2);
    // Nothing is older than a minute ago; everything delivered is older than a minute from now.
    assert_eq!(store.purge(now_ms() - 60_000).await.expect("purge"), 0);
    assert_eq!(store.purge(now_ms() + 60_000).await.expect("purge"), delivered);
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
                .save_result(&id, if stale { fence - 1 } else { fence }, body)
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
                .settle(&id, if stale { fence - 1 } else { fence }, settle, 1)
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
