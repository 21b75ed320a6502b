//! The deploy guide's files (`deploy/`): the systemd unit passes `systemd-analyze verify` when the
//! tool is installed and has the keys the guide relies on; the proxy configurations forward to the
//! short on 127.0.0.1:8080 with a body limit of at least the server's; every `SHORTS_` variable they
//! name is one the server reads.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail loudly")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shorts_tests::TempDir;

/// The server's default `SHORTS_MAX_BODY`, which the proxies must let through.
const MAX_BODY: u64 = 64 * 1024 * 1024;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn deploy_file(name: &str) -> String {
    let path = repository().join("deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The unit's `[Service]` (and other sections') assignments, in order: `(section, key, value)`.
/// Comments (`#`, `;`) and blank lines are skipped; a line that is neither a section header nor an
/// assignment fails the test.
fn parse_unit(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not an assignment: {line}", number + 1));
        assert!(!section.is_empty(), "line {}: before any section", number + 1);
        entries.push((section.clone(), key.trim().to_owned(), value.trim().to_owned()));
    }
    entries
}

/// The values given to `key` in `[Service]`.
fn service<'a>(entries: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(section, k, _)| section == "Service" && k == key)
        .map(|(_, _, value)| value.as_str())
        .collect()
}

/// The one value of `key` in `[Service]`.
fn single<'a>(entries: &'a [(String, String, String)], key: &str) -> &'a str {
    let values = service(entries, key);
    assert_eq!(values.len(), 1, "{key}= should be set once: {values:?}");
    values[0]
}

/// A duration as systemd and the server write it here: `45s`, `2min`, `1m`, `30` (seconds).
fn seconds(text: &str) -> u64 {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("not a duration: {text}"));
    match &text[digits.len()..] {
        "" | "s" | "sec" => number,
        "m" | "min" => number * 60,
        "h" => number * 3600,
        unit => panic!("unexpected unit in {text}: {unit}"),
    }
}

/// A size as nginx (`65m`) or Caddy (`65MiB`, `64MB`) writes it, in bytes.
fn bytes(text: &str) -> u64 {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits.parse().unwrap_or_else(|_| panic!("not a size: {text}"));
    let unit: u64 = match text[digits.len()..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        unit => panic!("unexpected unit in {text}: {unit}"),
    };
    number * unit
}

