//! Connection limits: the cap on open connections, the header and idle timeouts, and the warnings
//! about connections refused or cut off, written at most once a second with a count.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

/// The most connections served at once by default, whatever the open-file limit.
const MAX_CONNECTIONS_CEILING: usize = 10_000;

/// The open-file limit in force (the soft `RLIMIT_NOFILE`), where the platform has one.
pub(crate) fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft open-file limit to the hard limit, and returns the limit then in force.
///
/// # Errors
///
/// When the limit cannot be read or set, or the platform has none.
pub(crate) fn raise_open_file_limit() -> io::Result<u64> {
    #[cfg(unix)]
    {
        let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
        rlimit::increase_nofile_limit(hard)
    }
    #[cfg(not(unix))]
    {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Three quarters of the open-file limit, at most 10,000: the rest stays for the store, the
/// callbacks and the shorts' own files, so that accepting never runs out of descriptors below the
/// cap.
pub(crate) fn default_max_connections(open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(limit) => {
            let share = (limit / 4).saturating_mul(3) + (limit % 4) * 3 / 4;
            usize::try_from(share)
                .unwrap_or(MAX_CONNECTIONS_CEILING)
                .clamp(1, MAX_CONNECTIONS_CEILING)
        }
        None => MAX_CONNECTIONS_CEILING,
    }
}

/// How long a connection may wait before it is closed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From the connection's start, or the first byte of a later request, to the end of the
    /// request's headers.
    pub(crate) header: Duration,
    /// From the end of a response to the first byte of the next request on the same connection.
    pub(crate) idle: Duration,
}

/// The open connections, at most `cap` of them. At the cap, a new connection takes the place of
/// the one idle for longest (no request in flight); when every connection has a request in
/// flight, the new one is refused.
pub(crate) struct Connections {
    cap: usize,
    timeouts: Timeouts,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Connections not yet closed, those making room included.
    alive: AtomicUsize,
    closed: Notify,
    tally: Arc<Tally>,
}

impl Connections {
    pub(crate) fn new(cap: usize, timeouts: Timeouts, tally: Arc<Tally>) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            timeouts,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            alive: AtomicUsize::new(0),
            closed: Notify::new(),
            tally,
        })
    }

    /// Takes a new connection in, closing the longest idle one when at the cap; `None` when it
    /// must be closed because every connection has a request in flight.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= self.cap {
            let longest_idle = open
                .values()
                .filter(|conn| conn.in_flight.load(Relaxed) == 0)
                .min_by_key(|conn| (conn.waiting_since.load(Relaxed), conn.id))
                .map(|conn| conn.id);
            let Some(evicted) = longest_idle.and_then(|id| open.remove(&id)) else {
                self.tally.refused.add();
                return None;
            };
            evicted.evict();
            self.tally.evicted.add();
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let conn = Arc::new(Conn {
            id,
            epoch: self.epoch,
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            waiting_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        conn.waiting_since.store(conn.now(), Relaxed);
        open.insert(id, Arc::clone(&conn));
        self.alive.fetch_add(1, Relaxed);
        Some(Admitted {
            connections: Arc::clone(self),
            conn,
        })
    }

    /// Waits until the connections that made room are closed, so that open descriptors stay
    /// within the cap (plus the one being accepted).
    pub(crate) async fn settle(&self) {
        while self.alive.load(Relaxed) > self.cap {
            // A wake-up sent before this wait is kept by `notify_one`, so none is lost.
            self.closed.notified().await;
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A connection's place under the cap, given up when dropped.
pub(crate) struct Admitted {
    connections: Arc<Connections>,
    conn: Arc<Conn>,
}

impl Admitted {
    /// The connection's clock.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Completes when the connection must close, and says why.
    pub(crate) async fn expired(&self) -> Expiry {
        self.conn.expired(self.connections.timeouts).await
    }

    /// The counters of events worth a warning.
    pub(crate) fn tally(&self) -> &Tally {
        &self.connections.tally
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if open
            .get(&self.conn.id)
            .is_some_and(|c| Arc::ptr_eq(c, &self.conn))
        {
            open.remove(&self.conn.id);
        }
        drop(open);
        self.connections.alive.fetch_sub(1, Relaxed);
        self.connections.closed.notify_one();
    }
}

/// Why a connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// A request's headers did not arrive in time.
    HeadersLate,
    /// No request came within the idle timeout.
    Idle,
    /// It made room for a new connection at the cap.
    Evicted,
}

/// What one connection is doing, as far as its timeouts go: times are milliseconds since the
/// registry's epoch.
pub(crate) struct Conn {
    id: u64,
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Whether a response has been given: from then on the idle timeout applies between requests.
    served: AtomicBool,
    /// When the connection started waiting for a request: opened, or its last response ready.
    waiting_since: AtomicU64,
    /// One more than when the first byte of the next request arrived; 0 before that.
    head_since: AtomicU64,
    evicted: AtomicBool,
    wake: Notify,
}

impl Conn {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, millis: u64) -> Instant {
        self.epoch + Duration::from_millis(millis)
    }

    /// Bytes arrived: the first ones after a response start the header timeout.
    pub(crate) fn on_read(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(self.now() + 1, Relaxed);
            self.wake.notify_one();
        }
    }

    /// A request's headers arrived: no timeout runs until its response is ready.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.wake.notify_one();
        InFlight(Arc::clone(self))
    }

    /// Starts the wait for a request again (a connection asked to close gets one more period).
    pub(crate) fn restart(&self) {
        self.waiting_since.store(self.now(), Relaxed);
        self.head_since.store(0, Relaxed);
    }

    fn evict(&self) {
        self.evicted.store(true, Relaxed);
        self.wake.notify_one();
    }

    /// When the connection must close if nothing changes, and why; `None` while a request is in
    /// flight.
    fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let waiting = self.at(self.waiting_since.load(Relaxed));
        if !self.served.load(Relaxed) {
            return Some((waiting + timeouts.header, Expiry::HeadersLate));
        }
        match self.head_since.load(Relaxed) {
            0 => Some((waiting + timeouts.idle, Expiry::Idle)),
            head => Some((self.at(head - 1) + timeouts.header, Expiry::HeadersLate)),
        }
    }

    async fn expired(&self, timeouts: Timeouts) -> Expiry {
        loop {
            if self.evicted.load(Relaxed) {
                return Expiry::Evicted;
            }
            match self.deadline(timeouts) {
                None => self.wake.notified().await,
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake.notified() => {}
                    }
                }
            }
        }
    }
}

