//! Poll one instance until its app is up: EC2 says `running` and the bootstrap has tagged the
//! instance `stackdrop:bootstrap=ok`. Returns the phase and the next wait (short at first, backing
//! off, never past the deadline); `core::pipeline::InstanceTask::observe` decides. A terminated
//! instance fails with EC2's reason, a failed bootstrap with the bootstrap's own (its log stream).

use lambda_runtime::LambdaEvent;
use stackdrop_adapters::ec2::InstanceState;
use stackdrop_adapters::store::InstanceRecord;
use stackdrop_adapters::{ec2, logs, now_ms, now_s, Clients, Failure, Kind};
use stackdrop_core::naming;
use stackdrop_core::pipeline::{InstanceTask, Phase, PollFailure, Seen};

/// Reads of the bootstrap's log stream for a failed bootstrap's reason.
const REASON_READS: u32 = 3;

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
    let instance = ec2::describe_instance(clients.ec2(), &id).await?;
    let seen = match &instance {
        None => Seen::Unknown,
        Some(i) => Seen::Instance {
            state: &i.state,
            bootstrap: i.bootstrap.as_deref(),
        },
    };
    let was = task.phase;
    let outcome = task.observe(seen, now_s());
    let Some(instance) = instance else {
        return match outcome {
            Ok(()) => Ok(task),
            Err(f) => Err(failure(&task, &id, f, None)),
        };
    };
    record(clients, &mut task, &instance, was).await?;
    match outcome {
        Ok(()) => Ok(task),
        Err(PollFailure::BootstrapFailed) => Err(bootstrap_failed(clients, &task, &id).await),
        Err(f) => Err(failure(&task, &id, f, Some(&instance))),
    }
}

/// Writes what EC2 said into the task and the state store, and a step line on a new phase.
async fn record(
    clients: &Clients,
    task: &mut InstanceTask,
    instance: &InstanceState,
    was: Phase,
) -> Result<(), Failure> {
    let store = clients.store();
    let rec = InstanceRecord {
        instance_id: Some(instance.id.clone()),
        state: Some(instance.state.clone()),
        private_ip: instance.private_ip.clone(),
        public_ip: instance.public_ip.clone(),
    };
    store
        .set_instance(&task.stack_id, &task.deployment, &task.instance, &rec)
        .await?;
    task.state = Some(instance.state.clone());
    task.private_ip = instance.private_ip.clone();
    task.public_ip = instance.public_ip.clone();
    let line = match task.phase {
        Phase::Booting => "is running; waiting for its bootstrap",
        Phase::Up => "is up (its bootstrap reported ok)",
        Phase::Launching => return Ok(()),
    };
    if task.phase != was {
        let step = if task.phase == Phase::Up {
            "up"
        } else {
            "running"
        };
        let message = format!("{}: {} {line}", task.instance, instance.id);
        store
            .record_step(
                &task.stack_id,
                &task.deployment,
                "starting",
                step,
                &message,
                now_ms(),
            )
            .await?;
    }
    Ok(())
}

fn failure(
    task: &InstanceTask,
    id: &str,
    f: PollFailure,
    instance: Option<&InstanceState>,
) -> Failure {
    let name = &task.instance;
    match f {
        PollFailure::Gone => Failure::new(
            Kind::InstanceTerminated,
            format!("{name}: instance {id} no longer exists"),
        ),
        PollFailure::Ended => {
            let (state, reason) =
                instance.map_or(("gone", None), |i| (i.state.as_str(), i.reason.as_deref()));
            Failure::new(
                Kind::InstanceTerminated,
                format!(
                    "{name}: {id} is {state}: {}",
                    reason.unwrap_or("EC2 gave no reason")
                ),
            )
        }
        PollFailure::Deadline(Phase::Launching) => Failure::new(
            Kind::DeadlineExceeded,
            format!(
                "{name}: {id} was still pending at the deadline (after {} polls)",
                task.polls
            ),
        ),
        PollFailure::Deadline(_) => Failure::new(
            Kind::DeadlineExceeded,
            format!(
                "{name}: {id} is running but its bootstrap did not report by the deadline; \
                 see its console output and the log stream {id}/bootstrap"
            ),
        ),
        PollFailure::BootstrapFailed => Failure::new(
            Kind::BootstrapFailed,
            format!("{name}: {id}: the bootstrap failed"),
        ),
    }
}

/// The bootstrap's own reason, from its log stream (`stackdrop bootstrap failed: step ...`).
async fn bootstrap_failed(clients: &Clients, task: &InstanceTask, id: &str) -> Failure {
    let (app, stack) = task
        .stack_id
        .split_once('/')
        .unwrap_or((&task.stack_id, ""));
    let group = naming::log_group_name(&naming::resource_name(app, stack, &task.instance));
    let stream = format!("{id}/bootstrap");
    // The bootstrap writes its reason before the tag, but CloudWatch Logs may take a moment to
    // serve a new event: a few reads, two seconds apart.
    let prefix = "stackdrop bootstrap failed";
    let mut reason = format!("no reason reached the log stream {stream} (see the console output)");
    for read in 1..=REASON_READS {
        match logs::last_message(clients.logs(), &group, &stream, prefix).await {
            Ok(Some(m)) => {
                reason = m;
                break;
            }
            Ok(None) if read < REASON_READS => {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await
            }
            Ok(None) => {}
            Err(e) => {
                reason = format!("its reason could not be read from {stream}: {e}");
                break;
            }
        }
    }
    Failure::new(
        Kind::BootstrapFailed,
        format!("{}: {id}: {reason}", task.instance),
    )
}
