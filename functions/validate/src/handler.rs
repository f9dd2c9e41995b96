//! Validate: what does the request ask for? A deploy reads the bundle from S3 by ranged GETs,
//! checks it, resolves and checks each image, plans, and records the version as the stack's
//! desired one ([`crate::desire`]); a teardown finds the stack the key deployed
//! ([`crate::teardown`]). Output: the small [`Deployment`], for the claim step.

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use stackdrop_adapters::s3::{self, S3Object};
use stackdrop_adapters::store::Change;
use stackdrop_adapters::{ec2, events, now_ms, now_s, Clients, Failure, Kind};
use stackdrop_core::lifecycle::{Desire, OpAction};
use stackdrop_core::pipeline::{stack_id, Decision, Deployment, Outcome, Summary};
use stackdrop_core::plan::{self, Context, Plan, Source};
use stackdrop_core::trigger::{parse_trigger, Action, Trigger};
use stackdrop_core::validate::{self, Rejected, ValidBundle};
use stackdrop_core::Problem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub async fn handle(clients: &Clients, event: LambdaEvent<Value>) -> Result<Deployment, Failure> {
    let trigger = parse_trigger(&event.payload).map_err(|e| Failure::new(Kind::InvalidInput, e))?;
    let arn = &event.context.invoked_function_arn;
    match trigger.action {
        Action::Teardown | Action::Start | Action::Stop | Action::Reconcile => {
            crate::teardown::resolve(clients, trigger).await
        }
        Action::Deploy => deploy(clients, arn, trigger, None).await,
        Action::Refresh => refresh(clients, arn, trigger).await,
    }
}

/// Refresh: the current version deployed again with its `resolve:ssm:` images resolved now. A
/// new AMI makes a new deployment (replaced like an update: the old instances go once the new
/// ones run); the same AMIs give the current deployment's id, and nothing happens.
async fn refresh(
    clients: &Clients,
    function_arn: &str,
    trigger: Trigger,
) -> Result<Deployment, Failure> {
    let (key, current, version) = match crate::teardown::current_version(clients, &trigger).await? {
        Ok(found) => found,
        Err(nothing) => return Ok(nothing),
    };
    let again = Trigger {
        key,
        alternate_key: None,
        version_id: version,
        action: Action::Deploy,
        ..trigger
    };
    deploy(clients, function_arn, again, Some(current)).await
}

