//! The concurrency model, as pure decisions over plain data (the adapters read the state store
//! and S3, call these, and do what they say).
//!
//! - **One operation at a time per stack.** An operation (deploy a bundle version, tear the
//!   stack down) runs only while its execution holds the stack's *lease*: an owner (the
//!   execution), the operation, an attempt number and an expiry. Every step renews the lease
//!   before it writes anything (the fence); a crashed owner loses it when it expires.
//! - **The newest request wins, in S3's own order.** `desired` is the newest operation asked
//!   for: a request replaces it only when its bundle version is not older in the key's version
//!   list ([`Order`]). An older request is `superseded` at once; an operation whose request was
//!   replaced while it ran steps aside at its next step and removes only what it created.
//! - **A deployment owns its resources.** Role, instance profile, security group and launch
//!   template are named and tagged per deployment: a failed, superseded or duplicate deployment
//!   never changes what the live version runs with, and rolling it back deletes only its own.
//! - **Attempts are fresh.** Each claim of an operation is a new attempt (a new ClientToken), so
//!   a console "New execution" after a failure really retries.

use serde::{Deserialize, Serialize};

/// How long a lease lasts after its last renewal. Longer than any gap between two steps of an
/// execution (the longest Wait is 30 s; a step's retries back off for about two minutes).
pub const LEASE_SECONDS: u64 = 600;
/// How long a deploy waits for another operation on its stack before it gives up.
pub const MAX_WAIT_SECONDS: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpAction {
    Deploy,
    Teardown,
    /// Start the current version's instances (a schedule, the console).
    Start,
    /// Stop them.
    Stop,
    /// Relaunch the current version's instances that were terminated outside stackdrop.
    Reconcile,
}

impl OpAction {
    /// Start, stop and reconcile act on the current version: they hold the stack while they
    /// run but are no request for a version (they never become `desired`).
    pub fn is_control(self) -> bool {
        matches!(self, OpAction::Start | OpAction::Stop | OpAction::Reconcile)
    }
}

/// An operation asked for: deploy a bundle version, or tear the stack down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Op {
    /// The deployment id (`d-...`) or teardown id (`t-...`).
    pub id: String,
    pub action: OpAction,
    /// The bundle's bucket and key: versions of one key are ordered by S3.
    pub source: String,
    /// The object (or delete marker) version the request is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The deployment a reconcile acts on (the current one when it was asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Who runs the stack's current operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The execution (its name) that holds it.
    pub owner: String,
    /// The operation it runs.
    pub op: String,
    pub attempt: u64,
    /// Epoch seconds.
    pub expires: u64,
    /// Set when the attempt is being rolled back: no step may launch anything more.
    #[serde(default)]
    pub closing: bool,
}

/// An instance launched under the lease, recorded before anything else can list the stack's
/// instances (EC2's listing is eventually consistent; this record is not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Launched {
    pub deployment: String,
    pub name: String,
    /// Epoch milliseconds of the launch.
    #[serde(default)]
    pub at: u64,
}

/// The stack's record, as the decisions need it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackState {
    /// Bumped by every write: writes are conditional on the revision they read.
    pub rev: u64,
    pub desired: Option<Op>,
    /// The deployment whose instances are live; None before the first deploy or after teardown.
    pub current: Option<String>,
    pub lease: Option<Lease>,
    /// The last attempt number handed out.
    pub attempt: u64,
    /// `deploying`, `running`, `failed`, `tearing-down`, `deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The current deployment's bundle, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Instance id -> what launched it, until cleanup sees it terminated.
    #[serde(default)]
    pub instances: std::collections::BTreeMap<String, Launched>,
    /// Epoch milliseconds of the last write.
    #[serde(default)]
    pub updated_at: u64,
}

/// Where one version stands against another, in S3's order of the key's versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Newer,
    Same,
    Older,
}

/// One entry of a key's version list: an object version or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub version_id: String,
    pub delete_marker: bool,
    pub latest: bool,
    /// Its position among entries of its own kind, newest first (S3's own order).
    pub position: usize,
    /// Epoch milliseconds (one-second resolution in S3: only a last resort).
    pub last_modified_ms: i64,
}

