//! Servers on loopback for the HTTP client's tests (tests/https.rs, tests/https_ca_bundle.rs),
//! and a real SDK client (S3) that talks to them through `stackdrop_adapters::https`.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A throwaway self-signed certificate for `localhost` (and its key), made only for these
/// tests: no public root vouches for it.
pub const UNTRUSTED_CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/untrusted-cert.pem"
);
const UNTRUSTED_KEY: &[u8] = include_bytes!("../fixtures/untrusted-key.pem");

/// What `ListBuckets` answers when there is no bucket.
pub const EMPTY_LIST: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
    <ListAllMyBucketsResult><Buckets></Buckets></ListAllMyBucketsResult>";

/// An S3 client on `endpoint` through stackdrop's HTTP client: `attempts` in all, a short
/// backoff, and `read_timeout` if given.
pub fn s3(endpoint: &str, attempts: u32, read_timeout: Option<Duration>) -> aws_sdk_s3::Client {
    let mut timeouts = TimeoutConfig::builder();
    timeouts.set_read_timeout(read_timeout);
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .http_client(stackdrop_adapters::https::client())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .timeout_config(timeouts.build())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A server that accepts connections and does `with` to each; counts the connections.
pub async fn server<F, Fut>(with: F) -> (u16, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(with(stream));
        }
    });
    (port, accepted)
}

/// What a TLS server saw: the connections it accepted, the requests that crossed a TLS session.
pub struct Seen {
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

/// A TLS server holding the untrusted certificate. A request that crosses the session is
/// counted and answered with `answer` (an XML body, 200) when there is one.
pub async fn tls_server(answer: Option<&'static str>) -> (u16, Seen) {
    let certs = CertificateDer::pem_file_iter(UNTRUSTED_CERT)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(UNTRUSTED_KEY).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    let (port, connections) = server(move |stream| {
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut buf = [0u8; 8192];
            if !matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            if let Some(body) = answer {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body.as_bytes()).await;
                let _ = tls.flush().await;
            }
        }
    })
    .await;
    (
        port,
        Seen {
            connections,
            requests,
        },
    )
}

/// An error and its sources, one line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}
