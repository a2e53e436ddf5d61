//! An in-memory [`Connector`] for unit tests: each dial takes the next scripted
//! [`Fault`] (or the default one); an accepted dial is a real WebSocket over a
//! `tokio::io::duplex` pipe whose server half is handed to the test as a [`Peer`].
//! Everything runs on tokio's paused clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::{Conn, Connector, DialError, Dialing, WsConn};

impl WsConn for WebSocketStream<DuplexStream> {}

/// What one dial does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Accept: the test gets the server half as a [`Peer`].
    Accept,
    /// ECONNREFUSED at once.
    Refuse,
    /// Never answer (the caller's timeout fires).
    Hang,
    /// HTTP 429/503 with this `Retry-After`.
    Overloaded(u16, Option<String>),
}

/// The server half of an accepted dial.
#[derive(Debug)]
pub struct Peer {
    /// The URL dialed.
    pub url: String,
    /// The server side of the WebSocket. Not polling it is a stall: no frames are
    /// read and no pings are answered.
    pub ws: WebSocketStream<DuplexStream>,
}

/// The scripted connector.
#[derive(Debug)]
pub struct MemoryConnector {
    script: Mutex<VecDeque<Fault>>,
    default: Mutex<Fault>,
    peers: mpsc::UnboundedSender<Peer>,
    dials: AtomicUsize,
}

impl MemoryConnector {
    /// A connector whose dials all do `default` unless scripted otherwise; accepted
    /// peers arrive on the receiver.
    pub fn new(default: Fault) -> (Arc<Self>, mpsc::UnboundedReceiver<Peer>) {
        let (peers, rx) = mpsc::unbounded_channel();
        let connector = Self {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            peers,
            dials: AtomicUsize::new(0),
        };
        (Arc::new(connector), rx)
    }

    /// The next dials do `faults`, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.script.lock().unwrap().extend(faults);
    }

    /// Dials after the script do `fault`.
    pub fn set_default(&self, fault: Fault) {
        *self.default.lock().unwrap() = fault;
    }

    /// Dials made so far.
    pub fn dials(&self) -> usize {
        self.dials.load(Ordering::SeqCst)
    }
}

impl Connector for MemoryConnector {
    fn connect(&self, request: Request, config: WebSocketConfig) -> Dialing {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let fault = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        let peers = self.peers.clone();
        let url = request.uri().to_string();
        Box::pin(async move {
            match fault {
                Fault::Refuse => Err(DialError::Refused),
                Fault::Hang => std::future::pending().await,
                Fault::Overloaded(status, retry_after) => {
                    Err(DialError::Overloaded { status, retry_after })
                }
                Fault::Accept => {
                    let (client, server) = tokio::io::duplex(256 * 1024);
                    let client =
                        WebSocketStream::from_raw_socket(client, Role::Client, Some(config)).await;
                    let ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
                    // A test that dropped its receiver just never sees the peer.
                    let _ = peers.send(Peer { url, ws });
                    Ok(Box::new(client) as Conn)
                }
            }
        })
    }
}
