//! Redis over TLS and with a password file: a real `redis-server --tls-port` with a
//! private CA made in the test (rcgen), `requirepass` read by the replicas from
//! `state.redis.password_file`, three replicas of the real binary rotating through it.
//! A wrong CA, a wrong server name or a missing client certificate stops start-up with
//! the reason; the password appears in no log and no command output. Skipped without
//! redis-server unless AUTHGATE_REQUIRE_TOOLS is set.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;
use support::redis::*;
use support::tls::TestCa;
use support::*;

/// The PKI of one test: a CA, the server's certificate for `redis.test` only (so the
/// URL's 127.0.0.1 verifies only through `server_name`), a client certificate.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = TestCa::new("authgate test Redis CA");
    let other = TestCa::new("someone else's CA");
    let server = ca.leaf("redis.test", &["redis.test"]);
    let client = ca.leaf("gateway", &["gateway.test"]);
    Pki {
        ca: write("ca.pem", &ca.pem()),
        other_ca: write("other-ca.pem", &other.pem()),
        server: (
            write("redis.pem", &server.cert_pem),
            write("redis.key", &server.key_pem),
        ),
        client: (
            write("gw.pem", &client.cert_pem),
            write("gw.key", &client.key_pem),
        ),
        dir,
    }
}

/// A password no other text contains, and the file holding it (mode 0600).
fn password_file(dir: &Path) -> (String, PathBuf) {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).unwrap();
    let password = format!("pw-{}", hex::encode(random));
    let path = dir.join("redis-password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (password, path)
}

fn tls_redis(pki: &Pki, password: &str, auth_clients: bool) -> Redis {
    Redis::start_opts(&RedisOptions {
        password: Some(password.to_string()),
        tls: Some(RedisTlsFiles {
            cert: pki.server.0.clone(),
            key: pki.server.1.clone(),
            ca: pki.ca.clone(),
            auth_clients,
        }),
        replica_of: None,
    })
}

fn tls_url(redis: &Redis) -> String {
    format!("rediss://127.0.0.1:{}", redis.tls_port.unwrap())
}

/// `authgate serve -c config`, expected to exit by itself: its status and stderr.
fn serve_until_exit(config: &Path) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "-c", config.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("authgate serve kept running with {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.success(), stderr)
}