/// Runs `command`, killing it after 10 s.
fn run_bounded(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Whether `tool` is on `PATH` (`command -v`).
fn installed(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn the_unit_has_the_keys_the_guide_relies_on() {
    let entries = parse_unit(&deploy_file("shorts.service"));

    assert_eq!(single(&entries, "DynamicUser"), "yes");
    let state = single(&entries, "StateDirectory");
    assert!(
        !state.is_empty() && !state.contains('/'),
        "StateDirectory={state}"
    );
    let ambient = single(&entries, "AmbientCapabilities");
    assert!(
        ambient.split_whitespace().any(|c| c == "CAP_NET_BIND_SERVICE"),
        "{ambient}"
    );
    let bounding = single(&entries, "CapabilityBoundingSet");
    assert_eq!(
        bounding, "CAP_NET_BIND_SERVICE",
        "only the capability to bind port 443"
    );
    assert_eq!(single(&entries, "Restart"), "always");
    assert!(single(&entries, "EnvironmentFile").starts_with('/'));
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(single(&entries, key), value, "{key}");
    }

    // The store and the ACME cache live in the state directory.
    let environment: Vec<&str> = service(&entries, "Environment");
    let variable = |name: &str| {
        environment
            .iter()
            .find_map(|e| e.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            .unwrap_or_else(|| panic!("Environment={name}=… is missing"))
    };
    assert_eq!(
        variable("SHORTS_STORE"),
        format!("sqlite:///var/lib/{state}/shorts.db")
    );
    assert!(variable("SHORTS_ACME_CACHE").starts_with(&format!("/var/lib/{state}/")));

    // systemd's SIGKILL must not come before the server's grace is over.
    let grace = environment
        .iter()
        .find_map(|e| e.strip_prefix("SHORTS_SHUTDOWN_GRACE="))
        .map_or(
            shorts_runtime::Config::default().shutdown_grace.as_secs(),
            seconds,
        );
    let stop = seconds(single(&entries, "TimeoutStopSec"));
    assert!(
        stop > grace,
        "TimeoutStopSec={stop}s is not above the grace of {grace}s"
    );

    // SIGHUP ends the server unless certificate files are configured: no active ExecReload.
    assert!(service(&entries, "ExecReload").is_empty(), "ExecReload is active");
    assert!(service(&entries, "ExecStart")[0].starts_with('/'));
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let text = deploy_file("shorts.service");
    if !installed("systemd-analyze") {
        // Without the tool, the parser of the other test is the whole check; say so.
        eprintln!("systemd-analyze is not installed: the unit was checked by parse_unit only");
        parse_unit(&text);
        return;
    }
    // verify refuses an ExecStart= whose program does not exist; the unit's binary is the
    // seller's, so the copy runs /bin/true (any existing program does).
    let program = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a true program");
    let mut rewritten = 0;
    let copy: String = text
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(command) => {
                rewritten += 1;
                let arguments = command.split_once(' ').map_or("", |(_, args)| args);
                format!("ExecStart={program} {arguments}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    assert_eq!(rewritten, 1, "one ExecStart= line");
    let dir = TempDir::new("shorts-deploy-unit");
    let unit = dir.path("shorts.service");
    std::fs::write(&unit, copy).unwrap();

    let mut command = Command::new("systemd-analyze");
    command.arg("verify").arg(&unit);
    let output = run_bounded(command);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{report}"
    );
    // Unknown keys and bad values are only warned about: none may name the unit.
    let warnings: Vec<&str> = report.lines().filter(|l| l.contains("shorts.service")).collect();
    assert!(warnings.is_empty(), "systemd-analyze verify warned:\n{report}");
}

/// Every `SHORTS_…` name in `text` (a name ending in `_` is a prefix in prose, not a variable).
fn variables_named(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("SHORTS_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        if !name.ends_with('_') {
            found.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    found
}

#[test]
fn every_variable_the_deploy_files_name_is_read_by_the_server() {
    // The configuration, and the one variable read before it (the log format).
    let config: String = ["config.rs", "logs.rs"]
        .map(|file| std::fs::read_to_string(repository().join("shorts-runtime/src").join(file)).unwrap())
        .join("\n");
    let mut named = BTreeSet::new();
    for entry in std::fs::read_dir(repository().join("deploy")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for name in variables_named(&text) {
            named.insert((name, path.file_name().unwrap().to_string_lossy().into_owned()));
        }
    }
    let names: BTreeSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "SHORTS_STORE",
        "SHORTS_ACME_CACHE",
        "SHORTS_WEBHOOK_AUTH",
        "SHORTS_PUBLIC_URL",
    ] {
        assert!(names.contains(expected), "{expected} is not named in deploy/");
    }
    let unknown: Vec<String> = named
        .iter()
        .filter(|(name, _)| !config.contains(&format!("\"{name}\"")))
        .map(|(name, file)| format!("{name} (in deploy/{file})"))
        .collect();
    assert!(unknown.is_empty(), "not read by the server: {unknown:?}");
}

#[test]
fn the_environment_file_names_the_secrets_and_asks_for_mode_0600() {
    let text = deploy_file("shorts.env.example");
    for name in [
        "SHORTS_CALLBACK_SECRET",
        "SHORTS_WEBHOOK_AUTH",
        "SHORTS_ACME_DOMAINS",
        "SHORTS_ACME_EMAIL",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}="))),
            "{name}= is not set in shorts.env.example"
        );
    }
    assert!(text.contains("0600"));
    // Its placeholders are the ones `check` reports as problems when left in place.
    for (name, placeholder) in [
        ("SHORTS_CALLBACK_SECRET=", "replace-with"),
        ("SHORTS_WEBHOOK_AUTH=", "replace-with"),
        ("SHORTS_ACME_DOMAINS=", ".example.com"),
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(placeholder)),
            "{name} in shorts.env.example does not hold {placeholder:?}, which check looks for"
        );
    }
}

/// `text` without `#` comments (outside quotes), for brace counting.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut quoted = false;
            let mut kept = String::new();
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    '#' if !quoted => break,
                    _ => {}
                }
                kept.push(c);
            }
            kept
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Braces balance and never close more than they opened.
fn assert_balanced(text: &str, file: &str) {
    let mut depth: i64 = 0;
    for c in without_comments(text).chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        assert!(depth >= 0, "{file}: a brace closes nothing");
    }
    assert_eq!(depth, 0, "{file}: unbalanced braces");
}

/// The arguments of each occurrence of `directive` (the words after it, without a final `;`).
fn directive<'a>(text: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let mut words = line.trim_end_matches(';').split_whitespace();
            (words.next() == Some(name)).then(|| words.collect())
        })
        .collect()
}

