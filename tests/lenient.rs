//! Issue 13 as an attacker would try it: the real gateway, with the default config, in
//! front of real lenient frameworks (Flask on Werkzeug with the method-override and
//! rewrite-URL middleware; Express 4 with its defaults; see `tests/lenient/`), tenant
//! `acme` requiring authentication. Every spelling below could reach a protected
//! bulk-update handler of some lenient backend; each is sent without the token over
//! HTTP/1.1 (raw sockets, exact bytes) and over HTTP/2 (h2c), and the frameworks report
//! what they received and executed.
//!
//! A run fails listing every case that got through:
//! - nothing executes as a bulk update for `acme` (or a tenant folding to it) without the
//!   token, while the canonical POST with the token does (so the test cannot pass by
//!   executing nothing at all);
//! - a request naming a protected route is answered by the gateway (token required, or
//!   refused) and never forwarded without the token, even when this framework would not
//!   have executed it (another lenient backend would); `CONNECT` gets `405`;
//! - the upstream never receives `X-Original-URL`, `X-Rewrite-URL`, an authgate token or
//!   an admin key.

mod support;

use std::fmt;

use http::{Method, Request};
use support::admin::{generate, require};
use support::lenient::{Backend, Framework, Log};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bulk-update body as the profile service takes it.
const BODY: &str = "batch=mbox3rdPartyId%2Cprofile.tier%0Aabc%2Cgold%0A";

/// Where the cases' requests must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Names a protected route of `acme`: answered by the gateway, never forwarded.
    Stopped,
    /// `CONNECT`: answered `405` by the gateway, never forwarded.
    MethodNotAllowed,
    /// Unprotected: forwarded, but without the gateway's secrets or rewrite headers.
    Forwarded,
    /// The canonical request with the valid token: executed.
    Executes,
}

#[derive(Debug, Clone)]
struct Case {
    id: String,
    class: &'static str,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: bool,
    expect: Expect,
}

impl Case {
    fn with(&mut self, name: &str, value: &str) -> &mut Case {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn without_body(&mut self) -> &mut Case {
        self.body = false;
        self
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.target)?;
        for (name, value) in &self.headers {
            let value = if value.contains("authgate_") {
                "<secret>"
            } else {
                value
            };
            write!(f, " [{name}: {value}]")?;
        }
        Ok(())
    }
}

/// The cases, numbered within their class of issue 13.
struct Cases {
    list: Vec<Case>,
    class: &'static str,
}

impl Cases {
    fn class(&mut self, class: &'static str) {
        self.class = class;
    }

    fn add(&mut self, expect: Expect, method: &str, target: &str) -> &mut Case {
        let n = self.list.iter().filter(|c| c.class == self.class).count() + 1;
        let number = self.class.split(' ').next().unwrap();
        self.list.push(Case {
            id: format!("{number}.{n}"),
            class: self.class,
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: true,
            expect,
        });
        self.list.last_mut().unwrap()
    }

    fn stopped(&mut self, method: &str, target: &str) -> &mut Case {
        self.add(Expect::Stopped, method, target)
    }

    fn forwarded(&mut self, method: &str, target: &str) -> &mut Case {
        self.add(Expect::Forwarded, method, target)
    }
}

const V1: &str = "/m2/acme/profile/batchUpdate";
const V2: &str = "/m2/acme/v2/profile/batchUpdate";

