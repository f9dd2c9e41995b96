//! The HTTP client every AWS SDK client here uses: hyper over rustls (ring), trusting the
//! Mozilla root certificates compiled into the binary (`webpki-roots`).
//!
//! Why not the SDK's default client: it reads and decodes the system's PEM bundle (about 140
//! certificates, 220 KB of base64) when a function starts, which was most of a cold start's
//! init beyond a hello-world's (BENCHMARKS.md). Compiled-in trust anchors cost nothing to load,
//! and ring is smaller than aws-lc. What the SDK's client does that matters is kept: the connect
//! and read timeouts of each client's settings, a connection pool per settings, and errors
//! classified as the SDK's retry strategy expects (a refused or reset connection is `io` and
//! retried, a timeout is `timeout`).
//!
//! A network that inspects TLS with its own CA (a company proxy in front of `stackdrop status`)
//! works as with the AWS CLI: `AWS_CA_BUNDLE=/path/to/ca.pem` adds that file's certificates to
//! the compiled-in roots. The roots are refreshed with `cargo update -p webpki-roots`.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::ErrorKind;
use hyper_util::client::legacy::{connect::HttpConnector as TcpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

type BoxError = Box<dyn StdError + Send + Sync>;
type Pool = Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>;
/// A client's connect and read timeouts: the key of its connection pool.
type Timeouts = (Option<Duration>, Option<Duration>);

/// How long an idle connection stays in the pool (the SDK's default client: hyper's 90 s).
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The TLS configuration, built once: TLS 1.2 and 1.3 with ring's default suites, the
/// compiled-in roots (and `AWS_CA_BUNDLE`'s), no client certificate.
static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(bundle) = std::env::var_os("AWS_CA_BUNDLE").filter(|b| !b.is_empty()) {
        add_bundle(&mut roots, std::path::Path::new(&bundle));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
});

/// Adds the certificates of a PEM file to `roots`. A file that cannot be read or holds no
/// usable certificate is logged (with its path) and skipped: connections then fail with the
/// certificate error that names the server, as without the file.
fn add_bundle(roots: &mut rustls::RootCertStore, bundle: &std::path::Path) {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let certs: Result<Vec<_>, _> =
        CertificateDer::pem_file_iter(bundle).and_then(|certs| certs.collect());
    match certs {
        Ok(certs) => {
            let (added, unusable) = roots.add_parsable_certificates(certs);
            if added == 0 {
                tracing::warn!(bundle = %bundle.display(), unusable, "AWS_CA_BUNDLE: no usable certificate");
            }
        }
        Err(err) => tracing::warn!(bundle = %bundle.display(), %err, "AWS_CA_BUNDLE: not read"),
    }
}

/// The client to give `aws_config::ConfigLoader::http_client`.
pub fn client() -> SharedHttpClient {
    SharedHttpClient::new(Https::default())
}

/// Hands out one connector (one connection pool) per distinct timeout settings, as the SDK's
/// own client does; every SDK client of a function shares them.
#[derive(Debug, Default)]
struct Https {
    pools: Mutex<HashMap<Timeouts, SharedHttpConnector>>,
}

impl HttpClient for Https {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key: Timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(Connector::new(key.0, key.1)))
            .clone()
    }
}

#[derive(Debug, Clone)]
struct Connector {
    pool: Pool,
    read_timeout: Option<Duration>,
}

impl Connector {
    fn new(connect_timeout: Option<Duration>, read_timeout: Option<Duration>) -> Connector {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(connect_timeout);
        // https for AWS; plain http only where an endpoint says so (local AWS).
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(TLS.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let pool = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(https);
        Connector { pool, read_timeout }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(err) => return HttpConnectorFuture::ready(Err(ConnectorError::user(err.into()))),
        };
        let response = self.pool.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = match read_timeout {
                Some(limit) => match tokio::time::timeout(limit, response).await {
                    Ok(response) => response,
                    Err(elapsed) => return Err(ConnectorError::timeout(elapsed.into())),
                },
                None => response.await,
            };
            match response {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|err| ConnectorError::other(err.into(), None)),
                Err(err) => Err(classify(err)),
            }
        })
    }
}

/// The SDK's retry classes for a failed request, as its own client sorts hyper's errors: a
/// connection that could not be made, was closed or reset is `io` (retried), a connect timeout
/// is `timeout`, a response cut short is transient, anything else is not retried.
fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    let hyper = source::<hyper::Error>(&err);
    let io = source::<std::io::Error>(&err);
    let timed_out = io.is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        || hyper.is_some_and(|h| h.is_timeout());
    let cut_short = hyper.is_some_and(|h| h.is_incomplete_message());
    let misuse = hyper.is_some_and(|h| h.is_user());
    let dropped =
        err.is_connect() || io.is_some() || hyper.is_some_and(|h| h.is_closed() || h.is_canceled());
    let err: BoxError = Box::new(err);
    if timed_out {
        ConnectorError::timeout(err)
    } else if cut_short {
        ConnectorError::other(err, Some(ErrorKind::TransientError))
    } else if misuse {
        ConnectorError::user(err)
    } else if dropped {
        ConnectorError::io(err)
    } else {
        ConnectorError::other(err, None)
    }
}

/// The first error of type `T` in `err`'s chain of sources (`err` itself included).
fn source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}
