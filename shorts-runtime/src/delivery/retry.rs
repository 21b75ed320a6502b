//! The one retry policy: the schedule of delays between attempts, the slower pace while the
//! platform refuses the secret, and the `Retry-After` rule. Uploads retry by it in process
//! ([`RetryPolicy::run`]); callbacks retry by it across the store, one attempt per claim
//! ([`RetryPolicy::next_wait`]).

use std::future::Future;
use std::time::Duration;

use tracing::{error, warn};

use crate::config::Config;

/// Longest wait a `Retry-After` header may impose on one attempt.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What one HTTP exchange means for the retry loop.
pub(crate) enum Attempt<T> {
    /// Finished, well or badly: no retry.
    Done(T),
    /// A retryable failure: try again at the next step of the schedule (or later, if asked).
    /// `status` is the HTTP status answered, `None` for a transport error.
    Retry {
        reason: String,
        after: Option<Duration>,
        status: Option<u16>,
    },
    /// The platform refused the secret: try again slowly, without using up the schedule.
    Unauthorized,
}

/// Every step of the schedule failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Exhausted {
    /// Attempts made, 401s included.
    pub(crate) attempts: u32,
    /// Why the last attempt failed.
    pub(crate) last: String,
}

/// When to try again after a failure.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    /// The delay before each attempt, the first one included; each is jittered by ±20 %.
    schedule: Vec<Duration>,
    /// The delay between attempts while the platform answers 401.
    unauthorized: Duration,
}

impl RetryPolicy {
    /// A policy of `schedule`, waiting `unauthorized` between attempts the platform answers 401.
    pub(crate) fn new(schedule: Vec<Duration>, unauthorized: Duration) -> Self {
        Self {
            schedule,
            unauthorized,
        }
    }

    /// The policy `SHORTS_RETRY_SCHEDULE` and `SHORTS_UNAUTHORIZED_RETRY` configure.
    pub(crate) fn from_config(config: &Config) -> Self {
        Self::new(config.retry_schedule.clone(), config.unauthorized_retry)
    }

    /// The wait after a 401: it does not use up a step of the schedule.
    pub(crate) fn unauthorized(&self) -> Duration {
        self.unauthorized
    }

    /// The wait after `used` steps of the schedule ended in a retryable failure: the schedule's
    /// next step, jittered, or longer when the platform asked with `Retry-After` (at most an
    /// hour); `None` once the schedule is used up.
    pub(crate) fn next_wait(&self, used: usize, after: Option<Duration>) -> Option<Duration> {
        let step = jitter(*self.schedule.get(used)?);
        Some(after.map_or(step, |after| after.min(MAX_RETRY_AFTER).max(step)))
    }

    /// Runs `attempt` until it is done: after each retryable failure it waits for the next step
    /// of the schedule (see [`RetryPolicy::next_wait`]); after a 401 it waits
    /// [`RetryPolicy::unauthorized`]. Returns the result and the number of attempts.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        mut attempt: F,
    ) -> Result<(T, u32), Exhausted>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let mut attempts = 0u32;
        // Steps of the schedule used: 401s do not use them.
        let mut steps = 1;
        let mut wait = jitter(self.schedule.first().copied().unwrap_or_default());
        loop {
            tokio::time::sleep(wait).await;
            attempts += 1;
            match attempt().await {
                Attempt::Done(done) => return Ok((done, attempts)),
                Attempt::Unauthorized => {
                    error!(
                        what,
                        attempts,
                        retry_in = %crate::logs::duration(self.unauthorized),
                        "the platform refused the callback secret (401); check SHORTS_CALLBACK_SECRET"
                    );
                    wait = jitter(self.unauthorized);
                }
                Attempt::Retry { reason, after, .. } => {
                    let Some(next) = self.next_wait(steps, after) else {
                        return Err(Exhausted {
                            attempts,
                            last: reason,
                        });
                    };
                    steps += 1;
                    warn!(what, attempts, %reason, retry_in = %crate::logs::duration(next), "failed; will retry");
                    wait = next;
                }
            }
        }
    }
}

