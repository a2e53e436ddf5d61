//! An independent WebSocket client: tungstenite's own blocking client on a thread of
//! its own, sharing nothing with Hark's `ListenClient` or the test's runtime. It
//! records what a real app would see of a close — the exact code and reason, a
//! clean end of the stream, then TCP EOF — so a close that a browser would report
//! as 1006 (`wasClean=false`) cannot pass as a normal one.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

/// The client's socket.
pub type Ws = WebSocket<TcpStream>;

/// What the independent client saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A text frame.
    Text(String),
    /// A Close frame with its code (1005 when it had none) and reason.
    Close(u16, String),
    /// The stream ended after the closing handshake: tungstenite's clean end.
    Closed,
    /// Anything else: a reset, an end without handshake (1006), a timeout.
    Broken(String),
}

/// How the connection ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    /// The last Close frame seen, if any.
    pub close: Option<(u16, String)>,
    /// Whether the closing handshake completed (a Close, then the clean end).
    pub clean: bool,
    /// Whether Hark then shut the TCP stream (EOF, not a reset).
    pub eof: bool,
}

/// Everything seen and how it ended.
#[derive(Debug)]
pub struct Observed {
    /// In order.
    pub seen: Vec<Seen>,
    /// The summary.
    pub ending: Ending,
}

impl Observed {
    /// The text frames.
    pub fn texts(&self) -> Vec<&str> {
        self.seen
            .iter()
            .filter_map(|s| match s {
                Seen::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Asserts a completed closing handshake carrying `code` and `reason`.
    pub fn assert_closed(&self, code: u16, reason: &str) {
        let tail: Vec<_> = self.seen.iter().rev().take(3).rev().collect();
        assert_eq!(
            self.ending,
            Ending { close: Some((code, reason.to_owned())), clean: true, eof: true },
            "last frames seen: {tail:?}"
        );
    }
}

/// Connects to `url` (TCP to `addr`), runs `script` on the socket (send frames,
/// start a close, wait for a signal…), then reads until the connection ends.
/// `recv_buffer` shrinks the socket's receive buffer (for a client that stops
/// reading).
pub async fn observe(
    addr: SocketAddr,
    url: String,
    recv_buffer: Option<usize>,
    script: impl FnOnce(&mut Ws) + Send + 'static,
) -> Observed {
    let thread = std::thread::spawn(move || {
        let tcp = match recv_buffer {
            Some(size) => {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                socket.set_recv_buffer_size(size).unwrap();
                socket.connect(&addr.into()).unwrap();
                TcpStream::from(socket)
            }
            None => TcpStream::connect(addr).unwrap(),
        };
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let (mut ws, _) = tungstenite::client::client(url.as_str(), tcp).expect("upgrade");
        script(&mut ws);
        let mut seen = Vec::new();
        loop {
            match ws.read() {
                Ok(Message::Text(t)) => seen.push(Seen::Text(t.to_string())),
                Ok(Message::Close(Some(frame))) => {
                    seen.push(Seen::Close(frame.code.into(), frame.reason.to_string()))
                }
                Ok(Message::Close(None)) => seen.push(Seen::Close(1005, String::new())),
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => {
                    seen.push(Seen::Closed);
                    break;
                }
                Err(other) => {
                    seen.push(Seen::Broken(other.to_string()));
                    break;
                }
            }
        }
        let mut tcp = ws.into_inner();
        let mut byte = [0u8; 1];
        let eof = matches!(tcp.read(&mut byte), Ok(0));
        let close = seen.iter().rev().find_map(|s| match s {
            Seen::Close(code, reason) => Some((*code, reason.clone())),
            _ => None,
        });
        let clean = close.is_some() && seen.last() == Some(&Seen::Closed);
        Observed { seen, ending: Ending { close, clean, eof } }
    });
    tokio::task::spawn_blocking(move || thread.join().unwrap()).await.unwrap()
}
