//! `commit` and `rollback`: the two ways an attempt that held the stack turns.

use stackdrop_adapters::store::Change;
use stackdrop_adapters::{now_ms, store, Clients, Failure, Kind};
use stackdrop_core::lifecycle::{self, Finish, OpAction};
use stackdrop_core::pipeline::{ExecutionState, FinishProgress, Outcome};

/// Deploy: the deployment becomes current (only while it holds the stack and is still the
/// desired one; a retry finds it current and goes on). Teardown: the stack stops being served.
pub async fn commit(clients: &Clients, s: &ExecutionState) -> Result<FinishProgress, Failure> {
    let d = &s.deployment;
    if matches!(d.action, OpAction::Start | OpAction::Stop) {
        return Err(Failure::new(
            Kind::InvalidInput,
            "commit is for deploy, reconcile and teardown",
        ));
    }
    let store = clients.store();
    let source = crate::source_text(d);
    let decided = store
        .update_stack(&d.stack_id, now_ms(), |state| {
            let f = match d.action {
                // A reconcile's deployment is current already (AlreadyCurrent).
                OpAction::Deploy | OpAction::Reconcile => {
                    lifecycle::finish(state, &d.owner, d.attempt, &d.deployment, true)
                }
                _ if lifecycle::holds(state, &d.owner, d.attempt) => Finish::MakeCurrent,
                _ => Finish::LeaseLost,
            };
            if f != Finish::MakeCurrent {
                return Ok(Change::Keep(f));
            }
            let mut next = state.clone();
            match d.action {
                OpAction::Deploy => {
                    next.current = Some(d.deployment.clone());
                    next.current_source = Some(source.clone());
                    next.last_error = None;
                }
                _ => {
                    next.current = None;
                    next.current_source = None;
                }
            }
            Ok(Change::Write(next, f))
        })
        .await?;
    match decided {
        Finish::MakeCurrent | Finish::AlreadyCurrent => {}
        Finish::RollBack { .. } => {
            return Err(Failure::new(
                Kind::Superseded,
                format!("{} was superseded before it became current", d.deployment),
            ))
        }
        Finish::LeaseLost => return Err(store::lease_lost(&d.owner, d.attempt)),
    }
    let (status, detail) = match d.action {
        OpAction::Reconcile => ("current", "the missing instances run again"),
        OpAction::Deploy => (
            "current",
            "the deployment is current; retiring the previous version",
        ),
        _ => (
            "tearing-down",
            "the stack is no longer served; removing everything",
        ),
    };
    // Schedules follow what is served: the current deployment's, or none after a teardown.
    let warning = match d.action {
        OpAction::Deploy => crate::schedules::sync(clients, d).await?,
        OpAction::Teardown => crate::schedules::delete(clients, d).await?,
        _ => None,
    };
    store
        .record_step(
            &d.stack_id,
            &d.deployment,
            status,
            "finish",
            detail,
            now_ms(),
        )
        .await?;
    Ok(FinishProgress {
        warning,
        outcome: Some(match d.action {
            OpAction::Deploy | OpAction::Reconcile => Outcome::Succeeded,
            _ => Outcome::Deleted,
        }),
        ..FinishProgress::default()
    })
}

/// A failed or superseded attempt: closes it (no step of it may launch anything more), unless
/// it is current already, in which case nothing is rolled back.
pub async fn rollback(clients: &Clients, s: &ExecutionState) -> Result<FinishProgress, Failure> {
    let d = &s.deployment;
    let error = s.error.as_ref();
    let failed_by_error = error.is_none_or(|e| e.error != "Superseded");
    let decided = clients
        .store()
        .update_stack(&d.stack_id, now_ms(), |state| {
            let f = lifecycle::finish(state, &d.owner, d.attempt, &d.deployment, false);
            match (&f, &state.lease) {
                (Finish::RollBack { .. }, Some(lease)) if !lease.closing => {
                    let mut next = state.clone();
                    if let Some(l) = next.lease.as_mut() {
                        l.closing = true;
                    }
                    Ok(Change::Write(next, f))
                }
                _ => Ok(Change::Keep(f)),
            }
        })
        .await?;
    let outcome = match decided {
        // A relaunch that failed: the deployment stays current, the reconcile failed.
        Finish::AlreadyCurrent if d.action == OpAction::Reconcile && error.is_some() => {
            Outcome::Failed
        }
        Finish::AlreadyCurrent => Outcome::Succeeded,
        Finish::RollBack { superseded: true } => Outcome::Superseded,
        _ if !failed_by_error => Outcome::Superseded,
        _ => Outcome::Failed,
    };
    let warning = (decided == Finish::AlreadyCurrent && outcome == Outcome::Succeeded)
        .then(|| {
            error.map(|e| {
                format!(
                    "a step after making it current failed: {}: {}",
                    e.error,
                    e.message()
                )
            })
        })
        .flatten();
    let progress = FinishProgress {
        outcome: Some(outcome),
        lease_lost: decided == Finish::LeaseLost,
        warning,
        ..FinishProgress::default()
    };
    tracing::info!(deployment = %d.deployment, ?decided, "rollback");
    Ok(progress)
}
