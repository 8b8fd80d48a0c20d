use super::*;

fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(text, Path::new("/etc/authgate"))
}

#[test]
fn minimal_file_gets_every_default() {
    let c = parse("upstream: { url: \"http://127.0.0.1:8081\" }").unwrap();
    assert_eq!(c.listen.proxy, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.listen.admin, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.upstream.origin, "http://127.0.0.1:8081/");
    assert_eq!(c.upstream.base_path, "");
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.upstream.request_timeout, Duration::from_secs(60));
    assert_eq!(c.protected_routes.len(), 2);
    assert_eq!(
        c.protected_routes[1].path,
        "/m2/{client}/v2/profile/batchUpdate"
    );
    assert_eq!(c.tenant_param.as_deref(), Some("client"));
    assert_eq!(c.tokens.max_ttl, Duration::from_secs(90 * 86400));
    assert_eq!(c.limits.max_header_bytes, 65536);
    assert_eq!(c.limits.max_body_bytes, 52_428_800);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    let State::File { path } = &c.state else {
        panic!("file is the default backend")
    };
    assert_eq!(path, Path::new("/etc/authgate/data/state.json"));
}

#[test]
fn the_repository_example_is_valid() {
    let text = include_str!("../../config.yaml");
    let c = parse(text).unwrap_or_else(|p| panic!("config.yaml: {p:?}"));
    assert!(!c.protected_routes.is_empty());
}

#[test]
fn every_problem_is_reported_with_key_and_line() {
    let text = "\
listen:
  proxy: \"0.0.0.0:8080\"
upstream:
  url: \"ftp://backend\"
  request_timout: 5s
  connect_timeout: soon
limits:
  max_header_bytes: 10
";
    let problems = parse(text).unwrap_err();
    let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 4, "{shown:#?}");
    assert!(
        shown[0].starts_with("line 4: upstream.url: `ftp://backend`"),
        "{shown:#?}"
    );
    assert!(shown[1].starts_with("line 5: upstream.request_timout: unknown key"));
    assert!(shown[2].starts_with("line 6: upstream.connect_timeout: `soon`"));
    assert!(shown[3].starts_with("line 8: limits.max_header_bytes"));
}

#[test]
fn syntax_and_type_errors_carry_the_line() {
    let problems = parse("upstream:\n  url: [1, 2\n").unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].line.is_some(), "{problems:?}");
    let problems =
        parse("upstream: { url: \"http://a\" }\nlimits:\n  max_connections: lots\n").unwrap_err();
    assert_eq!(problems[0].line, Some(3), "{problems:?}");
}

#[test]
fn durations_need_units_and_must_be_positive() {
    let problems =
        parse("upstream: { url: \"http://a\", request_timeout: 5 }\nshutdown_timeout: 0s\n")
            .unwrap_err();
    assert!(problems[0].message.contains("no unit"), "{problems:?}");
    assert!(
        problems[1].message.contains("longer than zero"),
        "{problems:?}"
    );
}

#[test]
fn upstream_url_keeps_a_base_path_and_refuses_queries_and_user_info() {
    let c = parse("upstream: { url: \"http://backend:81/legacy/\" }").unwrap();
    assert_eq!(c.upstream.origin, "http://backend:81/");
    assert_eq!(c.upstream.base_path, "/legacy");
    assert!(parse("upstream: { url: \"http://backend/?a=1\" }").is_err());
    assert!(parse("upstream: { url: \"http://user:pw@backend/\" }").is_err());
    assert!(parse("{}").unwrap_err()[0].message.contains("required"));
}

