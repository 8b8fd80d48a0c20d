//! Redis Sentinel for tests: `redis-server <conf> --sentinel` on free ports, watching a
//! primary under the name `authgate` with small timeouts (down after 500 ms), so a
//! failover takes about a second or two, not minutes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;
use super::PATIENCE;

/// The name the sentinels monitor the primary under.
pub const MASTER: &str = "authgate";

/// One sentinel process, killed when dropped.
pub struct Sentinel {
    pub port: u16,
    /// `requirepass` of the sentinel itself.
    pub password: Option<String>,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Sentinel settings shared by the three.
pub struct SentinelOptions<'a> {
    pub primary_port: u16,
    /// The data nodes' password (`sentinel auth-pass`).
    pub redis_password: Option<&'a str>,
    /// The sentinels' own password (`requirepass`, `sentinel sentinel-pass`).
    pub password: Option<&'a str>,
    pub down_after_ms: u64,
    pub failover_timeout_ms: u64,
}

impl Sentinel {
    pub fn start(opts: &SentinelOptions<'_>) -> Sentinel {
        for _ in 0..10 {
            if let Some(s) = Sentinel::try_start(opts, free_port()) {
                return s;
            }
        }
        panic!("redis sentinel did not start on any of 10 free ports");
    }

    fn try_start(opts: &SentinelOptions<'_>, port: u16) -> Option<Sentinel> {
        let dir = tempfile::tempdir().unwrap();
        let conf: PathBuf = dir.path().join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER} {down}\n\
             sentinel failover-timeout {MASTER} {failover}\n\
             sentinel parallel-syncs {MASTER} 1\n",
            dir = dir.path().display(),
            primary = opts.primary_port,
            down = opts.down_after_ms,
            failover = opts.failover_timeout_ms,
        );
        if let Some(pw) = opts.redis_password {
            text.push_str(&format!("sentinel auth-pass {MASTER} {pw}\n"));
        }
        if let Some(pw) = opts.password {
            text.push_str(&format!("requirepass {pw}\nsentinel sentinel-pass {pw}\n"));
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let mut sentinel = Sentinel {
            port,
            password: opts.password.map(str::to_string),
            child,
            _dir: dir,
        };
        for _ in 0..200 {
            if !matches!(sentinel.child.try_wait(), Ok(None)) {
                return None; // the port was taken
            }
            if let Ok(info) = sentinel.try_cmd(&["INFO", "server"]) {
                let text = text_of(&info);
                let pid = format!("process_id:{}", sentinel.child.id());
                return text.lines().any(|l| l.trim() == pid).then_some(sentinel);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn try_cmd(&self, args: &[&str]) -> ::redis::RedisResult<::redis::Value> {
        let url = match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        };
        let client = ::redis::Client::open(url)?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut cmd = ::redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// The port of the primary this sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        match self.try_cmd(&["SENTINEL", "get-master-addr-by-name", MASTER]) {
            Ok(::redis::Value::Array(parts)) => text_of(parts.get(1)?).parse().ok(),
            _ => None,
        }
    }

    /// `SENTINEL master authgate` field `name`.
    pub fn master_field(&self, name: &str) -> Option<String> {
        let Ok(::redis::Value::Array(fields)) = self.try_cmd(&["SENTINEL", "master", MASTER])
        else {
            return None;
        };
        fields
            .chunks(2)
            .find(|kv| text_of(&kv[0]) == name)
            .map(|kv| text_of(&kv[1]))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn text_of(v: &::redis::Value) -> String {
    match v {
        ::redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        ::redis::Value::SimpleString(s) => s.clone(),
        ::redis::Value::VerbatimString { text, .. } => text.clone(),
        ::redis::Value::Int(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// Waits (polling) until every sentinel names `primary_port`, knows `replicas` replicas
/// and the two other sentinels, so a failover can be agreed on.
pub fn await_sentinels(sentinels: &[Sentinel], primary_port: u16, replicas: usize) {
    let start = Instant::now();
    loop {
        let settled = sentinels.iter().all(|s| {
            s.primary_port() == Some(primary_port)
                && s.master_field("num-slaves").as_deref() == Some(&replicas.to_string())
                && s.master_field("num-other-sentinels").as_deref()
                    == Some(&(sentinels.len() - 1).to_string())
                && s.master_field("flags").as_deref() == Some("master")
        });
        if settled {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE * 6,
            "sentinels did not settle on primary {primary_port} with {replicas} replica(s)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
