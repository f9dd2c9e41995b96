//! A teardown request (`aws s3 rm`, a delete marker, or `{"action":"teardown"}`): find the stack
//! the key deployed and record the teardown as its desired operation, ordered like deploys by
//! the key's version list (the delete marker is the newest entry). Start and stop
//! (`{"action":"start"|"stop"}`, from a schedule or the console) find the stack the same way but
//! are no request for a version: they act on the current one.

use stackdrop_adapters::{ec2, now_ms, now_s, s3, Clients, Failure};
use stackdrop_core::lifecycle::{self, Desire, OpAction};
use stackdrop_core::naming;
use stackdrop_core::pipeline::{Decision, Deployment};
use stackdrop_core::plan::Source;
use stackdrop_core::trigger::{Action, Trigger};

pub async fn resolve(clients: &Clients, trigger: Trigger) -> Result<Deployment, Failure> {
    if trigger.action == Action::Reconcile {
        return reconcile(clients, &trigger).await;
    }
    if let Some(verb) = match trigger.action {
        Action::Start => Some(OpAction::Start),
        Action::Stop => Some(OpAction::Stop),
        _ => None,
    } {
        return control(clients, &trigger, verb).await;
    }
    let (stack, key) = find_stack(clients, &trigger).await?;
    let entries = s3::versions(clients.s3(), &trigger.bucket, &key).await?;
    let latest = lifecycle::latest(&entries);
    // S3 also reports removing an old version, or a delete marker (which restores the object):
    // the bundle still exists then, so the stack stays. A person asking tears it down anyway.
    let still_there = latest
        .filter(|e| !e.delete_marker)
        .map(|e| e.version_id.clone());
    // A plain request names no version: the key's latest entry (often its delete marker).
    let version = trigger
        .version_id
        .clone()
        .or_else(|| latest.map(|e| e.version_id.clone()));
    let id = naming::teardown_id(&trigger.bucket, &key, version.as_deref());
    let source = Source {
        bucket: trigger.bucket.clone(),
        key,
        version_id: version,
    };
    let Some(mut out) = request(clients, stack.as_deref(), id, OpAction::Teardown, source) else {
        return Ok(nothing_deployed(&trigger, OpAction::Teardown));
    };
    if let (true, Some(current)) = (trigger.from_event, still_there) {
        out.decision = Decision::Noop;
        out.reason = Some(format!("{} still has a current version ({current}): an old version or a delete marker was removed, the stack stays", out.source.uri()));
        return Ok(out);
    }
    record_request(clients, &out, "teardown").await?;
    if let Desire::Superseded { by } =
        crate::desire::record(clients, &out.stack_id, &out.op()).await?
    {
        out.decision = Decision::Superseded;
        out.reason = Some(format!("a newer request ({by}) holds the stack"));
    }
    tracing::info!(stack = %out.stack_id, teardown = %out.deployment, decision = ?out.decision, "teardown requested");
    Ok(out)
}

/// Start or stop: the stack the key deployed, and an operation id per key and verb (so two
/// deliveries of one scheduled run meet at the claim, and one yields).
async fn control(
    clients: &Clients,
    trigger: &Trigger,
    verb: OpAction,
) -> Result<Deployment, Failure> {
    let (stack, key) = find_stack(clients, trigger).await?;
    let word = if verb == OpAction::Start {
        "start"
    } else {
        "stop"
    };
    // One id per key, verb and instance: a scheduled run delivered twice meets itself.
    let scope = match &trigger.instance {
        Some(i) => format!("{key}\0{i}"),
        None => key.clone(),
    };
    let id = format!(
        "{word}-{}",
        &naming::deployment_id(&trigger.bucket, &scope, None)[2..]
    );
    let source = Source {
        bucket: trigger.bucket.clone(),
        key,
        version_id: None,
    };
    let Some(mut out) = request(clients, stack.as_deref(), id, verb, source) else {
        return Ok(nothing_deployed(trigger, verb));
    };
    out.instances = trigger.instance.iter().cloned().collect();
    record_request(clients, &out, word).await?;
    Ok(out)
}

