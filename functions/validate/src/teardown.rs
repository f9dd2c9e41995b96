//! A teardown request (`aws s3 rm`, a delete marker, or `{"action":"teardown"}`): find the stack
//! the key deployed and record the teardown as its desired operation, ordered like deploys by
//! the key's version list (the delete marker is the newest entry). Start and stop
//! (`{"action":"start"|"stop"}`, from a schedule or the console) find the stack the same way but
//! are no request for a version: they act on the current one.

use stackdrop_adapters::{now_ms, now_s, s3, Clients, Failure};
use stackdrop_core::lifecycle::{self, Desire, OpAction};
use stackdrop_core::naming;
use stackdrop_core::pipeline::{Decision, Deployment};
use stackdrop_core::plan::Source;
use stackdrop_core::trigger::{Action, Trigger};

pub async fn resolve(clients: &Clients, trigger: Trigger) -> Result<Deployment, Failure> {
    if let Some(verb) = match trigger.action {
        Action::Start => Some(OpAction::Start),
        Action::Stop => Some(OpAction::Stop),
        _ => None,
    } {
        return control(clients, &trigger, verb).await;
    }
    let (stack, key) = find_stack(clients, &trigger).await?;
    let entries = s3::versions(&clients.s3, &trigger.bucket, &key).await?;
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
    let id = format!(
        "{word}-{}",
        &naming::deployment_id(&trigger.bucket, &key, None)[2..]
    );
    let source = Source {
        bucket: trigger.bucket.clone(),
        key,
        version_id: None,
    };
    let Some(out) = request(clients, stack.as_deref(), id, verb, source) else {
        return Ok(nothing_deployed(trigger, verb));
    };
    record_request(clients, &out, word).await?;
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
    out.reason = Some(format!("no stack was deployed from {}", out.source.uri()));
    out
}
