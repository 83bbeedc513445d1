//! A userspace TCP proxy in front of a backend, for network faults the
//! kernel here cannot inject (no `tc netem`): pass, reset every new
//! connection, black-hole it (accept and never answer), delay every
//! answer beyond any client's patience, or answer every request itself as
//! Convex answers a function that threw (nothing reaches the backend).
//!
//! The proxy also counts the HTTP requests that reach it whole, and those
//! whose fate is sealed with no answer to come before the fault heals (a
//! black hole or a frozen backend took them; a delayed answer came back), so
//! that a client can stop waiting right then: see [`ProxyLink`].
//!
//! A request handed to the backend is the backend's to run, whatever
//! happens to the client afterwards: a paused backend runs what it queued
//! when it resumes, even on a connection the client gave up on. So the proxy
//! never lets go of a backend connection that owes an answer (a cut or a
//! client leaving only drops the client's side), counts those requests as
//! in flight, and [`TcpProxy::settle`] waits until there are none: after
//! it, every write that went through the proxy has landed, and nothing
//! that went through it can land later (a reset after it is final).

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
    /// Every request is answered by the proxy, never forwarded, with HTTP
    /// 200 `{"status":"error","errorMessage":…}`: a mutation that threw,
    /// which leaves nothing behind (real-systems.md §1.2).
    FunctionError200,
    /// The same answer with HTTP 560 (`STATUS_CODE_UDF_FAILED`).
    FunctionError560,
}

impl ProxyMode {
    fn to_u8(self) -> u8 {
        match self {
            ProxyMode::Pass => 0,
            ProxyMode::Reset => 1,
            ProxyMode::Blackhole => 2,
            ProxyMode::Delay => 3,
            ProxyMode::FunctionError200 => 4,
            ProxyMode::FunctionError560 => 5,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => ProxyMode::Reset,
            2 => ProxyMode::Blackhole,
            3 => ProxyMode::Delay,
            4 => ProxyMode::FunctionError200,
            5 => ProxyMode::FunctionError560,
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
    /// Whole requests written to the backend with no byte of its answer
    /// back yet, on connections it has not closed: the backend may still
    /// run them.
    in_flight: watch::Sender<u64>,
    /// Connections accepted and not yet finished (client side open, or a
    /// backend connection still owed an answer).
    open: watch::Sender<u64>,
    /// Set when the proxy is dropped: connections still waiting on the
    /// backend give up.
    closed: watch::Sender<bool>,
    /// Whether connections accepted from now on keep what their client
    /// sent (`TcpProxy::record`), and what each of them kept.
    recording: AtomicBool,
    recorded: std::sync::Mutex<Vec<Arc<std::sync::Mutex<Vec<u8>>>>>,
}

/// The proxy still holds connections after the wait `TcpProxy::settle`
/// allows: the backend may still run what it was handed, at any moment.
#[derive(Debug, thiserror::Error)]
#[error(
    "the fault proxy still holds {open_connections} connection(s), with {in_flight} request(s) the backend has not answered, after {waited:?}"
)]
pub struct Unsettled {
    pub open_connections: u64,
    pub in_flight: u64,
    pub waited: std::time::Duration,
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
            in_flight: watch::channel(0).0,
            open: watch::channel(0).0,
            closed: watch::channel(false).0,
            recording: AtomicBool::new(false),
            recorded: std::sync::Mutex::new(Vec::new()),
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

    /// Keeps every byte clients send on connections accepted from now on,
    /// one buffer per connection: what a test reads to prove which
    /// statements or requests reached the backend (the audit's read-only
    /// proof). Off unless asked, so runs keep nothing.
    pub fn record(&self) {
        self.shared.recording.store(true, Ordering::SeqCst);
    }

