//! The finish step: a thin Lambda entry point. Clients are built once per cold start.

mod cleanup;
mod commit;
mod handler;
mod power;
mod report;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use stackdrop_adapters::Clients;
use stackdrop_core::pipeline::Deployment;

/// The operation's bundle, for people.
pub fn source_text(d: &Deployment) -> String {
    format!(
        "{}{}",
        d.source.uri(),
        d.source
            .version_id
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default()
    )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    stackdrop_adapters::init_logging();
    let clients = Clients::load().await;
    let clients = &clients;
    run(service_fn(move |event: LambdaEvent<_>| {
        handler::handle(clients, event)
    }))
    .await
}