/// Every class of issue 13, several spellings each; `token` is acme's valid token.
fn cases(token: &str) -> Vec<Case> {
    let mut c = Cases {
        list: Vec::new(),
        class: "0 canonical",
    };
    let bearer = format!("Bearer {token}");
    for target in [V1, V2] {
        c.add(Expect::Executes, "POST", target)
            .with("Authorization", &bearer);
    }
    c.stopped("POST", V1);
    c.stopped("POST", V2);

    c.class("1 method spelling");
    for (method, target) in [("post", V1), ("Post", V2), ("pOST", V1), ("post", V2)] {
        c.stopped(method, target);
    }

    c.class("2 method override");
    let overrides = [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ];
    for (i, method) in ["PUT", "PATCH", "GET", "OPTIONS", "FOO"].iter().enumerate() {
        for (j, header) in overrides.iter().enumerate() {
            let target = if (i + j) % 2 == 0 { V1 } else { V2 };
            c.stopped(method, target).with(header, "POST");
        }
    }
    c.stopped("PUT", V2).with("X-HTTP-Method-Override", "post");

    c.class("3 path case");
    for target in [
        "/m2/acme/profile/batchupdate",
        "/M2/acme/profile/batchUpdate",
        "/m2/acme/V2/profile/batchUpdate",
        "/m2/acme/PROFILE/batchUpdate",
        "/m2/acme/v2/profile/BATCHUPDATE",
        "/M2/acme/V2/Profile/BatchUpdate",
    ] {
        c.stopped("POST", target);
    }

    c.class("4 tenant spelling");
    for target in [
        "/m2/ACME/profile/batchUpdate",
        "/m2/Acme/v2/profile/batchUpdate",
        "/m2/%41CME/profile/batchUpdate",
        "/m2/%61cme/v2/profile/batchUpdate",
        "/m2/acme%20/profile/batchUpdate",
        "/m2/acm%C3%A9/v2/profile/batchUpdate",
        "/m2/ACM%C3%89/profile/batchUpdate",
        "/m2/%EF%BD%81%EF%BD%83%EF%BD%8D%EF%BD%85/profile/batchUpdate",
        "/m2/acme%E2%80%8B/v2/profile/batchUpdate",
        "/m2/%E2%80%8Bacme/profile/batchUpdate",
        "/m2/acme/profile/batchUpdate?client=ACME",
        "/m2/acme/v2/profile/batchUpdate?client=acme%20",
    ] {
        c.stopped("POST", target);
    }

    c.class("5 unicode case");
    for target in [
        "/m2/acme/prof%C4%B0le/batchUpdate",
        "/m2/acme/v2/prof%C4%B1le/batchUpdate",
        "/m2/acme/PROF%C4%B0LE/batchUpdate",
        "/m2/acme/v2/%EF%BD%90rofile/batchUpdate",
        "/m2/acme/profile/batch%EF%BC%B5pdate",
    ] {
        c.stopped("POST", target);
    }

    c.class("6 suffix");
    for target in [
        "/m2/acme/profile/batchUpdate.json",
        "/m2/acme/v2/profile/batchUpdate.xml",
        "/m2/acme/profile/batchUpdate.",
        "/m2/acme/v2/profile/batchUpdate%20",
        "/m2/acme/profile/batchUpdate%C2%A0",
        "/m2/acme/v2/profile/batchUpdate%09",
        "/m2/acme/profile/batchUpdate/",
    ] {
        c.stopped("POST", target);
    }

    c.class("7 rewrite header");
    for (method, target, header, value) in [
        ("POST", "/m2/acme/profile/update", "X-Original-URL", V1),
        ("POST", "/m2/acme/profile/update", "X-Rewrite-URL", V2),
        (
            "POST",
            "/rest/v1/profiles/1?client=acme",
            "x-original-url",
            V2,
        ),
        (
            "GET",
            "/rest/v1/profiles/1?client=acme",
            "X-Original-URL",
            V1,
        ),
        (
            "GET",
            "/rest/v1/profiles/1?client=acme",
            "X-Rewrite-URL",
            "/m2/acme/v2/profile/batchUpdate?client=acme",
        ),
    ] {
        let case = c.forwarded(method, target).with(header, value);
        if method == "GET" {
            case.with("X-HTTP-Method-Override", "POST");
        }
    }

    c.class("8 query tenant");
    for target in [
        "/m2/other/v2/profile/batchUpdate?client=acme",
        "/m2/other/profile/batchUpdate?client=acme",
        "/m2/other/profile/batchUpdate?client=ACME",
        "/m2/other/v2/profile/batchUpdate?x=1&client=acme",
    ] {
        c.stopped("POST", target);
    }

    c.class("9 leaked secret");
    let keys = keys();
    for (method, target, scheme, secret) in [
        ("GET", "/rest/v1/profiles/1?client=acme", "Bearer", token),
        ("POST", "/m2/acme/profile/update", "bearer", token),
        ("POST", "/m2/beta/profile/batchUpdate", "Bearer", token),
        ("POST", "/m2/beta/v2/profile/batchUpdate", "BEARER", token),
        (
            "GET",
            "/rest/v1/profiles/1?client=acme",
            "Bearer",
            &keys.approver,
        ),
        (
            "POST",
            "/m2/beta/profile/batchUpdate",
            "Bearer",
            &keys.approver,
        ),
        ("GET", "/healthz", "Bearer", &keys.viewer),
    ] {
        c.forwarded(method, target)
            .with("Authorization", &format!("{scheme} {secret}"));
    }

    c.class("10 connect");
    for target in [V1, V2] {
        c.add(Expect::MethodNotAllowed, "CONNECT", target)
            .without_body();
    }
    c.list
}