    /// What each recorded connection's client sent so far, in accept order.
    pub fn recorded(&self) -> Vec<Vec<u8>> {
        let connections = self
            .shared
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        connections
            .iter()
            .map(|bytes| {
                bytes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            })
            .collect()
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

    /// Requests the backend has been handed and not yet answered.
    pub fn in_flight(&self) -> u64 {
        *self.shared.in_flight.borrow()
    }

    /// Connections the proxy still holds (a client's, or a backend's that
    /// owes an answer).
    pub fn open_connections(&self) -> u64 {
        *self.shared.open.borrow()
    }

    /// Waits, at most `timeout`, until the proxy holds no connection: every
    /// client has left or been cut, and the backend has answered every
    /// request handed to it (or closed the connection it came on). Call it
    /// with the backend running and the mode healed: a frozen backend
    /// answers nothing until it resumes, and a black hole holds its client.
    pub async fn settle(&self, timeout: std::time::Duration) -> Result<(), Unsettled> {
        let mut open = self.shared.open.subscribe();
        match tokio::time::timeout(timeout, open.wait_for(|now| *now == 0)).await {
            // The sender lives in `self`; the wait cannot fail otherwise.
            Ok(_) => Ok(()),
            Err(_) => Err(Unsettled {
                open_connections: *self.shared.open.borrow(),
                in_flight: *self.shared.in_flight.borrow(),
                waited: timeout,
            }),
        }
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
        self.shared.closed.send_replace(true);
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
        match mode {
            ProxyMode::FunctionError200 | ProxyMode::FunctionError560 => true,
            ProxyMode::Pass | ProxyMode::Reset => {
                !self.shared.upstream_frozen.load(Ordering::SeqCst)
            }
            ProxyMode::Blackhole | ProxyMode::Delay => false,
        }
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
        let changed = shared.generation.subscribe();
        // Small requests and answers pass as they come: without this, Nagle
        // can hold a write back until the last one is acknowledged.
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        let mode = ProxyMode::from_u8(shared.mode.load(Ordering::SeqCst));
        if mode == ProxyMode::Reset {
            drop(client);
            continue;
        }
        shared.open.send_modify(|open| *open += 1);
        tokio::spawn(async move {
            match mode {
                ProxyMode::Blackhole => swallow(client, &shared, changed).await,
                ProxyMode::FunctionError200 => fail_functions(client, 200, &shared, changed).await,
                ProxyMode::FunctionError560 => fail_functions(client, 560, &shared, changed).await,
                _ => relay(client, upstream, mode, &shared, changed).await,
            }
            shared.open.send_modify(|open| *open -= 1);
        });
    }
}

/// A black hole: reads the client's requests and answers none, until the
/// client leaves or the mode changes. Nothing reaches the backend.
async fn swallow(client: TcpStream, shared: &Shared, mut changed: watch::Receiver<u64>) {
    let (mut reading, _held) = client.into_split();
    let unanswered = AtomicU64::new(0);
    let mut nowhere = tokio::io::sink();
    tokio::select! {
        _ = forward_requests(&mut reading, &mut nowhere, shared, &unanswered) => {}
        _ = changed.changed() => {}
    }
}

/// What Convex answers a mutation that threw (real-systems.md §1.2).
pub const FUNCTION_ERROR_BODY: &str = r#"{"status":"error","errorMessage":"[Request ID: 0000000000000000] Server Error\nUncaught Error: the mutation threw (injected by the fault proxy)\n    at handler (../convex/runtime.ts)"}"#;

/// A failing function: answers each whole request of the client with
/// `status` and `FUNCTION_ERROR_BODY`, forwarding nothing, until the client
/// leaves or the mode changes.
async fn fail_functions(
    client: TcpStream,
    status: u16,
    shared: &Shared,
    mut changed: watch::Receiver<u64>,
) {
    let (mut reading, mut writing) = client.into_split();
    let answer = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{FUNCTION_ERROR_BODY}",
        if status == 200 {
            "OK"
        } else {
            "Function Failed"
        },
        FUNCTION_ERROR_BODY.len()
    );
    let answering = async {
        let mut scanner = RequestScanner::default();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = reading.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let whole = scanner.feed(&buffer[..read]);
            if whole == 0 {
                continue;
            }
            shared.arrived.send_modify(|arrived| *arrived += whole);
            for _ in 0..whole {
                writing.write_all(answer.as_bytes()).await?;
            }
        }
    };
    tokio::select! {
        _ = answering => {}
        _ = changed.changed() => {}
    }
}

/// Pass and delay: the client's requests go to the backend; its answers go
/// back to the client (pass) or are read and held back (delay). When the
/// client leaves or the mode changes, the client's side is dropped at once,
/// but the backend connection is kept, and read, until the backend has
/// answered every whole request it was handed: closing it earlier would
/// not stop the backend from running them (a paused one runs its queue
/// when it resumes), only hide from the proxy when it did.
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mode: ProxyMode,
    shared: &Shared,
    mut changed: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut client_reading, mut client_writing) = client.into_split();
    let (mut server_reading, mut server_writing) = server.into_split();
    let unanswered = AtomicU64::new(0);
    let answers_to = match mode {
        ProxyMode::Delay => Answers::Held,
        _ => Answers::Client(&mut client_writing),
    };
    let mut server_writing = Recorded {
        inner: &mut server_writing,
        kept: shared.recording.load(Ordering::SeqCst).then(|| {
            let kept = Arc::new(std::sync::Mutex::new(Vec::new()));
            shared
                .recorded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(kept.clone());
            kept
        }),
    };
    let ended = tokio::select! {
        _ = forward_requests(&mut client_reading, &mut server_writing, shared, &unanswered) => {
            Ended::ClientDone
        }
        _ = relay_answers(&mut server_reading, answers_to, shared, &unanswered, false) => {
            Ended::BackendClosed
        }
        _ = changed.changed() => Ended::Cut,
    };
    drop(client_reading);
    if ended != Ended::BackendClosed && unanswered.load(Ordering::SeqCst) > 0 {
        // What the backend still owes: relayed to a client that only
        // finished sending, held back under a delay, dropped after a cut;
        // the connection is closed once it is all in.
        let to_client = mode != ProxyMode::Delay && ended == Ended::ClientDone;
        let mut closed = shared.closed.subscribe();
        tokio::select! {
            _ = async {
                let answers_to = match (mode, ended) {
                    (ProxyMode::Delay, _) => Answers::Held,
                    (_, Ended::Cut) => Answers::Dropped,
                    _ => Answers::Client(&mut client_writing),
                };
                let owed = relay_answers(&mut server_reading, answers_to, shared, &unanswered, true).await;
                if owed.is_ok() && to_client {
                    // Nothing is owed any more: the client's end of stream
                    // can reach the backend, and the rest of the answer
                    // the client.
                    let _ = server_writing.shutdown().await;
                    let rest = Answers::Client(&mut client_writing);
                    let _ = relay_answers(&mut server_reading, rest, shared, &unanswered, false).await;
                }
            } => {}
            _ = closed.wait_for(|closed| *closed) => {}
        }
    }
    // Whatever is still unanswered now never will be: the backend closed
    // the connection, or the proxy itself is gone.
    let left = unanswered.swap(0, Ordering::SeqCst);
    if left > 0 {
        shared.in_flight.send_modify(|in_flight| *in_flight -= left);
    }
}

