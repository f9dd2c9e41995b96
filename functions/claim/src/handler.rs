//! Claim: take the stack's lease for this execution, or say why not: a duplicate of the running
//! execution yields, another operation makes this one wait, a newer request supersedes it, a
//! version that is current already is a no-op. The decision is the core's
//! [`lifecycle::claim`]; the write is conditional on the record read.

use lambda_runtime::LambdaEvent;
use stackdrop_adapters::store::{Attempt, Change};
use stackdrop_adapters::{now_ms, now_s, Clients, Failure, Kind};
use stackdrop_core::lifecycle::{self, Claim, Lease, OpAction, LEASE_SECONDS, MAX_WAIT_SECONDS};
use stackdrop_core::pipeline::{ClaimInput, Decision, Deployment};

pub async fn handle(
    clients: &Clients,
    event: LambdaEvent<ClaimInput>,
) -> Result<Deployment, Failure> {
    let ClaimInput {
        operation: mut d,
        execution: owner,
    } = event.payload;
    let op = d.op();
    let now = now_s();
    let claim = clients
        .store()
        .update_stack(&d.stack_id, now_ms(), |state| {
            let c = lifecycle::claim(state, &owner, &op, now);
            if lifecycle::releases_on_yield(state, &owner, &op, &c) {
                let mut next = state.clone();
                next.lease = None;
                return Ok(Change::Write(next, c));
            }
            let Claim::Take { attempt } = c else {
                return Ok(Change::Keep(c));
            };
            let mut next = state.clone();
            next.lease = Some(Lease {
                owner: owner.clone(),
                op: op.id.clone(),
                attempt,
                expires: now + LEASE_SECONDS,
                closing: false,
            });
            next.attempt = attempt;
            next.status = Some(match op.action {
                OpAction::Deploy => "deploying".into(),
                OpAction::Teardown => "tearing-down".into(),
                OpAction::Start => "starting".into(),
                OpAction::Stop => "stopping".into(),
                OpAction::Reconcile => "reconciling".into(),
            });
            Ok(Change::Write(next, c))
        })
        .await?;
    tracing::info!(stack = %d.stack_id, op = %d.deployment, ?claim, "claim");
    d.wait = 0;
    match claim {
        Claim::Take { attempt } | Claim::Held { attempt } => {
            d.owner = owner;
            d.attempt = attempt;
            d.decision = match d.action {
                OpAction::Deploy => Decision::Deploy,
                OpAction::Teardown => Decision::Teardown,
                OpAction::Start => Decision::Start,
                OpAction::Stop => Decision::Stop,
                OpAction::Reconcile => Decision::Reconcile,
            };
            let detail = format!("attempt {attempt} holds the stack ({})", d.owner);
            let store = clients.store();
            let (id, op) = (&d.stack_id, &d.deployment);
            store
                .record_step(id, op, "claimed", "claim", &detail, now_ms())
                .await?;
            let a = Attempt {
                attempt,
                execution: d.owner.clone(),
                at: now_ms(),
            };
            store.record_attempt(id, op, &a).await?;
        }
        Claim::Duplicate { of } => {
            d.decision = Decision::Duplicate;
            d.reason = Some(format!(
                "execution {of} is running this same {}",
                what(d.action)
            ));
        }
        Claim::Busy { holder, op, until } => {
            if d.waited >= MAX_WAIT_SECONDS {
                return Err(Failure::new(
                    Kind::StackBusy,
                    format!("{} waited {}s for {op} ({holder}) to release the stack; start a new execution to try again", d.deployment, d.waited),
                ));
            }
            d.decision = Decision::Wait;
            d.wait = lifecycle::busy_wait(d.waited, until, now);
            d.waited += d.wait;
            d.reason = Some(format!("waiting for {op} ({holder}) to finish"));
        }
        Claim::Superseded { by } => {
            d.decision = Decision::Superseded;
            d.reason = Some(format!("a newer request ({by}) holds the stack"));
        }
        Claim::Noop => {
            d.decision = Decision::Noop;
            d.reason = Some(match d.action {
                OpAction::Deploy => "this version is the current one already".into(),
                OpAction::Teardown => "the stack is deleted already".into(),
                OpAction::Start | OpAction::Stop => "the stack has no current version".into(),
                OpAction::Reconcile => {
                    "the version it was asked for is no longer current (or the stack has none)"
                        .into()
                }
            });
        }
    }
    Ok(d)
}

fn what(action: OpAction) -> &'static str {
    match action {
        OpAction::Deploy => "deployment",
        OpAction::Teardown => "teardown",
        OpAction::Start => "start",
        OpAction::Stop => "stop",
        OpAction::Reconcile => "reconcile",
    }
}
