//! Finish: on success the deployment becomes current and only now are the previous version's
//! instances retired (no downtime on update); on failure this deployment's instances are
//! removed and the previous ones keep running (a first deploy that fails leaves nothing but its
//! log group). The result goes where users look: the execution output (the [`Summary`]), the
//! state store and an EventBridge event.

use lambda_runtime::LambdaEvent;
use stackdrop_adapters::{ec2, events, iam, now_ms, Clients, Failure};
use stackdrop_core::naming;
use stackdrop_core::pipeline::{Decision, FinishInput, InstanceSummary, Outcome, Summary};

pub async fn handle(
    clients: &Clients,
    event: LambdaEvent<FinishInput>,
) -> Result<Summary, Failure> {
    let input = event.payload;
    let d = &input.deployment;
    let store = clients.store();
    let source_text = format!(
        "{}{}",
        d.source.uri(),
        d.source
            .version_id
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default()
    );
    let stack_tags = [
        ("stackdrop:app", d.app.as_str()),
        ("stackdrop:stack", d.stack.as_str()),
    ];
    let mine = [
        stack_tags[0],
        stack_tags[1],
        ("stackdrop:deployment", d.deployment.as_str()),
    ];
    let mut retired = Vec::new();
    let mut error_text = None;

    let outcome = match (&input.error, d.decision) {
        (_, Decision::Noop) => Outcome::Noop,
        (None, Decision::Superseded) => {
            // Validation stopped it before recording it: record it now, for `stackdrop status`.
            store
                .start_deployment(&d.stack_id, &d.deployment, &source_text, d.started_at)
                .await?;
            store
                .record_step(
                    &d.stack_id,
                    &d.deployment,
                    "superseded",
                    "finish",
                    "a newer version holds the stack",
                    now_ms(),
                )
                .await?;
            Outcome::Superseded
        }
        (None, Decision::Deploy) => {
            if store
                .finish(
                    &d.stack_id,
                    &d.deployment,
                    &source_text,
                    "succeeded",
                    None,
                    now_ms(),
                )
                .await?
            {
                let old: Vec<String> =
                    ec2::find_instances(&clients.ec2, &stack_tags, ec2::LIVE_STATES)
                        .await?
                        .into_iter()
                        .filter(|i| i.deployment.as_deref() != Some(d.deployment.as_str()))
                        .map(|i| i.id)
                        .collect();
                ec2::terminate(&clients.ec2, &old).await?;
                let detail = if old.is_empty() {
                    "current; nothing to retire".to_string()
                } else {
                    format!("current; retired {}", old.join(", "))
                };
                store
                    .record_step(
                        &d.stack_id,
                        &d.deployment,
                        "succeeded",
                        "finish",
                        &detail,
                        now_ms(),
                    )
                    .await?;
                retired = old;
                Outcome::Succeeded
            } else {
                // A newer deployment claimed the stack while this one ran: step aside.
                remove_mine(clients, &mine).await?;
                store
                    .record_step(
                        &d.stack_id,
                        &d.deployment,
                        "superseded",
                        "finish",
                        "a newer version claimed the stack; removed this deployment's instances",
                        now_ms(),
                    )
                    .await?;
                Outcome::Superseded
            }
        }
        (Some(err), _) => {
            let message = err.message();
            let removed = remove_mine(clients, &mine).await?;
            let superseded = err.error == "Superseded";
            let status = if superseded { "superseded" } else { "failed" };
            let stack = store.stack(&d.stack_id).await?.unwrap_or_default();
            // A first deploy that failed leaves nothing behind but its log group.
            if !superseded && stack.current.is_none() {
                for name in &d.instances {
                    if let Ok(plan) = store.plan(&d.stack_id, &d.deployment, name).await {
                        ec2::delete_template_and_group(&clients.ec2, &plan).await?;
                        iam::delete_role_and_profile(&clients.iam, &plan).await?;
                    }
                }
            }
            let text = format!("{}: {message}", err.error);
            store
                .finish(
                    &d.stack_id,
                    &d.deployment,
                    &source_text,
                    status,
                    Some(&text),
                    now_ms(),
                )
                .await?;
            let detail = format!(
                "{text}; removed {} instance(s) of this deployment",
                removed.len()
            );
            store
                .record_step(
                    &d.stack_id,
                    &d.deployment,
                    status,
                    "finish",
                    &detail,
                    now_ms(),
                )
                .await?;
            error_text = Some(text);
            if superseded {
                Outcome::Superseded
            } else {
                Outcome::Failed
            }
        }
    };

    let instances = d
        .instances
        .iter()
        .map(|name| {
            let r = input.results.iter().find(|r| &r.instance == name);
            InstanceSummary {
                name: name.clone(),
                instance_id: r.and_then(|r| r.instance_id.clone()),
                state: if outcome == Outcome::Succeeded {
                    r.and_then(|r| r.state.clone())
                } else {
                    None
                },
                private_ip: r.and_then(|r| r.private_ip.clone()),
                public_ip: r.and_then(|r| r.public_ip.clone()),
                log_group: naming::log_group_name(&naming::resource_name(&d.app, &d.stack, name)),
            }
        })
        .collect();
    let summary = Summary {
        stack: d.stack_id.clone(),
        deployment: d.deployment.clone(),
        source: d.source.uri(),
        version: d.source.version_id.clone(),
        status: outcome,
        instances,
        error: error_text,
        retired,
        duration_seconds: (now_ms().saturating_sub(d.started_at)) as f64 / 1000.0,
    };
    if let Err(e) = events::publish(&clients.events, &clients.settings.event_bus, &summary).await {
        // The deploy's outcome stands; a missing notification is logged, not fatal.
        tracing::warn!(error = %e, "could not publish the result event");
    }
    tracing::info!(stack = %summary.stack, status = ?summary.status, "finished");
    Ok(summary)
}

/// Terminates this deployment's instances; returns their ids.
async fn remove_mine(clients: &Clients, mine: &[(&str, &str)]) -> Result<Vec<String>, Failure> {
    let ids: Vec<String> = ec2::find_instances(&clients.ec2, mine, ec2::LIVE_STATES)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    ec2::terminate(&clients.ec2, &ids).await?;
    Ok(ids)
}
