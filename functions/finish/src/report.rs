//! `report`: the operation's end. Its own record gets the outcome, the stack's lease is
//! released (by its holder only), the result is published on EventBridge, and the summary is
//! the execution's output (a failure carries `errorName` and `cause` for the Fail state).

use stackdrop_adapters::store::Change;
use stackdrop_adapters::{events, now_ms, Clients, Failure};
use stackdrop_core::lifecycle::OpAction;
use stackdrop_core::naming;
use stackdrop_core::pipeline::{Decision, ExecutionState, InstanceSummary, Outcome, Summary};

pub async fn report(clients: &Clients, s: &ExecutionState) -> Result<Summary, Failure> {
    let d = &s.deployment;
    let mut progress = s.finish.clone().unwrap_or_default();
    for (what, e) in [
        ("cleanup", &s.cleanup_error),
        ("rollback", &s.rollback_error),
    ] {
        if let Some(e) = e {
            let text = format!(
                "{what} did not finish ({}: {}); the next operation on the stack removes the rest",
                e.error,
                e.message()
            );
            progress.warning = Some(
                progress
                    .warning
                    .map_or(text.clone(), |w| format!("{w}; {text}")),
            );
        }
    }
    let outcome = match d.decision {
        Decision::Claim | Decision::Wait if s.error.is_some() => Outcome::Failed,
        Decision::Noop | Decision::Claim | Decision::Wait => Outcome::Noop,
        Decision::Duplicate => Outcome::Duplicate,
        Decision::Superseded => Outcome::Superseded,
        Decision::Deploy
        | Decision::Teardown
        | Decision::Start
        | Decision::Stop
        | Decision::Reconcile => progress.outcome.unwrap_or(Outcome::Failed),
    };
    let error = s.error.as_ref().filter(|_| outcome == Outcome::Failed);
    let error_text = error.map(|e| format!("{}: {}", e.error, e.message()));
    let store = clients.store();
    let held = matches!(
        d.decision,
        Decision::Deploy
            | Decision::Teardown
            | Decision::Start
            | Decision::Stop
            | Decision::Reconcile
    );
    if held && !progress.lease_lost {
        release(clients, s, outcome, error_text.as_deref()).await?;
    }
    if !d.stack_id.is_empty() && d.decision != Decision::Duplicate {
        // The operation's own history: best effort (the lease is released already).
        if let Err(e) = record(&store, s, outcome, error_text.as_deref()).await {
            tracing::warn!(error = %e, "could not record the outcome in the operation's history");
        }
    }
    let summary = summarize(s, outcome, error_text, &progress);
    if let Err(e) = events::publish(clients.events(), &clients.settings.event_bus, &summary).await {
        // The outcome stands; a missing notification is logged, not fatal.
        tracing::warn!(error = %e, "could not publish the result event");
    }
    tracing::info!(stack = %summary.stack, status = ?summary.status, "finished");
    Ok(summary)
}

async fn record(
    store: &stackdrop_adapters::store::Store,
    s: &ExecutionState,
    outcome: Outcome,
    error: Option<&str>,
) -> Result<(), Failure> {
    let d = &s.deployment;
    let status = status_word(outcome);
    if store
        .deployment(&d.stack_id, &d.deployment)
        .await?
        .is_none()
    {
        return Ok(());
    }
    // A reconcile works under the current deployment: its record keeps the deploy's outcome
    // and gets the reconcile as a step.
    if d.action != OpAction::Reconcile {
        store
            .finish_deployment(&d.stack_id, &d.deployment, status, error, now_ms())
            .await?;
    }
    let mut detail = error
        .map(String::from)
        .or_else(|| d.reason.clone())
        .unwrap_or_else(|| status.to_string());
    // The deployment a reconcile worked under stays what it was: current, and succeeded.
    let status = if d.action == OpAction::Reconcile {
        detail = format!("reconcile {status}: {detail}");
        "succeeded"
    } else {
        status
    };
    store
        .record_step(
            &d.stack_id,
            &d.deployment,
            status,
            "report",
            &detail,
            now_ms(),
        )
        .await
}

fn status_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed => "failed",
        Outcome::Superseded => "superseded",
        Outcome::Duplicate => "duplicate",
        Outcome::Noop => "unchanged",
        Outcome::Deleted => "deleted",
    }
}

/// Gives the stack back, with the status it is left in.
async fn release(
    clients: &Clients,
    s: &ExecutionState,
    outcome: Outcome,
    error: Option<&str>,
) -> Result<(), Failure> {
    let d = &s.deployment;
    clients
        .store()
        .update_stack(&d.stack_id, now_ms(), |state| {
            let held = state
                .lease
                .as_ref()
                .is_some_and(|l| l.owner == d.owner && l.attempt == d.attempt);
            if !held {
                return Ok(Change::Keep(()));
            }
            let mut next = state.clone();
            next.lease = None;
            next.status = Some(match (outcome, d.action) {
                (Outcome::Deleted, _) => "deleted".into(),
                (Outcome::Failed, _) => "failed".into(),
                (Outcome::Succeeded, OpAction::Stop) => "stopped".into(),
                _ if next.current.is_some() => "running".into(),
                _ => "empty".into(),
            });
            if let Some(e) = error {
                next.last_error = Some(e.to_string());
            }
            Ok(Change::Write(next, ()))
        })
        .await
}

fn summarize(
    s: &ExecutionState,
    outcome: Outcome,
    error: Option<String>,
    progress: &stackdrop_core::pipeline::FinishProgress,
) -> Summary {
    let d = &s.deployment;
    let cause = error.as_ref().map(|e| {
        let what = match d.action {
            OpAction::Deploy => "the previous version (if any) keeps running; nothing of this attempt is left",
            OpAction::Teardown => "what was removed stays removed; the rest is as it was",
            OpAction::Start | OpAction::Stop => "instances already started or stopped stay so",
            OpAction::Reconcile => "the instances that were running keep running",
        };
        format!("{e}. {what}. To retry, start a new execution with the same input (Step Functions console: New execution); a redrive only repeats this failure.")
    });
    let instances = d
        .instances
        .iter()
        .map(|name| {
            let r = s.results.iter().find(|r| &r.instance == name);
            InstanceSummary {
                name: name.clone(),
                instance_id: r.and_then(|r| r.instance_id.clone()),
                state: r
                    .filter(|_| outcome == Outcome::Succeeded)
                    .and_then(|r| r.state.clone()),
                private_ip: r.and_then(|r| r.private_ip.clone()),
                public_ip: r.and_then(|r| r.public_ip.clone()),
                log_group: naming::log_group_name(&naming::resource_name(&d.app, &d.stack, name)),
            }
        })
        .collect();
    Summary {
        stack: d.stack_id.clone(),
        action: d.action,
        deployment: d.deployment.clone(),
        source: d.source.uri(),
        version: d.source.version_id.clone(),
        status: outcome,
        instances,
        error_name: s
            .error
            .as_ref()
            .filter(|_| outcome == Outcome::Failed)
            .map(|e| e.error.clone()),
        error,
        cause,
        reason: d.reason.clone(),
        removed: progress.removed.clone(),
        changed: progress.changed.clone(),
        warning: progress.warning.clone(),
        attempt: d.attempt,
        duration_seconds: now_ms().saturating_sub(d.started_at) as f64 / 1000.0,
    }
}
