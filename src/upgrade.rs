//! Zero-downtime binary upgrade on SIGUSR2: the running process starts the binary at
//! the path it was started from, with its own arguments, and hands it the listening
//! sockets; once the new process serves, the old one drains and exits 0.
//!
//! # Mechanism
//!
//! A Unix socket pair: one end becomes the new process's stdin (marked by
//! `AUTHGATE_UPGRADE=1` in its environment), and the listening sockets travel over it
//! with `SCM_RIGHTS`, as Envoy's hot restart passes them. The same channel carries the
//! hand-over's steps, which a descriptor inherited at a fixed number (nginx's `NGINX`
//! variable, systemd's `LISTEN_FDS`) would still need; and a descriptor received over a
//! socket arrives owned, where one taken by number needs `FromRawFd`, which is `unsafe`
//! (forbidden in this crate). Not `SO_REUSEPORT`: a second socket there has its own
//! accept queue, and connections waiting in the old one's are reset when it closes. One
//! socket shared by both processes loses nothing: whichever accepts first serves.
//!
//! # Steps, one line each on the channel
//!
//! 1. old → new, with the sockets: `{"listeners": [...], "alternate_replica": bool}`.
//! 2. The new process loads its config (a broken one ends it here, logged) and takes
//!    the sockets whose address `listen.*` still names (it binds the others itself).
//! 3. new → old: `state`. The old process refuses admin writes from then on (once the
//!    one in progress is saved) and lets go of the state file's lock: `released`. With
//!    Redis there is no lock; both serve as replicas of their own name (see below).
//! 4. The new process takes the lock, loads the state, serves, tells systemd its PID,
//!    and says `ready`.
//! 5. The old process stops accepting and answers no new request (each open connection
//!    closes after its in-flight response; HTTP/2 gets GOAWAY), drains within
//!    `shutdown_timeout`, and exits 0. With the file store its protected routes are
//!    fenced from step 5 on: the new process may change a token it can no longer see.
//!
//! Anything else (the new process exits, closes the channel, or takes longer than
//! [`TIMEOUT`]): the old one kills it if it still runs, takes the lock back, re-reads
//! the state, accepts admin writes again, and serves on, logging why.
//!
//! # Redis
//!
//! Each process acknowledges revisions under its replica name, and a writer believes
//! the newest acknowledgement of a name. Two processes under one name would let the old
//! one's acknowledgement stand for a new one that has not applied the change, so the
//! new process takes the other of `replica` and `replica~upgraded`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::process::Stdio;
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixStream};

use crate::Listeners;

/// Set in the new process's environment: its stdin is the hand-over channel.
pub const ENV: &str = "AUTHGATE_UPGRADE";

/// How long the new process may take from start to serving.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The suffix of the replica name that alternates across upgrades (Redis state).
pub const ALTERNATE_SUFFIX: &str = "~upgraded";

/// Proxy, admin, status.
const MAX_LISTENERS: usize = 3;

/// Step 1's line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// The role of each socket, in the order they were sent.
    listeners: Vec<String>,
    alternate_replica: bool,
    /// The store the old process serves ([`store_identity`]): the new one must serve
    /// the same, or the two would answer from different states.
    store: String,
}

