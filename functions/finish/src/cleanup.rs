//! `cleanup`: one round of removing what does not belong to the stack's current deployment
//! (on success: the previous version; on rollback: this attempt; on teardown: everything but
//! the log groups). The state machine repeats it, waiting between rounds, until it is done.

use stackdrop_adapters::store::{Change, Store};
use stackdrop_adapters::{ec2, iam, now_ms, now_s, Clients, Failure, Kind};
use stackdrop_core::lifecycle::{self, CleanupPlan, Leftover, SeenInstance, StackState};
use stackdrop_core::pipeline::{ExecutionState, FinishProgress};

pub async fn round(clients: &Clients, s: &ExecutionState) -> Result<FinishProgress, Failure> {
    let d = &s.deployment;
    let mut progress = s.finish.clone().unwrap_or_default();
    progress.rounds += 1;
    if progress.lease_lost || d.owner.is_empty() {
        progress.done = true;
        return Ok(progress);
    }
    let store = clients.store();
    if !crate::still_holds(clients, d, &mut progress).await? {
        return Ok(progress);
    }
    let state = store.stack(&d.stack_id).await?.unwrap_or_default();
    let seen = inventory(clients, &store, &d.stack_id, &d.app, &d.stack, &state).await?;
    let leftovers: Vec<Leftover> = store
        .deployments(&d.stack_id)
        .await?
        .into_iter()
        .filter(|r| !r.cleaned)
        .map(|r| Leftover {
            deployment: r.deployment,
        })
        .collect();
    let plan = lifecycle::cleanup(state.current.as_deref(), &seen, &leftovers);
    let groups_pending = apply(clients, &store, &d.stack_id, &plan).await?;
    forget_gone(&store, &d.stack_id, &seen).await?;
    progress.removed.extend(
        plan.terminate
            .iter()
            .filter(|i| !progress.removed.contains(i))
            .cloned()
            .collect::<Vec<_>>(),
    );
    progress.done = plan.done() && !groups_pending;
    if !progress.done && now_s() >= d.deadline + 600 {
        progress.done = true;
        progress.warning = Some(format!(
            "cleanup gave up after {} rounds; still waiting for {:?}",
            progress.rounds, plan.waiting_for
        ));
    }
    progress.wait = if progress.done { 0 } else { 5 };
    tracing::info!(stack = %d.stack_id, ?plan, groups_pending, "cleanup round");
    Ok(progress)
}

/// Every instance of the stack EC2 still shows (by its tags) and every one the state store
/// recorded at launch (EC2's listing may not show a brand-new one yet), with its plan's
/// `waitForTermination`. One EC2 does not know is gone, unless it was launched so recently that
/// EC2 may not show it yet.
async fn inventory(
    clients: &Clients,
    store: &Store,
    stack_id: &str,
    app: &str,
    stack: &str,
    state: &StackState,
) -> Result<Vec<SeenInstance>, Failure> {
    let tags = [("stackdrop:app", app), ("stackdrop:stack", stack)];
    let mut found = ec2::find_instances(clients.ec2(), &tags, ec2::NOT_GONE).await?;
    let missing: Vec<String> = state
        .instances
        .keys()
        .filter(|id| !found.iter().any(|f| &f.id == *id))
        .cloned()
        .collect();
    found.extend(ec2::describe_instances(clients.ec2(), &missing).await?);
    let mut seen = Vec::new();
    for id in state
        .instances
        .keys()
        .filter(|id| !found.iter().any(|f| &f.id == *id))
    {
        let l = &state.instances[id];
        let young = now_ms().saturating_sub(l.at) < UNKNOWN_GRACE_MS;
        let state = if young { "pending" } else { "gone" };
        seen.push(SeenInstance {
            id: id.clone(),
            deployment: l.deployment.clone(),
            state: state.into(),
            wait_for_termination: true,
        });
    }
    for i in found {
        let deployment = i.deployment.clone().unwrap_or_default();
        let name = i.name.clone().unwrap_or_default();
        let wait = store
            .plan(stack_id, &deployment, &name)
            .await
            .map(|p| p.wait_for_termination)
            .unwrap_or(true);
        seen.push(SeenInstance {
            id: i.id,
            deployment,
            state: i.state,
            wait_for_termination: wait,
        });
    }
    Ok(seen)
}

/// How long after its launch an instance EC2 does not list may still appear.
const UNKNOWN_GRACE_MS: u64 = 120_000;

/// Does what the round decided. Returns whether a security group is still in use.
async fn apply(
    clients: &Clients,
    store: &Store,
    stack_id: &str,
    plan: &CleanupPlan,
) -> Result<bool, Failure> {
    ec2::terminate(clients.ec2(), &plan.terminate).await?;
    let mut pending = false;
    for dep in &plan.delete_iam_and_template {
        let record = store.deployment(stack_id, dep).await?.unwrap_or_default();
        for name in &record.names {
            let Ok(p) = store.plan(stack_id, dep, name).await else {
                continue;
            };
            iam::delete_role_and_profile(clients.iam(), &p).await?;
            ec2::delete_template(clients.ec2(), &p).await?;
            if plan.delete_group.contains(dep) {
                match ec2::delete_group(clients.ec2(), &p).await {
                    Ok(()) => {}
                    Err(e) if e.kind == Kind::CleanupPending => pending = true,
                    Err(e) => return Err(e),
                }
            }
        }
        // A provision that started meanwhile (a straggler) leaves it for the next round.
        if plan.delete_group.contains(dep)
            && !pending
            && !store.mark_cleaned(stack_id, dep, record.provisions).await?
        {
            pending = true;
        }
    }
    Ok(pending)
}

/// Instances seen terminated leave the stack's record.
async fn forget_gone(store: &Store, stack_id: &str, seen: &[SeenInstance]) -> Result<(), Failure> {
    let gone: Vec<&str> = seen
        .iter()
        .filter(|i| matches!(i.state.as_str(), "terminated" | "gone"))
        .map(|i| i.id.as_str())
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    store
        .update_stack(stack_id, now_ms(), |state| {
            if !gone.iter().any(|id| state.instances.contains_key(*id)) {
                return Ok(Change::Keep(()));
            }
            let mut next = state.clone();
            next.instances.retain(|id, _| !gone.contains(&id.as_str()));
            Ok(Change::Write(next, ()))
        })
        .await
}