/// A request in flight on a connection; its response is ready when this is dropped.
pub(crate) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0;
        if conn.in_flight.fetch_sub(1, Relaxed) == 1 {
            conn.served.store(true, Relaxed);
            conn.restart();
        }
        conn.wake.notify_one();
    }
}

/// A connection's stream, telling its clock when bytes arrive.
pub(crate) struct Watched<S> {
    stream: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub(crate) fn new(stream: S, conn: Arc<Conn>) -> Self {
        Self { stream, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.on_read();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// A count of events, reported and reset by [`Tally::report`].
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    fn take(&self) -> u64 {
        self.0.swap(0, Relaxed)
    }
}

/// Connection events worth a warning, counted so that a flood of them writes one line a second
/// rather than one line each.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Connections closed because a request's headers did not arrive within the header timeout.
    pub(crate) headers_late: Counter,
    /// Connections closed at once: at the cap, with a request in flight on every connection.
    pub(crate) refused: Counter,
    /// Idle connections closed to make room for new ones at the cap.
    pub(crate) evicted: Counter,
    /// Failed accepts (e.g. out of file descriptors), with the last error.
    pub(crate) accept_failed: Counter,
    last_accept_error: Mutex<Option<String>>,
}

impl Tally {
    /// Counts a failed accept.
    pub(crate) fn accept_failed(&self, error: &io::Error) {
        self.accept_failed.add();
        *self
            .last_accept_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }

    /// Writes one warning per kind of event counted since the last report, with its count.
    pub(crate) fn report(&self, cap: usize) {
        let late = self.headers_late.take();
        if late > 0 {
            warn!(
                count = late,
                "connections closed: request headers not received within SHORTS_HEADER_TIMEOUT"
            );
        }
        let evicted = self.evicted.take();
        if evicted > 0 {
            warn!(
                count = evicted,
                max_connections = cap,
                "idle connections closed to make room for new ones (SHORTS_MAX_CONNECTIONS)"
            );
        }
        let refused = self.refused.take();
        if refused > 0 {
            warn!(
                count = refused,
                max_connections = cap,
                "connections refused: every connection has a request in flight (SHORTS_MAX_CONNECTIONS)"
            );
        }
        let failed = self.accept_failed.take();
        if failed > 0 {
            let error = self
                .last_accept_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            warn!(count = failed, %error, "accept failed");
        }
    }

    /// Reports every `period`, forever.
    pub(crate) async fn report_every(self: Arc<Self>, period: Duration, cap: usize) {
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.report(cap);
        }
    }
}

