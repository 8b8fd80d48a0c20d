//! The `authgate` command: parses the command line, starts logging, loads the config,
//! runs, reloads the config on SIGHUP, and drains on SIGTERM/SIGINT.
//! Everything else lives in the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use authgate::config::{Config, ConfigError, LogFormat};
use authgate::{demo, sample_backend, Listeners};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// `--features mimalloc` only; glibc's allocator otherwise (BENCHMARKS.md, "The
/// allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "authgate",
    version,
    about = "Reverse-proxy authentication gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print every problem and exit 1.
    Check {
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
    },
    /// The gateway and the sample backend on loopback, with a temporary state.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        proxy: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8081")]
        backend: SocketAddr,
    },
    /// Print a new admin key once, and the config entry holding only its digest.
    AdminKey {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: KeyRole,
    },
    /// The built-in sample profile backend alone.
    SampleBackend {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
    },
    /// GET a URL (the status listener's /readyz) and exit 0 on a 2xx, 1 otherwise;
    /// for container health checks, as the image has no curl.
    Probe {
        url: String,
        /// Give up after this long (a human duration: 500ms, 3s).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Shared state in Redis (`state.backend: redis`).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Give the Redis state its epoch; changes and replicas refuse to work without one.
    Init {
        #[arg(short, long, default_value = "config.yaml")]
        config: PathBuf,
        /// Replace an existing epoch: every replica resyncs.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyRole {
    Approver,
    Viewer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::AdminKey { name, role } => admin_key(&name, role),
        Command::Probe { url, timeout } => return probe(&url, timeout),
        Command::Serve { config } => serve(&config),
        Command::Demo {
            proxy,
            admin,
            backend,
        } => {
            let _ = init_logging(LogFormat::Human, "info");
            let addrs = demo::DemoAddrs {
                proxy,
                admin,
                backend,
            };
            gateway_runtime(&authgate::config::Runtime::default()).and_then(|rt| {
                rt.block_on(demo::run(addrs, &mut std::io::stdout(), shutdown_signal()))
                    .context("demo failed")
            })
        }
        Command::Cluster {
            command: ClusterCommand::Init { config, force },
        } => cluster_init(&config, force),
        Command::SampleBackend { listen } => {
            let _ = init_logging(LogFormat::Human, "info");
            runtime(0).and_then(|rt| {
                rt.block_on(async {
                    let listener = tokio::net::TcpListener::bind(listen)
                        .await
                        .with_context(|| format!("cannot listen on {listen}"))?;
                    tracing::info!(addr = %listener.local_addr()?, "sample backend listening");
                    sample_backend::serve(listener, shutdown_signal()).await?;
                    Ok(())
                })
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e @ (ConfigError::Read { .. } | ConfigError::Invalid { .. })) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(url: &str, timeout: std::time::Duration) -> ExitCode {
    let outcome = runtime(1).map(|rt| rt.block_on(authgate::probe::probe(url, timeout)));
    match outcome {
        Ok(Ok(status)) => {
            println!("{status}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("authgate: probe {url}: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn admin_key(name: &str, role: KeyRole) -> anyhow::Result<()> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    anyhow::ensure!(plain, "--name: use letters, digits, `-`, `_`, `.` or `@`");
    let role = match role {
        KeyRole::Approver => "approver",
        KeyRole::Viewer => "viewer",
    };
    let key = authgate::auth::token::generate(authgate::auth::token::ADMIN_KEY_PREFIX)
        .context("the OS random source failed")?;
    println!("Admin key for {name} ({role}); shown once, keep it in your secrets store:\n");
    println!("  {}\n", key.value);
    println!("Add this entry under admin.keys in the config (it holds only the key's SHA-256):\n");
    println!(
        "    - {{ name: {name}, role: {role}, sha256: \"{}\" }}",
        key.digest.to_hex()
    );
    Ok(())
}

fn cluster_init(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    use authgate::state::redis::{init, InitOutcome};
    let config = Config::load(path)?;
    let authgate::config::State::Redis(redis) = &config.state else {
        anyhow::bail!("{}: state.backend is not `redis`", path.display());
    };
    let outcome = runtime(1)?.block_on(init(redis, force))?;
    let shown = authgate::config::redact_url(&redis.url);
    match outcome {
        InitOutcome::Created { epoch } => println!("initialised {}: epoch {epoch}", shown),
        InitOutcome::Replaced { old, epoch } => {
            println!("replaced epoch {old} with {epoch} at {shown}; every replica resyncs")
        }
        InitOutcome::Exists { epoch } => anyhow::bail!(
            "{shown} already has epoch {epoch}; nothing changed (--force replaces it)"
        ),
    }
    Ok(())
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    // Started by an upgrade (SIGUSR2): take the sockets first, so a failure below is
    // the old process's to see (the channel closes) and it serves on.
    let inherited = authgate::upgrade::Inherited::receive()?;
    let config = Config::load(path)?;
    let log_level = init_logging(config.log.format, &config.log.level);
    let rt = gateway_runtime(&config.runtime)?;
    rt.block_on(async {
        let reload = authgate::tls::ReloadTrigger::default();
        use tokio::signal::unix::SignalKind;
        trigger_on(
            SignalKind::hangup(),
            "SIGHUP",
            "reloading the config",
            reload.clone(),
        )?;
        let upgrade = authgate::tls::ReloadTrigger::default();
        trigger_on(
            SignalKind::user_defined2(),
            "SIGUSR2",
            "upgrading: starting the binary again",
            upgrade.clone(),
        )?;
        let (listeners, hand_over) = match inherited {
            Some(inherited) => {
                let (listeners, hand_over) = inherited.listeners(&config).await?;
                (listeners, Some(hand_over))
            }
            None => (Listeners::bind(&config).await?, None),
        };
        let options = authgate::RunOptions {
            config_path: Some(path.to_path_buf()),
            reload,
            log_level: Some(log_level),
            upgrade: Some(upgrade),
            hand_over,
        };
        authgate::run_with(config, listeners, shutdown_signal(), options).await?;
        Ok(())
    })
}

/// tokio's runtime: one worker thread means a current-thread runtime (no work-stealing
/// bookkeeping), 0 one thread per core.
fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// The gateway's own runtime: current-thread unless `runtime.work_stealing`, with
/// `authgate::run_with` starting the other connection runtimes next to it
/// (`authgate::runtime`).
fn gateway_runtime(config: &authgate::config::Runtime) -> anyhow::Result<tokio::runtime::Runtime> {
    runtime(if config.work_stealing {
        config.worker_threads
    } else {
        1
    })
}

/// Starts logging; returns how a config reload changes the level (`RUST_LOG`, when
/// set, wins over `log.level` at start and on reload).
fn init_logging(format: LogFormat, level: &str) -> authgate::live::LogLevelSetter {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    macro_rules! setter {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |level: &str| {
                if from_env {
                    return Ok(());
                }
                let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
                handle.reload(filter).map_err(|e| e.to_string())
            })
        }};
    }
    match format {
        LogFormat::Human => setter!(builder),
        LogFormat::Json => setter!(builder.json()),
    }
}

/// Fires `trigger` on every `kind` signal (SIGHUP: reload the config, TLS files
/// included; SIGUSR2: hand the sockets to a new binary), whose default action would end
/// the process.
fn trigger_on(
    kind: tokio::signal::unix::SignalKind,
    name: &'static str,
    what: &'static str,
    trigger: authgate::tls::ReloadTrigger,
) -> anyhow::Result<()> {
    let mut signals =
        tokio::signal::unix::signal(kind).with_context(|| format!("cannot listen for {name}"))?;
    tokio::spawn(async move {
        while signals.recv().await.is_some() {
            tracing::info!("{name} received; {what}");
            trigger.trigger();
        }
    });
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
