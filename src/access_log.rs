//! The access log: one line per proxied request, written after its response ended (or
//! was abandoned), as JSON or text, to stdout, stderr or a file reopened on SIGUSR1.
//!
//! The request path formats its line straight into a shared batch (no allocation per
//! line); a full batch, or every [`FLUSH_EVERY`] whatever is in it, goes as one message
//! to tracing-appender's bounded non-blocking writer, whose worker thread writes it with
//! one system call. Batching is what keeps the log within its CPU budget: one channel
//! send, one wake-up and one `write` for a hundred lines instead of one each (nginx's
//! `access_log … buffer=` does the same). When the writer's queue is full the batch is
//! dropped and its lines counted (`authgate_access_log_dropped_total`), so a slow disk
//! never stalls requests. Nothing secret is written: the path is the normalised path
//! without its query, and tokens appear only as their public id.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

use crate::config::{AccessLog, AccessLogFormat, AccessLogTarget};

/// A batch this large goes to the writer at once.
const BATCH_BYTES: usize = 32 * 1024;
/// How long a line may wait in a batch that is not full.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Batches queued for the writer thread before new ones are dropped (8 MiB).
const QUEUE_BATCHES: usize = 256;

/// One request, as logged.
#[derive(Debug)]
pub struct Record<'a> {
    /// Shown as RFC 3339 with milliseconds, UTC.
    pub time: SystemTime,
    pub request_id: &'a str,
    /// The real client address (PROXY header or trusted `X-Forwarded-For`).
    pub client: IpAddr,
    /// The TCP peer.
    pub peer: SocketAddr,
    pub method: &'a str,
    /// Normalised; never the query.
    pub path: &'a str,
    pub proto: &'static str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub tenant: Option<&'a str>,
    pub route: &'static str,
    pub decision: Option<&'static str>,
    pub token_id: Option<&'a str>,
    pub trace_id: Option<&'a str>,
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
    batch: Mutex<Batch>,
    /// The writer's count of dropped messages (batches).
    refused: ErrorCounter,
    /// Lines in dropped batches.
    dropped: AtomicU64,
    /// Set by SIGUSR1: the file writer reopens its path before the next line.
    reopen: Arc<AtomicBool>,
    _worker: WorkerGuard,
}

/// Lines formatted and not yet handed to the writer.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

impl AccessLogger {
    /// The logger `config` asks for; `None` when the log is off.
    pub fn open(config: &AccessLog) -> io::Result<Option<AccessLogger>> {
        let reopen = Arc::new(AtomicBool::new(false));
        let sink: Box<dyn Write + Send> = match &config.target {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(io::stdout()),
            AccessLogTarget::Stderr => Box::new(io::stderr()),
            AccessLogTarget::File(path) => {
                Box::new(Reopening::open(path.clone(), reopen.clone()).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("access_log.target: cannot open {}: {e}", path.display()),
                    )
                })?)
            }
        };
        Ok(Some(AccessLogger::with_sink(sink, config.format, reopen)))
    }

    fn with_sink(
        sink: Box<dyn Write + Send>,
        format: AccessLogFormat,
        reopen: Arc<AtomicBool>,
    ) -> AccessLogger {
        let (writer, worker) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUE_BATCHES)
            .thread_name("authgate-access-log")
            .finish(sink);
        AccessLogger {
            refused: writer.error_counter(),
            writer,
            format,
            batch: Mutex::new(Batch {
                bytes: Vec::with_capacity(BATCH_BYTES + 1024),
                lines: 0,
            }),
            dropped: AtomicU64::new(0),
            reopen,
            _worker: worker,
        }
    }

    /// Adds one line to the batch; never blocks on the writer.
    pub fn write(&self, record: &Record<'_>) {
        let mut batch = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        match self.format {
            AccessLogFormat::Json => json(record, &mut batch.bytes),
            AccessLogFormat::Text => text(record, &mut batch.bytes),
        }
        batch.bytes.push(b'\n');
        batch.lines += 1;
        if batch.bytes.len() >= BATCH_BYTES {
            self.send(&mut batch);
        }
    }

    /// Hands the lines waiting in the batch to the writer.
    pub fn flush(&self) {
        let mut batch = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        self.send(&mut batch);
    }

    /// Under the batch's lock, so the writer's drop count moves only for this batch.
    fn send(&self, batch: &mut Batch) {
        if batch.lines == 0 {
            return;
        }
        let before = self.refused.dropped_lines();
        let _ = self.writer.clone().write(&batch.bytes);
        if self.refused.dropped_lines() != before {
            self.dropped.fetch_add(batch.lines, Ordering::Relaxed);
        }
        batch.bytes.clear();
        batch.lines = 0;
    }

    /// Lines dropped because the writer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reopen the file before the next line (logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Flushes the batch every [`FLUSH_EVERY`] and reopens the file on every SIGUSR1
    /// (logrotate's `postrotate`), until dropped.
    pub async fn maintain(self: Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1())
            .inspect_err(|_| {
                tracing::warn!("cannot listen for SIGUSR1; the access log will not be reopened")
            })
            .ok();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush(),
                Some(()) = async { usr1.as_mut()?.recv().await } => {
                    // Lines of before the rotation go to the old file.
                    self.flush();
                    self.reopen();
                }
            }
        }
    }
}

