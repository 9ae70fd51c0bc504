//! Helpers of the console tests: a client of the HTTP API, tokens made with the CLI, and
//! checks of the Prometheus text format.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, dead_code)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cli::{apiary, ok};
use super::nodes::DEADLINE;

/// A loopback address with a free port.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `apiary token create --scope SCOPE` on `storage`: the token.
pub fn token(dir: &Path, storage: &str, scope: &str) -> String {
    let out = apiary(
        dir,
        &["token", "create", "--scope", scope, "--storage", storage],
    );
    ok(&out).trim().to_string()
}

/// Runs `apiary ARGS --storage STORAGE` in `dir`; it must succeed.
pub fn cli(dir: &Path, storage: &str, args: &[&str]) {
    let args: Vec<&str> = args.iter().copied().chain(["--storage", storage]).collect();
    ok(&apiary(dir, &args));
}

pub struct Client {
    pub http: reqwest::Client,
}

impl Client {
    /// A client whose requests time out after ten seconds.
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// `method path` on `addr` with `token` and `body`: the status and the body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        addr: SocketAddr,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn get(&self, addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = self.http.get(format!("http://{addr}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn json(&self, addr: SocketAddr, path: &str, token: &str) -> Value {
        let (status, body) = self.get(addr, path, Some(token)).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET path` on `addr`, or `None` when the node does not answer (not listening yet).
    async fn try_get(&self, addr: SocketAddr, path: &str, token: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("http://{addr}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `check` holds of `GET path` on `addr` (a node not listening yet is waited
    /// for too).
    pub async fn until(
        &self,
        addr: SocketAddr,
        path: &str,
        token: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let (status, body) = self
                .try_get(addr, path, token)
                .await
                .unwrap_or((0, "no answer".into()));
            if status == 200 {
                let v: Value = serde_json::from_str(&body).unwrap();
                if check(&v) {
                    return v;
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{addr}{path}: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn states(nodes: &Value) -> BTreeSet<(String, String)> {
    nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Checks `text` line by line against the Prometheus text format (0.0.4): comments are
/// `# HELP name text` or `# TYPE name type` (declared once, before the samples), samples
/// are `name{labels} value` with a known name, counters end in `_total`.
pub fn check_prometheus_text(text: &str) {
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut sampled = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, value) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap_or(""),
            );
            assert!(name.starts_with("apiary_"), "{line}");
            match kind {
                "HELP" => assert!(!value.is_empty(), "{line}"),
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "untyped",
                            "info"
                        ]
                        .contains(&value),
                        "{line}"
                    );
                    if value == "counter" {
                        assert!(name.ends_with("_total"), "counters end in _total: {line}");
                    }
                    assert!(types.insert(name.into(), value.into()).is_none(), "{line}");
                }
                _ => panic!("unknown comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        assert!(
            types.contains_key(name) || types.keys().any(|t| name.starts_with(t.as_str())),
            "a sample before its TYPE: {line}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        value
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        sampled += 1;
    }
    assert!(sampled > 10, "{text}");
}

/// Checks `text` with Prometheus' own `promtool check metrics` (installed by
/// scripts/test-deps.sh from Debian's `prometheus` package): it must find no problem.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is not installed ({e}): run the tests with scripts/test.sh")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}
