//! The deployment files: the compose file is valid for a real compose implementation,
//! and the gateway config it mounts passes `authgate check`.

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
