//! A TCP relay on 127.0.0.1 port 0 that can be cut: while cut it keeps every connection
//! open and accepts new ones, but silently drops the bytes either side sends, as a
//! network that blackholes packets does (no RST, no FIN: peers only notice by timing
//! out). Put between one gateway replica and Redis to cut that replica off alone.
//!
//! When the relay is healed, connections that lost bytes while cut are closed: a byte
//! stream with a hole in it cannot carry on (a TCP connection that outlived a partition
//! would have timed out or retransmitted instead). Connections that lost nothing, and
//! every new one, carry bytes again.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Relay {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watching) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watching = watching.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        pipe(client, server, watching).await;
                    }
                });
            }
        });
        Relay { addr, cut, accept }
    }

    /// From now on, drop every byte (connections stay open).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Carry bytes again; connections that lost some are closed.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Open connections end too: their `changed()` fails once the sender is gone.
        self.accept.abort();
    }
}

/// Copies both ways until either side closes, dropping bytes while `cut` holds.
async fn pipe(client: TcpStream, server: TcpStream, mut cut: watch::Receiver<bool>) {
    let (mut client_in, mut client_out) = client.into_split();
    let (mut server_in, mut server_out) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let mut lost_bytes = false;
    loop {
        tokio::select! {
            read = client_in.read(&mut up) => {
                let Ok(n @ 1..) = read else { return };
                if !forward(&up[..n], &mut server_out, &cut, &mut lost_bytes).await {
                    return;
                }
            }
            read = server_in.read(&mut down) => {
                let Ok(n @ 1..) = read else { return };
                if !forward(&down[..n], &mut client_out, &cut, &mut lost_bytes).await {
                    return;
                }
            }
            changed = cut.changed() => {
                if changed.is_err() || (!*cut.borrow() && lost_bytes) {
                    return;
                }
            }
        }
    }
}

/// Forwards `bytes` unless the relay is cut; false when the connection must end.
async fn forward(
    bytes: &[u8],
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    cut: &watch::Receiver<bool>,
    lost_bytes: &mut bool,
) -> bool {
    if *cut.borrow() {
        *lost_bytes = true;
        return true;
    }
    !*lost_bytes && to.write_all(bytes).await.is_ok()
}