/// Where version `a` stands against version `b` of the same key, in S3's order: within
/// versions (or within delete markers) by their listed position; between the two kinds, the
/// latest one wins, then the modification time. None when S3 cannot tell (not listed, or a
/// version and a marker of the same second that are neither latest).
pub fn order(entries: &[VersionEntry], a: &str, b: &str) -> Option<Order> {
    if a == b {
        return Some(Order::Same);
    }
    let find = |v: &str| entries.iter().find(|e| e.version_id == v);
    let (x, y) = (find(a)?, find(b)?);
    let newer = |yes: bool| Some(if yes { Order::Newer } else { Order::Older });
    if x.delete_marker == y.delete_marker {
        return newer(x.position < y.position);
    }
    if x.latest || y.latest {
        return newer(x.latest);
    }
    match x.last_modified_ms.cmp(&y.last_modified_ms) {
        std::cmp::Ordering::Equal => None,
        o => newer(o == std::cmp::Ordering::Greater),
    }
}

/// The key's latest entry (a version or a delete marker).
pub fn latest(entries: &[VersionEntry]) -> Option<&VersionEntry> {
    entries.iter().find(|e| e.latest)
}

/// What to do with a request, given the stack's desired operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desire {
    /// Write it as the desired operation (conditional on the revision read).
    Record,
    /// It is the desired operation already (a duplicate delivery, a re-run).
    Keep,
    /// A newer request holds the stack.
    Superseded { by: String },
}

/// `order` places the request's version against the desired one's (same key); for another key
/// or an unknown version, the later request wins. At the same version, a different action asked
/// later wins (a teardown of the latest version, then a re-deploy of it).
pub fn desire(state: &StackState, mine: &Op, order: Option<Order>) -> Desire {
    let Some(desired) = &state.desired else {
        return Desire::Record;
    };
    if desired.id == mine.id {
        return Desire::Keep;
    }
    match order {
        Some(Order::Older) => Desire::Superseded {
            by: desired.id.clone(),
        },
        _ => Desire::Record,
    }
}

/// What a claim decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "decision")]
pub enum Claim {
    /// Take the lease as a new attempt.
    Take { attempt: u64 },
    /// This execution holds it already (the claim step ran twice).
    Held { attempt: u64 },
    /// Another execution runs this same operation: this one is a duplicate and yields.
    Duplicate { of: String },
    /// Another operation holds the stack: wait and claim again.
    Busy {
        holder: String,
        op: String,
        until: u64,
    },
    /// A newer request replaced this one.
    Superseded { by: String },
    /// The operation is done already (the version is current; the stack is deleted).
    Noop,
}

/// Whether `owner` may run `op` now.
pub fn claim(state: &StackState, owner: &str, op: &Op, now: u64) -> Claim {
    if op.action.is_control() {
        let Some(current) = &state.current else {
            return Claim::Noop;
        };
        if op.action == OpAction::Reconcile {
            // It relaunches under the current deployment's fence: that deployment must still
            // be current, and still the newest request (a failed update leaves another one).
            if op.target.as_ref() != Some(current) {
                return Claim::Noop;
            }
            match &state.desired {
                Some(d) if &d.id == current => {}
                Some(d) => return Claim::Superseded { by: d.id.clone() },
                None => return Claim::Noop,
            }
        }
    } else {
        match &state.desired {
            Some(d) if d.id == op.id => {}
            Some(d) => return Claim::Superseded { by: d.id.clone() },
            None => return Claim::Superseded { by: String::new() },
        }
    }
    if let Some(lease) = &state.lease {
        if lease.owner == owner && lease.op == op.id {
            return Claim::Held {
                attempt: lease.attempt,
            };
        }
        if lease.expires > now {
            return if lease.op == op.id {
                Claim::Duplicate {
                    of: lease.owner.clone(),
                }
            } else {
                Claim::Busy {
                    holder: lease.owner.clone(),
                    op: lease.op.clone(),
                    until: lease.expires,
                }
            };
        }
    }
    let done = match op.action {
        OpAction::Deploy => state.current.as_deref() == Some(op.id.as_str()),
        OpAction::Teardown => state.current.is_none() && state.status.as_deref() == Some("deleted"),
        OpAction::Start | OpAction::Stop | OpAction::Reconcile => false,
    };
    if done {
        return Claim::Noop;
    }
    Claim::Take {
        attempt: state.attempt + 1,
    }
}