/// `authgate check -c config`: success and everything it printed.
fn check(config: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn token_of(answer: &serde_json::Value) -> String {
    answer["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_rotate_through_a_tls_redis_with_a_password_file_never_logged() {
    if !have_redis() {
        return;
    }
    let pki = pki();
    let (password, pw_file) = password_file(pki.dir.path());
    let redis = tls_redis(&pki, &password, false);
    let extra = format!(
        ", password_file: {}, tls: {{ ca: {}, server_name: redis.test }}",
        pw_file.display(),
        pki.ca.display()
    );
    let url = tls_url(&redis);
    let cluster = Cluster::start_logging(redis, &url, 3, &extra, "debug").await;
    cluster.require_auth().await;
    let mut old = token_of(&cluster.replicas[0].rotate().await);
    for round in 0..6 {
        let writer = &cluster.replicas[round % 3];
        let new = token_of(&writer.rotate().await);
        for r in &cluster.replicas {
            assert_eq!(
                r.batch(Some(&old)).await,
                StatusCode::UNAUTHORIZED,
                "{}",
                r.name
            );
            assert_eq!(r.batch(Some(&new)).await, StatusCode::OK, "{}", r.name);
        }
        old = new;
    }
    let (ok, checked) = check(&cluster.replicas[0].config);
    assert!(ok, "{checked}");
    let (ok, init) = cluster_init(&cluster.replicas[0].config, false);
    assert!(!ok, "{init}"); // it exists already; the message names the URL
    let mut everything = format!("{checked}\n{init}\n");
    for r in &cluster.replicas {
        everything.push_str(&r.logs.lock().unwrap().join("\n"));
    }
    assert!(everything.contains("rediss://127.0.0.1"), "{everything}");
    assert!(
        !everything.contains(&password),
        "the Redis password appears in a log or an output"
    );
}

/// A replica config reaching `redis` over TLS with `tls` settings.
fn config_with(dir: &Path, name: &str, url: &str, extra: &str) -> PathBuf {
    replica_config(dir, name, url, "127.0.0.1:9".parse().unwrap(), extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_server_name_refuses_start_up_with_the_reason() {
    if !have_redis() {
        return;
    }
    let pki = pki();
    let (password, pw_file) = password_file(pki.dir.path());
    let redis = tls_redis(&pki, &password, false);
    let url = tls_url(&redis);
    let dir = pki.dir.path();
    let pw = pw_file.display();

    // A CA that did not issue the server's certificate.
    let wrong_ca = config_with(
        dir,
        "wrong-ca",
        &url,
        &format!(
            ", password_file: {pw}, tls: {{ ca: {}, server_name: redis.test }}",
            pki.other_ca.display()
        ),
    );
    let (ok, out) = serve_until_exit(&wrong_ca);
    eprintln!("wrong CA: {}", out.lines().last().unwrap_or_default());
    assert!(!ok, "{out}");
    assert!(
        out.contains("invalid peer certificate") && out.contains("UnknownIssuer"),
        "{out}"
    );
    assert!(!out.contains(&password), "{out}");

    // The right CA, but the certificate is not for the name verified (the URL's host,
    // 127.0.0.1, when no `server_name` is set; or a wrong `server_name`).
    for (name, tls) in [
        ("no-name", format!("tls: {{ ca: {} }}", pki.ca.display())),
        (
            "wrong-name",
            format!(
                "tls: {{ ca: {}, server_name: other.test }}",
                pki.ca.display()
            ),
        ),
    ] {
        let config = config_with(dir, name, &url, &format!(", password_file: {pw}, {tls}"));
        let (ok, out) = serve_until_exit(&config);
        eprintln!("{name}: {}", out.lines().last().unwrap_or_default());
        assert!(!ok, "{name}: {out}");
        assert!(out.contains("not valid for name"), "{name}: {out}");
    }

    // The built-in public roots do not know a private CA.
    let no_ca = config_with(dir, "no-ca", &url, &format!(", password_file: {pw}"));
    let (ok, out) = serve_until_exit(&no_ca);
    assert!(!ok && out.contains("UnknownIssuer"), "{out}");

    // A password Redis refuses is a reason too, and it is not shown.
    let wrong_pw = dir.join("wrong-password");
    std::fs::write(&wrong_pw, "not-the-password-4711\n").unwrap();
    let config = config_with(
        dir,
        "wrong-pw",
        &url,
        &format!(
            ", password_file: {}, tls: {{ ca: {}, server_name: redis.test }}",
            wrong_pw.display(),
            pki.ca.display()
        ),
    );
    let (ok, out) = serve_until_exit(&config);
    assert!(!ok, "{out}");
    assert!(out.contains("Password authentication failed"), "{out}");
    assert!(
        !out.contains("not-the-password-4711") && !out.contains(&password),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate_and_works_with_it() {
    if !have_redis() {
        return;
    }
    let pki = pki();
    let (password, pw_file) = password_file(pki.dir.path());
    let redis = tls_redis(&pki, &password, true);
    let url = tls_url(&redis);
    let dir = pki.dir.path();
    let tls = format!("ca: {}, server_name: redis.test", pki.ca.display());

    let without = config_with(
        dir,
        "no-cert",
        &url,
        &format!(", password_file: {}, tls: {{ {tls} }}", pw_file.display()),
    );
    let (ok, out) = serve_until_exit(&without);
    eprintln!(
        "no client certificate: {}",
        out.lines().last().unwrap_or_default()
    );
    assert!(!ok, "{out}");
    assert!(out.contains("CertificateRequired"), "{out}");

    let with = format!(
        ", password_file: {}, tls: {{ {tls}, cert: {}, key: {} }}",
        pw_file.display(),
        pki.client.0.display(),
        pki.client.1.display()
    );
    let cluster = Cluster::start_at(redis, &url, 2, &with).await;
    cluster.require_auth().await;
    let old = token_of(&cluster.replicas[0].rotate().await);
    let new = token_of(&cluster.replicas[1].rotate().await);
    for r in &cluster.replicas {
        assert_eq!(r.batch(Some(&old)).await, StatusCode::UNAUTHORIZED);
        assert_eq!(r.batch(Some(&new)).await, StatusCode::OK);
    }
}

#[test]
fn check_reads_the_redis_tls_and_password_files_and_warns_of_a_password_in_the_url() {
    let pki = pki();
    let dir = pki.dir.path();
    let (password, pw_file) = password_file(dir);

    // Files that cannot be used are problems naming their key.
    let missing = config_with(
        dir,
        "missing",
        "rediss://127.0.0.1:6380",
        &format!(
            ", password_file: {}/absent, tls: {{ ca: {}/absent.pem, cert: {} }}",
            dir.display(),
            dir.display(),
            pki.client.0.display()
        ),
    );
    let (ok, out) = check(&missing);
    assert!(!ok, "{out}");
    for key in [
        "state.redis.password_file",
        "state.redis.tls.ca",
        "state.redis.tls.key",
    ] {
        assert!(out.contains(key), "{key}: {out}");
    }

    // TLS settings for a plain URL, and a `#insecure` URL, are refused.
    let plain = config_with(
        dir,
        "plain",
        "redis://127.0.0.1:6379",
        &format!(", tls: {{ ca: {} }}", pki.ca.display()),
    );
    let (ok, out) = check(&plain);
    assert!(!ok && out.contains("applies only to a rediss://"), "{out}");
    let insecure = config_with(dir, "insecure", "rediss://127.0.0.1:6380/#insecure", "");
    let (ok, out) = check(&insecure);
    assert!(!ok && out.contains("cannot be turned off"), "{out}");

    // A password in the URL works but is warned about, and not shown.
    let in_url = config_with(
        dir,
        "in-url",
        &format!("redis://:{password}@127.0.0.1:6379/0"),
        "",
    );
    let (ok, out) = check(&in_url);
    assert!(ok, "{out}");
    assert!(out.contains("password_file"), "{out}");
    assert!(!out.contains(&password), "{out}");
    // Both: one too many.
    let both = config_with(
        dir,
        "both",
        &format!("redis://:{password}@127.0.0.1:6379/0"),
        &format!(", password_file: {}", pw_file.display()),
    );
    let (ok, out) = check(&both);
    assert!(!ok && !out.contains(&password), "{out}");

    // Sentinel settings: the name and the nodes are required, nodes are host:port, a
    // unix:// URL cannot be combined, an inline sentinel password is warned about.
    let bad = config_with(
        dir,
        "bad-sentinel",
        "redis://authgate/0",
        ", sentinel: { nodes: [\"10.0.0.5\", \"10.0.0.6:26379\"] }",
    );
    let (ok, out) = check(&bad);
    assert!(!ok, "{out}");
    assert!(out.contains("state.redis.sentinel.master_name"), "{out}");
    assert!(
        out.contains("state.redis.sentinel.nodes[0]") && out.contains("not host:port"),
        "{out}"
    );
    let unix = config_with(
        dir,
        "unix-sentinel",
        "unix:///run/redis.sock",
        ", sentinel: { master_name: authgate, nodes: [\"10.0.0.5:26379\"] }",
    );
    let (ok, out) = check(&unix);
    assert!(!ok && out.contains("unix://"), "{out}");
    let inline = config_with(dir, "inline-sentinel", "redis://authgate/0", &format!(", sentinel: {{ master_name: authgate, nodes: [\"10.0.0.5:26379\"], password: {password} }}"));
    let (ok, out) = check(&inline);
    assert!(ok, "{out}");
    assert!(
        out.contains("state.redis.sentinel.password") && !out.contains(&password),
        "{out}"
    );

    // Good files pass.
    let good = config_with(
        dir,
        "good",
        "rediss://127.0.0.1:6380",
        &format!(
            ", password_file: {}, tls: {{ ca: {}, server_name: redis.test, cert: {}, key: {} }}",
            pw_file.display(),
            pki.ca.display(),
            pki.client.0.display(),
            pki.client.1.display()
        ),
    );
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
}
