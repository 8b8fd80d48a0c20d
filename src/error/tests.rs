use super::*;

fn boxed(msg: &str) -> BoxError {
    msg.to_string().into()
}

/// One row per variant: what the client sees.
struct Row {
    error: GatewayError,
    status: StatusCode,
    code: &'static str,
    challenge: Option<&'static str>,
    close: bool,
    retry_after: bool,
}

fn row(error: GatewayError, status: StatusCode, code: &'static str) -> Row {
    Row {
        error,
        status,
        code,
        challenge: None,
        close: false,
        retry_after: false,
    }
}

impl Row {
    fn challenge(mut self, challenge: &'static str) -> Row {
        self.challenge = Some(challenge);
        self
    }
    fn close(mut self) -> Row {
        self.close = true;
        self
    }
    fn retry_after(mut self) -> Row {
        self.retry_after = true;
        self
    }
}

fn table() -> Vec<Row> {
    use GatewayError as E;
    use StatusCode as S;
    vec![
        row(
            E::UpstreamConnect(boxed("refused")),
            S::BAD_GATEWAY,
            "bad_gateway",
        ),
        row(E::UpstreamTimeout, S::GATEWAY_TIMEOUT, "gateway_timeout"),
        row(
            E::UpstreamFailed(boxed("reset")),
            S::BAD_GATEWAY,
            "bad_gateway",
        ),
        // A client fault is never a 502.
        row(E::ClientBody(boxed("eof")), S::BAD_REQUEST, "bad_request").close(),
        row(E::BadPath, S::BAD_REQUEST, "invalid_request"),
        row(E::BadTenant, S::BAD_REQUEST, "invalid_request"),
        row(E::MethodOverride, S::BAD_REQUEST, "invalid_request"),
        row(E::MissingToken, S::UNAUTHORIZED, "missing_token")
            .challenge(r#"Bearer realm="authgate""#),
        row(E::MalformedCredentials, S::BAD_REQUEST, "invalid_request")
            .challenge(r#"Bearer realm="authgate", error="invalid_request""#),
        row(E::InvalidToken, S::UNAUTHORIZED, "invalid_token").challenge(
            r#"Bearer realm="authgate", error="invalid_token", error_description="invalid token""#,
        ),
        row(E::ExpiredToken, S::UNAUTHORIZED, "invalid_token").challenge(
            r#"Bearer realm="authgate", error="invalid_token", error_description="token expired""#,
        ),
        row(
            E::PayloadTooLarge,
            S::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        row(E::ClientTimeout, S::REQUEST_TIMEOUT, "request_timeout").close(),
        row(
            E::UnsupportedTransferCoding,
            S::NOT_IMPLEMENTED,
            "not_implemented",
        )
        .close(),
        row(
            E::HeadTooLarge,
            S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request_header_fields_too_large",
        )
        .close(),
        row(E::AdminUnauthenticated, S::UNAUTHORIZED, "unauthorized")
            .challenge(r#"Bearer realm="authgate-admin""#),
        row(E::AdminForbidden, S::FORBIDDEN, "forbidden"),
        row(
            E::InvalidField {
                field: "expires_in",
                message: "must be a positive integer".into(),
            },
            S::BAD_REQUEST,
            "invalid_request",
        ),
        row(
            E::StateUnavailable,
            S::SERVICE_UNAVAILABLE,
            "state_unavailable",
        ),
        row(E::Conflict { current: 7 }, S::CONFLICT, "conflict"),
        row(
            E::StateNotInitialised,
            S::SERVICE_UNAVAILABLE,
            "state_unavailable",
        ),
        row(
            E::StateUncertain,
            S::SERVICE_UNAVAILABLE,
            "state_unavailable",
        )
        .retry_after(),
        row(
            E::StateNotReplicated {
                revision: 9,
                wanted: 1,
                confirmed: 0,
            },
            S::SERVICE_UNAVAILABLE,
            "state_unavailable",
        )
        .retry_after(),
        // Closing: a retry on a new connection may reach a replica that is not fenced.
        row(E::Fenced, S::SERVICE_UNAVAILABLE, "state_unavailable")
            .retry_after()
            .close(),
        row(E::HandingOver, S::SERVICE_UNAVAILABLE, "state_unavailable")
            .retry_after()
            .close(),
        row(
            E::TlsReloadRefused {
                message: "admin: cannot read certs/admin.pem".into(),
            },
            S::UNPROCESSABLE_ENTITY,
            "tls_reload_refused",
        ),
        row(
            E::ConfigRefused {
                problems: vec!["line 2: upstream.url: required".into()],
            },
            S::UNPROCESSABLE_ENTITY,
            "config_refused",
        ),
        row(E::NotFound, S::NOT_FOUND, "not_found"),
        row(
            E::MethodNotAllowed,
            S::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ]
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).expect("valid JSON")
}

#[test]
fn every_variant_answers_its_row() {
    for row in table() {
        let name = format!("{:?}", row.error);
        let reply = row.error.reply();
        assert_eq!(reply.status, row.status, "{name}");
        let body = json(&reply.body());
        assert_eq!(body["error"], row.code, "{name}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        let response = row.error.into_response();
        assert_eq!(response.status(), row.status, "{name}");
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{name}");
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap());
        assert_eq!(challenge, row.challenge, "{name}");
        let close = headers.get(header::CONNECTION).map(|v| v.to_str().unwrap());
        assert_eq!(close, row.close.then_some("close"), "{name}");
        let retry = headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap());
        assert_eq!(retry, row.retry_after.then_some("1"), "{name}");
    }
}

#[test]
fn the_table_covers_every_variant() {
    // Adding a variant without a row fails here: `reply`'s match is exhaustive, and
    // this count is the number of its arms.
    assert_eq!(table().len(), 29);
}

#[test]
fn a_lost_if_match_race_is_409_naming_the_revision() {
    let body = json(&GatewayError::Conflict { current: 7 }.reply().body());
    assert_eq!(body["revision"], 7);
}

#[test]
fn a_redis_without_epoch_is_503_naming_cluster_init() {
    let body = GatewayError::StateNotInitialised.reply().body();
    assert!(String::from_utf8_lossy(&body).contains("authgate cluster init"));
}

#[test]
fn a_change_redis_replicas_did_not_confirm_is_503_saying_it_is_on_the_primary() {
    let err = GatewayError::StateNotReplicated {
        revision: 9,
        wanted: 1,
        confirmed: 0,
    };
    let body = json(&err.reply().body());
    assert_eq!(body["revision"], 9);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("applied on the Redis primary"),
        "{message}"
    );
    assert!(
        message.contains("not confirmed on 1 Redis replica"),
        "{message}"
    );
}

#[test]
fn a_bad_field_is_named_in_the_body() {
    let field = GatewayError::InvalidField {
        field: "expires_in",
        message: "must be a positive integer".into(),
    };
    let body = json(&field.reply().body());
    assert_eq!(body["field"], "expires_in");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("expires_in: "));
}

#[test]
fn a_refused_tls_reload_is_422_naming_the_listener() {
    let refused = GatewayError::TlsReloadRefused {
        message: "admin: cannot read certs/admin.pem".into(),
    };
    let body = json(&refused.reply().body());
    assert_eq!(body["message"], "admin: cannot read certs/admin.pem");
}

#[test]
fn internal_detail_never_reaches_the_body() {
    let body = GatewayError::UpstreamConnect(boxed("10.0.0.7:8081 refused"))
        .reply()
        .body();
    assert!(!String::from_utf8_lossy(&body).contains("10.0.0.7"));
}

#[test]
fn bodies_keep_their_bytes() {
    // Clients and the admin page match these bodies; the record renders them as the
    // static strings did.
    assert_eq!(
        GatewayError::MissingToken.reply().body(),
        r#"{"error":"missing_token","message":"this route requires a Bearer token"}"#
    );
}

#[test]
fn a_refused_config_reload_is_422_listing_every_problem() {
    let refused = GatewayError::ConfigRefused {
        problems: vec![
            "line 2: upstream.url: a".into(),
            "line 9: tokens.max_ttl: b".into(),
        ],
    };
    let body = json(&refused.reply().body());
    assert_eq!(body["error"], "config_refused");
    assert_eq!(body["problems"][1], "line 9: tokens.max_ttl: b");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("nothing changed"));
}
