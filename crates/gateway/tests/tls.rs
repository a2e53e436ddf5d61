//! `wss://` URLs (Deepgram's default, a TLS pusher) go through rustls: against a
//! loopback server that does not speak TLS, the failure comes from the TLS layer,
//! not from "TLS support not compiled in".

use std::time::Duration;

use hark_gateway::connect::{self, DialError, NetConnector};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn not_tls_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not TLS\n").await;
        }
    });
    addr
}

fn is_tls_failure(message: &str) -> bool {
    let m = message.to_lowercase();
    !m.contains("not compiled")
        && !m.contains("unsupported")
        && (m.contains("tls")
            || m.contains("corrupt")
            || m.contains("invalid")
            || m.contains("handshake")
            || m.contains("record"))
}

/// Both links dial through the same connector; check each path's URL and config.
async fn dial_failure(
    url: &str,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> DialError {
    let request = url.into_client_request().unwrap();
    match connect::dial(&NetConnector, request, config, Duration::from_secs(3)).await {
        Ok(_) => panic!("{url}: not a TLS server, yet the dial succeeded"),
        Err(error) => error,
    }
}

#[tokio::test]
async fn pusher_dial_speaks_tls_for_wss() {
    hark_gateway::ws::install_tls_provider();
    let addr = not_tls_server().await;
    let url = format!("wss://localhost:{}/v1/trigger/listen?uid=u&sample_rate=16000", addr.port());
    match dial_failure(&url, hark_gateway::ws::pusher_config()).await {
        DialError::Other(message) => {
            eprintln!("pusher: {message}");
            assert!(is_tls_failure(&message), "{message}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn stt_connect_speaks_tls_for_wss() {
    hark_gateway::ws::install_tls_provider();
    let addr = not_tls_server().await;
    let url = format!("wss://localhost:{}/v1/listen", addr.port());
    match dial_failure(&url, hark_gateway::ws::stt_config()).await {
        DialError::Other(message) => {
            eprintln!("stt: {message}");
            assert!(is_tls_failure(&message), "{message}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}
