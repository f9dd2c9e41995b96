//! `stackdrop logs` against moto's CloudWatch Logs in server mode: the real binary, pointed at
//! moto by `AWS_ENDPOINT_URL` as a user points it at local AWS. moto_server comes from the
//! project's .venv (`make venv`).

#[path = "../../functions/adapters/tests/common/moto.rs"]
mod moto;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn stackdrop(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stackdrop"));
    c.env("AWS_ENDPOINT_URL", url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    c
}

fn logs(url: &str, args: &[&str]) -> Output {
    stackdrop(url).arg("logs").args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn group(instance: &str) -> String {
    format!("/stackdrop/instance/my-app--jobs--instance--{instance}")
}

/// Puts `(timestamp, message)` events into `group`'s `stream` (creating both).
async fn put(
    c: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    events: &[(i64, &str)],
) {
    let _ = c.create_log_group().log_group_name(group).send().await;
    let _ = c
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    let mut req = c
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (t, m) in events {
        req = req.log_events(
            InputLogEvent::builder()
                .timestamp(*t)
                .message(*m)
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `ms` as `stackdrop logs` prints it.
fn iso(ms: i64) -> String {
    use aws_smithy_types::date_time::{DateTime, Format};
    DateTime::from_millis(ms).fmt(Format::DateTime).unwrap()
}

#[test]
fn logs_prints_every_stream_of_the_stack_in_time_order_and_filters_by_instance() {
    let m = moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // An hour ago (CloudWatch takes no events older than 14 days).
    let t0 = now_ms() - 3_600_000;
    rt.block_on(async {
        let c = aws_sdk_cloudwatchlogs::Client::new(&m.conf().await);
        put(
            &c,
            &group("web"),
            "i-0aaa/bootstrap",
            &[(
                t0 + 5000,
                "stackdrop bootstrap ok: service stackdrop-web.service is up",
            )],
        )
        .await;
        put(
            &c,
            &group("web"),
            "i-0aaa/app",
            &[(t0 + 1000, "listening on :8080"), (t0 + 7000, "GET / 200")],
        )
        .await;
        put(
            &c,
            &group("worker"),
            "i-0bbb/app",
            &[(t0 + 3000, "job 1 done")],
        )
        .await;
        // Another stack of the same app, and an app whose name starts alike: not shown.
        put(
            &c,
            "/stackdrop/instance/my-app--jobs2--instance--web",
            "i-0ccc/app",
            &[(t0, "other stack")],
        )
        .await;
        put(
            &c,
            "/stackdrop/instance/my-app-2--jobs--instance--web",
            "i-0ddd/app",
            &[(t0, "other app")],
        )
        .await;
    });
    let out = logs(&m.url, &["my-app/jobs"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{} web/i-0aaa app: listening on :8080\n\
             {} worker/i-0bbb app: job 1 done\n\
             {} web/i-0aaa bootstrap: stackdrop bootstrap ok: service stackdrop-web.service is up\n\
             {} web/i-0aaa app: GET / 200\n",
            iso(t0 + 1000),
            iso(t0 + 3000),
            iso(t0 + 5000),
            iso(t0 + 7000)
        )
    );
    let out = logs(&m.url, &["my-app/jobs", "worker"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{} worker/i-0bbb app: job 1 done\n", iso(t0 + 3000))
    );
    // No such instance, no such stack, no stack at all: said plainly, exit 2.
    let out = logs(&m.url, &["my-app/jobs", "db"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "stackdrop: no logs for instance db of my-app/jobs (instances with logs: web, worker)\n"
    );
    let out = logs(&m.url, &["my-app/nothing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("stackdrop: no logs for stack my-app/nothing: no log group /stackdrop/instance/my-app--nothing--instance--*"),
        "{}",
        text(&out.stderr)
    );
    let out = logs(&m.url, &["my-app"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("name the stack as app/stack"));
}

#[test]
fn logs_follow_prints_new_lines_once() {
    let m = moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = aws_sdk_cloudwatchlogs::Client::new(&rt.block_on(m.conf()));
    let now = now_ms();
    rt.block_on(put(
        &c,
        &group("web"),
        "i-0aaa/app",
        &[(now - 1000, "first")],
    ));
    let mut child = stackdrop(&m.url)
        .args(["logs", "my-app/jobs", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(20)).expect("a line");
    assert!(next().ends_with(" web/i-0aaa app: first"));
    // Later events, one of them older than what was printed: each printed once, in time order.
    rt.block_on(put(
        &c,
        &group("web"),
        "i-0aaa/app",
        &[(now - 2000, "late"), (now, "second")],
    ));
    assert!(next().ends_with(" web/i-0aaa app: late"));
    assert!(next().ends_with(" web/i-0aaa app: second"));
    let quiet = Instant::now() + Duration::from_secs(5);
    while Instant::now() < quiet {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            panic!("printed again: {l}");
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