/// A writer that keeps a copy of what passes, when recording.
struct Recorded<'a, W> {
    inner: &'a mut W,
    kept: Option<Arc<std::sync::Mutex<Vec<u8>>>>,
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Recorded<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut *self.inner).poll_write(context, buffer);
        if let (std::task::Poll::Ready(Ok(written)), Some(kept)) = (&polled, &self.kept) {
            kept.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(&buffer[..*written]);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(context)
    }
}

/// Why a relayed connection stopped passing requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The client finished sending, or its side failed.
    ClientDone,
    /// The backend closed the connection, or its side failed.
    BackendClosed,
    /// The mode changed: the client's side is cut.
    Cut,
}

/// Where the backend's answers go.
enum Answers<'a> {
    Client(&'a mut tokio::net::tcp::OwnedWriteHalf),
    /// Delay: read and kept from the client, each counted as stranded.
    Held,
    /// Nobody takes them (the client was cut or is gone): read and dropped.
    Dropped,
}

/// Copies a client's bytes to `to` and counts each request that has passed
/// whole: as arrived, and as stranded too where nothing will answer it (a
/// black hole, a frozen backend); else as `unanswered` on this connection.
/// Requests written to the backend are in flight until answered. Returns at
/// the client's end of stream, without shutting `to` down: a backend told
/// the client has gone may still run what it was sent, so the backend
/// connection stays open until it has answered.
async fn forward_requests(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    shared: &Shared,
    unanswered: &AtomicU64,
) -> std::io::Result<()> {
    let mut scanner = RequestScanner::default();
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        to.write_all(&buffer[..read]).await?;
        let whole = scanner.feed(&buffer[..read]);
        if whole == 0 {
            continue;
        }
        shared.arrived.send_modify(|arrived| *arrived += whole);
        let mode = ProxyMode::from_u8(shared.mode.load(Ordering::SeqCst));
        if mode == ProxyMode::Blackhole {
            shared.stranded.send_modify(|stranded| *stranded += whole);
            continue;
        }
        // Counted before the backend can answer: the answer's first byte
        // is read only after this.
        unanswered.fetch_add(whole, Ordering::SeqCst);
        shared
            .in_flight
            .send_modify(|in_flight| *in_flight += whole);
        if shared.upstream_frozen.load(Ordering::SeqCst) {
            shared.stranded.send_modify(|stranded| *stranded += whole);
        }
    }
}

/// Reads the backend's answers and sends them where `to` says, until the
/// backend closes the connection or, with `until_owed_nothing`, until it
/// has answered everything it was handed. The first bytes back after a
/// request mean the backend has run it (clients send one request at a
/// time): it is no longer in flight, and, held back by a delay, stranded
/// from then on.
async fn relay_answers(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    mut to: Answers<'_>,
    shared: &Shared,
    unanswered: &AtomicU64,
    until_owed_nothing: bool,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        let answered = unanswered.swap(0, Ordering::SeqCst);
        if answered > 0 {
            shared
                .in_flight
                .send_modify(|in_flight| *in_flight -= answered);
            if matches!(to, Answers::Held) {
                shared
                    .stranded
                    .send_modify(|stranded| *stranded += answered);
            }
        }
        if let Answers::Client(client) = &mut to
            && client.write_all(&buffer[..read]).await.is_err()
        {
            to = Answers::Dropped;
        }
        if until_owed_nothing && unanswered.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
    }
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
