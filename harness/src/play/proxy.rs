//! A userspace TCP proxy in front of a backend, for network faults the
//! kernel here cannot inject (no `tc netem`): pass, reset every new
//! connection, black-hole it (accept and never answer), or delay every
//! answer beyond any client's patience.
//!
//! The proxy also counts the HTTP requests that reach it whole, and those
//! whose fate is sealed with no answer to come before the fault heals (a
//! black hole or a frozen backend took them; a delayed answer came back), so
//! that a client can stop waiting right then: see [`ProxyLink`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyMode {
    Pass,
    /// New connections are closed at once; open ones are cut.
    Reset,
    /// New connections are accepted, read and never answered; open ones are
    /// cut.
    Blackhole,
    /// Requests pass and run; their answers are held back (the network
    /// delays them past every timeout); open connections are cut.
    Delay,
}

impl ProxyMode {
    fn to_u8(self) -> u8 {
        match self {
            ProxyMode::Pass => 0,
            ProxyMode::Reset => 1,
            ProxyMode::Blackhole => 2,
            ProxyMode::Delay => 3,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => ProxyMode::Reset,
            2 => ProxyMode::Blackhole,
            3 => ProxyMode::Delay,
            _ => ProxyMode::Pass,
        }
    }
}

/// What the proxy and its connections share.
#[derive(Debug)]
struct Shared {
    mode: AtomicU8,
    /// The backend behind the proxy is frozen (paused): it takes requests
    /// and answers none until it resumes.
    upstream_frozen: AtomicBool,
    /// Bumped on every mode change so open connections are cut.
    generation: watch::Sender<u64>,
    /// Whole HTTP requests read from clients: forwarded upstream, or
    /// swallowed by a black hole.
    arrived: watch::Sender<u64>,
    /// Requests that will have no answer before the fault heals: swallowed
    /// by a black hole or taken by a frozen backend on arrival, or run by
    /// the backend with the answer held back.
    stranded: watch::Sender<u64>,
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct TcpProxy {
    listen: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(ProxyMode::Pass.to_u8()),
            upstream_frozen: AtomicBool::new(false),
            generation: watch::channel(0).0,
            arrived: watch::channel(0).0,
            stranded: watch::channel(0).0,
        });
        let task = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(TcpProxy {
            listen,
            shared,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn mode(&self) -> ProxyMode {
        ProxyMode::from_u8(self.shared.mode.load(Ordering::SeqCst))
    }

    /// Changes the mode; connections open before the change are cut, so no
    /// request straddles two modes.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.mode.store(mode.to_u8(), Ordering::SeqCst);
        self.shared
            .generation
            .send_modify(|generation| *generation += 1);
    }

    /// Says whether the backend behind is frozen; connections stay open
    /// (what a frozen backend's kernel accepts waits for it).
    pub fn set_upstream_frozen(&self, frozen: bool) {
        self.shared.upstream_frozen.store(frozen, Ordering::SeqCst);
    }

    /// A handle for the clients that go through this proxy.
    pub fn link(&self) -> ProxyLink {
        ProxyLink {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared
            .generation
            .send_modify(|generation| *generation += 1);
    }
}

/// What a client of the proxy may ask it: whether an answer can come, and
/// when its request has arrived whole.
#[derive(Clone, Debug)]
pub struct ProxyLink {
    shared: Arc<Shared>,
}

impl ProxyLink {
    /// Whether a request sent now can be answered before the fault in force
    /// heals: not through a black hole or a delay, not from a frozen
    /// backend. (A reset answers, with an error, at once.)
    pub fn answers(&self) -> bool {
        let mode = ProxyMode::from_u8(self.shared.mode.load(Ordering::SeqCst));
        matches!(mode, ProxyMode::Pass | ProxyMode::Reset)
            && !self.shared.upstream_frozen.load(Ordering::SeqCst)
    }

    /// The whole requests that have arrived so far.
    pub fn arrived(&self) -> u64 {
        *self.shared.arrived.borrow()
    }

    /// The requests stranded so far (see `Shared::stranded`).
    pub fn stranded(&self) -> u64 {
        *self.shared.stranded.borrow()
    }

    /// Waits until more than `count` requests are stranded.
    pub async fn stranded_beyond(&self, count: u64) {
        let mut stranded = self.shared.stranded.subscribe();
        // The sender lives as long as this link; `Err` cannot happen.
        let _ = stranded.wait_for(|now| *now > count).await;
    }
}

/// The address behind an `http://host:port` base URL, `localhost` taken
/// as 127.0.0.1: what a proxy in front of that backend forwards to.
pub fn upstream_addr(base_url: &str) -> Option<SocketAddr> {
    let host_port = base_url.strip_prefix("http://")?.split('/').next()?;
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().ok()
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let mut changed = shared.generation.subscribe();
        // Small requests and answers pass as they come: without this, Nagle
        // can hold a write back until the last one is acknowledged.
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        let mode = ProxyMode::from_u8(shared.mode.load(Ordering::SeqCst));
        match mode {
            ProxyMode::Reset => drop(client),
            ProxyMode::Blackhole => {
                tokio::spawn(async move {
                    let (reading, _held) = client.into_split();
                    let unanswered = AtomicU64::new(0);
                    tokio::select! {
                        _ = forward_requests(reading, tokio::io::sink(), &shared, &unanswered) => {}
                        _ = changed.changed() => {}
                    }
                });
            }
            ProxyMode::Pass | ProxyMode::Delay => {
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = server.set_nodelay(true);
                    let (client_reading, mut client_writing) = client.into_split();
                    let (mut server_reading, server_writing) = server.into_split();
                    let unanswered = AtomicU64::new(0);
                    let requests =
                        forward_requests(client_reading, server_writing, &shared, &unanswered);
                    let answers = async {
                        if mode == ProxyMode::Delay {
                            hold_answers(&mut server_reading, &shared, &unanswered).await
                        } else {
                            tokio::io::copy(&mut server_reading, &mut client_writing)
                                .await
                                .map(drop)
                        }
                    };
                    tokio::select! {
                        _ = async { tokio::join!(requests, answers) } => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        }
    }
}

/// Copies a client's bytes to `to` and counts each request that has passed
/// whole: as arrived, and as stranded too where nothing will answer it (a
/// black hole, a frozen backend); else as `unanswered` on this connection.
/// At the client's end of stream, `to` is shut down for writing (the answer
/// may still come back).
async fn forward_requests(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    shared: &Shared,
    unanswered: &AtomicU64,
) -> std::io::Result<()> {
    let mut scanner = RequestScanner::default();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer[..read]).await?;
        let whole = scanner.feed(&buffer[..read]);
        if whole == 0 {
            continue;
        }
        shared.arrived.send_modify(|arrived| *arrived += whole);
        let mode = ProxyMode::from_u8(shared.mode.load(Ordering::SeqCst));
        if mode == ProxyMode::Blackhole || shared.upstream_frozen.load(Ordering::SeqCst) {
            shared.stranded.send_modify(|stranded| *stranded += whole);
        } else {
            unanswered.fetch_add(whole, Ordering::SeqCst);
        }
    }
}