/// The old process's copies of its listening sockets, taken before they are served.
#[derive(Debug)]
pub struct Sockets(Vec<(&'static str, OwnedFd)>);

impl Sockets {
    pub fn of(listeners: &Listeners) -> io::Result<Sockets> {
        let mut sockets = vec![
            ("proxy", listeners.proxy.as_fd().try_clone_to_owned()?),
            ("admin", listeners.admin.as_fd().try_clone_to_owned()?),
        ];
        if let Some(status) = &listeners.status {
            sockets.push(("status", status.as_fd().try_clone_to_owned()?));
        }
        Ok(Sockets(sockets))
    }
}

/// The old process's side of one hand-over, past step 1.
#[derive(Debug)]
pub struct Successor {
    pub child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

/// What the new process said.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Step 3: let go of the state.
    State,
    /// Step 4: serving.
    Ready,
}

/// Starts the binary this process was started from (`argv[0]`: the file a package
/// upgrade replaced, not the running image) with this process's arguments, and sends
/// it the sockets (step 1).
pub fn start(sockets: &Sockets, alternate_replica: bool, store: &str) -> io::Result<Successor> {
    let mut args = std::env::args_os();
    let program = args
        .next()
        .ok_or_else(|| io::Error::other("no argv[0] to start"))?;
    let (ours, theirs) = StdUnixStream::pair()?;
    let child = {
        let mut command = tokio::process::Command::new(&program);
        command
            .args(args)
            .env(ENV, "1")
            .stdin(Stdio::from(OwnedFd::from(theirs)));
        // The command (holding the other end) is dropped here: when the child ends,
        // the channel reads end-of-file.
        command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", program.to_string_lossy()),
            )
        })?
    };
    let header = Header {
        listeners: sockets.0.iter().map(|(role, _)| role.to_string()).collect(),
        alternate_replica,
        store: store.to_string(),
    };
    let mut line = serde_json::to_vec(&header).map_err(io::Error::other)?;
    line.push(b'\n');
    let fds: Vec<_> = sockets.0.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("too many sockets to hand over"));
    }
    // A fresh socket pair's buffer takes this small line whole.
    let sent = sendmsg(
        &ours,
        &[IoSlice::new(&line)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != line.len() {
        return Err(io::Error::other("the hand-over line was cut short"));
    }
    ours.set_nonblocking(true)?;
    let (read, write) = UnixStream::from_std(ours)?.into_split();
    Ok(Successor {
        child,
        lines: BufReader::new(read).lines(),
        write,
    })
}

impl Successor {
    /// The next step the new process announces; an error when it ends or says
    /// anything else.
    pub async fn next(&mut self) -> Result<Step, String> {
        tokio::select! {
            line = self.lines.next_line() => match line {
                Ok(Some(line)) if line == "state" => Ok(Step::State),
                Ok(Some(line)) if line == "ready" => Ok(Step::Ready),
                Ok(Some(line)) => Err(format!("the new process said {line:?}")),
                Ok(None) => Err(self.ended().await),
                Err(e) => Err(format!("the hand-over channel failed: {e}")),
            },
            status = self.child.wait() => Err(match status {
                Ok(status) => format!("the new process exited ({status})"),
                Err(e) => format!("cannot wait for the new process: {e}"),
            }),
        }
    }

    /// Step 3's answer.
    pub async fn released(&mut self) -> io::Result<()> {
        self.write.write_all(b"released\n").await
    }

    /// Step 5: this process refuses protected routes now; the new one may take changes.
    pub async fn fenced(&mut self) -> io::Result<()> {
        self.write.write_all(b"fenced\n").await
    }

    /// Why the channel closed: the exit status, if the process ended within a moment.
    async fn ended(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await {
            Ok(Ok(status)) => format!("the new process exited ({status})"),
            _ => "the new process closed the hand-over channel".into(),
        }
    }

    /// Ends a new process that did not get to serve.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The new process's side: the sockets and the channel, as received in step 1.
#[derive(Debug)]
pub struct Inherited {
    channel: StdUnixStream,
    listeners: Vec<(String, std::net::TcpListener)>,
    alternate_replica: bool,
    store: String,
}

impl Inherited {
    /// The hand-over, when this process was started by an upgrade ([`ENV`] set);
    /// `None` otherwise. Blocks until the old process has sent the sockets (it sends
    /// them right after starting this one).
    pub fn receive() -> io::Result<Option<Inherited>> {
        if std::env::var_os(ENV).is_none() {
            return Ok(None);
        }
        let not_channel = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("{ENV} is set but stdin is not an upgrade's hand-over channel: {e}"),
            )
        };
        let channel = StdUnixStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
        let mut line = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_LISTENERS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            &channel,
            &mut [IoSliceMut::new(&mut line)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| not_channel(e.into()))?;
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        let line = &line[..got.bytes];
        let header: Header = line
            .strip_suffix(b"\n")
            .and_then(|json| serde_json::from_slice(json).ok())
            .ok_or_else(|| io::Error::other("the hand-over line is not the expected one"))?;
        if header.listeners.len() != fds.len() {
            return Err(io::Error::other(format!(
                "the hand-over named {} sockets and carried {}",
                header.listeners.len(),
                fds.len()
            )));
        }
        Ok(Some(Inherited {
            channel,
            listeners: header
                .listeners
                .into_iter()
                .zip(fds)
                .map(|(role, fd)| (role, std::net::TcpListener::from(fd)))
                .collect(),
            alternate_replica: header.alternate_replica,
            store: header.store,
        }))
    }

    /// The listeners for `config`: each inherited socket whose address `listen.*` still
    /// names (port 0 names any port), else a new one bound there. Needs the runtime.
    pub async fn listeners(mut self, config: &crate::Config) -> io::Result<(Listeners, HandOver)> {
        let store = store_identity(&config.state);
        if store != self.store {
            return Err(io::Error::other(format!(
                "state.*: this config names another store ({store}) than the running process serves ({}); an upgrade keeps the store, changing it needs a restart",
                self.store
            )));
        }
        let mut take = |role: &str, wanted: SocketAddr| {
            let at = self.listeners.iter().position(|(r, l)| {
                r == role && l.local_addr().is_ok_and(|addr| names(wanted, addr))
            })?;
            Some(self.listeners.swap_remove(at).1)
        };
        let proxy = take("proxy", config.listen.proxy);
        let admin = take("admin", config.listen.admin);
        let status = config
            .listen
            .status
            .map(|addr| (addr, take("status", addr)));
        let listeners = Listeners {
            proxy: listener(proxy, config.listen.proxy).await?,
            admin: listener(admin, config.listen.admin).await?,
            status: match status {
                Some((addr, inherited)) => Some(listener(inherited, addr).await?),
                None => None,
            },
        };
        // Sockets the config no longer names are the old process's to close.
        self.listeners.clear();
        self.channel.set_nonblocking(true)?;
        let (read, write) = UnixStream::from_std(self.channel)?.into_split();
        Ok((
            listeners,
            HandOver {
                lines: BufReader::new(read).lines(),
                write,
                alternate_replica: self.alternate_replica,
            },
        ))
    }
}

