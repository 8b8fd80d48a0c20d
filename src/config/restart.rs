//! What a live reload may not change: the keys whose new value needs new sockets,
//! another store or another process ([`needs_restart`]). A reload that changes any of
//! them is refused whole, each one reported with its line, so the file never serves
//! half-applied.

use super::locate::{self, Seg};
use super::validate::path;
use super::*;

/// Every key whose value differs between the running `old` and the reloaded `new`
/// (parsed from `text`) and that cannot change without a restart.
pub fn needs_restart(old: &Config, new: &Config, text: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut changed = |key: &[&str], before: String, after: String, why: &str| {
        if before != after {
            let segs: Vec<Seg> = path(key);
            out.push(Problem {
                key: locate::display(&segs),
                line: locate::line_of(text, &segs),
                message: format!("changed from `{before}` to `{after}`; needs a restart ({why})"),
            });
        }
    };
    let sockets = "the listening sockets are opened once";
    let (o, n) = (&old.listen, &new.listen);
    changed(
        &["listen", "proxy"],
        o.proxy.to_string(),
        n.proxy.to_string(),
        sockets,
    );
    changed(
        &["listen", "admin"],
        o.admin.to_string(),
        n.admin.to_string(),
        sockets,
    );
    let status = |s: Option<SocketAddr>| s.map_or("off".into(), |a| a.to_string());
    changed(
        &["listen", "status"],
        status(o.status),
        status(n.status),
        sockets,
    );
    let what = "the listeners' protocols are set when they open";
    let pp = |l: &Listen| format!("{:?}", l.proxy_protocol).to_lowercase();
    changed(&["listen", "proxy_protocol"], pp(o), pp(n), what);
    let probes = |l: &Listen| l.admin_probes.to_string();
    changed(&["listen", "admin_probes"], probes(o), probes(n), what);
    let tls = |t: &Option<ListenerTls>| if t.is_some() { "on" } else { "off" }.to_string();
    let plain = "a listener turns TLS on or off only when it opens";
    changed(
        &["tls", "proxy"],
        tls(&old.tls.proxy),
        tls(&new.tls.proxy),
        plain,
    );
    changed(
        &["tls", "admin"],
        tls(&old.tls.admin),
        tls(&new.tls.admin),
        plain,
    );
    state_changes(&old.state, &new.state, &mut changed);
    let threads = |c: &Config| c.runtime.worker_threads.to_string();
    let runtime = "the runtime starts once";
    changed(
        &["runtime", "worker_threads"],
        threads(old),
        threads(new),
        runtime,
    );
    let stealing = |c: &Config| c.runtime.work_stealing.to_string();
    changed(
        &["runtime", "work_stealing"],
        stealing(old),
        stealing(new),
        runtime,
    );
    let format = |c: &Config| format!("{:?}", c.log.format).to_lowercase();
    changed(
        &["log", "format"],
        format(old),
        format(new),
        "the log writer is set up once",
    );
    let access = "the access log is opened once";
    let target = |c: &Config| format!("{:?}", c.access_log.target);
    changed(&["access_log", "target"], target(old), target(new), access);
    let format = |c: &Config| format!("{:?}", c.access_log.format).to_lowercase();
    changed(&["access_log", "format"], format(old), format(new), access);
    out
}

fn state_changes(
    old: &State,
    new: &State,
    changed: &mut impl FnMut(&[&str], String, String, &str),
) {
    let store = "the state store is opened once";
    match (old, new) {
        (State::File { path: a }, State::File { path: b }) => changed(
            &["state", "path"],
            a.display().to_string(),
            b.display().to_string(),
            "the state file is opened and locked once",
        ),
        (State::Redis(a), State::Redis(b)) => {
            let mut field = |key: &str, x: String, y: String| {
                changed(&["state", "redis", key], x, y, store);
            };
            field("url", redacted(&a.url), redacted(&b.url));
            field("key_prefix", a.key_prefix.clone(), b.key_prefix.clone());
            field("lease", format!("{:?}", a.lease), format!("{:?}", b.lease));
            field(
                "heartbeat",
                format!("{:?}", a.heartbeat),
                format!("{:?}", b.heartbeat),
            );
            field(
                "ack_timeout",
                format!("{:?}", a.ack_timeout),
                format!("{:?}", b.ack_timeout),
            );
            field(
                "wait_replicas",
                a.wait_replicas.to_string(),
                b.wait_replicas.to_string(),
            );
            // A default name is generated at each read (host, pid, random): two default
            // names are the same setting, and the reload keeps the running one.
            if !(generated_replica_name(&a.replica) && generated_replica_name(&b.replica)) {
                field("replica", a.replica.clone(), b.replica.clone());
            }
            if a != b && redacted(&a.url) == redacted(&b.url) && a.url != b.url {
                // Only the password changed: say so without printing either.
                changed(
                    &["state", "redis", "url"],
                    "…".into(),
                    "another password".into(),
                    store,
                );
            }
        }
        _ => {
            let name = |s: &State| match s {
                State::File { .. } => "file",
                State::Redis(_) => "redis",
            };
            changed(
                &["state", "backend"],
                name(old).into(),
                name(new).into(),
                store,
            );
        }
    }
}

/// A Redis URL without its password, for a message.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:…{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Whether `name` is the default `state.redis.replica` of this process
/// (`{host}-{pid}-{6 hex digits}`).
pub fn generated_replica_name(name: &str) -> bool {
    let suffix = format!("-{}-", std::process::id());
    match name.rfind(&suffix) {
        Some(at) => {
            let random = &name[at + suffix.len()..];
            random.len() == 6 && random.chars().all(|c| c.is_ascii_hexdigit())
        }
        None => false,
    }
}