/// The HTTP version a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    H2c,
}

/// The status the client read, or why it read none.
type Answer = Result<u16, String>;

/// Writes `case` as exact HTTP/1.1 bytes on a new connection and reads the status line.
async fn send_http1(proxy: std::net::SocketAddr, case: &Case) -> Answer {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {proxy}\r\nX-Authgate-Case: {}\r\n",
        case.method, case.target, case.id
    );
    for (name, value) in &case.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if case.body {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            BODY.len()
        ));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut bytes = head.into_bytes();
    if case.body {
        bytes.extend_from_slice(BODY.as_bytes());
    }
    let exchange = async {
        let mut stream = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
        stream.write_all(&bytes).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) => return Err("the connection closed without an answer".to_string()),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        let line = String::from_utf8_lossy(&answer);
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {line:?}"))
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PATIENCE:?}")))
}

/// Sends `case` over a new cleartext HTTP/2 connection. HTTP/2 has no `:path` in a
/// `CONNECT` request, so that one names only the authority.
async fn send_h2c(proxy: std::net::SocketAddr, case: &Case) -> Answer {
    let method = Method::from_bytes(case.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{}", case.target))
        .header("x-authgate-case", &case.id);
    for (name, value) in &case.headers {
        request = request.header(name, value);
    }
    let body = if case.body {
        request = request.header("content-type", "application/x-www-form-urlencoded");
        BODY
    } else {
        ""
    };
    let request = request.body(full(body)).map_err(|e| e.to_string())?;
    match tokio::time::timeout(PATIENCE, h2c_client().request(request)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err(format!("no answer within {PATIENCE:?}")),
    }
}

/// Sends every case at once, each on its own connection; answers in the cases' order.
async fn send_all(proxy: std::net::SocketAddr, protocol: Protocol, cases: &[Case]) -> Vec<Answer> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, case) in cases.iter().cloned().enumerate() {
        tasks.spawn(async move {
            let answer = match protocol {
                Protocol::Http1 => send_http1(proxy, &case).await,
                Protocol::H2c => send_h2c(proxy, &case).await,
            };
            (i, answer)
        });
    }
    let mut answers = vec![Err("not sent".to_string()); cases.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, answer) = done.expect("a case's task");
        answers[i] = answer;
    }
    answers
}

fn is_secret(value: &str) -> bool {
    value.contains("authgate_tk_") || value.contains("authgate_ak_")
}