/// Whether a claim that does not run (`Superseded`, `Noop`, ...) must give the lease back: its
/// execution took it for this operation in an earlier run of the claim step (the step ran, then
/// was retried: a Lambda timeout after the write), and a newer request came in between. Nothing
/// of the attempt ran yet (the claim is its first step), so releasing is safe; keeping it would
/// hold every other operation of the stack until the lease expires.
pub fn releases_on_yield(state: &StackState, owner: &str, op: &Op, claim: &Claim) -> bool {
    !matches!(claim, Claim::Take { .. } | Claim::Held { .. })
        && state
            .lease
            .as_ref()
            .is_some_and(|l| l.owner == owner && l.op == op.id)
}

/// The seconds to wait before claiming again while the stack is busy: short at first, never
/// past the holder's expiry by much.
pub fn busy_wait(waited: u64, until: u64, now: u64) -> u64 {
    let step = match waited {
        0..=29 => 5,
        30..=119 => 10,
        _ => 30,
    };
    step.min(until.saturating_sub(now) + 1).max(1)
}

/// Whether the execution still holds the lease for this attempt (the fence every write checks).
pub fn holds(state: &StackState, owner: &str, attempt: u64) -> bool {
    state
        .lease
        .as_ref()
        .is_some_and(|l| l.owner == owner && l.attempt == attempt)
}

/// Whether the execution may still create things under its lease (not rolling back).
pub fn may_create(state: &StackState, owner: &str, attempt: u64) -> bool {
    holds(state, owner, attempt) && !state.lease.as_ref().is_some_and(|l| l.closing)
}

/// How a deployment that held the lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Every instance is up and it is still the desired operation: make it current.
    MakeCurrent,
    /// It is current already (a retried step): go on retiring the others.
    AlreadyCurrent,
    /// It failed, or a newer request replaced it: remove what it created.
    RollBack { superseded: bool },
    /// The execution no longer holds the lease: touch nothing.
    LeaseLost,
}

/// `succeeded`: the instances all came up. The check order matters: a deployment that is current
/// already is never rolled back, whatever happened since.
pub fn finish(
    state: &StackState,
    owner: &str,
    attempt: u64,
    deployment: &str,
    succeeded: bool,
) -> Finish {
    if state.current.as_deref() == Some(deployment) {
        return Finish::AlreadyCurrent;
    }
    if !holds(state, owner, attempt) {
        return Finish::LeaseLost;
    }
    let desired = state.desired.as_ref().is_some_and(|d| d.id == deployment);
    match (succeeded, desired) {
        (true, true) => Finish::MakeCurrent,
        (_, false) => Finish::RollBack { superseded: true },
        (false, true) => Finish::RollBack { superseded: false },
    }
}

/// One instance the cleanup knows of: from EC2 (by the stack's tags) or the state store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenInstance {
    pub id: String,
    pub deployment: String,
    /// EC2's state name; `gone` when EC2 no longer knows it.
    pub state: String,
    pub wait_for_termination: bool,
}

/// A deployment whose resources still exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub deployment: String,
}

/// What one round of cleanup does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupPlan {
    /// Instances to terminate now.
    pub terminate: Vec<String>,
    /// Deployments whose role, profile and launch template go now.
    pub delete_iam_and_template: Vec<String>,
    /// Deployments whose security group goes now (their instances are all gone), and which are
    /// then clean.
    pub delete_group: Vec<String>,
    /// Instances still on their way to `terminated`.
    pub waiting_for: Vec<String>,
}