/// Reconcile: the current deployment's instances that EC2 no longer has running (or stopped),
/// to relaunch under that deployment's own resources. Nothing missing: a no-op that says so.
async fn reconcile(clients: &Clients, trigger: &Trigger) -> Result<Deployment, Failure> {
    let (stack, key) = find_stack(clients, trigger).await?;
    let store = clients.store();
    let state = match &stack {
        Some(id) => store.stack(id).await?.unwrap_or_default(),
        None => Default::default(),
    };
    let (Some(stack), Some(current)) = (stack, state.current.clone()) else {
        return Ok(nothing_deployed(trigger, OpAction::Reconcile));
    };
    let names = store
        .deployment(&stack, &current)
        .await?
        .map(|r| r.names)
        .unwrap_or_default();
    let (app, name) = stack.split_once('/').unwrap_or_default();
    let tags = [
        ("stackdrop:app", app),
        ("stackdrop:stack", name),
        ("stackdrop:deployment", current.as_str()),
    ];
    let found = ec2::find_instances(clients.ec2(), &tags, ec2::LIVE_STATES).await?;
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !found.iter().any(|f| f.name.as_ref() == Some(*n)))
        .cloned()
        .collect();
    let version = state
        .desired
        .as_ref()
        .filter(|d| d.id == current)
        .and_then(|d| d.version.clone());
    let source = Source {
        bucket: trigger.bucket.clone(),
        key,
        version_id: version,
    };
    let mut out = request(
        clients,
        Some(&stack),
        current.clone(),
        OpAction::Reconcile,
        source,
    )
    .unwrap_or_else(|| nothing_deployed(trigger, OpAction::Reconcile));
    if missing.is_empty() {
        out.decision = Decision::Noop;
        out.reason = Some(format!(
            "every instance of {current} is there ({})",
            names.join(", ")
        ));
        return Ok(out);
    }
    let detail = format!("reconcile: relaunching {}", missing.join(", "));
    store
        .record_step(
            &stack,
            &current,
            "reconciling",
            "validate",
            &detail,
            now_ms(),
        )
        .await?;
    tracing::info!(%stack, deployment = %current, ?missing, "reconcile requested");
    out.instances = missing;
    Ok(out)
}

/// The request's record in the stack's history (once per operation id; later ones add steps).
async fn record_request(clients: &Clients, out: &Deployment, step: &str) -> Result<(), Failure> {
    let store = clients.store();
    let source = crate::handler::source_text(&out.source);
    store
        .start_deployment(&out.stack_id, &out.deployment, &source, &[], out.started_at)
        .await?;
    let detail = format!("{step} requested for {source}");
    store
        .record_step(
            &out.stack_id,
            &out.deployment,
            "requested",
            step,
            &detail,
            now_ms(),
        )
        .await
}

/// The stack the trigger's key deployed (trying the other spelling of the key too), and the
/// key as it was found.
async fn find_stack(
    clients: &Clients,
    trigger: &Trigger,
) -> Result<(Option<String>, String), Failure> {
    let store = clients.store();
    for key in std::iter::once(&trigger.key).chain(&trigger.alternate_key) {
        if let Some(stack) = store.source_stack(&trigger.bucket, key).await? {
            return Ok((Some(stack), key.clone()));
        }
    }
    Ok((None, trigger.key.clone()))
}

/// The request about the stack `stack` (None: no stack was deployed from the key).
fn request(
    clients: &Clients,
    stack: Option<&str>,
    id: String,
    action: OpAction,
    source: Source,
) -> Option<Deployment> {
    let deadline = now_s() + clients.settings.deadline_seconds;
    Some(Deployment::requested(
        stack?,
        id,
        action,
        source,
        vec![],
        now_ms(),
        deadline,
    ))
}

/// A request about a key no stack was deployed from: nothing to do, and why.
fn nothing_deployed(trigger: &Trigger, action: OpAction) -> Deployment {
    let source = Source {
        bucket: trigger.bucket.clone(),
        key: trigger.key.clone(),
        version_id: trigger.version_id.clone(),
    };
    let id = naming::teardown_id(&source.bucket, &source.key, source.version_id.as_deref());
    let mut out = Deployment::requested("", id, action, source, vec![], now_ms(), now_s());
    out.decision = Decision::Noop;
    out.reason = Some(format!(
        "no stack is deployed from {} (none was, or it has no current version)",
        out.source.uri()
    ));
    out
}

/// Refresh: the stack the key deployed, its current deployment and that deployment's bundle
/// version (None when nothing is served, or a newer request than the current one exists).
pub async fn current_version(
    clients: &Clients,
    trigger: &Trigger,
) -> Result<Result<(String, String, Option<String>), Deployment>, Failure> {
    let (stack, key) = find_stack(clients, trigger).await?;
    let state = match &stack {
        Some(id) => clients.store().stack(id).await?.unwrap_or_default(),
        None => Default::default(),
    };
    let (Some(_), Some(current)) = (&stack, state.current.clone()) else {
        return Ok(Err(nothing_deployed(trigger, OpAction::Deploy)));
    };
    match &state.desired {
        Some(d) if d.id == current => Ok(Ok((key, current, d.version.clone()))),
        other => {
            let mut out = nothing_deployed(trigger, OpAction::Deploy);
            out.decision = Decision::Superseded;
            out.reason = Some(format!(
                "a newer request ({}) than the current deployment {current} is the stack's desired one: refresh acts on a stack whose newest request is current",
                other.as_ref().map(|d| d.id.as_str()).unwrap_or("none")
            ));
            Ok(Err(out))
        }
    }
}
