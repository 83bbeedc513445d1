//! A userspace TCP proxy in front of a backend, for network faults the
//! kernel here cannot inject (no `tc netem`): pass, reset every new
//! connection, or black-hole it (accept and never answer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyMode {
    Pass,
    /// New connections are closed at once; open ones are cut.
    Reset,
    /// New connections are accepted and held without a byte; open ones are cut.
    Blackhole,
}

impl ProxyMode {
    fn to_u8(self) -> u8 {
        match self {
            ProxyMode::Pass => 0,
            ProxyMode::Reset => 1,
            ProxyMode::Blackhole => 2,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => ProxyMode::Reset,
            2 => ProxyMode::Blackhole,
            _ => ProxyMode::Pass,
        }
    }
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct TcpProxy {
    listen: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Bumped on every mode change so open connections are cut.
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(ProxyMode::Pass.to_u8()));
        let (generation, _) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            mode.clone(),
            generation.clone(),
        ));
        Ok(TcpProxy {
            listen,
            mode,
            generation,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn mode(&self) -> ProxyMode {
        ProxyMode::from_u8(self.mode.load(Ordering::SeqCst))
    }

    /// Changes the mode; connections open before the change are cut, so no
    /// request straddles two modes.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.store(mode.to_u8(), Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|generation| *generation += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let mut changed = generation.subscribe();
        match ProxyMode::from_u8(mode.load(Ordering::SeqCst)) {
            ProxyMode::Reset => drop(client),
            ProxyMode::Blackhole => {
                tokio::spawn(async move {
                    let _held = client;
                    let _ = changed.changed().await;
                });
            }
            ProxyMode::Pass => {
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Small requests and answers pass as they come: without
                    // this, Nagle can hold a write back until the last one
                    // is acknowledged.
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let mut client = client;
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        }
    }
}
