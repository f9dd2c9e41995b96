//! The poll step: a thin Lambda entry point. Clients are built once per cold start.

mod handler;

use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    stackdrop_adapters::serve(handler::handle).await
}
