//! `check`, run as a seller runs it on the host: the `crashy` short's binary with its
//! configuration in the environment, against the mock platform served over HTTPS. A host that is
//! ready passes with exit code 0 and prints the webhook URL; each misconfiguration `check` claims
//! to catch is marked on its line and makes the exit code non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use shorts_runtime::testing::MockPlatform;
use shorts_tests::TempDir;

const SECRET: &str = "check-secret-4f7a";
const AUTH_VALUE: &str = "check-auth-91c2";

/// A certificate for `localhost` and 127.0.0.1, valid from `not_before` to `not_after`, as PEM
/// chain and key.
fn certificate(not_before: SystemTime, not_after: SystemTime) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn valid_certificate() -> (String, String) {
    let now = SystemTime::now();
    certificate(
        now - Duration::from_secs(3600),
        now + Duration::from_secs(90 * 86_400),
    )
}

/// A host's setup: a folder holding the store and the short's certificate, and the mock platform
/// over HTTPS with its own certificate.
struct Host {
    dir: TempDir,
    platform: MockPlatform,
    platform_cert: PathBuf,
}

impl Host {
    async fn new() -> Self {
        let dir = TempDir::new("shorts-check");
        let (chain, key) = valid_certificate();
        let platform_cert = dir.path("platform.pem");
        std::fs::write(&platform_cert, &chain).unwrap();
        let platform = MockPlatform::builder()
            .secret(SECRET)
            .https(chain, key)
            .start()
            .await
            .unwrap();
        let (chain, key) = valid_certificate();
        std::fs::write(dir.path("cert.pem"), chain).unwrap();
        std::fs::write(dir.path("key.pem"), key).unwrap();
        Self {
            dir,
            platform,
            platform_cert,
        }
    }

    /// The environment of a host ready to go live: HTTPS from files, a SQLite store, and the
    /// platform's certificate trusted.
    fn ready(&self) -> Env {
        vec![
            ("SHORTS_CALLBACK_SECRET", SECRET.to_owned()),
            ("SHORTS_WEBHOOK_AUTH", format!("x-api-key: {AUTH_VALUE}")),
            ("SHORTS_CALLBACK_URL", self.platform.callback_url()),
            ("SHORTS_BIND", "127.0.0.1:8443".to_owned()),
            (
                "SHORTS_STORE",
                format!("sqlite://{}", self.dir.path("shorts.db").display()),
            ),
            ("SHORTS_TLS_CERT", self.dir.path("cert.pem").display().to_string()),
            ("SHORTS_TLS_KEY", self.dir.path("key.pem").display().to_string()),
            ("SSL_CERT_FILE", self.platform_cert.display().to_string()),
        ]
    }
}

/// Variables and their values.
type Env = Vec<(&'static str, String)>;

/// Runs `check` with only `env` (and `PATH`); its exit code and its output.
fn check(env: &[(&str, String)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crashy"));
    command
        .arg("check")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "error");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains(SECRET), "the secret is printed:\n{text}");
    assert!(!text.contains(AUTH_VALUE), "the auth value is printed:\n{text}");
    (output.status.code(), text)
}

