//! The validate step: a thin Lambda entry point. Clients are built once per cold start.

mod desire;
mod handler;
mod teardown;

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use stackdrop_adapters::Clients;

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