impl CleanupPlan {
    pub fn done(&self) -> bool {
        self.terminate.is_empty() && self.waiting_for.is_empty()
    }
}

fn terminated(state: &str) -> bool {
    matches!(state, "terminated" | "gone")
}

/// Everything of the stack that does not belong to `keep` goes: instances are terminated, then
/// each other deployment's IAM role, profile and template are deleted once its instances are
/// terminated (at once where `waitForTermination` is false), and its security group once no
/// instance uses it. Repeated until [`CleanupPlan::done`].
pub fn cleanup(
    keep: Option<&str>,
    instances: &[SeenInstance],
    leftovers: &[Leftover],
) -> CleanupPlan {
    let mut plan = CleanupPlan::default();
    let doomed = |d: &str| keep != Some(d);
    for i in instances.iter().filter(|i| doomed(&i.deployment)) {
        match i.state.as_str() {
            s if terminated(s) => {}
            "shutting-down" => plan.waiting_for.push(i.id.clone()),
            _ => plan.terminate.push(i.id.clone()),
        }
    }
    for l in leftovers.iter().filter(|l| doomed(&l.deployment)) {
        let mine: Vec<&SeenInstance> = instances
            .iter()
            .filter(|i| i.deployment == l.deployment)
            .collect();
        let all_gone = mine.iter().all(|i| terminated(&i.state));
        if all_gone || mine.iter().all(|i| !i.wait_for_termination) {
            plan.delete_iam_and_template.push(l.deployment.clone());
        }
        if all_gone {
            plan.delete_group.push(l.deployment.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: &str) -> Op {
        Op {
            id: id.into(),
            action: if id.starts_with('t') {
                OpAction::Teardown
            } else {
                OpAction::Deploy
            },
            source: "b/k".into(),
            version: Some(format!("v-{id}")),
            target: None,
        }
    }

    fn lease(owner: &str, op: &str, attempt: u64, expires: u64) -> Option<Lease> {
        Some(Lease {
            owner: owner.into(),
            op: op.into(),
            attempt,
            expires,
            closing: false,
        })
    }

    fn state(desired: Option<&str>, current: Option<&str>, lease: Option<Lease>) -> StackState {
        StackState {
            rev: 3,
            desired: desired.map(op),
            current: current.map(String::from),
            lease,
            attempt: 4,
            ..StackState::default()
        }
    }

    #[test]
    fn desire_orders_by_s3_not_by_arrival() {
        let s = state(Some("d2"), None, None);
        assert_eq!(
            desire(&StackState::default(), &op("d1"), None),
            Desire::Record
        );
        assert_eq!(desire(&s, &op("d2"), Some(Order::Same)), Desire::Keep);
        assert_eq!(desire(&s, &op("d3"), Some(Order::Newer)), Desire::Record);
        assert_eq!(
            desire(&s, &op("d1"), Some(Order::Older)),
            Desire::Superseded { by: "d2".into() }
        );
        // Another key, or a version S3 no longer lists: the later request wins.
        assert_eq!(desire(&s, &op("d9"), None), Desire::Record);
        // A teardown of the same version as the desired deploy, asked later, wins.
        assert_eq!(desire(&s, &op("t1"), Some(Order::Same)), Desire::Record);
    }

    fn entry(v: &str, marker: bool, latest: bool, position: usize, t: i64) -> VersionEntry {
        VersionEntry {
            version_id: v.into(),
            delete_marker: marker,
            latest,
            position,
            last_modified_ms: t,
        }
    }

    #[test]
    fn s3_order_uses_list_positions_not_timestamps() {
        // Two uploads in the same second: S3's list still orders them.
        let e = [
            entry("v2", false, true, 0, 1000),
            entry("v1", false, false, 1, 1000),
        ];
        assert_eq!(order(&e, "v2", "v1"), Some(Order::Newer));
        assert_eq!(order(&e, "v1", "v2"), Some(Order::Older));
        assert_eq!(order(&e, "v1", "v1"), Some(Order::Same));
        assert_eq!(order(&e, "v1", "gone"), None);
        assert_eq!(latest(&e).unwrap().version_id, "v2");
    }

    #[test]
    fn s3_order_between_a_version_and_a_delete_marker() {
        let e = [
            entry("m1", true, true, 0, 1000),
            entry("v1", false, false, 0, 1000),
        ];
        assert_eq!(order(&e, "m1", "v1"), Some(Order::Newer), "the latest wins");
        let e = [
            entry("v2", false, true, 0, 3000),
            entry("m1", true, false, 0, 2000),
            entry("v1", false, false, 1, 1000),
        ];
        assert_eq!(order(&e, "m1", "v1"), Some(Order::Newer), "by time");
        assert_eq!(order(&e, "v2", "m1"), Some(Order::Newer));
        let e = [
            entry("v3", false, true, 0, 5000),
            entry("m1", true, false, 0, 2000),
            entry("v1", false, false, 1, 2000),
        ];
        assert_eq!(order(&e, "m1", "v1"), None, "same second: S3 cannot tell");
    }

    #[test]
    fn claim_takes_a_free_stack_as_a_new_attempt() {
        let s = state(Some("d1"), None, None);
        assert_eq!(claim(&s, "e1", &op("d1"), 100), Claim::Take { attempt: 5 });
    }

    #[test]
    fn claim_run_twice_by_the_same_execution_keeps_its_attempt() {
        let s = state(Some("d1"), None, lease("e1", "d1", 5, 700));
        assert_eq!(claim(&s, "e1", &op("d1"), 100), Claim::Held { attempt: 5 });
    }

    #[test]
    fn a_second_execution_of_the_same_operation_yields() {
        let s = state(Some("d1"), None, lease("e1", "d1", 5, 700));
        assert_eq!(
            claim(&s, "e2", &op("d1"), 100),
            Claim::Duplicate { of: "e1".into() }
        );
    }

    #[test]
    fn another_operation_waits_until_the_lease_is_released_or_expires() {
        let s = state(Some("d2"), Some("d0"), lease("e1", "d1", 5, 700));
        assert_eq!(
            claim(&s, "e2", &op("d2"), 100),
            Claim::Busy {
                holder: "e1".into(),
                op: "d1".into(),
                until: 700
            }
        );
        // A crashed owner cannot hold it for ever.
        assert_eq!(claim(&s, "e2", &op("d2"), 700), Claim::Take { attempt: 5 });
    }

    #[test]
    fn claim_of_a_replaced_request_is_superseded_even_while_busy() {
        let s = state(Some("d2"), None, lease("e1", "d2", 5, 700));
        assert_eq!(
            claim(&s, "e0", &op("d1"), 100),
            Claim::Superseded { by: "d2".into() }
        );
    }

    #[test]
    fn claim_of_what_is_done_is_a_noop_and_a_failed_one_is_retried() {
        let s = state(Some("d1"), Some("d1"), None);
        assert_eq!(claim(&s, "e9", &op("d1"), 100), Claim::Noop);
        let failed = state(Some("d1"), Some("d0"), None);
        assert_eq!(
            claim(&failed, "e9", &op("d1"), 100),
            Claim::Take { attempt: 5 }
        );
        let mut deleted = state(Some("t1"), None, None);
        deleted.status = Some("deleted".into());
        assert_eq!(claim(&deleted, "e9", &op("t1"), 100), Claim::Noop);
        let never_deployed = state(Some("t1"), None, None);
        assert_eq!(
            claim(&never_deployed, "e9", &op("t1"), 100),
            Claim::Take { attempt: 5 }
        );
    }

    #[test]
    fn start_and_stop_act_on_the_current_version_without_becoming_desired() {
        let start = Op {
            id: "start-k".into(),
            action: OpAction::Start,
            source: "b/k".into(),
            version: None,
            target: None,
        };
        let s = state(Some("d1"), Some("d1"), None);
        assert_eq!(claim(&s, "e1", &start, 100), Claim::Take { attempt: 5 });
        let busy = state(Some("d2"), Some("d1"), lease("e0", "d2", 5, 700));
        assert!(
            matches!(claim(&busy, "e1", &start, 100), Claim::Busy { .. }),
            "waits for a deploy"
        );
        let twice = state(Some("d1"), Some("d1"), lease("e0", "start-k", 5, 700));
        assert_eq!(
            claim(&twice, "e1", &start, 100),
            Claim::Duplicate { of: "e0".into() }
        );
        assert_eq!(
            claim(&state(Some("t1"), None, None), "e1", &start, 100),
            Claim::Noop,
            "nothing deployed"
        );
    }

    #[test]
    fn reconcile_acts_only_on_the_deployment_that_is_current_and_desired() {
        let reconcile = |target: &str| Op {
            id: format!("reconcile-{target}"),
            action: OpAction::Reconcile,
            source: "b/k".into(),
            version: None,
            target: Some(target.into()),
        };
        let s = state(Some("d1"), Some("d1"), None);
        assert_eq!(
            claim(&s, "e1", &reconcile("d1"), 100),
            Claim::Take { attempt: 5 }
        );
        assert_eq!(
            claim(&s, "e1", &reconcile("d0"), 100),
            Claim::Noop,
            "the current version changed since the request"
        );
        let failed_update = state(Some("d2"), Some("d1"), None);
        assert_eq!(
            claim(&failed_update, "e1", &reconcile("d1"), 100),
            Claim::Superseded { by: "d2".into() },
            "a newer request is desired: its fence would refuse the relaunch"
        );
        let deleted = state(Some("t1"), None, None);
        assert_eq!(claim(&deleted, "e1", &reconcile("d1"), 100), Claim::Noop);
        let twice = state(Some("d1"), Some("d1"), lease("e0", "reconcile-d1", 5, 700));
        assert_eq!(
            claim(&twice, "e1", &reconcile("d1"), 100),
            Claim::Duplicate { of: "e0".into() },
            "a scheduled run delivered twice"
        );
    }

    #[test]
    fn a_claim_rerun_after_a_newer_request_gives_its_lease_back() {
        // e1 took the stack for d1; its claim step is retried after d2 became desired.
        let s = state(Some("d2"), Some("d0"), lease("e1", "d1", 5, 700));
        let c = claim(&s, "e1", &op("d1"), 100);
        assert_eq!(c, Claim::Superseded { by: "d2".into() });
        assert!(releases_on_yield(&s, "e1", &op("d1"), &c));
        // Another execution of d1 (a duplicate) or of another op never releases e1's lease.
        let dup = claim(&s, "e2", &op("d1"), 100);
        assert!(!releases_on_yield(&s, "e2", &op("d1"), &dup));
        let held = state(Some("d1"), Some("d0"), lease("e1", "d1", 5, 700));
        let c = claim(&held, "e1", &op("d1"), 100);
        assert_eq!(c, Claim::Held { attempt: 5 });
        assert!(!releases_on_yield(&held, "e1", &op("d1"), &c));
    }

    #[test]
    fn busy_waits_are_short_then_longer_and_bounded_by_the_expiry() {
        assert_eq!(busy_wait(0, 1000, 0), 5);
        assert_eq!(busy_wait(60, 1000, 0), 10);
        assert_eq!(busy_wait(300, 1000, 0), 30);
        assert_eq!(busy_wait(300, 10, 8), 3);
        assert_eq!(busy_wait(300, 10, 50), 1);
    }

    #[test]
    fn fence_needs_the_same_owner_and_attempt() {
        let s = state(Some("d1"), None, lease("e1", "d1", 5, 700));
        assert!(holds(&s, "e1", 5));
        assert!(
            !holds(&s, "e1", 4),
            "an older attempt of the same execution"
        );
        assert!(!holds(&s, "e2", 5));
        assert!(!holds(&state(Some("d1"), None, None), "e1", 5));
        let mut closing = s.clone();
        closing.lease.as_mut().unwrap().closing = true;
        assert!(may_create(&s, "e1", 5));
        assert!(holds(&closing, "e1", 5) && !may_create(&closing, "e1", 5));
    }

    #[test]
    fn finish_makes_current_only_the_desired_lease_holder() {
        let s = state(Some("d1"), Some("d0"), lease("e1", "d1", 5, 700));
        assert_eq!(finish(&s, "e1", 5, "d1", true), Finish::MakeCurrent);
        assert_eq!(
            finish(&s, "e1", 5, "d1", false),
            Finish::RollBack { superseded: false }
        );
        let newer = state(Some("d2"), Some("d0"), lease("e1", "d1", 5, 700));
        assert_eq!(
            finish(&newer, "e1", 5, "d1", true),
            Finish::RollBack { superseded: true }
        );
        assert_eq!(finish(&s, "e2", 5, "d1", true), Finish::LeaseLost);
    }

    #[test]
    fn a_retried_make_current_never_rolls_back_the_live_version() {
        // The first attempt made d1 current; then d2 was uploaded; the step runs again.
        let s = state(Some("d2"), Some("d1"), lease("e1", "d1", 5, 700));
        assert_eq!(finish(&s, "e1", 5, "d1", true), Finish::AlreadyCurrent);
        // Even a failure reported afterwards (a later step failed) keeps it.
        assert_eq!(finish(&s, "e1", 5, "d1", false), Finish::AlreadyCurrent);
        // And after the lease is gone too.
        let s = state(Some("d2"), Some("d1"), lease("e2", "d2", 6, 700));
        assert_eq!(finish(&s, "e1", 5, "d1", false), Finish::AlreadyCurrent);
    }

    fn seen(id: &str, dep: &str, state: &str, wait: bool) -> SeenInstance {
        SeenInstance {
            id: id.into(),
            deployment: dep.into(),
            state: state.into(),
            wait_for_termination: wait,
        }
    }

    fn left(d: &str) -> Leftover {
        Leftover {
            deployment: d.into(),
        }
    }

    #[test]
    fn cleanup_keeps_the_current_deployment_whole() {
        let plan = cleanup(
            Some("d1"),
            &[
                seen("i-1", "d1", "running", true),
                seen("i-0", "d0", "running", true),
            ],
            &[left("d1"), left("d0")],
        );
        assert_eq!(plan.terminate, vec!["i-0"]);
        assert!(plan.delete_iam_and_template.is_empty());
        assert!(plan.delete_group.is_empty());
        assert!(!plan.done());
    }

    #[test]
    fn cleanup_waits_for_terminated_before_deleting() {
        let plan = cleanup(
            Some("d1"),
            &[seen("i-0", "d0", "shutting-down", true)],
            &[left("d0")],
        );
        assert_eq!(plan.waiting_for, vec!["i-0"]);
        assert!(plan.delete_iam_and_template.is_empty() && plan.delete_group.is_empty());
        let plan = cleanup(
            Some("d1"),
            &[seen("i-0", "d0", "terminated", true)],
            &[left("d0")],
        );
        assert!(plan.done());
        assert_eq!(plan.delete_iam_and_template, vec!["d0"]);
        assert_eq!(plan.delete_group, vec!["d0"]);
    }

    #[test]
    fn without_wait_for_termination_iam_goes_at_once_and_the_group_when_free() {
        let plan = cleanup(None, &[seen("i-0", "d0", "running", false)], &[left("d0")]);
        assert_eq!(plan.terminate, vec!["i-0"]);
        assert_eq!(plan.delete_iam_and_template, vec!["d0"]);
        assert!(plan.delete_group.is_empty());
    }

    #[test]
    fn teardown_removes_every_deployment_and_a_deployment_without_instances_goes_at_once() {
        let plan = cleanup(
            None,
            &[
                seen("i-1", "d1", "gone", true),
                seen("i-2", "d1", "stopped", true),
            ],
            &[left("d1"), left("d7")],
        );
        assert_eq!(plan.terminate, vec!["i-2"]);
        assert_eq!(plan.delete_iam_and_template, vec!["d7"]);
        assert_eq!(plan.delete_group, vec!["d7"]);
    }
}