#[test]
fn the_nginx_file_forwards_to_the_loopback_listener_with_the_body_limit() {
    let text = deploy_file("nginx.conf");
    assert_balanced(&text, "nginx.conf");
    // Each directive ends with `;`, `{` or `}`.
    for line in without_comments(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        assert!(
            line.ends_with(';') || line.ends_with('{') || line.ends_with('}'),
            "nginx.conf: unterminated directive: {line}"
        );
    }
    let sizes = directive(&text, "client_max_body_size");
    assert_eq!(sizes.len(), 1, "one client_max_body_size");
    assert!(
        bytes(sizes[0][0]) >= MAX_BODY,
        "client_max_body_size {} < 64 MiB",
        sizes[0][0]
    );
    // `server ADDRESS;` in the upstream block (not the `server {` blocks).
    let upstreams: Vec<Vec<&str>> = directive(&text, "server")
        .into_iter()
        .filter(|args| args.first() != Some(&"{"))
        .collect();
    assert_eq!(upstreams, vec![vec!["127.0.0.1:8080"]], "the upstream");
    assert_eq!(directive(&text, "proxy_pass"), vec![vec!["http://shorts"]]);
    for timeout in ["proxy_read_timeout", "proxy_send_timeout", "client_body_timeout"] {
        let value = directive(&text, timeout);
        // Longer than the server's SHORTS_BODY_TIMEOUT.
        let body_timeout = shorts_runtime::Config::default().body_read_timeout.as_secs();
        assert!(seconds(value[0][0]) > body_timeout, "{timeout} {:?}", value[0]);
    }

    // Idle connections to the short are dropped before the short closes them.
    let idle = shorts_runtime::Config::default().idle_timeout.as_secs();
    let keepalive = directive(&text, "keepalive_timeout");
    assert_eq!(keepalive.len(), 1, "the upstream's keepalive_timeout");
    assert!(
        seconds(keepalive[0][0]) < idle,
        "keepalive_timeout {:?}",
        keepalive[0]
    );

    if installed("nginx") {
        nginx_t(&text);
    }
}

/// `nginx -t` on the file inside a minimal main configuration, with a self-signed certificate in
/// place of the Let's Encrypt paths.
fn nginx_t(text: &str) {
    let dir = TempDir::new("shorts-deploy-nginx");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["shorts.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path("cert.pem"), dir.path("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let site: String = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("ssl_certificate_key ") {
                format!("ssl_certificate_key {};\n", key_path.display())
            } else if trimmed.starts_with("ssl_certificate ") {
                format!("ssl_certificate {};\n", cert_path.display())
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let site_path = dir.path("shorts.conf");
    std::fs::write(&site_path, site).unwrap();
    let d = dir.root().display();
    let main = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {};\n}}\n",
        site_path.display()
    );
    let main_path = dir.path("nginx.conf");
    std::fs::write(&main_path, main).unwrap();
    let mut command = Command::new("nginx");
    command
        .arg("-t")
        .arg("-p")
        .arg(dir.root())
        .arg("-c")
        .arg(&main_path);
    let output = run_bounded(command);
    assert!(
        output.status.success(),
        "nginx -t failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_caddyfile_forwards_to_the_loopback_listener_with_the_body_limit() {
    let text = deploy_file("Caddyfile");
    assert_balanced(&text, "Caddyfile");
    let sizes = directive(&text, "max_size");
    assert_eq!(sizes.len(), 1, "one request_body max_size");
    assert!(
        bytes(sizes[0][0]) >= MAX_BODY,
        "max_size {} < 64 MiB",
        sizes[0][0]
    );
    assert_eq!(
        directive(&text, "reverse_proxy"),
        vec![vec!["127.0.0.1:8080", "{"]],
        "the short's loopback listener"
    );
    let answer = directive(&text, "response_header_timeout");
    let body_timeout = shorts_runtime::Config::default().body_read_timeout.as_secs();
    assert!(seconds(answer[0][0]) > body_timeout);
    let idle = shorts_runtime::Config::default().idle_timeout.as_secs();
    let keepalive = directive(&text, "keepalive");
    assert!(seconds(keepalive[0][0]) < idle, "keepalive {:?}", keepalive[0]);
}

#[test]
fn the_guide_binds_the_loopback_address_behind_a_proxy() {
    for file in ["README.md", "Caddyfile", "nginx.conf", "shorts.env.example"] {
        let text = deploy_file(file);
        assert!(
            text.contains("SHORTS_BIND=127.0.0.1:8080"),
            "deploy/{file} does not bind the short to 127.0.0.1:8080"
        );
        assert!(
            text.contains("SHORTS_PUBLIC_URL=https://"),
            "deploy/{file} does not set SHORTS_PUBLIC_URL"
        );
    }
}
