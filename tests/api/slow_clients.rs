//! Clients that send requests slowly or ambiguously, on raw sockets: a
//! request whose length could be read two ways is refused and its
//! connection closed, and connections that trickle a head or a body are
//! closed after `server.client_request_timeout_ms` while others are served.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::helpers::{PATIENCE, TestApp, spawn_app_with};

const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

async fn app_with_request_timeout() -> TestApp {
    spawn_app_with(|s| {
        s.server.client_request_timeout_ms = REQUEST_TIMEOUT.as_millis() as u64;
    })
    .await
}

/// A connection to `app` that has sent `bytes`.
async fn send(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_web::test]
async fn a_request_with_both_content_length_and_chunked_is_400_and_the_connection_closed() {
    let app = app_with_request_timeout().await;
    // Read by Content-Length, the body is "0\r\n\r" and a request follows;
    // read as chunked, the body is empty and "GET /health/live" is a
    // second request smuggled past whatever sits in front.
    let mut stream = send(
        &app,
        b"POST /api/v1/auth/signin HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request got no answer: {answer}"
    );
}

/// Timed: run one at a time, after the rest (see the Makefile), so that
/// other tests' load does not decide the outcome.
mod timing {
    use super::*;

    #[actix_web::test]
    async fn connections_trickling_a_head_are_closed_while_others_are_served() {
        let app = app_with_request_timeout().await;
        let started = Instant::now();
        let trickles = (0..200).map(|_| async {
            let head = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
            let mut stream = send(&app, head).await;
            let opened = Instant::now();
            // A byte every 100 ms until the server hangs up.
            let mut buffer = [0; 1024];
            loop {
                tokio::select! {
                    read = stream.read(&mut buffer) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            break;
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if stream.write_all(b"a").await.is_err() {
                            break;
                        }
                    }
                }
                assert!(
                    opened.elapsed() < PATIENCE,
                    "a trickling connection stays open"
                );
            }
            opened.elapsed()
        });
        let probes = async {
            let mut slowest = Duration::ZERO;
            while started.elapsed() < REQUEST_TIMEOUT * 2 {
                let sent = Instant::now();
                let live = app.get("/health/live").send().await.unwrap();
                assert_eq!(live.status(), StatusCode::OK);
                slowest = slowest.max(sent.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slowest
        };
        let (open_for, slowest_probe) = tokio::join!(join_all(trickles), probes);
        // Each was closed once its timeout passed (give or take a timer tick
        // and a busy machine), never before and never much after.
        let (shortest, longest) = (
            open_for.iter().min().unwrap(),
            open_for.iter().max().unwrap(),
        );
        assert!(
            *shortest >= REQUEST_TIMEOUT.mul_f64(0.9) && *longest < REQUEST_TIMEOUT * 2,
            "trickling connections were closed after {shortest:?} to {longest:?}"
        );
        assert!(
            slowest_probe < Duration::from_millis(50),
            "/health/live took {slowest_probe:?} while connections trickled"
        );
    }
}
#[actix_web::test]
async fn a_body_that_stops_arriving_is_408_and_the_connection_closed() {
    let app = app_with_request_timeout().await;
    let mut stream = send(
        &app,
        b"POST /api/v1/auth/signin HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":",
    )
    .await;
    let sent = Instant::now();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    assert!(
        sent.elapsed() >= REQUEST_TIMEOUT && sent.elapsed() < PATIENCE,
        "answered after {:?}",
        sent.elapsed()
    );
}
