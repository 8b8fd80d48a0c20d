//! The deployment files: the compose file is valid for a real compose implementation,
//! the gateway configs it mounts pass `authgate check`, the HAProxy config passes
//! `haproxy -c`, and the replicas behind HAProxy trust exactly HAProxy.

mod support;

use std::path::Path;
use std::process::Command;

use support::have_tool;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_compose_file_is_valid() {
    if !have_tool("docker-compose", "version") {
        return;
    }
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_gateway_config_passes_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["check", "-c", "deploy/compose-config.yaml"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_replicas_config_passes_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["check", "-c", "deploy/compose-redis.yaml"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_haproxy_config_is_valid() {
    if !have_tool("haproxy", "-v") {
        return;
    }
    // The replicas' names resolve only inside compose: a warning here, not an error.
    let out = Command::new("haproxy")
        .args(["-c", "-f", "deploy/haproxy.cfg"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The replicas believe the client address from HAProxy's fixed compose address and no
/// one else, and HAProxy sends it to them as PROXY v2.
#[test]
fn the_replicas_trust_exactly_haproxy() {
    let yaml = |path: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(root().join(path)).unwrap()).unwrap()
    };
    let mut compose = yaml("docker-compose.yml");
    compose.apply_merge().unwrap(); // the replicas share a `<<: *replica` anchor
    let haproxy_ip = compose["services"]["haproxy"]["networks"]["default"]["ipv4_address"]
        .as_str()
        .expect("HAProxy has a fixed address");
    let replicas = yaml("deploy/compose-redis.yaml");
    let trusted: Vec<&str> = replicas["trusted_proxies"]
        .as_sequence()
        .expect("trusted_proxies")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(trusted, [format!("{haproxy_ip}/32")]);
    assert_eq!(
        replicas["listen"]["proxy_protocol"].as_str(),
        Some("require")
    );
    for replica in ["gateway1", "gateway2"] {
        let service = &compose["services"][replica];
        let volumes = service["volumes"].as_sequence().unwrap();
        assert!(
            volumes.iter().any(|v| v
                .as_str()
                .unwrap()
                .starts_with("./deploy/compose-redis.yaml:")),
            "{replica} runs deploy/compose-redis.yaml"
        );
        // Only HAProxy reaches the proxy port: it is not published.
        assert!(
            !format!("{:?}", service["ports"]).contains(":8080"),
            "{replica}"
        );
    }
    let cfg = std::fs::read_to_string(root().join("deploy/haproxy.cfg")).unwrap();
    let live: Vec<&str> = cfg
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(live.contains(&"mode tcp"), "{cfg}");
    assert!(
        live.iter()
            .any(|l| l.starts_with("default-server") && l.contains("send-proxy-v2")),
        "{cfg}"
    );
}

/// The Sentinel overlay merges with the compose file into a valid project.
#[test]
fn the_sentinel_overlay_is_valid_compose() {
    if !have_tool("docker-compose", "version") {
        return;
    }
    let out = Command::new("docker-compose")
        .args([
            "-f",
            "docker-compose.yml",
            "-f",
            "deploy/compose.sentinel.yml",
            "config",
            "-q",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Sentinel replicas' config passes `check`, its secret path pointed at a real file
/// (inside compose it is the mounted secret).
#[test]
fn the_sentinel_replicas_config_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("redis-password");
    std::fs::write(&secret, "example\n").unwrap();
    let text = std::fs::read_to_string(root().join("deploy/compose-sentinel.yaml")).unwrap();
    assert!(text.contains("/run/secrets/redis-password"));
    let config = dir.path().join("config.yaml");
    let text = text.replace("/run/secrets/redis-password", secret.to_str().unwrap());
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["check", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