/// `env` with `var` set to `value` (or removed when `value` is `None`).
fn with(
    env: &[(&'static str, String)],
    var: &'static str,
    value: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = env.iter().filter(|(key, _)| *key != var).cloned().collect();
    if let Some(value) = value {
        env.push((var, value.to_owned()));
    }
    env
}

/// The output's lines marked as a problem.
fn problems(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.trim_start().starts_with("PROBLEM"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_ready_to_go_live_passes_and_gets_its_webhook_url() {
    let host = Host::new().await;
    let (code, text) = check(&host.ready());
    assert_eq!(code, Some(0), "{text}");
    assert!(problems(&text).is_empty(), "{text}");
    assert!(text.contains("no problems found"), "{text}");
    // Worth a note, not a problem: this host's self-signed certificate and short auth value.
    let noted = |what: &str| {
        text.lines()
            .any(|l| l.trim_start().starts_with("note") && l.contains(what))
    };
    assert!(noted("self-signed (its issuer is its subject)"), "{text}");
    assert!(noted("the value of `x-api-key` has 15 characters"), "{text}");
    // Every configuration value, secrets as set.
    for line in [
        "SHORTS_CALLBACK_SECRET     set",
        "SHORTS_WEBHOOK_AUTH        header `x-api-key`, value set",
        "SHORTS_RETRY_SCHEDULE      0s,5s,30s,2m,5m,30m,2h,5h,10h,14h,20h,1day (default)",
        "SHORTS_LEASE               5s (default)",
        "SHORTS_MAX_BODY            64 MiB (default)",
        "SHORTS_MALLOC_TUNING       on: glibc's allocator tuned for large bodies (default)",
        "SHORTS_ADMIN_BIND          127.0.0.1:9090: GET /metrics (default)",
        "SHORTS_ADMIN_TOKEN         not set: the admin listener answers anyone on this machine",
        "SHORTS_LOG_FORMAT          text (default)",
        "SHORTS_ALERT_URL           not set: no alerts",
    ] {
        assert!(text.contains(line), "no line {line:?}:\n{text}");
    }
    // The store does not exist yet, and check does not create it: the service's user will.
    assert!(text.contains("does not exist yet"), "{text}");
    assert!(!host.dir.path("shorts.db").exists());
    // The platform's host resolves and completes a handshake with the trusted certificate.
    let origin = format!("127.0.0.1:{}", host.platform.addr().port());
    let platform_line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(origin.as_str()))
        .unwrap_or_default();
    assert!(
        platform_line.contains("resolves to 127.0.0.1; TLS handshake completed"),
        "{text}"
    );
    // The certificate served, and the webhook URL from its name and the port.
    assert!(text.contains("days left"), "{text}");
    assert!(text.contains("for localhost, 127.0.0.1"), "{text}");
    let url_line = text.lines().find(|l| l.contains("https://localhost:8443/"));
    assert!(
        url_line.is_some_and(|l| l.trim_start().starts_with("ok") && l.ends_with("/shorts/work")),
        "{text}"
    );

    // An existing store: opened, its mode shown.
    std::fs::File::create(host.dir.path("shorts.db")).unwrap();
    set_mode(&host.dir.path("shorts.db"), 0o600);
    let (code, text) = check(&host.ready());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("file mode 0600"), "{text}");
    assert!(text.contains("opens and answers; no orders yet"), "{text}");

    // Behind a proxy: plain HTTP, and the URL from SHORTS_PUBLIC_URL.
    let proxied = with(
        &with(
            &with(&host.ready(), "SHORTS_TLS_CERT", None),
            "SHORTS_TLS_KEY",
            None,
        ),
        "SHORTS_PUBLIC_URL",
        Some("https://shorts.example.com/sellers"),
    );
    let (code, text) = check(&proxied);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("https://shorts.example.com/sellers/shorts/work")),
        "{text}"
    );
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_is_marked_on_its_line() {
    let host = Host::new().await;
    let ready = host.ready();

    let expired = host.dir.path("expired.pem");
    let expired_key = host.dir.path("expired-key.pem");
    let now = SystemTime::now();
    let (chain, key) = certificate(
        now - Duration::from_secs(100 * 86_400),
        now - Duration::from_secs(86_400),
    );
    std::fs::write(&expired, chain).unwrap();
    std::fs::write(&expired_key, key).unwrap();
    let (_, other_key) = valid_certificate();
    let other_key_path = host.dir.path("other-key.pem");
    std::fs::write(&other_key_path, other_key).unwrap();
    let open_store = host.dir.path("open.db");
    std::fs::File::create(&open_store).unwrap();
    set_mode(&open_store, 0o644);
    let open_cache = host.dir.path("acme-cache");
    std::fs::create_dir(&open_cache).unwrap();
    set_mode(&open_cache, 0o755);
    let acme = |cache: &std::path::Path| {
        with(
            &with(&with(&ready, "SHORTS_TLS_CERT", None), "SHORTS_TLS_KEY", None),
            "SHORTS_ACME_DOMAINS",
            Some("shorts.invalid"),
        )
        .into_iter()
        .chain([("SHORTS_ACME_CACHE", cache.display().to_string())])
        .collect::<Vec<_>>()
    };

    // (what is wrong, the environment, a text the problem line holds)
    let cases: Vec<(&str, Env, &str)> = vec![
        (
            "no callback secret",
            with(&ready, "SHORTS_CALLBACK_SECRET", None),
            "SHORTS_CALLBACK_SECRET     not set",
        ),
        (
            "the example file's callback secret",
            with(
                &ready,
                "SHORTS_CALLBACK_SECRET",
                Some("replace-with-the-callback-secret"),
            ),
            "SHORTS_CALLBACK_SECRET     still the example file's placeholder",
        ),
        (
            "the example file's webhook auth value",
            with(
                &ready,
                "SHORTS_WEBHOOK_AUTH",
                Some("x-api-key: replace-with-a-long-random-value"),
            ),
            "the value of `x-api-key` is still the example file's placeholder",
        ),
        (
            "no webhook auth",
            with(&ready, "SHORTS_WEBHOOK_AUTH", None),
            "SHORTS_WEBHOOK_AUTH        not set",
        ),
        (
            "an admin listener open to other machines without a token",
            with(&ready, "SHORTS_ADMIN_BIND", Some("0.0.0.0:9090")),
            "SHORTS_ADMIN_TOKEN         `SHORTS_ADMIN_TOKEN` is not set",
        ),
        (
            "the platform's certificate is not trusted",
            with(&ready, "SSL_CERT_FILE", None),
            "no TLS connection",
        ),
        (
            "the platform's host does not resolve",
            with(
                &ready,
                "SHORTS_CALLBACK_URL",
                Some("https://platform.shorts-check.invalid/api/orders/callback"),
            ),
            "does not resolve",
        ),
        (
            "callbacks over plain HTTP",
            with(
                &ready,
                "SHORTS_CALLBACK_URL",
                Some(&host.platform.callback_url().replace("https://", "http://")),
            ),
            "not https",
        ),
        (
            "orders kept in memory",
            with(&ready, "SHORTS_STORE", Some("memory")),
            "lost on restart",
        ),
        (
            "a store others can read",
            with(
                &ready,
                "SHORTS_STORE",
                Some(&format!("sqlite://{}", open_store.display())),
            ),
            "file mode 0644",
        ),
        (
            "a PostgreSQL server that does not answer",
            with(
                &ready,
                "SHORTS_STORE",
                Some("postgres://shorts:pw-never-shown@127.0.0.1:1/orders?sslmode=disable"),
            ),
            "postgres                   postgres://shorts:***@127.0.0.1:1/orders does not open",
        ),
        (
            "a store in a folder that does not exist",
            with(
                &ready,
                "SHORTS_STORE",
                Some("sqlite:///nonexistent-shorts-check/s.db"),
            ),
            "does not exist",
        ),
        (
            "a key that is not the certificate's",
            with(
                &ready,
                "SHORTS_TLS_KEY",
                Some(&other_key_path.display().to_string()),
            ),
            "does not match",
        ),
        (
            "an expired certificate",
            with(
                &with(&ready, "SHORTS_TLS_CERT", Some(&expired.display().to_string())),
                "SHORTS_TLS_KEY",
                Some(&expired_key.display().to_string()),
            ),
            "expired at",
        ),
        (
            "plain HTTP with no public URL",
            with(&with(&ready, "SHORTS_TLS_CERT", None), "SHORTS_TLS_KEY", None),
            "HTTPS webhook URLs only",
        ),
        (
            "an ACME name that does not resolve",
            acme(&host.dir.path("new-cache")),
            "shorts.invalid",
        ),
        ("an ACME cache others can read", acme(&open_cache), "mode 0755"),
        (
            "the example file's ACME domain",
            with(
                &acme(&host.dir.path("new-cache")),
                "SHORTS_ACME_DOMAINS",
                Some("shorts.example.com"),
            ),
            "shorts.example.com         a name reserved for examples",
        ),
        (
            "an alert URL whose host does not resolve",
            with(
                &ready,
                "SHORTS_ALERT_URL",
                Some("https://alerts.invalid/hooks/T0/tok3n"),
            ),
            "alerts.invalid:443",
        ),
    ];
    for (what, env, expected) in cases {
        let (code, text) = check(&env);
        assert_eq!(code, Some(1), "{what}:\n{text}");
        let found = problems(&text);
        assert!(
            found.iter().any(|line| line.contains(expected)),
            "{what}: no problem line with {expected:?}:\n{text}"
        );
        assert!(text.contains("found"), "{what}: no summary:\n{text}");
        // The alert URL's path is a token: only its scheme and host are shown.
        assert!(!text.contains("tok3n"), "{what}:\n{text}");
        assert!(!text.contains("pw-never-shown"), "{what}:\n{text}");
    }

    // A value that cannot be read at all is a configuration error: exit code 2, on one line.
    let (code, text) = check(&with(
        &ready,
        "SHORTS_PUBLIC_URL",
        Some("http://shorts.example.com"),
    ));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        problems(&text)
            .iter()
            .any(|l| l.contains("SHORTS_PUBLIC_URL") && l.contains("not an https URL")),
        "{text}"
    );
    // The ACME state before the first certificate, and the URL from the domain.
    let (_, text) = check(&acme(&host.dir.path("fresh-cache")));
    assert!(text.contains("none yet: obtained at start from"), "{text}");
    assert!(text.contains("https://shorts.invalid/shorts/work"), "{text}");
    assert!(!host.dir.path("fresh-cache").exists(), "check created the cache");
    assert!(!text.contains("staging CA"), "{text}");
    // Let's Encrypt's staging CA works, but for no client: a note.
    let staging = with(
        &acme(&host.dir.path("fresh-cache")),
        "SHORTS_ACME_DIRECTORY",
        Some("staging"),
    );
    let (_, text) = check(&staging);
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("note")
            && l.contains("directory")
            && l.contains("Let's Encrypt's staging CA")),
        "{text}"
    );
}
