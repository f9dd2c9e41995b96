//! Finish: how an operation that holds (or held) the stack ends, in four steps the state
//! machines name: `commit` (make the deployment current / stop serving a torn-down stack),
//! `rollback` (close a failed or superseded attempt), `cleanup` (remove what must go, round by
//! round) and `report` (record, release, publish, and the execution's output). Each step's
//! decision is the core's ([`stackdrop_core::lifecycle`]); every step is safe to run twice.

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use stackdrop_adapters::{Clients, Failure};
use stackdrop_core::pipeline::{FinishInput, FinishStep};

pub async fn handle(clients: &Clients, event: LambdaEvent<FinishInput>) -> Result<Value, Failure> {
    let FinishInput { step, state } = event.payload;
    let out = match step {
        FinishStep::Commit => serde_json::to_value(crate::commit::commit(clients, &state).await?),
        FinishStep::Rollback => {
            serde_json::to_value(crate::commit::rollback(clients, &state).await?)
        }
        FinishStep::Cleanup => serde_json::to_value(crate::cleanup::round(clients, &state).await?),
        FinishStep::Power => serde_json::to_value(crate::power::round(clients, &state).await?),
        FinishStep::Report => serde_json::to_value(crate::report::report(clients, &state).await?),
    };
    out.map_err(|e| Failure::new(stackdrop_adapters::Kind::AwsError, e.to_string()))
}
