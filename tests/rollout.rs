//! Rolling out enforcement: mode `report` (checked, counted, logged, forwarded), the
//! switch to `on` in force before its call returns, the overlap a rotation may keep for
//! the token it replaces (before and from its deadline), at most two valid tokens,
//! `DELETE` ending both, and each token's last use.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use support::admin::{call, document, generate, rotate, set_mode};
use support::*;

/// An upstream answering 200 and recording each request's `Authorization`.
async fn upstream() -> (Upstream, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string());
            log.lock().unwrap().push(auth);
            let _ = request_bytes(req).await;
            Response::new(full("ok"))
        }
    })
    .await;
    (up, seen)
}

/// The bulk-update route of `tenant`. Metrics are per process and tests share one, so
/// each test has a tenant of its own.
fn batch(tenant: &str) -> String {
    format!("/m2/{tenant}/v2/profile/batchUpdate")
}

/// POSTs a batch for `tenant` with `authorization` (the whole header value) if given.
async fn post(gw: &Gateway, tenant: &str, authorization: Option<&str>) -> StatusCode {
    let mut req = Request::post(gw.url(&batch(tenant)));
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    let response = within("POST", client().request(req.body(full("batch=x")).unwrap()))
        .await
        .unwrap();
    let status = response.status();
    let _ = body_bytes(response).await;
    status
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

const DECISIONS: &str = "authgate_auth_decisions_total";

fn decisions(metrics: &str, tenant: &str, mode: &str, reason: &str) -> f64 {
    let labels = [("tenant", tenant), ("mode", mode), ("reason", reason)];
    series(metrics, DECISIONS, &labels)
}

fn now_unix() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Sleeps until the wall clock reads `at` (since the Unix epoch): the behaviour under
/// test is a deadline.
async fn wait_until(at: Duration) {
    if let Some(left) = at.checked_sub(now_unix()) {
        tokio::time::sleep(left).await;
    }
}

#[tokio::test]
async fn report_mode_forwards_what_on_refuses_and_counts_each_by_reason() {
    const T: &str = "report-counts";
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    set_mode(&gw, T, "report").await;
    let token = generate(&gw, T, Some(r#"{"expires_in": 1}"#)).await;
    let wrong = bearer("authgate_tk_notTheToken");
    let right = bearer(&token);
    assert_eq!(post(&gw, T, Some(&right)).await, StatusCode::OK);
    // An expired token needs its second to pass: wait for the expiry.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = metrics_text(&gw).await;

    // Report: tokenless, wrong-token and expired-token requests all go through.
    seen.lock().unwrap().clear();
    for auth in [None, Some(wrong.as_str()), Some(right.as_str())] {
        assert_eq!(post(&gw, T, auth).await, StatusCode::OK, "{auth:?}");
    }
    let forwarded = seen.lock().unwrap().clone();
    assert_eq!(
        forwarded,
        vec![None, None, None],
        "no authgate token reaches the backend"
    );
    let after = metrics_text(&gw).await;
    for reason in ["missing", "invalid", "expired"] {
        let counted =
            decisions(&after, T, "report", reason) - decisions(&before, T, "report", reason);
        assert_eq!(counted, 1.0, "report/{reason}:\n{after}");
        assert_eq!(
            decisions(&after, T, "on", reason),
            0.0,
            "nothing refused yet"
        );
    }

    // On: the same three requests are refused, counted under mode `on`.
    set_mode(&gw, T, "on").await;
    seen.lock().unwrap().clear();
    for auth in [None, Some(wrong.as_str()), Some(right.as_str())] {
        assert_eq!(
            post(&gw, T, auth).await,
            StatusCode::UNAUTHORIZED,
            "{auth:?}"
        );
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    let on = metrics_text(&gw).await;
    for reason in ["missing", "invalid", "expired"] {
        assert_eq!(decisions(&on, T, "on", reason), 1.0, "on/{reason}:\n{on}");
        assert_eq!(
            decisions(&on, T, "report", reason),
            decisions(&after, T, "report", reason),
            "report/{reason} unchanged"
        );
    }
    let doc = document(&gw, T).await.1;
    assert_eq!(
        (&doc["mode"], &doc["require_authentication"]),
        (&"on".into(), &true.into())
    );
}

#[tokio::test]
async fn a_non_gateway_authorization_is_kept_in_report_mode() {
    const T: &str = "report-legacy";
    let (up, seen) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    set_mode(&gw, T, "report").await;
    generate(&gw, T, None).await;
    // A legacy caller's own credentials: checked (invalid), reported, forwarded as sent.
    assert_eq!(
        post(&gw, T, Some("Bearer legacy-backend-key")).await,
        StatusCode::OK
    );
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![Some("Bearer legacy-backend-key".to_string())]
    );
    let metrics = metrics_text(&gw).await;
    assert_eq!(
        decisions(&metrics, T, "report", "invalid"),
        1.0,
        "{metrics}"
    );
}

/// Clients send without a token all along while the mode flips between `report` and
/// `on`. A request sent after a switch to `on` returned, and answered before the next
/// switch back to `report` started, must be refused: zero exceptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_report_to_on_is_in_force_before_the_call_returns() {
    const T: &str = "report-switch";
    const SWITCHES: usize = 30;
    const MIN_REQUESTS: usize = 5_000;
    const CLIENTS: usize = 8;
    let (up, _) = upstream().await;
    let gw = Arc::new(Gateway::start(up.addr, "").await);
    set_mode(&gw, T, "report").await;

    // Each window `on` was surely in force: from its call's return to the next switch.
    let mut windows: Vec<(Instant, Instant)> = Vec::new();
    let answers: Arc<Mutex<Vec<(Instant, Instant, StatusCode)>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (gw, answers, sent, done) = (gw.clone(), answers.clone(), sent.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            while !done.load(Ordering::Relaxed) || sent.load(Ordering::Relaxed) < MIN_REQUESTS {
                let sent_at = Instant::now();
                let req = Request::post(gw.url(&batch(T)))
                    .body(full("batch=x"))
                    .unwrap();
                let response = within("POST", c.request(req)).await.unwrap();
                let status = response.status();
                let _ = body_bytes(response).await;
                answers
                    .lock()
                    .unwrap()
                    .push((sent_at, Instant::now(), status));
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for _ in 0..SWITCHES {
        set_mode(&gw, T, "on").await;
        let on_at = Instant::now();
        // Keep `on` until a few requests were answered in it (a condition, not a delay).
        let answered = sent.load(Ordering::Relaxed);
        within("requests while on", async {
            while sent.load(Ordering::Relaxed) < answered + 2 * CLIENTS {
                tokio::task::yield_now().await;
            }
        })
        .await;
        let started = Instant::now();
        windows.push((on_at, started));
        set_mode(&gw, T, "report").await;
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::Relaxed);
    for w in workers {
        within("a client to finish", w).await.unwrap();
    }
    let answers = answers.lock().unwrap();
    let mut checked = 0;
    let mut violations = 0;
    for (sent_at, answered, status) in answers.iter() {
        let inside = windows
            .iter()
            .any(|(on, off)| sent_at > on && answered < off);
        if inside {
            checked += 1;
            if *status != StatusCode::UNAUTHORIZED {
                violations += 1;
            }
        } else {
            assert!(
                [StatusCode::OK, StatusCode::UNAUTHORIZED].contains(status),
                "{status}"
            );
        }
    }
    assert!(answers.len() >= MIN_REQUESTS, "{}", answers.len());
    assert!(checked > 0, "no request fell inside an `on` window");
    assert!(
        answers.iter().any(|a| a.2 == StatusCode::OK),
        "report forwarded some"
    );
    assert_eq!(
        violations, 0,
        "{violations} of {checked} passed after `on` returned"
    );
}

#[tokio::test]
async fn an_overlap_of_two_seconds_keeps_the_old_token_until_its_deadline() {
    const T: &str = "overlap-2s";
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    set_mode(&gw, T, "on").await;
    let old = bearer(&generate(&gw, T, None).await);
    let sent = now_unix();
    let answer = rotate(&gw, T, r#"{"previous_valid_for": 2}"#).await;
    let returned = now_unix();
    let new = bearer(answer["token"].as_str().unwrap());
    assert!(answer["previous_valid_until"].is_string(), "{answer}");

    // The deadline lies in [sent + 2 s, returned + 2 s]: both sides are checked.
    let deadline_earliest = sent + Duration::from_secs(2);
    assert_eq!(
        post(&gw, T, Some(&old)).await,
        StatusCode::OK,
        "right after the rotation"
    );
    assert_eq!(post(&gw, T, Some(&new)).await, StatusCode::OK);
    let doc = document(&gw, T).await.1;
    assert_eq!(
        doc["previous_token"]["valid_until"],
        answer["previous_valid_until"]
    );
    assert!(doc["previous_token"]["last_used_at"].is_string(), "{doc}");
    wait_until(deadline_earliest - Duration::from_millis(300)).await;
    let status = post(&gw, T, Some(&old)).await;
    let answered = now_unix();
    assert!(
        answered < deadline_earliest,
        "the check before the deadline came too late"
    );
    assert_eq!(status, StatusCode::OK, "just before the deadline");

    wait_until(returned + Duration::from_secs(2)).await;
    assert_eq!(
        post(&gw, T, Some(&old)).await,
        StatusCode::UNAUTHORIZED,
        "from the deadline on"
    );
    assert_eq!(post(&gw, T, Some(&new)).await, StatusCode::OK);
    let metrics = metrics_text(&gw).await;
    let previous = series(
        &metrics,
        "authgate_previous_token_accepted_total",
        &[("tenant", T)],
    );
    assert_eq!(previous, 2.0, "{metrics}");
}

#[tokio::test]
async fn a_third_token_ends_the_first_at_once_and_delete_ends_both() {
    const T: &str = "overlap-third";
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    set_mode(&gw, T, "on").await;
    let overlap = r#"{"previous_valid_for": 3600}"#;
    let first = bearer(&generate(&gw, T, None).await);
    let second = bearer(&generate(&gw, T, Some(overlap)).await);
    assert_eq!(
        post(&gw, T, Some(&first)).await,
        StatusCode::OK,
        "inside its overlap"
    );
    let third = bearer(&generate(&gw, T, Some(overlap)).await);
    assert_eq!(
        post(&gw, T, Some(&first)).await,
        StatusCode::UNAUTHORIZED,
        "at most two"
    );
    assert_eq!(post(&gw, T, Some(&second)).await, StatusCode::OK);
    assert_eq!(post(&gw, T, Some(&third)).await, StatusCode::OK);

    let (status, _) = call(
        &gw,
        "DELETE",
        &format!("/admin/v1/tenants/{T}/token"),
        Some(&keys().approver),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [&first, &second, &third] {
        assert_eq!(post(&gw, T, Some(token)).await, StatusCode::UNAUTHORIZED);
    }
    let doc = document(&gw, T).await.1;
    assert_eq!(
        (&doc["token"], &doc["previous_token"]),
        (&serde_json::Value::Null, &serde_json::Value::Null)
    );
}

#[tokio::test]
async fn without_an_overlap_the_old_token_is_dead_when_the_call_returns() {
    const T: &str = "overlap-none";
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    set_mode(&gw, T, "on").await;
    for body in ["", r#"{"previous_valid_for": 0}"#] {
        let old = bearer(&generate(&gw, T, None).await);
        let answer = rotate(&gw, T, body).await;
        assert_eq!(
            answer["previous_valid_until"],
            serde_json::Value::Null,
            "{answer}"
        );
        assert_eq!(
            post(&gw, T, Some(&old)).await,
            StatusCode::UNAUTHORIZED,
            "{body:?}"
        );
        assert_eq!(
            document(&gw, T).await.1["previous_token"],
            serde_json::Value::Null
        );
    }
}

#[tokio::test]
async fn each_token_shows_its_last_use_in_the_document_and_the_metrics() {
    const T: &str = "last-use";
    let (up, _) = upstream().await;
    let gw = Gateway::start(up.addr, "").await;
    set_mode(&gw, T, "on").await;
    let token = bearer(&generate(&gw, T, None).await);
    let doc = document(&gw, T).await.1;
    assert_eq!(
        doc["token"]["last_used_at"],
        serde_json::Value::Null,
        "not used yet"
    );
    let before = now_unix().as_secs();
    assert_eq!(post(&gw, T, Some(&token)).await, StatusCode::OK);
    let after = now_unix().as_secs();
    let doc = document(&gw, T).await.1;
    let shown = doc["token"]["last_used_at"].as_str().unwrap().to_string();
    let shown = humantime::parse_rfc3339(&shown).unwrap();
    let shown = shown.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(
        (before..=after).contains(&shown),
        "{shown} not in {before}..={after}"
    );
    // A refused request is no use.
    assert_eq!(
        post(&gw, T, Some("Bearer authgate_tk_wrong")).await,
        StatusCode::UNAUTHORIZED
    );
    let metrics = metrics_text(&gw).await;
    let labels = [("tenant", T), ("token", "current")];
    let gauge = series(
        &metrics,
        "authgate_token_last_used_timestamp_seconds",
        &labels,
    );
    assert_eq!(gauge as u64, shown, "{metrics}");

    // The use follows the token when it becomes the previous one.
    let answer = rotate(&gw, T, r#"{"previous_valid_for": 60}"#).await;
    assert!(answer["previous_valid_until"].is_string());
    let doc = document(&gw, T).await.1;
    assert_eq!(doc["previous_token"]["last_used_at"], doc_time(shown));
    assert_eq!(doc["token"]["last_used_at"], serde_json::Value::Null);
}

fn doc_time(secs: u64) -> serde_json::Value {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string().into()
}

#[tokio::test]
async fn bad_settings_and_overlaps_are_400_naming_the_field() {
    const T: &str = "bad-bodies";
    let gw = support::admin::gateway().await;
    let approver = Some(keys().approver.as_str());
    let settings = &format!("/admin/v1/tenants/{T}/settings");
    for (body, field) in [
        (r#"{"mode": "on", "require_authentication": true}"#, "mode"),
        (r#"{}"#, "require_authentication"),
        (r#"{"mode": "shadow"}"#, "mode"),
        (r#"{"mode": true}"#, "mode"),
        (
            r#"{"require_authentication": "yes"}"#,
            "require_authentication",
        ),
        (r#"{"mode": "on", "extra": 1}"#, "body"),
    ] {
        let (status, answer) = call(&gw, "PUT", settings, approver, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (status, doc) = call(
        &gw,
        "PUT",
        settings,
        approver,
        Some(r#"{"mode": "report"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&doc["mode"], &doc["require_authentication"]),
        (&"report".into(), &false.into())
    );
    let (_, doc) = call(
        &gw,
        "PUT",
        settings,
        approver,
        Some(r#"{"require_authentication": true}"#),
    )
    .await;
    assert_eq!(doc["mode"], "on");

    let token = &format!("/admin/v1/tenants/{T}/token");
    for body in [
        r#"{"previous_valid_for": -1}"#,
        r#"{"previous_valid_for": 1.5}"#,
        r#"{"previous_valid_for": "60"}"#,
        r#"{"previous_valid_for": 3601}"#,
    ] {
        let (status, answer) = call(&gw, "POST", token, approver, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], "previous_valid_for", "{body}: {answer}");
    }
    let (status, answer) = call(
        &gw,
        "POST",
        token,
        approver,
        Some(r#"{"previous_valid_for": 3600}"#),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "at the limit (tokens.max_overlap 1h): {answer}"
    );
    let (status, whoami) = call(&gw, "GET", "/admin/v1/whoami", approver, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["max_overlap_seconds"], 3600);
}