#[test]
fn routes_are_checked() {
    let text = "\
upstream: { url: \"http://a\" }
protected_routes:
  - { methods: [POST], path: \"/m2/{client}/x\" }
  - { methods: [\"BAD METHOD\"], path: \"no-slash\" }
  - { methods: [get], path: \"/m2/{client\" }
";
    let problems = parse(text).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "protected_routes[1].methods",
            "protected_routes[1].path",
            "protected_routes[2].path"
        ]
    );
    assert_eq!(problems[2].line, Some(5));
}

#[test]
fn tenant_param_none_means_a_single_tenant() {
    let c = parse("upstream: { url: \"http://a\" }\ntenant_param: none\n").unwrap();
    assert_eq!(c.tenant_param, None);
    let c = parse("upstream: { url: \"http://a\" }\ntenant_param: ~\n").unwrap();
    assert_eq!(c.tenant_param, None);
    assert!(parse("upstream: { url: \"http://a\" }\ntenant_param: \"a b\"\n").is_err());
}

#[test]
fn admin_keys_need_a_digest_and_a_role() {
    let digest = "ab".repeat(32);
    let text = format!(
        "upstream: {{ url: \"http://a\" }}\nadmin:\n  keys:\n    - {{ name: ops, role: approver, sha256: \"{digest}\" }}\n    - {{ name: ops, role: boss, sha256: \"xyz\" }}\n"
    );
    let problems = parse(&text).unwrap_err();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "admin.keys[1].name",
            "admin.keys[1].role",
            "admin.keys[1].sha256"
        ]
    );
    assert!(problems.iter().all(|p| p.line == Some(5)), "{problems:?}");
    let debug = format!(
        "{:?}",
        parse(
            &text
                .replace("boss", "viewer")
                .replace("- { name: ops, role: viewer, sha256: \"xyz\" }", "")
        )
        .unwrap()
        .admin
        .keys
    );
    assert!(!debug.contains(&digest), "digests stay out of Debug output");
}

#[test]
fn redis_state_gets_defaults_and_its_timing_is_checked() {
    let c = parse(
        "upstream: { url: \"http://127.0.0.1:8081\" }\nstate:\n  backend: redis\n  redis: { url: \"redis://127.0.0.1:6379\", replica: gw-1 }\n",
    )
    .unwrap();
    let State::Redis(redis) = &c.state else {
        panic!("redis backend")
    };
    assert_eq!(redis.key_prefix, "authgate");
    assert_eq!(redis.lease, Duration::from_millis(1500));
    assert_eq!(redis.heartbeat, Duration::from_millis(250));
    assert_eq!(redis.ack_timeout, Duration::from_millis(2000));
    assert_eq!(redis.wait_replicas, 0, "WAIT is off by default");
    assert_eq!(redis.replica, "gw-1");

    let text = "\
upstream: { url: \"http://127.0.0.1:8081\" }
state:
  backend: redis
  redis:
    lease: 500ms
    heartbeat: 200ms
    key_prefix: \"a{b}\"
";
    let problems = parse(text).unwrap_err();
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"state.redis"), "url required: {problems:?}");
    assert!(keys.contains(&"state.redis.lease"), "{problems:?}");
    assert!(keys.contains(&"state.redis.key_prefix"), "{problems:?}");
    let lease = problems
        .iter()
        .find(|p| p.key == "state.redis.lease")
        .unwrap();
    assert_eq!(lease.line, Some(5), "{lease}");
    let stray =
        parse("upstream: { url: \"http://x:1\" }\nstate:\n  redis: { url: \"redis://h:1\" }\n")
            .unwrap_err();
    assert_eq!(stray[0].key, "state.redis", "{stray:?}");
}

#[test]
fn redis_wait_replicas_is_a_small_count_reported_with_its_line() {
    let with = |value: &str| {
        parse(&format!(
            "upstream: {{ url: \"http://127.0.0.1:8081\" }}\nstate:\n  backend: redis\n  redis:\n    url: \"redis://127.0.0.1:6379\"\n    wait_replicas: {value}\n"
        ))
    };
    let c = with("2").unwrap();
    let State::Redis(redis) = &c.state else {
        panic!("redis backend")
    };
    assert_eq!(redis.wait_replicas, 2);
    for bad in ["101", "-1", "one", "1.5"] {
        let problems = with(bad).unwrap_err();
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert_eq!(problems[0].line, Some(6), "{bad}: {problems:?}");
    }
    let too_many = with("101").unwrap_err();
    assert_eq!(too_many[0].key, "state.redis.wait_replicas", "{too_many:?}");
    assert!(too_many[0].message.contains("at most 100"), "{too_many:?}");
}