/// The replica name a process uses: `replica`, or `replica~upgraded` when its
/// predecessor used `replica` (see "Redis" above).
pub fn replica_name(replica: &str, alternate: bool) -> String {
    if alternate {
        format!("{replica}{ALTERNATE_SUFFIX}")
    } else {
        replica.to_string()
    }
}

/// Whether `wanted` (from the config) names the bound address `actual`.
fn names(wanted: SocketAddr, actual: SocketAddr) -> bool {
    wanted == actual || (wanted.port() == 0 && wanted.ip() == actual.ip())
}

async fn listener(
    inherited: Option<std::net::TcpListener>,
    addr: SocketAddr,
) -> io::Result<TcpListener> {
    match inherited {
        Some(listener) => {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        }
        None => crate::bind(addr).await,
    }
}

/// The new process's remaining steps (3 and 4).
#[derive(Debug)]
pub struct HandOver {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    /// Serve Redis state under the other replica name ([`replica_name`]).
    pub alternate_replica: bool,
}

impl HandOver {
    /// Step 3: asks the old process to let go of the state, and waits until it has.
    pub async fn take_state(&mut self) -> io::Result<()> {
        self.write.write_all(b"state\n").await?;
        match tokio::time::timeout(TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "released" => Ok(()),
            Ok(Ok(Some(line))) => Err(io::Error::other(format!(
                "the old process answered {line:?} instead of releasing the state"
            ))),
            Ok(Ok(None)) => Err(io::Error::other(
                "the old process closed the hand-over channel",
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other(
                "the old process did not release the state in time",
            )),
        }
    }

    /// Step 4: serving; then waits for step 5 (the old process refuses protected routes,
    /// so changes may be taken here), and tells systemd the new main PID only then, when
    /// the old process is committed to draining. The returned [`Predecessor`] tells when
    /// the old process has exited.
    pub async fn ready(mut self) -> io::Result<Predecessor> {
        self.write.write_all(b"ready\n").await?;
        match tokio::time::timeout(TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "fenced" => {}
            Ok(Ok(Some(line))) => {
                return Err(io::Error::other(format!(
                    "the old process answered {line:?} instead of handing over"
                )))
            }
            Ok(Ok(None)) => {
                return Err(io::Error::other(
                    "the old process closed the hand-over channel before handing over",
                ))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::other(
                    "the old process did not hand over in time",
                ))
            }
        }
        notify_systemd(&[
            sd_notify::NotifyState::MainPid(std::process::id()),
            sd_notify::NotifyState::Ready,
        ]);
        let (gone, watch) = tokio::sync::watch::channel(false);
        let mut lines = self.lines;
        // The old process holds its end until it exits: end-of-file is its exit.
        tokio::spawn(async move {
            while let Ok(Some(_)) = lines.next_line().await {}
            let _ = gone.send(true);
        });
        Ok(Predecessor(watch))
    }
}

/// Whether the process this one was upgraded from has exited.
#[derive(Debug, Clone)]
pub struct Predecessor(tokio::sync::watch::Receiver<bool>);

impl Predecessor {
    /// None: this process was not started by an upgrade.
    pub fn gone(predecessor: Option<&Predecessor>) -> bool {
        predecessor.map_or(true, |p| *p.0.borrow())
    }
}

/// What picks the store, for [`Header::store`]: the state file, or the Redis URL
/// (without its password) and Sentinel master.
pub fn store_identity(state: &crate::config::State) -> String {
    match state {
        crate::config::State::File { path } => format!("file {}", path.display()),
        crate::config::State::Redis(redis) => {
            let mut id = format!("redis {}", crate::config::redact_url(&redis.url));
            if let Some(sentinel) = &redis.sentinel {
                id.push_str(&format!(" sentinel {}", sentinel.master_name));
            }
            id
        }
    }
}

/// Tells systemd (`Type=notify`, `NotifyAccess=all`) about this process; nothing when
/// it is not run by systemd (`NOTIFY_SOCKET` unset). The variable stays set for a later
/// upgrade's process.
pub fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_in_the_config_names_any_port_on_its_address() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(names(at("127.0.0.1:8080"), at("127.0.0.1:8080")));
        assert!(names(at("127.0.0.1:0"), at("127.0.0.1:41234")));
        assert!(!names(at("127.0.0.1:8080"), at("127.0.0.1:8081")));
        assert!(!names(at("127.0.0.2:0"), at("127.0.0.1:41234")));
    }
}
