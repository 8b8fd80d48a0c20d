//! The access log: one line per proxied request, written after its response ended (or
//! was abandoned), as JSON or text, to stdout, stderr or a file reopened on SIGUSR1.
//!
//! Lines go through tracing-appender's non-blocking writer: the request path formats the
//! line and hands it to a bounded queue; a worker thread writes it. When the queue is
//! full the line is dropped and counted (`authgate_access_log_dropped_total`), so a slow
//! disk never stalls requests. Nothing secret is written: the path is the normalised path
//! without its query, and tokens appear only as their public id.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

use crate::config::{AccessLog, AccessLogFormat, AccessLogTarget};

/// Lines queued before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Record {
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    pub request_id: String,
    /// The real client address (PROXY header or trusted `X-Forwarded-For`).
    pub client: String,
    /// The TCP peer.
    pub peer: String,
    pub method: String,
    /// Normalised; never the query.
    pub path: String,
    pub proto: &'static str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub tenant: Option<String>,
    pub route: &'static str,
    pub decision: Option<&'static str>,
    pub token_id: Option<String>,
    pub trace_id: Option<String>,
    /// Whether the exchange completed: false when the request body broke off (the client
    /// went away mid-upload, or sent a broken body), when the client went away before
    /// the response's end, or when the upstream's body broke off.
    pub complete: bool,
}

/// Where access-log lines go.
#[derive(Debug)]
pub struct AccessLogger {
    writer: NonBlocking,
    format: AccessLogFormat,
    dropped: ErrorCounter,
    /// Set by SIGUSR1: the file writer reopens its path before the next line.
    reopen: Arc<AtomicBool>,
    _worker: WorkerGuard,
}

impl AccessLogger {
    /// The logger `config` asks for; `None` when the log is off.
    pub fn open(config: &AccessLog) -> io::Result<Option<AccessLogger>> {
        let reopen = Arc::new(AtomicBool::new(false));
        let sink: Box<dyn Write + Send> = match &config.target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::Stderr => Box::new(io::stderr()),
            AccessLogTarget::File(path) => Box::new(Reopening::open(path.clone(), reopen.clone())?),
        };
        let (writer, worker) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("authgate-access-log")
            .finish(sink);
        Ok(Some(AccessLogger {
            dropped: writer.error_counter(),
            writer,
            format: config.format,
            reopen,
            _worker: worker,
        }))
    }

    /// Queues one line; never blocks.
    pub fn write(&self, record: &Record) {
        let mut line = match self.format {
            AccessLogFormat::Json => serde_json::to_string(record).unwrap_or_default(),
            AccessLogFormat::Text => text(record),
        };
        line.push('\n');
        let _ = self.writer.clone().write(line.as_bytes());
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> usize {
        self.dropped.dropped_lines()
    }

    /// Reopen the file before the next line (logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

/// `time client "METHOD path proto" status bytes_in bytes_out duration_ms key=value…`
fn text(r: &Record) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    format!(
        "{} {} \"{} {} {}\" {} {} {} {:.3} request_id={} peer={} route={} tenant={} decision={} token_id={} upstream_ms={} trace_id={} complete={}",
        r.time,
        r.client,
        r.method,
        r.path,
        r.proto,
        r.status,
        r.bytes_in,
        r.bytes_out,
        r.duration_ms,
        r.request_id,
        r.peer,
        r.route,
        opt(&r.tenant),
        r.decision.unwrap_or("-"),
        opt(&r.token_id),
        r.upstream_ms.map_or_else(|| "-".into(), |ms| format!("{ms:.3}")),
        opt(&r.trace_id),
        r.complete,
    )
}

/// A log file that reopens its path when asked (after logrotate renamed it).
struct Reopening {
    path: PathBuf,
    file: File,
    reopen: Arc<AtomicBool>,
}

impl Reopening {
    fn open(path: PathBuf, reopen: Arc<AtomicBool>) -> io::Result<Reopening> {
        let file = append(&path)?;
        Ok(Reopening { path, file, reopen })
    }
}

fn append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for Reopening {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.reopen.swap(false, Ordering::AcqRel) {
            match append(&self.path) {
                Ok(file) => self.file = file,
                // Keep writing to the old file rather than losing lines.
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot reopen the access log")
                }
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The address as logged: the IP, with IPv4-mapped IPv6 shown as IPv4, and the port.
pub fn address(addr: SocketAddr) -> String {
    SocketAddr::new(addr.ip().to_canonical(), addr.port()).to_string()
}

/// The current time as the log writes it.
pub fn now() -> String {
    crate::time::rfc3339_ms(SystemTime::now())
}
