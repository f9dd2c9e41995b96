//! The stack's EventBridge Scheduler schedules follow its current deployment: synced when a
//! deployment becomes current (again on a retry: nothing changes then), all deleted with their
//! group when the stack stops being served. What changes is the core's
//! [`stackdrop_core::schedules::sync`].

use stackdrop_adapters::scheduler::{self, Group, Owner};
use stackdrop_adapters::{Clients, Failure};
use stackdrop_core::naming;
use stackdrop_core::pipeline::Deployment;
use stackdrop_core::schedules;

/// Makes the group hold exactly the current deployment's schedules. A warning when the
/// deployment asks for schedules and the deployer was installed without a target for them.
pub async fn sync(clients: &Clients, d: &Deployment) -> Result<Option<String>, Failure> {
    let store = clients.store();
    let mut plans = Vec::new();
    for name in &d.instances {
        plans.push(store.plan(&d.stack_id, &d.deployment, name).await?);
    }
    let wanted = schedules::wanted(
        plans.iter().map(|p| (p.name.as_str(), p.schedule.as_ref())),
        &d.source.bucket,
        &d.source.key,
    );
    let group = naming::schedule_group(&d.app, &d.stack);
    let owner = Owner {
        app: &d.app,
        stack: &d.stack,
        bucket: &d.source.bucket,
    };
    let existing = match scheduler::existing(clients.scheduler(), &group, &owner).await? {
        Group::Foreign(why) => return Ok(Some(why)),
        Group::Missing => None,
        Group::Ours(s) => Some(s),
        Group::Untagged { arn, schedules } => {
            scheduler::claim(clients.scheduler(), &arn, &owner).await?;
            Some(schedules)
        }
    };
    if wanted.is_empty() {
        if existing.is_some() {
            scheduler::delete_group(clients.scheduler(), &group, &owner).await?;
        }
        return Ok(None);
    }
    let Some(target) = clients.settings.schedule_target() else {
        return Ok(Some(format!(
            "{} schedule(s) not created: the deployer has no STACKDROP_STATE_MACHINE_ARN and STACKDROP_SCHEDULER_ROLE_ARN",
            wanted.len()
        )));
    };
    if existing.is_none() {
        scheduler::ensure_group(clients.scheduler(), &group, &owner).await?;
    }
    let plan = schedules::sync(&wanted, &existing.unwrap_or_default(), &target);
    tracing::info!(%group, create = plan.create.len(), update = plan.update.len(), delete = plan.delete.len(), "schedules");
    scheduler::apply(clients.scheduler(), &group, &plan, &target).await?;
    Ok(None)
}

/// Teardown: no schedule of the stack is left to start it again (a group of that name that is
/// not the stack's stays, and the warning says so).
pub async fn delete(clients: &Clients, d: &Deployment) -> Result<Option<String>, Failure> {
    let group = naming::schedule_group(&d.app, &d.stack);
    let owner = Owner {
        app: &d.app,
        stack: &d.stack,
        bucket: &d.source.bucket,
    };
    scheduler::delete_group(clients.scheduler(), &group, &owner).await
}