/// ±20 % around `delay`, so that retries of many orders do not arrive together.
fn jitter(delay: Duration) -> Duration {
    if delay.is_zero() {
        return delay;
    }
    delay.mul_f64(0.8 + 0.4 * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::RefCell;
    use tokio::time::Instant;

    /// What a replayed exchange ends with.
    #[derive(Debug, PartialEq, Eq)]
    enum Delivered {
        Accepted,
        Rejected,
    }

    type Outcome = Result<(Delivered, u32), Exhausted>;

    /// Replays `script` as the platform's answers, recording when each attempt was made.
    async fn replay(schedule: &[Duration], script: Vec<Attempt<Delivered>>) -> (Outcome, Vec<Duration>) {
        let policy = RetryPolicy::new(schedule.to_vec(), Duration::from_secs(600));
        let start = Instant::now();
        let times = RefCell::new(Vec::new());
        let script = RefCell::new(script.into_iter());
        let outcome = policy
            .run("test", || {
                times.borrow_mut().push(start.elapsed());
                let next = script.borrow_mut().next();
                async move { next.unwrap_or(Attempt::Done(Delivered::Accepted)) }
            })
            .await;
        (outcome, times.into_inner())
    }

    fn accepted(attempts: u32) -> Outcome {
        Ok((Delivered::Accepted, attempts))
    }

    fn retryable() -> Attempt<Delivered> {
        Attempt::Retry {
            reason: "503".into(),
            after: None,
            status: Some(503),
        }
    }

    fn within(actual: Duration, expected: Duration) -> bool {
        actual >= expected.mul_f64(0.8) && actual <= expected.mul_f64(1.2) + Duration::from_millis(5)
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_schedule_spans_about_three_days() {
        let schedule = Config::default().retry_schedule;
        let (outcome, times) = replay(&schedule, (0..12).map(|_| retryable()).collect()).await;
        assert_eq!(
            outcome,
            Err(Exhausted {
                attempts: 12,
                last: "503".into()
            })
        );
        assert_eq!(times.len(), 12);
        assert!(
            times[0] < Duration::from_millis(5),
            "the first attempt is immediate"
        );
        for (i, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                within(gap, schedule[i + 1]),
                "gap {i}: {gap:?} vs {:?}",
                schedule[i + 1]
            );
        }
        let total = times[11];
        let days = total.as_secs_f64() / 86_400.0;
        assert!((2.4..3.6).contains(&days), "{days} days");
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_failures_stops_retrying() {
        let schedule = [0, 5, 30].map(Duration::from_secs);
        let (outcome, times) = replay(&schedule, vec![retryable(), retryable()]).await;
        assert_eq!(outcome, accepted(3));
        assert_eq!(times.len(), 3);
        assert!(within(times[1], Duration::from_secs(5)));
        assert!(within(times[2] - times[1], Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_not_retried() {
        let schedule = [0, 5].map(Duration::from_secs);
        let refused = Attempt::Done(Delivered::Rejected);
        let (outcome, times) = replay(&schedule, vec![refused]).await;
        assert!(matches!(outcome, Ok((Delivered::Rejected, 1))));
        assert_eq!(times.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unauthorized_retries_slowly_without_using_up_the_schedule() {
        let schedule = [0, 5].map(Duration::from_secs);
        let script = (0..20)
            .map(|_| Attempt::Unauthorized)
            .chain([retryable()])
            .collect();
        let (outcome, times) = replay(&schedule, script).await;
        // 20 refusals of the secret, one 503, then success on the schedule's second step.
        assert_eq!(outcome, accepted(22));
        for pair in times[..21].windows(2) {
            assert!(within(pair[1] - pair[0], Duration::from_secs(600)));
        }
        assert!(within(times[21] - times[20], Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_lengthens_a_step() {
        let schedule = [0, 5, 5].map(Duration::from_secs);
        let slow_down = Attempt::Retry {
            reason: "429".into(),
            after: Some(Duration::from_secs(60)),
            status: Some(429),
        };
        let (_, times) = replay(&schedule, vec![slow_down]).await;
        assert!(within(times[1], Duration::from_secs(60)));
    }

    #[test]
    fn next_wait_follows_the_schedule_and_retry_after() {
        let policy = RetryPolicy::new([0, 10, 100].map(Duration::from_secs).to_vec(), Duration::ZERO);
        assert!(
            policy
                .next_wait(1, None)
                .is_some_and(|w| within(w, Duration::from_secs(10)))
        );
        // The platform's Retry-After wins when longer, capped at an hour, and is not jittered.
        assert_eq!(
            policy.next_wait(1, Some(Duration::from_secs(50))),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            policy.next_wait(1, Some(Duration::from_secs(99_999))),
            Some(MAX_RETRY_AFTER)
        );
        assert!(
            policy
                .next_wait(2, Some(Duration::from_secs(1)))
                .is_some_and(|w| w >= Duration::from_secs(80))
        );
        assert_eq!(policy.next_wait(3, None), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_secs(100);
        for _ in 0..1000 {
            let d = jitter(base);
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
