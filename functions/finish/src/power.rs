//! `power`: one round of starting (or stopping) the current version's instances; done when each
//! is `running` (or `stopped`). Run twice, or delivered twice by a schedule, it changes nothing
//! more: only instances not yet on their way are asked. With one instance named (a
//! per-instance schedule), only that one.

use stackdrop_adapters::{ec2, now_s, Clients, Failure};
use stackdrop_core::lifecycle::OpAction;
use stackdrop_core::pipeline::{ExecutionState, FinishProgress, Outcome};

pub async fn round(clients: &Clients, s: &ExecutionState) -> Result<FinishProgress, Failure> {
    let d = &s.deployment;
    let mut progress = s.finish.clone().unwrap_or_default();
    progress.rounds += 1;
    progress.outcome = Some(Outcome::Succeeded);
    let store = clients.store();
    if !crate::still_holds(clients, d, &mut progress).await? {
        progress.outcome = Some(Outcome::Failed);
        return Ok(progress);
    }
    let current = store
        .stack(&d.stack_id)
        .await?
        .and_then(|st| st.current)
        .unwrap_or_default();
    let mut tags = vec![
        ("stackdrop:app", d.app.as_str()),
        ("stackdrop:stack", d.stack.as_str()),
        ("stackdrop:deployment", current.as_str()),
    ];
    // A per-instance schedule names its instance; the console may ask for the whole stack.
    if let [only] = d.instances.as_slice() {
        tags.push(("stackdrop:instance", only.as_str()));
    }
    let found = ec2::find_instances(clients.ec2(), &tags, ec2::LIVE_STATES).await?;
    let start = d.action == OpAction::Start;
    let (target, ask_from): (&str, &[&str]) = if start {
        ("running", &["stopped"])
    } else {
        ("stopped", &["pending", "running"])
    };
    let ask: Vec<String> = found
        .iter()
        .filter(|i| ask_from.contains(&i.state.as_str()))
        .map(|i| i.id.clone())
        .collect();
    ec2::power(clients.ec2(), &ask, start).await?;
    for id in ask {
        if !progress.changed.contains(&id) {
            progress.changed.push(id);
        }
    }
    let waiting: Vec<&str> = found
        .iter()
        .filter(|i| i.state != target)
        .map(|i| i.id.as_str())
        .collect();
    progress.done = waiting.is_empty();
    if !progress.done && now_s() >= d.deadline {
        progress.done = true;
        progress.outcome = Some(Outcome::Failed);
        progress.warning = Some(format!(
            "{} not {target} by the deadline",
            waiting.join(", ")
        ));
    }
    progress.wait = if progress.done { 0 } else { 5 };
    tracing::info!(stack = %d.stack_id, ?waiting, "power round");
    Ok(progress)
}