#[test]
fn routes_cover_every_method_unless_listed_and_listing_warns() {
    let c = parse("upstream: { url: \"http://a\" }\n").unwrap();
    assert!(c.protected_routes.iter().all(|r| r.methods.is_empty()));
    assert!(c.case_insensitive_paths, "case-insensitive by default");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let text = "\
upstream: { url: \"http://a\" }
protected_routes:
  - { path: \"/m2/{client}/x\" }
  - { methods: [post], path: \"/m2/{client}/y\" }
case_insensitive_paths: false
";
    let c = parse(text).unwrap();
    assert!(c.protected_routes[0].methods.is_empty());
    assert_eq!(c.protected_routes[1].methods, [Method::POST]);
    let warned: Vec<(&str, Option<usize>)> = c
        .warnings
        .iter()
        .map(|w| (w.key.as_str(), w.line))
        .collect();
    assert_eq!(
        warned,
        [
            ("protected_routes[1].methods", Some(4)),
            ("case_insensitive_paths", Some(5))
        ]
    );
    assert!(c.warnings[0].message.contains("lenient backend"));
    let empty =
        "upstream: { url: \"http://a\" }\nprotected_routes:\n  - { methods: [], path: \"/x\" }\n";
    let problems = parse(empty).unwrap_err();
    assert_eq!(problems[0].key, "protected_routes[0].methods");
}

#[test]
fn the_status_listener_is_off_by_default_and_checked_when_set() {
    let c = parse("upstream: { url: \"http://127.0.0.1:8081\" }").unwrap();
    assert_eq!(c.listen.status, None);
    assert!(c.listen.admin_probes);
    let text = "listen:\n  admin: \"127.0.0.1:9090\"\n  status: \"127.0.0.1:9090\"\nupstream: { url: \"http://127.0.0.1:8081\" }\n";
    let problems = parse(text).unwrap_err();
    assert_eq!(problems[0].key, "listen.status", "{problems:?}");
    assert_eq!(problems[0].line, Some(3));
    assert!(problems[0].message.contains("listen.admin"), "{problems:?}");
    let text = "listen: { admin_probes: false }\nupstream: { url: \"http://127.0.0.1:8081\" }\n";
    let problems = parse(text).unwrap_err();
    assert_eq!(problems[0].key, "listen.admin_probes", "{problems:?}");
    let text = "listen: { status: \"nowhere\" }\nupstream: { url: \"http://127.0.0.1:8081\" }\n";
    assert_eq!(parse(text).unwrap_err()[0].key, "listen.status");
}

#[test]
fn a_reload_names_each_key_that_needs_a_restart_and_no_other() {
    let base = "listen: { proxy: \"127.0.0.1:8080\" }\nupstream: { url: \"http://127.0.0.1:8081\" }\nstate:\n  backend: redis\n  redis: { url: \"redis://app:secret@10.0.0.5:6379\" }\n";
    let old = parse(base).unwrap();
    let same_but_keys =
        format!("{base}tokens: {{ default_ttl: 1h }}\nlimits: {{ max_connections: 5 }}\n");
    let new = parse(&same_but_keys).unwrap();
    assert!(needs_restart(&old, &new, &same_but_keys).is_empty());

    let moved = base
        .replace("127.0.0.1:8080", "127.0.0.1:8090")
        .replace("app:secret@", "app:hunter2@");
    let new = parse(&moved).unwrap();
    let problems = needs_restart(&old, &new, &moved);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["listen.proxy", "state.redis.url"], "{problems:?}");
    assert_eq!(problems[0].line, Some(1));
    assert!(problems[0].message.contains("needs a restart"));
    let shown = format!("{problems:?}");
    assert!(
        !shown.contains("secret") && !shown.contains("hunter2"),
        "{shown}"
    );
}