/// Reads the backend's answers and keeps them from the client. The first
/// bytes back after a request mean the backend has run it: the request is
/// stranded from then on (clients send one request at a time).
async fn hold_answers(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    shared: &Shared,
    unanswered: &AtomicU64,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    while from.read(&mut buffer).await? > 0 {
        let answered = unanswered.swap(0, Ordering::SeqCst);
        if answered > 0 {
            shared
                .stranded
                .send_modify(|stranded| *stranded += answered);
        }
    }
    Ok(())
}

/// Finds where HTTP/1.1 requests end in a client's byte stream: a header
/// block, then a body of `Content-Length` bytes (the Convex clients send no
/// chunked bodies). A stream it cannot parse counts nothing more.
#[derive(Debug, Default)]
struct RequestScanner {
    /// Bytes of a header block not yet complete.
    header: Vec<u8>,
    body_left: u64,
    lost: bool,
}

/// A header block larger than this is not an HTTP request we understand.
const HEADER_MAX: usize = 64 * 1024;

impl RequestScanner {
    /// Takes the next bytes; returns how many requests they completed.
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut whole = 0;
        while !bytes.is_empty() && !self.lost {
            if self.body_left > 0 {
                let take = self.body_left.min(bytes.len() as u64);
                self.body_left -= take;
                bytes = &bytes[take as usize..];
                if self.body_left == 0 {
                    whole += 1;
                }
                continue;
            }
            let before = self.header.len();
            self.header.extend_from_slice(bytes);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&self.header) {
                Ok(httparse::Status::Complete(length)) => {
                    let body = content_length(request.headers);
                    bytes = &bytes[length - before..];
                    self.header.clear();
                    match body {
                        Some(0) => whole += 1,
                        Some(body) => self.body_left = body,
                        None => self.lost = true,
                    }
                }
                Ok(httparse::Status::Partial) if self.header.len() <= HEADER_MAX => {
                    bytes = &[];
                }
                Ok(httparse::Status::Partial) | Err(_) => self.lost = true,
            }
        }
        whole
    }
}

/// The body length a request's headers announce: 0 without one, `None` for
/// a chunked or unreadable one.
fn content_length(headers: &[httparse::Header<'_>]) -> Option<u64> {
    let mut length = Some(0);
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(header.value)
                .ok()
                .and_then(|value| value.trim().parse().ok());
        }
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &[u8] = b"POST /api/mutation HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello";
    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

    #[test]
    fn whole_requests_are_counted_however_the_bytes_are_split() {
        let stream = [POST, GET, POST].concat();
        for chunk in [1, 2, 7, 30, stream.len()] {
            let mut scanner = RequestScanner::default();
            let counted: u64 = stream.chunks(chunk).map(|bytes| scanner.feed(bytes)).sum();
            assert_eq!(counted, 3, "chunks of {chunk} bytes");
        }
    }

    #[test]
    fn a_request_is_not_counted_before_its_last_body_byte() {
        let mut scanner = RequestScanner::default();
        assert_eq!(scanner.feed(&POST[..POST.len() - 1]), 0);
        assert_eq!(scanner.feed(&POST[POST.len() - 1..]), 1);
    }

    #[test]
    fn a_stream_that_is_not_http_or_is_chunked_counts_nothing() {
        let mut garbage = RequestScanner::default();
        assert_eq!(garbage.feed(b"\x00\x01 not http\r\n\r\n"), 0);
        assert_eq!(garbage.feed(GET), 0);
        let mut chunked = RequestScanner::default();
        let request =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(chunked.feed(request), 0);
        assert_eq!(chunked.feed(GET), 0);
    }
}
