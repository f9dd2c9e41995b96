//! `AWS_CA_BUNDLE` adds a CA to the client's compiled-in roots (a network that inspects TLS
//! with its own CA). Its own test binary: the variable is read once per process, when the first
//! TLS connection is made. The bundle here is the self-signed certificate that tests/https.rs
//! shows refused without it; with it, a request crosses a TLS session to the local server.

use std::sync::atomic::Ordering;

#[path = "common/servers.rs"]
mod servers;
use servers::{s3, tls_server, EMPTY_LIST, UNTRUSTED_CERT};

#[tokio::test]
async fn a_ca_named_by_aws_ca_bundle_is_trusted() {
    std::env::set_var("AWS_CA_BUNDLE", UNTRUSTED_CERT);
    let (port, seen) = tls_server(Some(EMPTY_LIST)).await;
    let listed = s3(&format!("https://localhost:{port}"), 1, None)
        .list_buckets()
        .send()
        .await
        .expect("the bundle's CA is trusted");
    assert!(listed.buckets().is_empty());
    assert_eq!(
        seen.requests.load(Ordering::SeqCst),
        1,
        "the request crossed the TLS session"
    );
}
