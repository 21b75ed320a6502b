//! An application: the shorts to serve, the configuration, and the engine running orders.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tracing::info;

use crate::admin::Admin;
use crate::admin::alerts::{Alerts, Settings};
use crate::admin::metrics::Metrics;
use crate::config::{Config, ConfigError};
use crate::delivery::Delivery;
use crate::server::{Intake, Tls};
use crate::short::Short;
use crate::store::{AnyStore, FailedNow, OrderRecord, OrderState, Retried, Store as _, StoreError};
use crate::worker::{Engine, Lane, Pending, Timing};

/// Why an [`App`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is incomplete or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// There is no short to serve.
    #[error(
        "no shorts to serve: annotate an `async fn` with `#[ai_short]` (a test in `tests/` sees only \
         the shorts of a library, not those of a binary's `main.rs`)"
    )]
    NoShorts,
    /// Two shorts share a route.
    #[error("two shorts are served at `{path}`: {first} and {second}; give one a different `path`")]
    DuplicatePath {
        /// The shared route.
        path: String,
        /// The first short.
        first: String,
        /// The second short.
        second: String,
    },
    /// Two shorts share a name.
    #[error("two shorts are named `{name}`: {first} and {second}; rename one")]
    DuplicateName {
        /// The shared name.
        name: String,
        /// The first short.
        first: String,
        /// The second short.
        second: String,
    },
    /// A short's route cannot be served.
    #[error("{short} cannot be served at {path:?}: {reason}")]
    InvalidPath {
        /// The short.
        short: String,
        /// The route.
        path: String,
        /// Why not.
        reason: &'static str,
    },
    /// The order store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// HTTPS could not be set up: a certificate file is unreadable, or the key does not match.
    #[error(transparent)]
    Tls(#[from] crate::server::TlsError),
    /// The HTTP client could not be created (e.g. no TLS roots).
    #[error("the HTTP client could not be created: {0}")]
    Client(#[source] reqwest::Error),
}

/// Builds an [`App`].
#[derive(Default)]
#[must_use]
pub struct AppBuilder {
    config: Option<Config>,
    shorts: Vec<Short>,
    skip_registered: bool,
    progress: Option<crate::delivery::Progress>,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppBuilder")
            .field("config", &self.config)
            .field("shorts", &self.shorts)
            .field("skip_registered", &self.skip_registered)
            .finish_non_exhaustive()
    }
}

impl AppBuilder {
    /// Uses this configuration instead of reading the environment.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Adds a short built by hand: a [`Short`], or a [`ShortBuilder`](crate::ShortBuilder) with its
    /// options set.
    pub fn short(mut self, short: impl Into<Short>) -> Self {
        self.shorts.push(short.into());
        self
    }

    /// Serves only the shorts added with [`AppBuilder::short`], not those registered with
    /// `#[ai_short]`.
    pub fn without_registered(mut self) -> Self {
        self.skip_registered = true;
        self
    }

