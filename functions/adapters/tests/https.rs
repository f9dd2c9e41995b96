//! The HTTP client every function's SDK clients use (`stackdrop_adapters::https`), driven through
//! a real SDK client (S3) against servers on loopback that fail the way networks do. Each test
//! reads what the server saw (connections, requests), not only the error.
//!
//! What the local environment cannot show: a TLS session to a server that a compiled-in public
//! root vouches for (no local server holds such a certificate). tests/https_ca_bundle.rs shows a
//! whole TLS session with a CA added by `AWS_CA_BUNDLE`; every e2e test and the moto tests
//! exercise the rest of the client over plain HTTP.

use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_s3::error::SdkError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[path = "common/servers.rs"]
mod servers;
use servers::{chain, s3, server, tls_server};

#[tokio::test]
async fn a_connection_closed_before_any_answer_is_retried() {
    let (port, accepted) = server(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        // closed without a response
    })
    .await;
    let err = s3(&format!("http://127.0.0.1:{port}"), 3, None)
        .list_buckets()
        .send()
        .await
        .expect_err("no response was sent");
    match &err {
        // hyper: "connection closed before message completed", transient as the SDK's own
        // client has it.
        SdkError::DispatchFailure(failure) => assert_eq!(
            failure.as_other(),
            Some(aws_smithy_types::retry::ErrorKind::TransientError),
            "{}",
            chain(&err)
        ),
        other => panic!("expected a dispatch failure, got {}", chain(other)),
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "each of the 3 attempts connected"
    );
}

#[tokio::test]
async fn a_refused_connection_is_an_io_error() {
    // A port nothing listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = s3(&format!("http://127.0.0.1:{port}"), 1, None)
        .list_buckets()
        .send()
        .await
        .expect_err("nothing listens");
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_io(), "{}", chain(&err)),
        other => panic!("expected a dispatch failure, got {}", chain(other)),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    let (port, accepted) = server(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        let _ = stream.shutdown().await;
    })
    .await;
    let err = s3(
        &format!("http://127.0.0.1:{port}"),
        1,
        Some(Duration::from_millis(300)),
    )
    .list_buckets()
    .send()
    .await
    .expect_err("the server never answers");
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_timeout(), "{}", chain(&err)),
        SdkError::TimeoutError(_) => {}
        other => panic!("expected a timeout, got {}", chain(other)),
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_certificate_no_public_root_vouches_for_is_refused_before_any_request_is_sent() {
    let (port, seen) = tls_server(None).await;
    let err = s3(&format!("https://localhost:{port}"), 1, None)
        .list_buckets()
        .send()
        .await
        .expect_err("the certificate is not trusted");
    let text = chain(&err);
    assert!(matches!(err, SdkError::DispatchFailure(_)), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "the client connected"
    );
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        0,
        "no request crossed an untrusted TLS session"
    );
}
