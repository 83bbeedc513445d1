//! The Phoenix V2 socket both client lanes speak (`lane`, `shipped`): opened
//! with a token and the protocol `vsn`, refs numbered per socket, text
//! frames sent, the next text frame read within a bound (unparseable ones
//! skipped, so no server input makes a lane panic), closed. Each lane keeps
//! its own channel state around it; only the plumbing is shared.

use crate::error::ClientErrorKind;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The Phoenix serializer the shipped client asks for (`vsn`).
pub const PROTOCOL_VSN: &str = "2.0.0";

/// A frame `[join_ref, ref, topic, event, payload]`.
pub(crate) struct Frame {
    pub(crate) reference: Option<String>,
    pub(crate) topic: String,
    pub(crate) event: String,
    pub(crate) payload: Value,
}

impl Frame {
    pub(crate) fn parse(text: &str) -> Option<Frame> {
        let Value::Array(mut parts) = serde_json::from_str(text).ok()? else {
            return None;
        };
        if parts.len() != 5 {
            return None;
        }
        let payload = parts.pop()?;
        let event = parts.pop()?.as_str()?.to_owned();
        let topic = parts.pop()?.as_str()?.to_owned();
        let reference = parts.pop()?.as_str().map(str::to_owned);
        Some(Frame {
            reference,
            topic,
            event,
            payload,
        })
    }
}

/// One open WebSocket to the sync server.
pub(crate) struct PhoenixSocket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    last_ref: u64,
}

/// What one read of the socket gave.
pub(crate) enum Read {
    Frame(Frame),
    /// Nothing within the wait.
    Quiet,
    /// The socket is closed (`Closed`) or failed; it is of no further use.
    Ended(ClientErrorKind),
}

impl PhoenixSocket {
    /// Connects to `websocket_url` (`ws://host/socket/websocket`) with
    /// `token`.
    pub(crate) async fn open(websocket_url: &str, token: &str) -> Result<Self, ClientErrorKind> {
        let url = format!("{websocket_url}?token={token}&vsn={PROTOCOL_VSN}");
        let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
        Ok(PhoenixSocket { ws, last_ref: 0 })
    }

    /// The next `ref` of this socket: "1", "2", …
    pub(crate) fn next_ref(&mut self) -> String {
        self.last_ref += 1;
        self.last_ref.to_string()
    }

    pub(crate) async fn send(&mut self, frame: &Value) -> Result<(), ClientErrorKind> {
        Ok(self.ws.send(Message::text(frame.to_string())).await?)
    }

    /// The next text frame that parses, waiting at most `wait` for each
    /// message.
    pub(crate) async fn read(&mut self, wait: Duration) -> Read {
        loop {
            let Ok(message) = tokio::time::timeout(wait, self.ws.next()).await else {
                return Read::Quiet;
            };
            match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(frame) = Frame::parse(text.as_str()) {
                        return Read::Frame(frame);
                    }
                }
                Some(Ok(Message::Close(_))) | None => return Read::Ended(ClientErrorKind::Closed),
                Some(Err(error)) => return Read::Ended(error.into()),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The client end's address (the server's view of the peer), so a
    /// caller can tell which lanes' sockets a server closed. Lanes never
    /// use TLS.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(stream) => stream.local_addr().ok(),
            _ => None,
        }
    }

    pub(crate) async fn close(mut self) {
        let _closing_an_ended_socket_is_fine = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_are_not_phoenix_v2_are_skipped() {
        assert!(Frame::parse("[null,null,\"sync:v1\",\"sync:heartbeat\",{}]").is_some());
        for text in ["", "{}", "[1,2,3]", "[null,null,3,\"e\",{}]", "not json"] {
            assert!(Frame::parse(text).is_none(), "{text}");
        }
    }
}