/// A file descriptor kept in reserve: when accepting fails for want of descriptors, it is given
/// up for a moment so that the waiting connection can be accepted and closed at once instead of
/// waiting in the kernel's queue until its client gives up.
pub(crate) struct Spare(Option<std::fs::File>);

impl Spare {
    pub(crate) fn new() -> Self {
        Self(Self::open())
    }

    fn open() -> Option<std::fs::File> {
        #[cfg(unix)]
        {
            std::fs::File::open("/dev/null").ok()
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// After a failed accept: closes one waiting connection using the spare descriptor, if there
    /// is one waiting; whether the spare was there to use.
    pub(crate) fn shed(&mut self, listener: &tokio::net::TcpListener) -> bool {
        let Some(spare) = self.0.take() else {
            self.0 = Self::open();
            return false;
        };
        drop(spare);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Ok((stream, _))) = listener.poll_accept(&mut cx) {
            drop(stream);
        }
        self.0 = Self::open();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    fn connections(cap: usize) -> Arc<Connections> {
        Connections::new(cap, TIMEOUTS, Arc::new(Tally::default()))
    }

    #[test]
    fn three_quarters_of_the_open_file_limit_at_most_ten_thousand() {
        assert_eq!(default_max_connections(Some(256)), 192);
        assert_eq!(default_max_connections(Some(1024)), 768);
        assert_eq!(default_max_connections(Some(1_048_576)), 10_000);
        assert_eq!(default_max_connections(Some(u64::MAX)), 10_000);
        assert_eq!(default_max_connections(Some(1)), 1);
        assert_eq!(default_max_connections(None), 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_to_send_a_request() {
        let open = connections(10);
        let admitted = open.admit().unwrap_or_else(|| panic!("admitted"));
        let start = Instant::now();
        assert_eq!(admitted.expired().await, Expiry::HeadersLate);
        assert_eq!(start.elapsed(), TIMEOUTS.header);
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_timeout_applies_then_the_header_timeout() {
        let open = connections(10);
        let admitted = open.admit().unwrap_or_else(|| panic!("admitted"));
        let conn = Arc::clone(admitted.conn());
        conn.on_read();
        let request = conn.begin();
        // No timeout while a request is in flight.
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), admitted.expired())
                .await
                .is_err()
        );
        drop(request);
        let start = Instant::now();
        assert_eq!(admitted.expired().await, Expiry::Idle);
        assert_eq!(start.elapsed(), TIMEOUTS.idle);

        // A request that starts and stalls has the header timeout from its first byte.
        conn.restart();
        tokio::time::advance(Duration::from_secs(30)).await;
        conn.on_read();
        let start = Instant::now();
        assert_eq!(admitted.expired().await, Expiry::HeadersLate);
        assert_eq!(start.elapsed(), TIMEOUTS.header);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let open = connections(3);
        let first = open.admit().unwrap_or_else(|| panic!("first"));
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = open.admit().unwrap_or_else(|| panic!("second"));
        let third = open.admit().unwrap_or_else(|| panic!("third"));
        let _busy = first.conn().begin();
        let fourth = open.admit().unwrap_or_else(|| panic!("fourth"));
        // The first has a request in flight: the second, idle longest, gave its place.
        assert_eq!(second.expired().await, Expiry::Evicted);
        assert_eq!(open.len(), 3);
        assert_eq!(open.tally.evicted.take(), 1);

        let _busy = (third.conn().begin(), fourth.conn().begin());
        assert!(open.admit().is_none(), "every connection has a request in flight");
        assert_eq!(open.tally.refused.take(), 1);
        // Until the connection that made room is closed, there is one too many.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), open.settle())
                .await
                .is_err()
        );
        drop(second);
        open.settle().await;
        assert_eq!(open.len(), 3, "an evicted connection's place is already taken");
        drop(first);
        assert!(open.admit().is_some());
    }

    /// Lines written by `tracing` on this thread.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_events_write_one_line_a_second_with_their_count() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let tally = Arc::new(Tally::default());
        let reporter = tokio::spawn(Arc::clone(&tally).report_every(Duration::from_secs(1), 4));
        for _ in 0..500 {
            tally.headers_late.add();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let text = lines.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN") && text.contains("count=500"), "{text}");

        // Quiet seconds write nothing; the next burst is one more line.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(lines.text().lines().count(), 1);
        for _ in 0..7 {
            tally.refused.add();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = lines.text();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.lines().nth(1).is_some_and(|line| line.contains("count=7")),
            "{text}"
        );
        reporter.abort();
    }
}
