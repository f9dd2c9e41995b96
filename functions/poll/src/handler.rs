//! Poll one instance until it runs. Returns the state and the next wait (short at first,
//! backing off, never past the deadline); a terminated instance fails with EC2's reason. EC2 is
//! eventually consistent: an instance it does not know yet right after RunInstances is pending.

use lambda_runtime::LambdaEvent;
use stackdrop_adapters::store::InstanceRecord;
use stackdrop_adapters::{ec2, now_ms, now_s, Clients, Failure, Kind};
use stackdrop_core::pipeline::{next_wait, InstanceTask};

/// Polls during which an instance EC2 does not know yet counts as pending (EC2's eventual
/// consistency right after RunInstances is seconds, not minutes).
const UNKNOWN_POLLS: u32 = 3;

pub async fn handle(
    clients: &Clients,
    event: LambdaEvent<InstanceTask>,
) -> Result<InstanceTask, Failure> {
    let mut task = event.payload;
    let store = clients.store();
    store
        .fence(
            &task.stack_id,
            &task.owner,
            task.attempt,
            &task.deployment,
            false,
            now_s(),
        )
        .await?;
    let id = task
        .instance_id
        .clone()
        .ok_or_else(|| Failure::new(Kind::InvalidInput, "poll needs instanceId (from launch)"))?;
    let now = now_s();
    let Some(instance) = ec2::describe_instance(&clients.ec2, &id).await? else {
        if task.polls < UNKNOWN_POLLS {
            task.polls += 1;
            task.state = Some("pending".into());
            task.wait = next_wait(task.polls, now, task.deadline);
            return Ok(task);
        }
        return Err(Failure::new(
            Kind::InstanceTerminated,
            format!("{}: instance {id} no longer exists", task.instance),
        ));
    };
    let rec = InstanceRecord {
        instance_id: Some(id.clone()),
        state: Some(instance.state.clone()),
        private_ip: instance.private_ip.clone(),
        public_ip: instance.public_ip.clone(),
    };
    store
        .set_instance(&task.stack_id, &task.deployment, &task.instance, &rec)
        .await?;
    task.polls += 1;
    task.state = Some(instance.state.clone());
    task.private_ip = instance.private_ip.clone();
    task.public_ip = instance.public_ip.clone();
    match instance.state.as_str() {
        "running" => {
            store
                .record_step(
                    &task.stack_id,
                    &task.deployment,
                    "starting",
                    "running",
                    &format!("{}: {id} is running", task.instance),
                    now_ms(),
                )
                .await?;
            task.wait = 0;
            Ok(task)
        }
        "pending" if now >= task.deadline => Err(Failure::new(
            Kind::DeadlineExceeded,
            format!(
                "{}: {id} was still pending at the deadline (after {} polls)",
                task.instance, task.polls
            ),
        )),
        "pending" => {
            task.wait = next_wait(task.polls, now, task.deadline);
            Ok(task)
        }
        other => Err(Failure::new(
            Kind::InstanceTerminated,
            format!(
                "{}: {id} is {other}: {}",
                task.instance,
                instance.reason.as_deref().unwrap_or("EC2 gave no reason")
            ),
        )),
    }
}