    /// Reports the progress of direct uploads to `progress`, about four times a second while a
    /// file uploads: the file's name, the bytes sent, and its size.
    pub fn upload_progress(mut self, progress: impl Fn(&str, u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(std::sync::Arc::new(progress));
        self
    }

    /// Checks the shorts and the configuration, opens the order store (migrating its schema), and
    /// starts the engine: orders left by an earlier run or another instance are picked up from
    /// here on.
    ///
    /// # Errors
    ///
    /// When the configuration is missing what serving needs (the callback secret, the webhook
    /// auth header) or its alert URL is not an http(s) URL, when the certificate files cannot be
    /// used, when there is no short, when two shorts share a name or a route, or when the store
    /// cannot be opened.
    pub async fn build(self) -> Result<App, BuildError> {
        let app = self.assemble().await?;
        // An input the platform's form cannot send loses every order of its short at run time.
        for lane in &app.intake.lanes {
            match lane.short.read_form() {
                Ok(form) => {
                    for problem in form.problems() {
                        tracing::warn!(short = %lane.short.name, "form: {problem} (see the `form` command)");
                    }
                }
                Err(error) => tracing::warn!(short = %lane.short.name, "{error}"),
            }
        }
        app.intake.engine.start();
        Ok(app)
    }

    /// As [`AppBuilder::build`], with the engine not started: nothing is claimed, run or
    /// delivered. For reading a store through the admin routes (the dashboard's timing).
    pub(crate) async fn assemble(self) -> Result<App, BuildError> {
        let config = match self.config {
            Some(config) => config,
            None => Config::from_env()?,
        };
        config.check_serving()?;
        let mut shorts = if self.skip_registered {
            Vec::new()
        } else {
            Short::registered()
        };
        shorts.extend(self.shorts);
        check_shorts(&shorts)?;

        let secret = config.callback_secret.clone().ok_or(ConfigError::Missing {
            var: "SHORTS_CALLBACK_SECRET",
            hint: "set it to the callback secret shown in the Connect step",
        })?;
        // Metrics are recorded only when the admin listener that serves them is on.
        let metrics = config.admin_bind.map(|_| Arc::new(Metrics::new()));
        let delivery = Delivery::new(&config, secret, self.progress)
            .map_err(BuildError::Client)?
            .with_metrics(metrics.clone());
        let alerts = match config.alert_target()? {
            Some(url) => Alerts::start(url, delivery.client(), secrets(&config), Settings::default()),
            None => Alerts::default(),
        };
        let delivery = delivery.with_alerts(alerts.clone());
        let lanes: Vec<Arc<Lane>> = shorts
            .into_iter()
            .map(|short| Arc::new(Lane::new(short, metrics.as_deref())))
            .collect();
        let tls = Tls::start(&config.tls).await?;
        let store = AnyStore::open(&config.store).await?;
        let timing = Timing {
            lease: config.lease,
            poll: config.poll_interval,
            retention: config.retention,
            dead_retention: config.dead_retention,
            max_held: config.max_held,
        };
        let pending = Pending::new(config.max_pending_bytes as u64);
        let engine = Engine::new(store, delivery, &lanes, timing, pending, metrics.clone(), alerts);
        let intake = Arc::new(Intake {
            config,
            lanes,
            engine,
            metrics,
        });
        Ok(App {
            admin: Arc::new(Admin::new(&intake)),
            intake,
            tls: Arc::new(tls),
        })
    }
}

/// The secrets an alert must never quote: the callback secret, the webhook auth values, and the
/// store's address (which may hold a password).
fn secrets(config: &Config) -> Vec<String> {
    let mut secrets: Vec<String> = config
        .callback_secret
        .iter()
        .map(|s| s.expose().to_owned())
        .collect();
    secrets.extend(
        config
            .webhook_auth
            .iter()
            .map(|auth| auth.value.expose().to_owned()),
    );
    if let crate::config::StoreConfig::Postgres(url) = &config.store {
        secrets.push(url.expose().to_owned());
        if let Some(password) = url::Url::parse(url.expose())
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
        {
            secrets.push(password);
        }
    }
    secrets
}

/// Checks a set of shorts as [`AppBuilder::build`] does: at least one, names and routes unique, and
/// routes that can be served.
pub(crate) fn check_shorts(shorts: &[Short]) -> Result<(), BuildError> {
    if shorts.is_empty() {
        return Err(BuildError::NoShorts);
    }
    let mut names: HashMap<&str, &Short> = HashMap::new();
    let mut paths: HashMap<&str, &Short> = HashMap::new();
    for short in shorts {
        check_path(short)?;
        if let Some(first) = names.insert(&short.name, short) {
            return Err(BuildError::DuplicateName {
                name: short.name.to_string(),
                first: first.origin(),
                second: short.origin(),
            });
        }
        if let Some(first) = paths.insert(&short.path, short) {
            return Err(BuildError::DuplicatePath {
                path: short.path.clone(),
                first: first.origin(),
                second: short.origin(),
            });
        }
    }
    Ok(())
}

/// `#[ai_short]` checks its `path` at compile time; this catches shorts built by hand.
fn check_path(short: &Short) -> Result<(), BuildError> {
    let path = &short.path;
    let reason = if !path.starts_with('/') {
        Some("a route must start with `/`")
    } else if path == "/healthz" {
        Some("`/healthz` is the health check")
    } else if (path.len() > 1 && path.ends_with('/')) || path.contains("//") {
        Some("a route must not contain empty segments")
    } else if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~'))
    {
        Some("use letters, digits, `/`, `-`, `_`, `.` and `~`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BuildError::InvalidPath {
            short: short.origin(),
            path: path.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A built application: serve it with [`App::serve`], or nest [`App::router`] in an axum app and
/// stop it with [`App::shutdown`].
#[derive(Clone)]
pub struct App {
    intake: Arc<Intake>,
    /// The admin listener's routes and sessions.
    admin: Arc<Admin>,
    /// HTTPS, when configured; its certificate task stops with the last clone of the application.
    tls: Arc<Tls>,
}

impl App {
    /// Starts a builder that serves every `#[ai_short]` in the binary.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// Every registered short, configured from the environment.
    ///
    /// # Errors
    ///
    /// As [`AppBuilder::build`].
    pub async fn from_env() -> Result<Self, BuildError> {
        Self::builder().build().await
    }

    /// An application that only reads the store of `store`, for the dashboard's tests and its
    /// timing: shorts named `shorts` (which answer `"ok"`), the admin token `admin_token`, and an
    /// engine never started, so that nothing is claimed, run or delivered.
    pub(crate) async fn idle(
        store: crate::config::StoreConfig,
        shorts: &[&str],
        admin_token: Option<crate::config::Secret>,
    ) -> Result<App, BuildError> {
        let config = Config {
            callback_secret: Some(crate::config::Secret::new("idle")),
            webhook_auth: vec![crate::config::WebhookAuth::new("x-api-key", "idle")?],
            store,
            admin_token,
            ..Config::default()
        };
        let mut builder = App::builder().config(config).without_registered();
        for name in shorts {
            builder = builder.short(Short::new(name, |_: serde_json::Value, _: crate::Order| async {
                Ok::<_, crate::Error>("ok")
            }));
        }
        builder.assemble().await
    }

    /// The order store.
    #[cfg(test)]
    pub(crate) fn store(&self) -> &AnyStore {
        &self.intake.engine.store
    }

    /// The shorts served, in order.
    pub fn shorts(&self) -> impl Iterator<Item = &Short> {
        self.intake.lanes.iter().map(|lane| &lane.short)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.intake.config
    }

    /// One order as the store has it.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        self.intake.engine.store.get(order_id).await
    }

    /// Orders in `state` (all when `None`), oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn orders(
        &self,
        state: Option<OrderState>,
        limit: u32,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        self.intake.engine.store.list(state, limit).await
    }

    /// Delivers a dead or paused order's stored callback body again, from the first step of the
    /// retry schedule (the attempts already made stay counted), or says why not: no such order,
    /// not dead or paused, or no stored result. A dead order whose webhook body was purged
    /// (`SHORTS_DEAD_RETENTION`) is delivered all the same: delivery needs only the result.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn retry(&self, order_id: &str) -> Result<Retried, StoreError> {
        self.intake.engine.retry(order_id).await
    }

    /// Fails a stuck order now: a received, delivering or paused order gets a failure callback
    /// (`ok: false`) with `message` as its error, delivered at once by the normal delivery path
    /// (and retried like any callback); the action is kept in the order's history. An order an
    /// instance is working on right now, running the short or sending its callback, is left
    /// alone ([`FailedNow::Busy`]): try again once the run ends (at the latest at the short's
    /// timeout). An order waiting for a slot of its short is failed, and does not run.
    ///
    /// # Errors
    ///
    /// When the store fails.
    pub async fn fail_now(&self, order_id: &str, message: &str) -> Result<FailedNow, StoreError> {
        self.intake.engine.fail_now(order_id, message).await
    }

    /// The webhook routes and `GET /healthz`, to nest in an existing axum application. Orders run
    /// on tasks of the current tokio runtime; stop them with [`App::shutdown`] when your server
    /// stops.
    pub fn router(&self) -> Router {
        crate::server::router(&self.intake)
    }

    /// The admin routes, to serve on a listener of their own (as `serve` does on
    /// `SHORTS_ADMIN_BIND`), never beside the webhook routes: `GET /metrics` (Prometheus), the
    /// orders dashboard (`GET /`, `GET /orders`, `GET /orders/{order_id}`, and its retry and fail
    /// actions, confirmed on pages of their own and sent with the session's CSRF token), and the
    /// login form (`GET`/`POST /login`, `POST /logout`). When
    /// [`Config::admin_token`] is set, every route but the login form asks for
    /// `Authorization: Bearer <token>` or the session cookie the form sets. With
    /// [`Config::admin_bind`] `None`, no metrics are recorded and `/metrics` answers 404.
    pub fn admin_router(&self) -> Router {
        crate::admin::router(&self.admin)
    }

    /// Serves on `listener` until `shutdown` completes; then stops accepting, lets open requests
    /// finish, and waits up to the configured grace period for running orders.
    ///
    /// A `#[ai_short(blocking)]` function still running past its timeout keeps its thread; a
    /// tokio runtime waits for such threads when it is dropped. [`crate::run`] waits a second at
    /// most; an application with its own runtime chooses with `Runtime::shutdown_timeout`.
    ///
    /// # Errors
    ///
    /// Only when the listener's address cannot be read.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let config = &self.intake.config;
        let acceptor = self.tls.acceptor();
        let scheme = if acceptor.is_tls() { "https" } else { "http" };
        info!(%addr, scheme, shorts = self.intake.lanes.len(), "serving");
        for short in self.shorts() {
            info!(short = %short.name, route = %short.path, "route");
        }
        let limits = crate::server::Limits::from_config(config);
        crate::server::serve(listener, acceptor, self.router(), limits, shutdown).await;
        self.shutdown(config.shutdown_grace).await;
        Ok(())
    }