/// `refreshing`: the current deployment, when this re-deploys it to pick up new images.
async fn deploy(
    clients: &Clients,
    function_arn: &str,
    trigger: Trigger,
    refreshing: Option<String>,
) -> Result<Deployment, Failure> {
    let head = s3::head(
        clients.s3(),
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
    let ctx = Context {
        region: clients.settings.region.clone(),
        partition: stackdrop_adapters::partition_of(function_arn),
        account: stackdrop_adapters::account_of(function_arn),
        permissions_boundary: clients.settings.permissions_boundary.clone(),
        log_retention_days: clients.settings.log_retention_days,
        resolved_images: Default::default(),
    };
    let plan = match check(clients, &source, head.size, &ctx).await? {
        Ok(plan) => plan,
        Err(rejected) => return Err(reject(clients, &source, rejected).await),
    };
    let id = stack_id(&plan.app, &plan.stack);
    let mut out = Deployment::requested(
        &id,
        plan.deployment.clone(),
        OpAction::Deploy,
        source.clone(),
        plan.instances.iter().map(|i| i.name.clone()).collect(),
        now_ms(),
        now_s() + clients.settings.deadline_seconds,
    );
    if let Some(current) = refreshing {
        if current == plan.deployment {
            out.decision = Decision::Noop;
            out.reason = Some(format!(
                "every image of {current} is still the newest: nothing to refresh"
            ));
            return Ok(out);
        }
        out.reason = Some(format!("refresh: {current} runs older images"));
    }
    // A newer version is in the bucket already: this event arrived late. Record nothing.
    if let Some(version) = &source.version_id {
        let entries = s3::versions(clients.s3(), &source.bucket, &source.key).await?;
        if let Some(latest) = s3_latest_other(&entries, version) {
            out.decision = Decision::Superseded;
            out.reason = Some(format!("version {latest} of the bundle is newer"));
            return Ok(out);
        }
    }
    record(clients, &plan, &source, &out).await?;
    match crate::desire::record(clients, &id, &out.op()).await? {
        Desire::Superseded { by } => {
            out.decision = Decision::Superseded;
            out.reason = Some(format!("a newer request ({by}) holds the stack"));
        }
        Desire::Record | Desire::Keep => {}
    }
    tracing::info!(stack = %id, deployment = %plan.deployment, decision = ?out.decision, "validated");
    Ok(out)
}

fn s3_latest_other(
    entries: &[stackdrop_core::lifecycle::VersionEntry],
    mine: &str,
) -> Option<String> {
    stackdrop_core::lifecycle::latest(entries)
        .filter(|l| l.version_id != mine)
        .map(|l| l.version_id.clone())
}

/// The deployment's record, its plans, and which stack the key deploys.
async fn record(
    clients: &Clients,
    plan: &Plan,
    source: &Source,
    d: &Deployment,
) -> Result<(), Failure> {
    let store = clients.store();
    store
        .start_deployment(
            &d.stack_id,
            &d.deployment,
            &source_text(source),
            &d.instances,
            d.started_at,
        )
        .await?;
    for i in &plan.instances {
        let json =
            serde_json::to_string(i).map_err(|e| Failure::new(Kind::AwsError, e.to_string()))?;
        store
            .put_plan(&d.stack_id, &d.deployment, &i.name, &json)
            .await?;
    }
    store
        .put_source(&source.bucket, &source.key, &d.stack_id)
        .await?;
    let detail = format!("{} instance(s) planned", plan.instances.len());
    store
        .record_step(
            &d.stack_id,
            &d.deployment,
            "validated",
            "validate",
            &detail,
            now_ms(),
        )
        .await
}

pub fn source_text(source: &Source) -> String {
    format!(
        "{}{}",
        source.uri(),
        source
            .version_id
            .as_deref()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default()
    )
}

/// Reads and checks the bundle and its images; the plan, or every problem found. Images are
/// resolved first: the AMIs `resolve:ssm:` images resolve to are part of the deployment id.
async fn check(
    clients: &Clients,
    source: &Source,
    size: u64,
    ctx: &Context,
) -> Result<Result<Plan, Rejected>, Failure> {
    let valid = match read(clients, source, size).await? {
        Ok(v) => v,
        Err(r) => return Ok(Err(r)),
    };
    let (images, mut problems) = resolve_images(clients, &valid, &ctx.region).await?;
    let mut ctx = ctx.clone();
    ctx.resolved_images = valid
        .config
        .instances
        .iter()
        .zip(&images)
        .filter(|(i, _)| i.image.as_image_id().starts_with(ec2::SSM_PREFIX))
        .filter_map(|(i, image)| image.as_ref().map(|im| (i.name.clone(), im.id.clone())))
        .collect();
    let planned = plan::plan(&valid, source, &ctx);
    let mut plan = match planned {
        Ok(p) if problems.is_empty() => p,
        other => {
            problems.extend(other.err().unwrap_or_default());
            return Ok(Err(Rejected {
                problems,
                names: Some((valid.config.app.clone(), valid.config.stack.clone())),
            }));
        }
    };
    for (planned, image) in plan.instances.iter_mut().zip(images.into_iter().flatten()) {
        planned.launch_template.image_id = image.id.clone();
        if let Some(root) = image.root_device_name {
            planned.launch_template.root_volume.device_name = root;
        }
        planned.launch_template.root_volume.size_gib = image.root_size_gib;
    }
    place(clients, &mut plan).await?;
    Ok(Ok(plan))
}

/// Each instance's VPC and subnet, from the installation's network; a network that cannot
/// hold them fails the deploy here, before anything is created.
async fn place(clients: &Clients, plan: &mut Plan) -> Result<(), Failure> {
    let wanted = &clients.settings.network;
    let (vpcs, subnets) = ec2::describe_network(clients.ec2(), wanted).await?;
    let network =
        stackdrop_core::network::choose(wanted, &clients.settings.region, &vpcs, &subnets)
            .map_err(|why| Failure::new(Kind::InvalidNetwork, why))?;
    for instance in &mut plan.instances {
        instance.placement = Some(network.placement(&instance.name));
    }
    Ok(())
}

/// The zip reader is synchronous: it runs on a blocking thread that drives ranged GETs.
async fn read(
    clients: &Clients,
    source: &Source,
    size: u64,
) -> Result<Result<ValidBundle, Rejected>, Failure> {
    let object = Arc::new(S3Object {
        client: clients.s3().clone(),
        bucket: source.bucket.clone(),
        key: source.key.clone(),
        version_id: source.version_id.clone(),
        size,
        handle: tokio::runtime::Handle::current(),
        requests: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failure: Default::default(),
    });
    let reader = object.clone();
    let name = source.uri();
    tracing::info!(bundle = %name, version = ?source.version_id, size, "validating");
    let valid =
        tokio::task::spawn_blocking(move || validate::validate_source(reader.as_ref(), &name))
            .await
            .map_err(|e| Failure::new(Kind::AwsError, format!("bundle reader stopped: {e}")))?;
    tracing::info!(
        requests = object.requests.load(Ordering::Relaxed),
        bytes = object.bytes.load(Ordering::Relaxed),
        "bundle read"
    );
    // S3 failed a read: the step fails with S3's error (retried when transient), and nothing
    // is recorded against the bundle.
    if let Some(f) = object.read_failure() {
        return Err(f);
    }
    Ok(valid)
}

/// Resolves `resolve:ssm:` images, checks each AMI exists and fits the instance type: each
/// instance's image (None where it has a problem), and the problems.
async fn resolve_images(
    clients: &Clients,
    valid: &ValidBundle,
    region: &str,
) -> Result<(Vec<Option<ec2::Image>>, Vec<Problem>), Failure> {
    let mut problems = Vec::new();
    let mut images = Vec::new();
    for instance in &valid.config.instances {
        let at = format!("{}/image", instance.pointer());
        let ami = match ec2::resolve_image(clients.ssm(), &instance.image.as_image_id()).await? {
            Ok(ami) => ami,
            Err(why) => {
                problems.push(Problem::new("stack.json", at, why));
                images.push(None);
                continue;
            }
        };
        let Some(image) = ec2::describe_image(clients.ec2(), &ami).await? else {
            let why =
                format!("{ami} does not exist in {region} (or is not shared with this account)");
            problems.push(Problem::new("stack.json", at, why));
            images.push(None);
            continue;
        };
        if let Err(p) = validate::check_image_architecture(instance, &ami, &image.architecture) {
            problems.push(p);
        }
        images.push(Some(image));
    }
    Ok((images, problems))
}

/// A rejected bundle: recorded in the stack's history (when it names its stack) and published,
/// so `stackdrop status` and alerts see it; nothing is created in AWS.
async fn reject(clients: &Clients, source: &Source, rejected: Rejected) -> Failure {
    let lines: Vec<String> = rejected.problems.iter().map(|p| p.to_string()).collect();
    let failure = Failure::new(Kind::InvalidBundle, lines.join("\n"));
    let stack = rejected.names.as_ref().map(|(a, s)| stack_id(a, s));
    let deployment = stackdrop_core::naming::deployment_id(
        &source.bucket,
        &source.key,
        source.version_id.as_deref(),
    );
    if let Some(id) = &stack {
        let store = clients.store();
        let text = format!("InvalidBundle: {}", failure.message);
        let recorded = async {
            store
                .start_deployment(id, &deployment, &source_text(source), &[], now_ms())
                .await?;
            store
                .finish_deployment(id, &deployment, "invalid", Some(&text), now_ms())
                .await?;
            store
                .record_step(id, &deployment, "invalid", "validate", &text, now_ms())
                .await?;
            // The stack's record says so too (what `stackdrop status` shows first); what runs,
            // what is desired and who holds the stack stay as they are.
            store
                .update_stack(id, now_ms(), |state| {
                    let mut next = state.clone();
                    next.last_error = Some(text.clone());
                    next.status.get_or_insert_with(|| "invalid".into());
                    Ok(Change::Write(next, ()))
                })
                .await
        };
        if let Err(e) = recorded.await {
            tracing::warn!(error = %e, "could not record the rejected bundle");
        }
    }
    let summary = Summary {
        stack: stack.unwrap_or_default(),
        action: OpAction::Deploy,
        deployment,
        source: source.uri(),
        version: source.version_id.clone(),
        status: Outcome::Failed,
        instances: vec![],
        error: Some(failure.message.clone()),
        error_name: Some("InvalidBundle".into()),
        cause: None,
        reason: None,
        removed: vec![],
        changed: vec![],
        warning: None,
        attempt: 0,
        duration_seconds: 0.0,
    };
    if let Err(e) = events::publish(clients.events(), &clients.settings.event_bus, &summary).await {
        tracing::warn!(error = %e, "could not publish the rejection");
    }
    failure
}