impl Drop for AccessLogger {
    /// The last lines go to the writer, whose guard (dropped next) writes them out.
    fn drop(&mut self) {
        self.flush();
    }
}

/// `{"time":…,"request_id":…,…}` with the fields in [`Record`]'s order.
fn json(r: &Record<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    timestamp(r.time, out);
    out.extend_from_slice(b"\",\"request_id\":");
    // Well-formed (a trusted peer's) or generated: see `proxy::exchange::well_formed`.
    raw(r.request_id, out);
    out.extend_from_slice(b",\"client\":\"");
    ip(r.client, out);
    out.extend_from_slice(b"\",\"peer\":\"");
    address(r.peer, out);
    out.extend_from_slice(b"\",\"method\":");
    raw(r.method, out); // an HTTP token
    out.extend_from_slice(b",\"path\":");
    string(r.path, out);
    out.extend_from_slice(b",\"proto\":\"");
    out.extend_from_slice(r.proto.as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    number(r.status.into(), out);
    out.extend_from_slice(b",\"bytes_in\":");
    number(r.bytes_in, out);
    out.extend_from_slice(b",\"bytes_out\":");
    number(r.bytes_out, out);
    out.extend_from_slice(b",\"duration_ms\":");
    millis(r.duration_ms, out);
    out.extend_from_slice(b",\"upstream_ms\":");
    match r.upstream_ms {
        Some(ms) => millis(ms, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"tenant\":");
    optional(r.tenant, out);
    out.extend_from_slice(b",\"route\":\"");
    out.extend_from_slice(r.route.as_bytes());
    out.extend_from_slice(b"\",\"decision\":");
    optional(r.decision, out);
    // Both hex.
    for (key, id) in [
        (&b",\"token_id\":"[..], r.token_id),
        (b",\"trace_id\":", r.trace_id),
    ] {
        out.extend_from_slice(key);
        match id {
            Some(id) => raw(id, out),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(if r.complete {
        b",\"complete\":true}"
    } else {
        b",\"complete\":false}"
    });
}

/// A JSON string: quoted as it is when nothing in it needs escaping (most paths and
/// tenants), else quoted and escaped by serde_json.
fn string(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| PLAIN[usize::from(b)]) {
        raw(s, out);
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// A string that needs no escaping by construction (request ids, hex ids, methods).
fn raw(s: &str, out: &mut Vec<u8>) {
    debug_assert!(s.bytes().all(|b| PLAIN[usize::from(b)]), "{s:?}");
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// The bytes a JSON string holds as they are: printable ASCII but `"` and `\\`.
static PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        plain[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    plain
};

fn optional(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => string(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn number(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds with three decimals (to the microsecond).
fn millis(ms: f64, out: &mut Vec<u8>) {
    let micros = (ms * 1000.0).round().max(0.0) as u64;
    number(micros / 1000, out);
    thousandths((micros % 1000) as u16, out);
}

/// `.nnn`: `n` (below 1,000) as three decimals.
fn thousandths(n: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&[
        b'.',
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// The IP as logged, IPv4-mapped IPv6 shown as IPv4.
fn ip(ip: IpAddr, out: &mut Vec<u8>) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            number(a.into(), out);
            for octet in [b, c, d] {
                out.push(b'.');
                number(octet.into(), out);
            }
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `ip:port`, with `[…]` around an IPv6 address.
fn address(addr: SocketAddr, out: &mut Vec<u8>) {
    let canonical = addr.ip().to_canonical();
    if canonical.is_ipv6() {
        out.push(b'[');
        ip(canonical, out);
        out.push(b']');
    } else {
        ip(canonical, out);
    }
    out.push(b':');
    number(addr.port().into(), out);
}

/// `2026-01-31T12:00:00.123Z`. The part up to the second is formatted once a second
/// per thread, as nginx caches its log times.
fn timestamp(time: SystemTime, out: &mut Vec<u8>) {
    use std::cell::Cell;
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since.as_secs();
    let prefix = SECOND.with(|cached| {
        let (at, prefix) = cached.get();
        if at == second {
            return prefix;
        }
        let whole = crate::time::rfc3339(UNIX_EPOCH + Duration::from_secs(second));
        let mut prefix = [0; 19];
        prefix.copy_from_slice(&whole.as_bytes()[..19]);
        cached.set((second, prefix));
        prefix
    });
    out.extend_from_slice(&prefix);
    thousandths(since.subsec_millis() as u16, out);
    out.push(b'Z');
}

/// `time client "METHOD path proto" status bytes_in bytes_out duration_ms key=value…`
fn text(r: &Record<'_>, out: &mut Vec<u8>) {
    timestamp(r.time, out);
    out.push(b' ');
    ip(r.client, out);
    let _ = write!(
        out,
        " \"{} {} {}\" {} {} {} ",
        r.method, r.path, r.proto, r.status, r.bytes_in, r.bytes_out
    );
    millis(r.duration_ms, out);
    let _ = write!(out, " request_id={} peer=", r.request_id);
    address(r.peer, out);
    let _ = write!(
        out,
        " route={} tenant={} decision={} token_id={} upstream_ms=",
        r.route,
        r.tenant.unwrap_or("-"),
        r.decision.unwrap_or("-"),
        r.token_id.unwrap_or("-"),
    );
    match r.upstream_ms {
        Some(ms) => millis(ms, out),
        None => out.push(b'-'),
    }
    let _ = write!(
        out,
        " trace_id={} complete={}",
        r.trace_id.unwrap_or("-"),
        r.complete
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(path: &'a str, client: &str, peer: &str) -> Record<'a> {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_767_225_600_007),
            request_id: "id-1",
            client: client.parse().unwrap(),
            peer: peer.parse().unwrap(),
            method: "POST",
            path,
            proto: "HTTP/1.1",
            status: 201,
            bytes_in: 70,
            bytes_out: 0,
            duration_ms: 1.23456,
            upstream_ms: Some(0.0004),
            tenant: Some("acme"),
            route: "protected",
            decision: Some("ok"),
            token_id: None,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            complete: false,
        }
    }

    #[test]
    fn json_lines_are_json_with_every_field_escaped_where_needed() {
        let mut out = Vec::new();
        let odd = "/a\"b\\c\u{1}é";
        json(
            &record(odd, "::ffff:10.1.2.3", "[2001:db8::1]:443"),
            &mut out,
        );
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            line,
            serde_json::json!({
                "time": "2026-01-01T00:00:00.007Z",
                "request_id": "id-1",
                "client": "10.1.2.3",
                "peer": "[2001:db8::1]:443",
                "method": "POST",
                "path": odd,
                "proto": "HTTP/1.1",
                "status": 201,
                "bytes_in": 70,
                "bytes_out": 0,
                "duration_ms": 1.235,
                "upstream_ms": 0.0,
                "tenant": "acme",
                "route": "protected",
                "decision": "ok",
                "token_id": null,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "complete": false,
            })
        );
        let keys: Vec<&str> = std::str::from_utf8(&out)
            .unwrap()
            .split(",\"")
            .map(|k| k.trim_start_matches("{\"").split('"').next().unwrap())
            .collect();
        assert_eq!(keys.len(), 18, "one key per field: {keys:?}");
    }

    #[test]
    fn text_lines_lead_with_time_client_and_request_line() {
        let mut out = Vec::new();
        text(&record("/p", "192.0.2.1", "127.0.0.1:5000"), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-01-01T00:00:00.007Z 192.0.2.1 \"POST /p HTTP/1.1\" 201 70 0 1.235 \
             request_id=id-1 peer=127.0.0.1:5000 route=protected tenant=acme decision=ok \
             token_id=- upstream_ms=0.000 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 complete=false"
        );
    }

    #[test]
    fn timestamps_follow_the_second_they_are_in() {
        for ms in [0, 999, 1_000, 86_399_999, 86_400_000, 1_767_225_599_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            timestamp(t, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), crate::time::rfc3339_ms(t));
        }
    }

    #[test]
    fn lines_reach_the_file_in_order_on_flush_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let config = AccessLog {
            target: AccessLogTarget::File(path.clone()),
            format: AccessLogFormat::Json,
        };
        let logger = AccessLogger::open(&config).unwrap().unwrap();
        let paths: Vec<String> = (0..2000).map(|i| format!("/{i}")).collect();
        for p in &paths {
            logger.write(&record(p, "127.0.0.1", "127.0.0.1:1"));
        }
        drop(logger);
        let text = std::fs::read_to_string(&path).unwrap();
        let logged: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
            .collect();
        let expected: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
        assert_eq!(logged, expected, "every line, in order, none split");
    }

    /// A sink that blocks until the test lets it go, like a stalled disk.
    struct Stalled(std::sync::mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_costs_lines_counted_never_a_blocked_request() {
        let (release, gate) = std::sync::mpsc::channel();
        let logger = AccessLogger::with_sink(
            Box::new(Stalled(gate)),
            AccessLogFormat::Json,
            Arc::default(),
        );
        let path = "/".repeat(1000);
        let mut line = Vec::new();
        json(&record(&path, "127.0.0.1", "127.0.0.1:1"), &mut line);
        let per_batch = BATCH_BYTES.div_ceil(line.len() + 1) as u64;
        // Far more batches than the queue holds; each write returns at once.
        let lines = (QUEUE_BATCHES as u64 + 10) * per_batch;
        for _ in 0..lines {
            logger.write(&record(&path, "127.0.0.1", "127.0.0.1:1"));
        }
        let dropped = logger.dropped();
        assert!(dropped > 0 && dropped < lines, "{dropped} of {lines}");
        assert_eq!(dropped % per_batch, 0, "whole batches: {dropped}");
        drop(release); // the sink returns from now on, so dropping the logger ends
        drop(logger);
    }
}
