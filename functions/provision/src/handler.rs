//! Provision one instance's resources for this deployment: IAM role and profile, log group,
//! security group, launch template. Each is the deployment's own (named and tagged for it), so
//! nothing the live version runs with is touched. Create-or-update, behind the lease's fence:
//! a second run changes nothing, and a run that lost the lease changes nothing at all.

use lambda_runtime::LambdaEvent;
use stackdrop_adapters::{ec2, iam, logs, now_ms, now_s, Clients, Failure};
use stackdrop_core::pipeline::InstanceTask;

pub async fn handle(
    clients: &Clients,
    event: LambdaEvent<InstanceTask>,
) -> Result<InstanceTask, Failure> {
    let mut task = event.payload;
    let store = clients.store();
    let plan = store.task_plan(&task, true, now_s()).await?;
    // Its record says the resources exist before they do: cleanup never misses them.
    store
        .mark_provisioning(&task.stack_id, &task.deployment)
        .await?;

    let role = iam::ensure_role_and_profile(clients.iam(), &plan).await?;
    let log_group = logs::ensure_log_group(clients.logs(), &plan).await?;
    let (sg, sg_created) = ec2::ensure_security_group(clients.ec2(), &plan).await?;
    let (template_id, version, lt_created) =
        ec2::ensure_launch_template(clients.ec2(), &plan, &sg).await?;

    let created: Vec<&str> = [
        (role.created_role, "role"),
        (role.created_profile, "instance profile"),
        (log_group, "log group"),
        (sg_created, "security group"),
        (lt_created, "launch template version"),
    ]
    .iter()
    .filter(|(c, _)| *c)
    .map(|(_, n)| *n)
    .collect();
    let detail = format!(
        "{}: launch template {template_id} version {version}; {}",
        task.instance,
        if created.is_empty() {
            "nothing new (all in place)".to_string()
        } else {
            format!("created {}", created.join(", "))
        }
    );
    tracing::info!(instance = %task.instance, %detail, "provisioned");
    store
        .record_step(
            &task.stack_id,
            &task.deployment,
            "launching",
            "provision",
            &detail,
            now_ms(),
        )
        .await?;
    task.launch_template_id = Some(template_id);
    task.launch_template_version = Some(version);
    Ok(task)
}
