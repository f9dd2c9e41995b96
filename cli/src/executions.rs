//! The stack's executions in Step Functions (aws-sdk-sfn): their state and console links for
//! `status`, and `retry`, which starts a fresh attempt of the stack's newest request.

use crate::Fatal;
use aws_sdk_sfn::Client;
use stackdrop_adapters::store::{DeploymentRecord, Store};
use stackdrop_core::lifecycle::OpAction;

/// The Step Functions console page of an execution.
pub fn console_link(arn: &str) -> String {
    let region = arn.split(':').nth(3).unwrap_or("us-east-1");
    format!("https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}")
}

/// An execution's status (`RUNNING`, `SUCCEEDED`, `FAILED`, ...), or why it cannot be read.
pub async fn status_of(sfn: &Client, arn: &str) -> String {
    match sfn.describe_execution().execution_arn(arn).send().await {
        Ok(d) => d.status().as_str().to_string(),
        Err(e) => format!(
            "unknown ({})",
            stackdrop_adapters::Failure::aws("DescribeExecution", e).message
        ),
    }
}

/// Lines for the last `n` operations of the stack: each attempt, its execution's status and link.
pub async fn recent(sfn: &Client, records: &[DeploymentRecord], n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for r in records.iter().rev().take(n) {
        out.push(format!("  {} {} ({})", r.deployment, r.status, r.source));
        for a in &r.attempts {
            let status = status_of(sfn, &a.execution).await;
            out.push(format!(
                "    attempt {}: {status}  {}",
                a.attempt,
                console_link(&a.execution)
            ));
        }
    }
    out
}

/// The state machine named `{prefix}-{deploy|teardown}`.
async fn machine_arn(sfn: &Client, prefix: &str, action: OpAction) -> Result<String, Fatal> {
    let name = match action {
        OpAction::Teardown => format!("{prefix}-teardown"),
        OpAction::Deploy | OpAction::Start | OpAction::Stop | OpAction::Reconcile => {
            format!("{prefix}-deploy")
        }
    };
    let mut pages = sfn.list_state_machines().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page
            .map_err(|e| Fatal(stackdrop_adapters::Failure::aws("ListStateMachines", e).message))?;
        if let Some(m) = page.state_machines().iter().find(|m| m.name() == name) {
            return Ok(m.state_machine_arn().to_string());
        }
    }
    Err(Fatal(format!("no state machine {name} in this account and region (is stackdrop deployed here? see --prefix)")))
}

/// Starts a new execution of the stack's newest request, with the input a person would give
/// the console's "New execution": a fresh attempt.
pub async fn retry(
    store: &Store,
    sfn: &Client,
    stack_id: &str,
    prefix: &str,
) -> Result<String, Fatal> {
    let fatal = |e: stackdrop_adapters::Failure| Fatal(e.to_string());
    let state = store.stack(stack_id).await.map_err(fatal)?.ok_or_else(|| {
        Fatal(format!(
            "no stack {stack_id:?} in {} (stacks are named app/stack)",
            store.table
        ))
    })?;
    let op = state
        .desired
        .ok_or_else(|| Fatal(format!("{stack_id} has no request to retry")))?;
    let (bucket, key) = op
        .source
        .split_once('/')
        .ok_or_else(|| Fatal(format!("{stack_id}: unreadable source {:?}", op.source)))?;
    let mut input = serde_json::json!({"bucket": bucket, "key": key, "action": op.action});
    if let (Some(v), OpAction::Deploy) = (&op.version, op.action) {
        input["versionId"] = serde_json::Value::String(v.clone());
    }
    let arn = machine_arn(sfn, prefix, op.action).await?;
    let name = format!("retry-{}-{}", op.id, stackdrop_adapters::now_ms());
    let out = sfn
        .start_execution()
        .state_machine_arn(arn)
        .name(name)
        .input(input.to_string())
        .send()
        .await
        .map_err(|e| Fatal(stackdrop_adapters::Failure::aws("StartExecution", e).message))?;
    Ok(out.execution_arn().to_string())
}
