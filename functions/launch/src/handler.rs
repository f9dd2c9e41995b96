//! Launch one instance from its launch template, behind the lease's fence. Idempotent: this
//! deployment's instance is looked up first (by tags), and RunInstances carries a ClientToken of
//! the deployment, instance and attempt, so a retry or a duplicate never makes a second one while
//! a fresh attempt (after a failure) really launches again. The new instance is recorded in the
//! stack's record under the fence before the step returns; if the attempt was closed meanwhile
//! (a rollback started while this launch was in flight), the instance is terminated at once.

use lambda_runtime::LambdaEvent;
use stackdrop_adapters::store::InstanceRecord;
use stackdrop_adapters::{ec2, now_ms, now_s, Clients, Failure, Kind};
use stackdrop_core::lifecycle::Launched;
use stackdrop_core::naming;
use stackdrop_core::pipeline::{next_wait, InstanceTask};

pub async fn handle(
    clients: &Clients,
    event: LambdaEvent<InstanceTask>,
) -> Result<InstanceTask, Failure> {
    let mut task = event.payload;
    let store = clients.store();
    let plan = store.task_plan(&task, true, now_s()).await?;
    let (Some(template_id), Some(version)) = (
        task.launch_template_id.clone(),
        task.launch_template_version,
    ) else {
        return Err(Failure::new(
            Kind::InvalidInput,
            "launch needs launchTemplateId and launchTemplateVersion (from provision)",
        ));
    };
    let token = naming::client_token(&plan.deployment, &plan.resource_name, task.attempt);
    let (instance, launched) =
        ec2::launch(clients.ec2(), &plan, &template_id, version, &token).await?;
    let record = Launched {
        deployment: task.deployment.clone(),
        name: task.instance.clone(),
        at: now_ms(),
    };
    if let Err(lost) = store
        .register_instance(
            &task.stack_id,
            &task.owner,
            task.attempt,
            &instance.id,
            &record,
        )
        .await
    {
        if lost.kind == Kind::LeaseLost {
            tracing::warn!(id = %instance.id, "attempt closed while launching: terminating");
            ec2::terminate(clients.ec2(), std::slice::from_ref(&instance.id)).await?;
        }
        return Err(lost);
    }
    let detail = if launched {
        format!("{}: launched {}", task.instance, instance.id)
    } else {
        format!(
            "{}: {} was already launched ({})",
            task.instance, instance.id, instance.state
        )
    };
    tracing::info!(instance = %task.instance, id = %instance.id, launched, "launch");
    let rec = InstanceRecord {
        instance_id: Some(instance.id.clone()),
        state: Some(instance.state.clone()),
        private_ip: instance.private_ip.clone(),
        public_ip: instance.public_ip.clone(),
    };
    store
        .set_instance(&task.stack_id, &task.deployment, &task.instance, &rec)
        .await?;
    store
        .record_step(
            &task.stack_id,
            &task.deployment,
            "starting",
            "launch",
            &detail,
            now_ms(),
        )
        .await?;
    task.instance_id = Some(instance.id);
    task.state = Some(instance.state);
    task.polls = 0;
    task.wait = next_wait(0, now_s(), task.deadline);
    Ok(task)
}
