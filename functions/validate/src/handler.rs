//! Validate: read the bundle from S3 by ranged GETs, check it, resolve and check each image,
//! plan, record the deployment and claim the stack. Output: the small [`Deployment`].

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use stackdrop_adapters::s3::{self, S3Object};
use stackdrop_adapters::store::Claim;
use stackdrop_adapters::{ec2, now_ms, now_s, Clients, Failure, Kind};
use stackdrop_core::pipeline::{stack_id, Decision, Deployment};
use stackdrop_core::plan::{self, Context, Source};
use stackdrop_core::trigger::{parse_trigger, Action};
use stackdrop_core::{validate, Problem};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn invalid(problems: &[Problem]) -> Failure {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    Failure::new(Kind::InvalidBundle, lines.join("\n"))
}

pub async fn handle(clients: &Clients, event: LambdaEvent<Value>) -> Result<Deployment, Failure> {
    let trigger = parse_trigger(&event.payload).map_err(|e| Failure::new(Kind::InvalidInput, e))?;
    if trigger.action != Action::Deploy {
        return Err(Failure::new(
            Kind::InvalidInput,
            "this is the deploy state machine; teardown events go to the teardown machine",
        ));
    }
    let head = s3::head(
        &clients.s3,
        &trigger.bucket,
        &trigger.key,
        trigger.alternate_key.as_deref(),
        trigger.version_id.as_deref(),
    )
    .await?;
    let source = Source {
        bucket: trigger.bucket.clone(),
        key: head.key.clone(),
        version_id: head.version_id.clone(),
    };
    let name = source.uri();
    tracing::info!(bundle = %name, version = ?source.version_id, size = head.size, "validating");

    // The zip reader is synchronous: run it on a blocking thread that drives ranged GETs.
    let object = Arc::new(S3Object {
        client: clients.s3.clone(),
        bucket: source.bucket.clone(),
        key: source.key.clone(),
        version_id: source.version_id.clone(),
        size: head.size,
        handle: tokio::runtime::Handle::current(),
        requests: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let reader = object.clone();
    let reader_name = name.clone();
    let valid = tokio::task::spawn_blocking(move || {
        validate::validate_source(reader.as_ref(), &reader_name)
    })
    .await
    .map_err(|e| Failure::new(Kind::AwsError, format!("bundle reader stopped: {e}")))?;
    tracing::info!(
        requests = object.requests.load(Ordering::Relaxed),
        bytes = object.bytes.load(Ordering::Relaxed),
        "bundle read"
    );
    let valid = valid.map_err(|p| invalid(&p))?;

    let ctx = Context {
        region: clients.settings.region.clone(),
        partition: stackdrop_adapters::partition_of(&event.context.invoked_function_arn),
        account: stackdrop_adapters::account_of(&event.context.invoked_function_arn),
        permissions_boundary: clients.settings.permissions_boundary.clone(),
        log_retention_days: clients.settings.log_retention_days,
    };
    let mut plan =
        plan::plan(&valid.config, &valid.root, &source, &ctx).map_err(|p| invalid(&p))?;

    // Images: resolve `resolve:ssm:`, check the AMI exists and fits the instance type.
    let mut problems = Vec::new();
    for (instance, planned) in valid.config.instances.iter().zip(plan.instances.iter_mut()) {
        let at = format!("{}/image", instance.pointer());
        let ami = match ec2::resolve_image(&clients.ssm, &planned.image).await? {
            Ok(ami) => ami,
            Err(why) => {
                problems.push(Problem::new("stack.json", at, why));
                continue;
            }
        };
        match ec2::describe_image(&clients.ec2, &ami).await? {
            None => problems.push(Problem::new(
                "stack.json",
                at,
                format!(
                    "{ami} does not exist in {} (or is not shared with this account)",
                    ctx.region
                ),
            )),
            Some(image) => {
                if let Err(p) =
                    validate::check_image_architecture(instance, &ami, &image.architecture)
                {
                    problems.push(p);
                }
                planned.launch_template.image_id = image.id.clone();
                if let Some(root) = image.root_device_name {
                    planned.launch_template.root_volume.device_name = root;
                }
                planned.launch_template.root_volume.size_gib = image.root_size_gib;
            }
        }
    }
    if !problems.is_empty() {
        return Err(invalid(&problems));
    }

    let id = stack_id(&plan.app, &plan.stack);
    let store = clients.store();
    let started_at = now_ms();
    let mut decision = Decision::Deploy;
    if let Some(version) = &source.version_id {
        if s3::newer_version_exists(&clients.s3, &source.bucket, &source.key, version).await? {
            decision = Decision::Superseded;
        }
    }
    let source_text = format!(
        "{}{}",
        source.uri(),
        source
            .version_id
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default()
    );
    if decision == Decision::Deploy {
        store
            .start_deployment(&id, &plan.deployment, &source_text, started_at)
            .await?;
        for i in &plan.instances {
            let json = serde_json::to_string(i)
                .map_err(|e| Failure::new(Kind::AwsError, e.to_string()))?;
            store
                .put_plan(&id, &plan.deployment, &i.name, &json)
                .await?;
        }
        decision = match store
            .claim(
                &id,
                &plan.deployment,
                &source_text,
                head.last_modified_ms,
                started_at,
            )
            .await?
        {
            Claim::Claimed { .. } => Decision::Deploy,
            Claim::AlreadyCurrent => Decision::Noop,
            Claim::Superseded { .. } => Decision::Superseded,
        };
        let detail = match decision {
            Decision::Deploy => format!("{} instance(s) planned", plan.instances.len()),
            Decision::Noop => "already the current version: nothing to do".to_string(),
            Decision::Superseded => "a newer version holds the stack".to_string(),
        };
        let status = match decision {
            Decision::Deploy => "provisioning",
            Decision::Noop => "unchanged",
            Decision::Superseded => "superseded",
        };
        store
            .record_step(&id, &plan.deployment, status, "validate", &detail, now_ms())
            .await?;
    }
    tracing::info!(stack = %id, deployment = %plan.deployment, ?decision, "validated");
    Ok(Deployment {
        stack_id: id,
        app: plan.app.clone(),
        stack: plan.stack.clone(),
        deployment: plan.deployment.clone(),
        source,
        decision,
        instances: plan.instances.iter().map(|i| i.name.clone()).collect(),
        started_at,
        deadline: now_s() + clients.settings.deadline_seconds,
    })
}
