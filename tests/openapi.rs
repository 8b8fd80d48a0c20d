//! The admin API's OpenAPI 3.1 document (`openapi/admin.json`, served at
//! `/admin/v1/openapi.json`) kept true: it validates as OpenAPI 3.1
//! (openapi-spec-validator), and schemathesis, run against the real binary with an
//! approver key, finds no server error and no answer outside it, with every check on
//! and its stateful and negative phases (`tests/openapi/schemathesis.toml`). Both tools
//! come from tests/openapi/.venv (`.ci/run` installs it from the pinned, hashed
//! tests/openapi/requirements.txt); without it the tests skip, unless
//! AUTHGATE_REQUIRE_TOOLS is set.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::process::{await_listening, terminate_and_wait, write_config};
use support::{admin_yaml, have_tool, keys};

const BIN: &str = env!("CARGO_BIN_EXE_authgate");

/// The longest a schemathesis run may take (it takes well under a minute alone; the
/// machine may be shared).
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `tests/openapi/.venv/bin/<name>`, if it runs.
fn tool(name: &str) -> Option<PathBuf> {
    let path = repo("tests/openapi/.venv/bin").join(name);
    have_tool(path.to_str().unwrap(), "--version").then_some(path)
}

/// Runs `command` to its end, killing it past [`RUN_LIMIT`].
fn run(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool starts");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(output) => output.expect("the tool's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("{command:?} ran for more than {RUN_LIMIT:?}");
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn validate(validator: &Path, document: &Path) -> Output {
    let mut command = Command::new(validator);
    command.args(["--schema", "3.1"]).arg(document);
    run(command)
}

#[test]
fn the_document_is_valid_openapi_3_1_and_a_broken_one_is_not() {
    let Some(validator) = tool("openapi-spec-validator") else {
        return;
    };
    let document = repo("openapi/admin.json");
    let output = validate(&validator, &document);
    assert!(output.status.success(), "{}", text(&output));

    // The validator does refuse: the same document with a response missing its
    // required description.
    let mut broken: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&document).unwrap()).unwrap();
    broken["paths"]["/healthz"]["get"]["responses"]["200"] = serde_json::json!({});
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, broken.to_string()).unwrap();
    let output = validate(&validator, &path);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("description"),
        "{}",
        text(&output)
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let Some(schemathesis) = tool("schemathesis") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The admin API never calls the upstream: nothing needs to listen there.
    let unused_upstream = "127.0.0.1:9".parse().unwrap();
    let config = write_config(dir.path(), unused_upstream, &admin_yaml());
    let mut gateway = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let admin = await_listening(&mut gateway, "openapi").admin;

    let mut command = Command::new(&schemathesis);
    command
        .arg("--config-file")
        .arg(repo("tests/openapi/schemathesis.toml"))
        .arg("run")
        .arg(format!("http://{admin}/admin/v1/openapi.json"))
        .env("AUTHGATE_ADMIN_KEY", &keys().approver)
        // Nothing it writes lands in the repository.
        .current_dir(dir.path());
    let started = Instant::now();
    let output = run(command);
    let report = text(&output);
    assert!(output.status.success(), "schemathesis failed:\n{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            stdout.contains(&format!("✅  {phase}")),
            "{phase}:\n{report}"
        );
    }
    assert!(stdout.contains("No issues found"), "{report}");
    eprintln!("schemathesis ran in {:?}", started.elapsed());

    let status = terminate_and_wait(gateway);
    assert!(status.success(), "the gateway exits cleanly: {status}");
}
