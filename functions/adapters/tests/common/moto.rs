//! moto_server from the project's .venv (`make venv`) on a free port, killed when dropped; the SDK
//! configuration that talks to it. Shared by the tests that run against moto (included with
//! `#[path]`: functions/adapters/tests/store_moto.rs, cli/tests/logs_moto.rs).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start() -> Moto {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = root
        .ancestors()
        .find(|d| d.join("mk/local.mk").exists())
        .expect("the repository root");
    let bin = root.join(".venv/bin/moto_server");
    assert!(
        bin.exists(),
        "{} is missing: run `make venv` (make test does)",
        bin.display()
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

impl Moto {
    /// The SDK configuration for this server (us-east-1, test credentials).
    pub async fn conf(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(stackdrop_adapters::https::client())
            .endpoint_url(&self.url)
            .region("us-east-1")
            .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await
    }
}
