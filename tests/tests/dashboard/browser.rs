//! A real Chromium, headless, driven through chromedriver (WebDriver) with fantoccini.
//!
//! [`Browser::open`] starts `chromedriver` (found on `PATH`) on a free port of 127.0.0.1, waits
//! until it answers, and opens a session of Debian's `chromium` with a profile of its own. Every
//! wait is bounded by [`WAIT`]. When dropped, chromedriver and the browsers it started are
//! killed; [`Browser::close`] ends the session cleanly first.
//!
//! Screenshots go to one folder, numbered in the order they are taken.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use shorts_tests::TempDir;

/// The longest any one wait for the browser or the page lasts.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The browser window's width and height.
const WINDOW: (u32, u32) = (1280, 900);

/// The tallest a screenshot gets, in pixels.
const TALLEST: u32 = 6000;

/// The path of the executable `name` in a folder of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A free port of 127.0.0.1 (free when this returns: the listener is closed again).
fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// A running chromedriver, in a process group of its own with the browsers it starts: dropping
/// it kills the whole group, so that no Chromium outlives the test.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Driver {
    /// Starts chromedriver, its log written to `log`, and waits until it is ready for sessions.
    async fn start(log: &Path) -> Driver {
        let Some(program) = on_path("chromedriver") else {
            panic!(
                "chromedriver is not installed (no `chromedriver` on PATH): the dashboard's \
                 browser test needs Debian's `chromium` and `chromium-driver` packages \
                 (`apt-get install chromium chromium-driver`; `.ci/run` installs them)"
            );
        };
        let port = free_port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", program.display()));
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log: log.to_owned(),
        };
        driver.ready().await;
        driver
    }

    /// Waits (at most [`WAIT`]) until chromedriver answers `GET /status` with `ready: true`.
    async fn ready(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("an HTTP client");
        let status = format!("{}/status", self.url);
        let started = Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().expect("chromedriver's status") {
                panic!(
                    "chromedriver exited at start ({exit}); see {}",
                    self.log.display()
                );
            }
            if let Ok(response) = client.get(&status).send().await
                && let Ok(body) = response.bytes().await
                && let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body)
                && body["value"]["ready"] == true
            {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "chromedriver did not answer on {status} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group's id is chromedriver's pid (`process_group(0)`): Chromium and its helpers
        // started by chromedriver are in it too.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session, and where its screenshots go.
pub(crate) struct Browser {
    client: Client,
    shots: PathBuf,
    taken: usize,
    // Dropped after the client: the session ends before its driver and its profile go.
    _driver: Driver,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with an empty profile, 1280×900; screenshots
    /// are written to `shots`, which is emptied first.
    pub(crate) async fn open(shots: &Path) -> Browser {
        let _ = std::fs::remove_dir_all(shots);
        std::fs::create_dir_all(shots).expect("the screenshot folder");
        let Some(chromium) = on_path("chromium") else {
            panic!(
                "Chromium is not installed (no `chromium` on PATH): the dashboard's browser test \
                 needs Debian's `chromium` and `chromium-driver` packages \
                 (`apt-get install chromium chromium-driver`; `.ci/run` installs them)"
            );
        };
        let driver = Driver::start(&shots.join("chromedriver.log")).await;
        let profile = TempDir::new("shorts-chromium");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    format!("--user-data-dir={}", profile.root().display()),
                ],
            },
            "timeouts": { "pageLoad": WAIT.as_millis(), "script": WAIT.as_millis(), "implicit": 0 },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object literal")
        };
        let connecting = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await;
        let client = connecting.unwrap_or_else(|e| {
            panic!(
                "chromedriver could not start Chromium ({}): {e}",
                chromium.display()
            )
        });
        Browser {
            client,
            shots: shots.to_owned(),
            taken: 0,
            _driver: driver,
            _profile: profile,
        }
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for it to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("could not open {url}: {e}"));
    }

    /// The path of the page shown now.
    pub(crate) async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current URL")
            .path()
            .to_owned()
    }

    /// The element that `css` selects, waiting for it at most [`WAIT`].
    pub(crate) async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no element `{css}` on {} within {WAIT:?}: {e}\n{}",
                self.client
                    .current_url()
                    .await
                    .map(|url| url.to_string())
                    .unwrap_or_default(),
                self.client.source().await.unwrap_or_default()
            ),
        }
    }

    /// Every element that `css` selects now (maybe none).
    pub(crate) async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("looking for `{css}`: {e}"))
    }

    /// Clicks the element that `css` selects (waiting for it first), a link or a button that
    /// leads to another page, and waits at most [`WAIT`] until that page has replaced this one
    /// and loaded.
    pub(crate) async fn click_to_page(&self, css: &str) {
        let before = self.find("html").await;
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("could not click `{css}`: {e}"));
        let started = Instant::now();
        // What the driver last answered while the page changed, for the message if it never does.
        let mut last = String::new();
        loop {
            // The old page's root goes stale once the next page replaces it; while the new page
            // loads, the driver may answer other errors (no context to run in yet): asked again.
            let gone = match before.tag_name().await {
                Ok(_) => false,
                Err(e) if e.is_stale_element_reference() => true,
                Err(e) => {
                    last = e.to_string();
                    false
                }
            };
            if gone {
                match self
                    .client
                    .execute("return document.readyState;", Vec::new())
                    .await
                {
                    Ok(state) if state == "complete" => return,
                    Ok(state) => last = format!("document.readyState {state}"),
                    Err(e) => last = e.to_string(),
                }
            }
            assert!(
                started.elapsed() < WAIT,
                "clicking `{css}` on {} led to no new page within {WAIT:?} (last: {last})",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reloads the page until `css` selects something, at most [`WAIT`]; the element.
    pub(crate) async fn reload_until(&self, css: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Some(found) = self.find_all(css).await.into_iter().next() {
                return found;
            }
            assert!(
                started.elapsed() < WAIT,
                "`{css}` did not appear on {} within {WAIT:?} of reloading:\n{}",
                self.path().await,
                self.client.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.client.refresh().await.expect("reload the page");
        }
    }

    /// Saves a PNG of the whole page (the window is made as tall as the page for it, up to
    /// [`TALLEST`] pixels) as `NN-name.png` in the screenshot folder.
    pub(crate) async fn screenshot(&mut self, name: &str) -> PathBuf {
        let sizes = self
            .client
            .execute(
                "return [document.documentElement.scrollHeight, \
                 window.outerHeight - window.innerHeight];",
                Vec::new(),
            )
            .await
            .expect("the page's height");
        let height = |i: usize| {
            sizes[i]
                .as_u64()
                .map_or(0, |h| u32::try_from(h).unwrap_or(TALLEST))
        };
        let (page, frame) = (height(0), height(1));
        let tall = page > WINDOW.1 - frame;
        if tall {
            self.client
                .set_window_size(WINDOW.0, (page + frame).min(TALLEST))
                .await
                .expect("the window made as tall as the page");
        }
        let png = self.client.screenshot().await.expect("a screenshot");
        if tall {
            self.client
                .set_window_size(WINDOW.0, WINDOW.1)
                .await
                .expect("the window's size restored");
        }
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        self.taken += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.taken));
        std::fs::write(&path, png).expect("the screenshot written");
        path
    }

    /// Ends the session (Chromium quits); chromedriver is killed as the browser is dropped.
    pub(crate) async fn close(self) {
        let Browser { client, .. } = self;
        client.close().await.expect("the session closed");
    }
}
