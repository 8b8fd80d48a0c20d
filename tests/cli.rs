//! The real `authgate` binary: `check`, `serve` with SIGTERM, and the `demo` walkthrough.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

fn authgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run authgate")
}

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
    let out = authgate(&["check", "-c", example.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn check_names_every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "upstream:\n  url: \"not a url\"\n  request_timeout: forever\nlimits:\n  max_conections: 5\n",
    )
    .unwrap();
    let out = authgate(&["check", "-c", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: upstream.url"), "{err}");
    assert!(
        err.contains("line 3: upstream.request_timeout: `forever`"),
        "{err}"
    );
    assert!(
        err.contains("line 5: limits.max_conections: unknown key"),
        "{err}"
    );
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[test]
fn check_reports_a_missing_file() {
    let out = authgate(&["check", "-c", "/nonexistent/authgate.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/authgate.yaml"));
}

/// Lines of a child's output stream, delivered over a channel by a reader thread.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for the first line containing `needle`.
fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

fn value_after<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
    line[start..].split_whitespace().next().unwrap()
}

fn terminate_and_wait(child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(PATIENCE)
        .expect("exit after SIGTERM")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_proxies_and_exits_zero_on_sigterm() {
    let upstream =
        Upstream::start(|_req| async { http::Response::new(full("from upstream")) }).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{}\" }}\n",
            upstream.addr
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let line = wait_for_line(&stderr, "listening");
    let proxy = value_after(&line, "proxy=").to_string();
    let admin = value_after(&line, "admin=").to_string();

    let response = within(
        "GET",
        client().get(format!("http://{proxy}/p").parse().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(body_bytes(response).await, "from upstream");
    let ready = within(
        "readyz",
        client().get(format!("http://{admin}/readyz").parse().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(ready.status(), 200);

    let status = tokio::task::spawn_blocking(move || terminate_and_wait(child))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    wait_for_line(&stderr, "stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_walkthrough_commands_succeed() {
    if !have_tool("curl", "--version") {
        return;
    }
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--proxy",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let mut commands = Vec::new();
    loop {
        let line = stdout.recv_timeout(PATIENCE).expect("demo output");
        if let Some(cmd) = line.trim_start().strip_prefix("curl ") {
            commands.push(format!("curl {cmd}"));
            if cmd.contains("/metrics") {
                break;
            }
        }
    }
    let expectations = [
        "<success>true</success>",
        "<status>complete</status>",
        "\"color\":\"red\"",
        "ready",
        "authgate_requests_total",
    ];
    assert_eq!(commands.len(), expectations.len(), "{commands:#?}");
    for (cmd, expected) in commands.iter().zip(expectations) {
        let out = tokio::task::spawn_blocking({
            let cmd = cmd.clone();
            move || Command::new("bash").args(["-c", &cmd]).output().unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(expected), "{cmd}\n→ {text}");
    }
    let status = tokio::task::spawn_blocking(move || terminate_and_wait(child))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = authgate(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("frobnicate"));
}
