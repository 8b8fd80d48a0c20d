//! A real HAProxy (`haproxy -db`) in front of a test gateway, on a free port.

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::io::{Read, Write};

use super::have_tool;
use super::redis::free_port;

/// Whether haproxy can run (else the test prints SKIPPED and returns).
pub fn have_haproxy() -> bool {
    have_tool("haproxy", "-v")
}

/// An HAProxy process, killed when dropped.
pub struct HaProxy {
    /// Where its frontend listens.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy in `mode` (`tcp`, `http`) with one frontend on a free port and one
    /// backend holding `backend` (its `server` line and options).
    ///
    /// A port found free can be taken before HAProxy binds it; `noreuseport` makes that
    /// a failed bind (HAProxy exits) instead of two listeners sharing the port, and the
    /// start is tried again on another port. HAProxy has bound its frontend once its
    /// stats socket (in a folder of our own) answers with our child's pid.
    pub fn start(mode: &str, backend: &str) -> HaProxy {
        for _ in 0..10 {
            if let Some(haproxy) = HaProxy::try_start(mode, backend, free_port()) {
                return haproxy;
            }
        }
        panic!("haproxy did not start on any of 10 free ports");
    }

    fn try_start(mode: &str, backend: &str, port: u16) -> Option<HaProxy> {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  noreuseport\n  stats socket {socket} level admin\n\
                 defaults\n  mode {mode}\n  timeout connect 2s\n  timeout client 20s\n  timeout server 20s\n\
                 frontend in\n  bind 127.0.0.1:{port}\n  default_backend gateway\n\
                 backend gateway\n{backend}\n",
                socket = socket.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy starts");
        let mut haproxy = HaProxy {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            dir,
        };
        let pid = format!("Pid: {}", haproxy.child.id());
        for _ in 0..400 {
            if !matches!(haproxy.child.try_wait(), Ok(None)) {
                eprintln!("haproxy exited: {}", haproxy.log());
                return None;
            }
            if let Some(info) = show_info(&socket) {
                return info.lines().any(|l| l.trim() == pid).then_some(haproxy);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "haproxy never answered on its stats socket: {}",
            haproxy.log()
        );
    }

    /// What HAProxy wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

/// `show info` on the stats socket, if it answers.
fn show_info(socket: &Path) -> Option<String> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"show info\n").ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
