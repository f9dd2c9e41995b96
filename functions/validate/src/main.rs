//! The validate step: a thin Lambda entry point. Clients are built once per cold start.

mod desire;
mod handler;
mod teardown;

use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    stackdrop_adapters::serve(handler::handle).await
}
