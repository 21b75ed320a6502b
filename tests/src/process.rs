//! Real server processes: a short's binary started with `serve` and its configuration in the
//! environment, as the crash harness and the outage tests run it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use shorts_runtime::testing::{self, Listener, MockPlatform};

/// One server process, restartable; killed (SIGKILL) when dropped. It listens on a socket this
/// process holds and passes to each start, so a restarted server keeps its port, and connections
/// made while it is down wait in the socket's queue.
pub struct Instance {
    bin: PathBuf,
    listener: Listener,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    child: Option<Child>,
    starts: usize,
}

impl Instance {
    /// Starts `bin` listening on a free port of 127.0.0.1 with only `env` (and `PATH`) in its
    /// environment; its output is discarded.
    pub fn new(bin: impl Into<PathBuf>, env: Vec<(String, String)>) -> Self {
        Self::launch(bin.into(), env, None)
    }

    /// As [`Instance::new`], appending the process's standard error (its log) to `log`.
    pub fn logged(bin: impl Into<PathBuf>, env: Vec<(String, String)>, log: &Path) -> Self {
        Self::launch(bin.into(), env, Some(log.to_owned()))
    }

    fn launch(bin: PathBuf, env: Vec<(String, String)>, log: Option<PathBuf>) -> Self {
        let mut instance = Self {
            bin,
            listener: Listener::bind().expect("a socket on 127.0.0.1"),
            env,
            log,
            child: None,
            starts: 0,
        };
        instance.start();
        instance
    }

    /// Starts the process again (after [`Instance::kill`]).
    pub fn start(&mut self) {
        let stderr = match &self.log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Stdio::from)
                .expect("the instance's log file"),
            None => Stdio::null(),
        };
        let mut command = Command::new(&self.bin);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Instances run side by side: none takes the admin listener's port unless asked to.
            .env("SHORTS_ADMIN_BIND", "off");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.listener.pass_to(&mut command).expect("pass the socket");
        self.child = Some(command.spawn().expect("spawn the server"));
        self.starts += 1;
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listener.addr().port()
    }

    /// Waits until the server answers its health check; see [`wait_serving`].
    pub async fn wait_serving(&self) {
        wait_serving(self.port()).await;
    }

    /// How many times the process was started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    /// The running process's id; `None` once killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was killed by [`Instance::kill`] and not started again.
    pub fn is_killed(&self) -> bool {
        self.child.is_none()
    }

    /// How the process ended, if it ended by itself (`None` while it runs or once killed).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the server on `127.0.0.1:port` answers its health check (a request made before it
/// runs waits in the socket's queue); panics when it does not within 30 s.
pub async fn wait_serving(port: u16) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        testing::wait_serving(addr, Duration::from_secs(30)).await,
        "the server on port {port} is not serving"
    );
}

/// A TCP port free on 127.0.0.1 a moment ago, for a server that cannot be handed a socket (such as
/// PostgreSQL or Pebble): another process may take it in between, which their start reports.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// The environment of a server delivering to `platform` and storing orders in `store`, with short
/// leases, fast polls and a fast retry schedule; the `crashy` short records each run in `runs_file`.
pub fn common_env(platform: &MockPlatform, store: &str, runs_file: &Path) -> Vec<(String, String)> {
    [
        ("SHORTS_STORE", store.to_owned()),
        ("SHORTS_CALLBACK_SECRET", platform.secret().to_owned()),
        ("SHORTS_CALLBACK_URL", platform.callback_url()),
        (
            "SHORTS_WEBHOOK_AUTH",
            format!("x-api-key: {}", MockPlatform::WEBHOOK_KEY),
        ),
        ("SHORTS_LEASE", "1s".to_owned()),
        ("SHORTS_POLL_INTERVAL", "100ms".to_owned()),
        (
            "SHORTS_RETRY_SCHEDULE",
            "0s,20ms,50ms,100ms,200ms,300ms,400ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms,500ms".to_owned(),
        ),
        ("CRASHY_RUNS", runs_file.display().to_string()),
        ("RUST_LOG", "error".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// An empty directory of the system's temporary directory, named after `prefix`, `name` and this
/// process.
pub fn temp_dir(prefix: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