/// Every way `case` got through, judged from its answer and the upstream's log.
fn problems(case: &Case, answer: &Answer, log: &Log) -> Vec<String> {
    let mut problems = Vec::new();
    let received: Vec<_> = log
        .requests
        .iter()
        .filter(|r| r.case.as_deref() == Some(&case.id))
        .collect();
    let executed: Vec<_> = log
        .executions
        .iter()
        .filter(|e| e.case.as_deref() == Some(&case.id))
        .collect();
    if let Err(why) = answer {
        problems.push(format!("no answer: {why}"));
    }
    match case.expect {
        Expect::Executes => {
            if !executed.iter().any(|e| e.tenant == "acme") {
                problems.push("the valid token did NOT execute the bulk update".to_string());
            }
        }
        Expect::Stopped | Expect::MethodNotAllowed | Expect::Forwarded => {
            for e in executed.iter().filter(|e| e.tenant == "acme") {
                problems.push(format!(
                    "EXECUTED a bulk update for tenant acme without the token (handler: {} {}, client {:?})",
                    e.method, e.path, e.client
                ));
            }
        }
    }
    if case.expect == Expect::MethodNotAllowed && !matches!(answer, Ok(405)) {
        problems.push("not answered 405".to_string());
    }
    if matches!(case.expect, Expect::Stopped | Expect::MethodNotAllowed) {
        for r in &received {
            let rejected = r
                .rejected_by_node
                .as_ref()
                .map(|code| format!(", then refused by Node: {code}"))
                .unwrap_or_default();
            problems.push(format!(
                "forwarded without the token (upstream got {} {}{rejected})",
                r.method.as_deref().unwrap_or("?"),
                r.target.as_deref().unwrap_or("?"),
            ));
        }
    }
    for r in &received {
        if r.authorization.as_deref().is_some_and(is_secret) {
            problems.push("the upstream received the gateway's secret in Authorization".into());
        }
        if let Some(v) = &r.x_original_url {
            problems.push(format!("the upstream received X-Original-URL: {v}"));
        }
        if let Some(v) = &r.x_rewrite_url {
            problems.push(format!("the upstream received X-Rewrite-URL: {v}"));
        }
    }
    problems
}

/// Problems the log shows outside any known case (a request that lost its case header).
fn stray_problems(cases: &[Case], log: &Log) -> Vec<String> {
    let known = |id: &Option<String>| {
        id.as_ref()
            .is_some_and(|id| cases.iter().any(|c| &c.id == id))
    };
    let mut problems = Vec::new();
    for e in log.executions.iter().filter(|e| !known(&e.case)) {
        if e.tenant == "acme" {
            problems.push(format!(
                "EXECUTED for tenant acme by an unknown case {:?}: {} {}",
                e.case, e.method, e.path
            ));
        }
    }
    for r in log.requests.iter().filter(|r| !known(&r.case)) {
        if r.authorization.as_deref().is_some_and(is_secret)
            || r.x_original_url.is_some()
            || r.x_rewrite_url.is_some()
        {
            problems.push(format!(
                "a secret or rewrite header reached the upstream: {r:?}"
            ));
        }
    }
    problems
}

async fn attacks_do_not_get_through(framework: Framework, protocol: Protocol) {
    if !framework.available() {
        return;
    }
    let backend = Backend::start(framework);
    let gw = Gateway::start(backend.addr, "").await;
    require(&gw, "acme", true).await;
    let token = generate(&gw, "acme", None).await;
    let cases = cases(&token);
    let answers = send_all(gw.proxy, protocol, &cases).await;
    let log = backend.log().await;

    let mut failures = Vec::new();
    for (case, answer) in cases.iter().zip(&answers) {
        let shown = match answer {
            Ok(status) => status.to_string(),
            Err(_) => "-".to_string(),
        };
        let problems = problems(case, answer, &log);
        println!(
            "{:>5} {shown:>3} {} {case}",
            case.id,
            if problems.is_empty() { "ok  " } else { "FAIL" }
        );
        if !problems.is_empty() {
            failures.push(format!(
                "{} [{}] {case} -> {shown}: {}",
                case.id,
                case.class,
                problems.join("; ")
            ));
        }
    }
    failures.extend(stray_problems(&cases, &log));
    assert!(
        failures.is_empty(),
        "{framework:?} over {protocol:?}: {} of {} cases got through:\n{}\n(framework stderr:\n{})",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        backend.stderr_text()
    );
}

#[tokio::test]
async fn flask_over_http1() {
    attacks_do_not_get_through(Framework::Flask, Protocol::Http1).await;
}

#[tokio::test]
async fn flask_over_h2c() {
    attacks_do_not_get_through(Framework::Flask, Protocol::H2c).await;
}

#[tokio::test]
async fn express_over_http1() {
    attacks_do_not_get_through(Framework::Express, Protocol::Http1).await;
}

#[tokio::test]
async fn express_over_h2c() {
    attacks_do_not_get_through(Framework::Express, Protocol::H2c).await;
}