    /// Stops the engine, for an application that nests [`App::router`] in its own server: no new
    /// order is taken (a webhook arriving from now on is answered `503` with `Retry-After`, and
    /// nothing is stored, so the platform sends it again), orders left by others are no longer
    /// picked up, and running orders get up to `grace` to finish and deliver their callbacks.
    /// Orders still running after `grace` are released to run again on the next start or on
    /// another instance. [`App::serve`] does this once its listener has closed, with
    /// `SHORTS_SHUTDOWN_GRACE`.
    ///
    /// Call it after your own server has stopped accepting requests, or at least before it does.
    /// It stops the engine of every clone of this `App`; calling it again returns at once.
    /// A `#[ai_short(blocking)]` function past its timeout keeps its thread after this returns:
    /// see [`App::serve`].
    ///
    /// ```no_run
    /// # async fn nest(app: shorts_runtime::App) -> std::io::Result<()> {
    /// use std::time::Duration;
    ///
    /// let router = axum::Router::new().nest("/sell", app.router());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    /// axum::serve(listener, router)
    ///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await?;
    /// app.shutdown(Duration::from_secs(30)).await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self, grace: std::time::Duration) {
        let released = self.intake.engine.shutdown(grace).await;
        info!(released, "stopped");
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field(
                "shorts",
                &self.intake.lanes.iter().map(|l| &l.short).collect::<Vec<_>>(),
            )
            .field("config", &self.intake.config)
            .finish()
    }
}
