//! The finish step: a thin Lambda entry point. Clients are built once per cold start.

mod cleanup;
mod commit;
mod handler;
mod power;
mod report;
mod schedules;

use lambda_runtime::Error;
use stackdrop_core::pipeline::Deployment;

/// Whether the execution still holds the stack (renewing it); if not, `progress` says the
/// lease was lost and that this step is done, having touched nothing.
pub async fn still_holds(
    clients: &stackdrop_adapters::Clients,
    d: &Deployment,
    progress: &mut stackdrop_core::pipeline::FinishProgress,
) -> Result<bool, stackdrop_adapters::Failure> {
    let held = clients
        .store()
        .hold(
            &d.stack_id,
            &d.owner,
            d.attempt,
            stackdrop_adapters::now_s(),
        )
        .await;
    match held {
        Ok(()) => Ok(true),
        Err(e) if e.kind == stackdrop_adapters::Kind::LeaseLost => {
            progress.lease_lost = true;
            progress.done = true;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

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
    stackdrop_adapters::serve(handler::handle).await
}
