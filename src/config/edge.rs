//! What the gateway believes about the hop in front of it and what it records of each
//! request: `trusted_proxies` (whose forwarding headers and PROXY headers count),
//! `listen.proxy_protocol`, `access_log` and `request_id`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use http::HeaderName;

use super::locate::Seg;
use super::raw::{RawAccessLog, RawRequestId};
use super::validate::{k, path, Problems};

/// Peers whose forwarding headers (and PROXY protocol headers) are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<ipnet::IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as its IPv4 address) is trusted.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `listen.proxy_protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// No PROXY header is expected; one is an ordinary (bad) request.
    #[default]
    Off,
    /// A PROXY v1/v2 header from a trusted peer is read; connections without one pass.
    Accept,
    /// Every connection must start with a PROXY header from a trusted peer.
    Require,
}

/// `access_log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLog {
    pub target: AccessLogTarget,
    pub format: AccessLogFormat,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLogTarget {
    #[default]
    Off,
    Stdout,
    Stderr,
    /// Appended to; reopened on SIGUSR1 (logrotate).
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    #[default]
    Json,
    Text,
}

/// `request_id.header`: default `x-request-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    pub header: HeaderName,
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            header: HeaderName::from_static("x-request-id"),
        }
    }
}

pub(super) fn trusted_proxies(raw: Vec<String>, p: &mut Problems<'_>) -> TrustedProxies {
    let mut nets = Vec::new();
    for (i, text) in raw.iter().enumerate() {
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => p.push(
                &[k("trusted_proxies"), Seg::Index(i)],
                format!("`{text}` is not an IP address or CIDR block (e.g. 10.0.0.0/8)"),
            ),
        }
    }
    TrustedProxies(nets)
}

pub(super) fn proxy_protocol(raw: Option<String>, p: &mut Problems<'_>) -> ProxyProtocol {
    match raw.as_deref().unwrap_or("off") {
        "off" => ProxyProtocol::Off,
        "accept" => ProxyProtocol::Accept,
        "require" => ProxyProtocol::Require,
        other => {
            let msg = format!("unknown mode `{other}`; expected `off`, `accept` or `require`");
            p.push(&path(&["listen", "proxy_protocol"]), msg);
            ProxyProtocol::Off
        }
    }
}

pub(super) fn access_log(raw: RawAccessLog, base: &Path, p: &mut Problems<'_>) -> AccessLog {
    let target = match raw.target.as_deref().unwrap_or("off") {
        "off" => AccessLogTarget::Off,
        "stdout" => AccessLogTarget::Stdout,
        "stderr" => AccessLogTarget::Stderr,
        "" => {
            let msg = "use `off`, `stdout`, `stderr` or a file path".into();
            p.push(&path(&["access_log", "target"]), msg);
            AccessLogTarget::Off
        }
        file => AccessLogTarget::File(super::certs::resolve(base, file)),
    };
    let format = match raw.format.as_deref().unwrap_or("json") {
        "json" => AccessLogFormat::Json,
        "text" => AccessLogFormat::Text,
        other => {
            let msg = format!("unknown format `{other}`; expected `json` or `text`");
            p.push(&path(&["access_log", "format"]), msg);
            AccessLogFormat::Json
        }
    };
    AccessLog { target, format }
}

pub(super) fn request_id(raw: RawRequestId, p: &mut Problems<'_>) -> RequestId {
    let Some(name) = raw.header else {
        return RequestId::default();
    };
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(header) => RequestId { header },
        Err(_) => {
            let msg = format!("`{name}` is not a header name");
            p.push(&path(&["request_id", "header"]), msg);
            RequestId::default()
        }
    }
}
