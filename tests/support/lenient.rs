//! Real lenient frameworks as upstreams: the Flask app in `tests/lenient/flask/` and the
//! Express app in `tests/lenient/express/`, each a child process on port 0 that prints
//! its port, records every request and every executed bulk update, and serves them at
//! `GET /__log`. The child is killed when its [`Backend`] is dropped.
//!
//! Flask runs from the venv `.ci/run` creates (`tests/lenient/.venv`), or from `python3`
//! when that has Flask; Express from `tests/lenient/express/node_modules` (`npm ci`).
//! A missing one skips the test with a message, unless `AUTHGATE_REQUIRE_TOOLS` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};

use serde::Deserialize;

use super::*;

/// Which framework serves as the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    Flask,
    Express,
}

/// One request as the framework received it, before any of its middleware ran.
#[derive(Debug, Clone, Deserialize)]
pub struct Received {
    /// The `X-Authgate-Case` header: which test case sent it.
    pub case: Option<String>,
    pub method: Option<String>,
    pub target: Option<String>,
    pub authorization: Option<String>,
    pub x_original_url: Option<String>,
    pub x_rewrite_url: Option<String>,
    /// Node's parser refused the head (Express never saw it), with Node's error code.
    #[serde(default)]
    pub rejected_by_node: Option<String>,
}

/// One bulk update a POST-only `batchUpdate` handler executed.
#[derive(Debug, Clone, Deserialize)]
pub struct Execution {
    pub case: Option<String>,
    pub method: String,
    /// The path as the handler saw it (after any rewrite).
    pub path: String,
    /// The tenant as looked up (the `client` query parameter wins over the path's).
    pub client: String,
    /// `client` folded as a case- and accent-insensitive collation compares it.
    pub tenant: String,
    pub authorization: Option<String>,
}

/// Everything the framework recorded so far.
#[derive(Debug, Clone, Deserialize)]
pub struct Log {
    pub requests: Vec<Received>,
    pub executions: Vec<Execution>,
}

/// A running framework upstream.
pub struct Backend {
    pub framework: Framework,
    pub addr: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn lenient_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lenient")
}

/// The Python that has Flask: the venv's, else `python3`.
fn python() -> PathBuf {
    let venv = lenient_dir().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Whether `program args` runs and exits 0.
fn runs(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips (with a message) or, under `AUTHGATE_REQUIRE_TOOLS`, fails when `ok` is false.
fn required(ok: bool, what: &str, install: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("AUTHGATE_REQUIRE_TOOLS").is_none(),
            "{what} is required (AUTHGATE_REQUIRE_TOOLS is set): {install}"
        );
        eprintln!("SKIPPED: {what} is not installed; {install}");
    }
    ok
}

impl Framework {
    /// Whether this framework can run here (see the module documentation).
    pub fn available(self) -> bool {
        match self {
            Framework::Flask => {
                let python = python();
                required(
                    runs(&python, &["-c", "import flask, werkzeug"]),
                    "Flask (Python 3 with the packages of tests/lenient/flask/requirements.txt)",
                    "python3 -m venv tests/lenient/.venv && tests/lenient/.venv/bin/pip install \
                     --require-hashes -r tests/lenient/flask/requirements.txt",
                )
            }
            Framework::Express => {
                if !have_tool("node", "--version") {
                    return false;
                }
                let module = lenient_dir().join("express/node_modules/express");
                required(
                    module.is_dir(),
                    "Express (tests/lenient/express/node_modules)",
                    "run `npm ci` in tests/lenient/express",
                )
            }
        }
    }

    fn command(self) -> Command {
        let mut command = match self {
            Framework::Flask => {
                let mut c = Command::new(python());
                c.arg("app.py").current_dir(lenient_dir().join("flask"));
                c
            }
            Framework::Express => {
                let mut c = Command::new("node");
                c.arg("app.js").current_dir(lenient_dir().join("express"));
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

impl Backend {
    /// Starts `framework` and waits (bounded) for the port it prints.
    pub fn start(framework: Framework) -> Backend {
        let mut child = framework
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("{framework:?} starts: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let errors = process::lines(child.stderr.take().unwrap());
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in errors {
                keep.lock().unwrap().push(line);
            }
        });
        let stdout = process::lines(child.stdout.take().unwrap());
        let port = match stdout.recv_timeout(PATIENCE) {
            Ok(line) => line.trim().parse::<u16>().ok(),
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => None,
        };
        let mut backend = Backend {
            framework,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            stderr,
        };
        match port {
            Some(port) => backend.addr.set_port(port),
            None => {
                let _ = backend.child.kill();
                let _ = backend.child.wait();
                panic!(
                    "{framework:?} printed no port within {PATIENCE:?}; stderr:\n{}",
                    backend.stderr_text()
                );
            }
        }
        backend
    }

    /// What the framework wrote to stderr so far (for failure messages).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The requests and executions recorded so far, fetched from the framework directly.
    pub async fn log(&self) -> Log {
        let url = format!("http://{}/__log", self.addr);
        let response = within("the upstream's log", client().get(url.parse().unwrap()))
            .await
            .unwrap_or_else(|e| panic!("{:?} log: {e}\n{}", self.framework, self.stderr_text()));
        let bytes = body_bytes(response).await;
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
