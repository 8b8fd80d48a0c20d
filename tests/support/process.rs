//! Driving the real `authgate` binary: its output lines, the addresses it logs, signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;

use super::PATIENCE;

/// Lines of a child's output stream, delivered over a channel by a reader thread.
pub fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
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
pub fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no line containing {needle:?}: {e}"),
        }
    }
}

/// The value logged after `key` (`proxy=` …) in a log line.
pub fn value_after<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(key).unwrap_or_else(|| panic!("{key} in {line}")) + key.len();
    line[start..].split_whitespace().next().unwrap()
}

/// Sends `signal` (`-TERM`, `-HUP`, …) to the child.
pub fn signal(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
}

/// SIGTERM, then the exit status (bounded by [`PATIENCE`]).
pub fn terminate_and_wait(child: Child) -> ExitStatus {
    signal(&child, "-TERM");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(PATIENCE)
        .expect("exit after SIGTERM")
        .unwrap()
}

/// Writes `dir/authgate.yaml` for the binary: both listeners on port 0, `upstream` over
/// plain HTTP, then `extra` (e.g. [`super::admin_yaml`]).
pub fn write_config(dir: &Path, upstream: SocketAddr, extra: &str) -> PathBuf {
    let config = dir.join("authgate.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nupstream: {{ url: \"http://{upstream}\" }}\n{extra}"
        ),
    )
    .unwrap();
    config
}

/// Where a started `authgate serve` listens, and the lines it logged before saying so.
pub struct Listening {
    pub proxy: String,
    pub admin: String,
    /// `listen.status`'s address; `None` when it is off.
    pub status: Option<String>,
    pub before: Vec<String>,
}

/// Waits for the listening line of `child` (an `authgate serve` with stderr piped).
/// Its stderr keeps being drained afterwards, so it never blocks on a full pipe; with
/// `AUTHGATE_TEST_LOGS` set, every line is echoed with `tag`.
pub fn await_listening(child: &mut Child, tag: &str) -> Listening {
    await_listening_into(child, tag, None)
}

/// [`await_listening`], also keeping every line (before and after the listening line)
/// in `sink`, for tests that search the logs.
pub fn await_listening_into(
    child: &mut Child,
    tag: &str,
    sink: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
) -> Listening {
    let keep = move |line: &str| {
        if let Some(sink) = &sink {
            sink.lock().unwrap().push(line.to_string());
        }
    };
    let rx = lines(child.stderr.take().expect("stderr piped"));
    let echo = std::env::var_os("AUTHGATE_TEST_LOGS").is_some();
    let tag = tag.to_string();
    let mut before = Vec::new();
    loop {
        let line = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("{tag}: no listening line ({e}): {before:#?}"));
        if echo {
            eprintln!("[{tag}] {line}");
        }
        keep(&line);
        if line.contains("listening") {
            let listening = Listening {
                proxy: value_after(&line, "proxy=").to_string(),
                admin: value_after(&line, "admin=").to_string(),
                status: Some(value_after(&line, "status=").to_string()).filter(|s| s != "off"),
                before,
            };
            std::thread::spawn(move || {
                while let Ok(line) = rx.recv() {
                    if echo {
                        eprintln!("[{tag}] {line}");
                    }
                    keep(&line);
                }
            });
            return listening;
        }
        before.push(line);
    }
}
