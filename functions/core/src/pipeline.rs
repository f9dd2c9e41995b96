//! What the deploy state machine carries between its steps, and the rules of the poll loop.
//! Small on purpose (well under Step Functions' 256 KiB): each instance's full plan lives in
//! the state store, keyed by deployment and instance.

use crate::lifecycle::{Op, OpAction};
use crate::plan::Source;
use serde::{Deserialize, Serialize};

/// How long a deploy may take from validation until every instance runs.
pub const DEFAULT_DEADLINE_SECONDS: u64 = 15 * 60;

/// Where an operation stands: what validation or the claim decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Validated and recorded as desired: claim the stack next.
    Claim,
    /// The lease is ours: deploy every instance.
    Deploy,
    /// The lease is ours: tear the stack down.
    Teardown,
    /// The lease is ours: start the current version's instances.
    Start,
    /// The lease is ours: stop them.
    Stop,
    /// The lease is ours: relaunch the current version's missing instances.
    Reconcile,
    /// Another operation holds the stack: wait `wait` seconds and claim again.
    Wait,
    /// Another execution runs this same operation: this one yields.
    Duplicate,
    /// A newer request holds the stack: this one stops here.
    Superseded,
    /// Nothing to do: the version is current already, or the stack is gone.
    Noop,
}

/// What validation outputs and every step after it carries (the Map's items excepted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `{app}/{stack}`: the state store's key.
    pub stack_id: String,
    pub app: String,
    pub stack: String,
    /// The operation's id: the deployment (`d-...`) or the teardown (`t-...`).
    pub deployment: String,
    #[serde(default = "deploy_action")]
    pub action: OpAction,
    pub source: Source,
    pub decision: Decision,
    /// Instance names (the Map's items).
    pub instances: Vec<String>,
    /// Epoch milliseconds.
    pub started_at: u64,
    /// Epoch seconds after which polling gives up.
    pub deadline: u64,
    /// The execution that runs it (the lease owner), set by the claim step.
    #[serde(default)]
    pub owner: String,
    /// The attempt the lease was taken for.
    #[serde(default)]
    pub attempt: u64,
    /// Seconds to wait before claiming again (decision `wait`).
    #[serde(default)]
    pub wait: u64,
    /// Seconds waited for the stack so far.
    #[serde(default)]
    pub waited: u64,
    /// Why it stopped early: the newer request, the execution it duplicates, the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn deploy_action() -> OpAction {
    OpAction::Deploy
}

impl Deployment {
    /// A request, validated, about to claim its stack (`stack_id` is `app/stack`, or empty
    /// when no stack is known).
    pub fn requested(
        stack_id: &str,
        deployment: String,
        action: OpAction,
        source: Source,
        instances: Vec<String>,
        started_at: u64,
        deadline: u64,
    ) -> Deployment {
        let (app, stack) = stack_id.split_once('/').unwrap_or_default();
        Deployment {
            stack_id: stack_id.into(),
            app: app.into(),
            stack: stack.into(),
            deployment,
            action,
            source,
            decision: Decision::Claim,
            instances,
            started_at,
            deadline,
            owner: String::new(),
            attempt: 0,
            wait: 0,
            waited: 0,
            reason: None,
        }
    }

    /// The operation as the state store orders it.
    /// A reconcile carries the deployment it relaunches under in `deployment` (the instance
    /// steps work on that deployment's resources); as an operation it is `reconcile-{deployment}`.
    pub fn op(&self) -> Op {
        let reconcile = self.action == OpAction::Reconcile;
        Op {
            id: if reconcile {
                format!("reconcile-{}", self.deployment)
            } else {
                self.deployment.clone()
            },
            action: self.action,
            source: format!("{}/{}", self.source.bucket, self.source.key),
            version: self.source.version_id.clone(),
            target: reconcile.then(|| self.deployment.clone()),
        }
    }
}

/// The claim step's input: the operation and the execution that asks (`$$.Execution.Id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimInput {
    pub operation: Deployment,
    pub execution: String,
}

/// One Map item: what provision, launch and poll take and return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTask {
    pub stack_id: String,
    pub deployment: String,
    pub instance: String,
    pub deadline: u64,
    /// The lease this work is fenced by.
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub attempt: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// EC2's state name after the last launch or poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Seconds the state machine waits before the next poll.
    #[serde(default)]
    pub wait: u64,
    /// Polls done so far (drives the backoff).
    #[serde(default)]
    pub polls: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// Where the instance is on its way up (the state machine loops until `up`).
    #[serde(default)]
    pub phase: Phase,
}

/// An instance's way up: EC2 launching it, then its bootstrap running, then the app up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Launched; not `running` yet.
    #[default]
    Launching,
    /// `running`; the bootstrap has not reported yet.
    Booting,
    /// The bootstrap reported `ok`: the service stayed up.
    Up,
}

/// What one poll read from EC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// EC2 does not know the instance (yet: it is eventually consistent after RunInstances).
    Unknown,
    Instance {
        /// EC2's state name.
        state: &'a str,
        /// The instance's `stackdrop:bootstrap` tag (`ok` / `failed`), if written yet.
        bootstrap: Option<&'a str>,
    },
}

/// Why the instance will not come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollFailure {
    /// EC2 still does not know it after [`UNKNOWN_POLLS`] polls.
    Gone,
    /// It left the way up (stopping, stopped, shutting-down, terminated): EC2's reason says why.
    Ended,
    /// The bootstrap reported `failed`: its own reason says why.
    BootstrapFailed,
    /// The deadline passed in this phase.
    Deadline(Phase),
}

/// Polls during which an instance EC2 does not know yet counts as launching (EC2's eventual
/// consistency right after RunInstances is seconds, not minutes).
pub const UNKNOWN_POLLS: u32 = 3;

impl InstanceTask {
    /// Takes in one poll: the phase, the poll count (counted per phase: it drives the backoff)
    /// and the next wait (0 once up). Pure: the poll step reads EC2 and writes the result.
    pub fn observe(&mut self, seen: Seen, now: u64) -> Result<(), PollFailure> {
        let phase = match seen {
            Seen::Unknown if self.polls < UNKNOWN_POLLS && self.phase == Phase::Launching => {
                Phase::Launching
            }
            Seen::Unknown => return Err(PollFailure::Gone),
            Seen::Instance { state, bootstrap } => match (state, bootstrap) {
                ("running", Some("ok")) => Phase::Up,
                ("running", Some("failed")) => return Err(PollFailure::BootstrapFailed),
                ("running", _) => Phase::Booting,
                ("pending", _) if self.phase == Phase::Launching => Phase::Launching,
                _ => return Err(PollFailure::Ended),
            },
        };
        if phase != self.phase {
            self.phase = phase;
            self.polls = 0;
        }
        self.polls += 1;
        if phase == Phase::Up {
            self.wait = 0;
            return Ok(());
        }
        if now >= self.deadline {
            return Err(PollFailure::Deadline(phase));
        }
        self.wait = next_wait(self.polls, now, self.deadline);
        Ok(())
    }
}

/// Step Functions' error object, as a Catch puts it at `ResultPath`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

impl StepError {
    /// The human message: a Lambda error's Cause is JSON with `errorMessage`.
    pub fn message(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.cause)
            .ok()
            .and_then(|v| {
                v.get("errorMessage")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| self.cause.clone())
    }
}

/// What the finish function is asked to do (the state machine names it in `step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishStep {
    /// Make the deployment current (deploy), or stop serving the stack (teardown).
    Commit,
    /// The deployment failed or was superseded: close its attempt (no more launches).
    Rollback,
    /// One round of removing what must go; `done` or the seconds to wait.
    Cleanup,
    /// One round of starting (or stopping) the current version's instances.
    Power,
    /// Record the result, release the stack, publish the event: the execution's output.
    Report,
}

/// The finish function's input: `{"step": ..., "state": <the execution's state>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishInput {
    pub step: FinishStep,
    pub state: ExecutionState,
}

/// The execution's state as the finish steps see it: the deployment, each instance's last
/// poll, the error that stopped it (if any), and what finishing has done so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionState {
    #[serde(flatten)]
    pub deployment: Deployment,
    #[serde(default)]
    pub results: Vec<InstanceTask>,
    #[serde(default)]
    pub error: Option<StepError>,
    #[serde(default)]
    pub finish: Option<FinishProgress>,
    /// A cleanup round that failed past its retries (the outcome stands; left for later).
    #[serde(default)]
    pub cleanup_error: Option<StepError>,
    /// The rollback step itself failed past its retries.
    #[serde(default)]
    pub rollback_error: Option<StepError>,
}

/// What the finish steps report to the next one (at `$.finish`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishProgress {
    /// The outcome decided so far (by commit or rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Cleanup is finished.
    #[serde(default)]
    pub done: bool,
    /// Seconds to wait before the next cleanup round.
    #[serde(default)]
    pub wait: u64,
    /// Cleanup rounds so far.
    #[serde(default)]
    pub rounds: u32,
    /// Instances terminated so far (of other deployments, or of this one on rollback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Instances started or stopped so far (start, stop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// The execution lost the stack's lease: nothing was touched.
    #[serde(default)]
    pub lease_lost: bool,
    /// A cleanup problem that did not change the outcome (left for the next operation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    Superseded,
    Duplicate,
    Noop,
    Deleted,
}

/// The execution's output: what a person reads in the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub stack: String,
    pub action: OpAction,
    pub deployment: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub status: Outcome,
    pub instances: Vec<InstanceSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stable error name of a failure (the execution fails with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_name: Option<String>,
    /// What a person reads in the console for a failure: the reason and how to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Why nothing was done (superseded by, duplicate of, already current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Instances terminated by this operation: the previous version's, or this one's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Instances started or stopped by this operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub attempt: u64,
    pub duration_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    pub log_group: String,
}

/// The wait before poll number `polls + 1`: short at first (instances often run within
/// 10-20 s), backing off to 30 s, never past the deadline (at least 1 s).
pub fn next_wait(polls: u32, now: u64, deadline: u64) -> u64 {
    const STEPS: [u64; 6] = [5, 5, 5, 10, 15, 20];
    let wait = STEPS.get(polls as usize).copied().unwrap_or(30);
    wait.min(deadline.saturating_sub(now)).max(1)
}

/// `{app}/{stack}`.
pub fn stack_id(app: &str, stack: &str) -> String {
    format!("{app}/{stack}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_back_off_and_stop_at_the_deadline() {
        let waits: Vec<u64> = (0..9).map(|p| next_wait(p, 0, 1000)).collect();
        assert_eq!(waits, vec![5, 5, 5, 10, 15, 20, 30, 30, 30]);
        assert_eq!(next_wait(8, 990, 1000), 10);
        assert_eq!(next_wait(0, 1000, 1000), 1);
    }

    fn launched(deadline: u64) -> InstanceTask {
        serde_json::from_value(serde_json::json!({
            "stackId": "a/s", "deployment": "d1", "instance": "web", "deadline": deadline,
            "instanceId": "i-1", "state": "pending"
        }))
        .unwrap()
    }

    fn pending() -> Seen<'static> {
        Seen::Instance {
            state: "pending",
            bootstrap: None,
        }
    }

    fn running(bootstrap: Option<&str>) -> Seen<'_> {
        Seen::Instance {
            state: "running",
            bootstrap,
        }
    }

    #[test]
    fn an_instance_is_up_only_once_its_bootstrap_reported_ok() {
        let mut t = launched(1000);
        assert_eq!(t.phase, Phase::Launching);
        let pending = pending();
        t.observe(pending, 0).unwrap();
        assert_eq!((t.phase, t.polls, t.wait), (Phase::Launching, 1, 5));
        // running is not up: the bootstrap has not reported
        t.observe(running(None), 10).unwrap();
        assert_eq!((t.phase, t.polls, t.wait), (Phase::Booting, 1, 5));
        t.observe(running(Some("anything else")), 15).unwrap();
        assert_eq!((t.phase, t.polls), (Phase::Booting, 2));
        t.observe(running(Some("ok")), 20).unwrap();
        assert_eq!((t.phase, t.wait), (Phase::Up, 0));
        // the state machine loops on `phase`
        assert_eq!(serde_json::to_value(&t).unwrap()["phase"], "up");
    }

    #[test]
    fn ok_on_the_first_poll_is_up_at_once() {
        let mut t = launched(1000);
        t.observe(running(Some("ok")), 0).unwrap();
        assert_eq!((t.phase, t.wait), (Phase::Up, 0));
        // up even past the deadline: the app is up
        let mut t = launched(10);
        assert_eq!(t.observe(running(Some("ok")), 50), Ok(()));
    }

    #[test]
    fn a_failed_bootstrap_or_an_instance_that_left_fails_the_poll() {
        let mut t = launched(1000);
        assert_eq!(
            t.observe(running(Some("failed")), 0),
            Err(PollFailure::BootstrapFailed)
        );
        for state in ["stopping", "stopped", "shutting-down", "terminated"] {
            let mut t = launched(1000);
            let seen = Seen::Instance {
                state,
                bootstrap: Some("ok"),
            };
            assert_eq!(t.observe(seen, 0), Err(PollFailure::Ended), "{state}");
        }
        // back to pending after running is not a way up
        let mut t = launched(1000);
        t.observe(running(None), 0).unwrap();
        let pending = pending();
        assert_eq!(t.observe(pending, 5), Err(PollFailure::Ended));
    }

    #[test]
    fn an_unknown_instance_is_launching_for_a_few_polls_only() {
        let mut t = launched(1000);
        for _ in 0..UNKNOWN_POLLS {
            t.observe(Seen::Unknown, 0).unwrap();
            assert_eq!(t.phase, Phase::Launching);
        }
        assert_eq!(t.observe(Seen::Unknown, 0), Err(PollFailure::Gone));
        // once seen running, unknown is gone at once
        let mut t = launched(1000);
        t.observe(running(None), 0).unwrap();
        assert_eq!(t.observe(Seen::Unknown, 5), Err(PollFailure::Gone));
    }

    #[test]
    fn the_deadline_names_the_phase_it_passed_in() {
        let pending = pending();
        let mut t = launched(100);
        assert_eq!(
            t.observe(pending, 100),
            Err(PollFailure::Deadline(Phase::Launching))
        );
        let mut t = launched(100);
        t.observe(running(None), 90).unwrap();
        assert_eq!(t.wait, 5);
        t.observe(running(None), 98).unwrap();
        assert_eq!(t.wait, 2, "never waits past the deadline");
        assert_eq!(
            t.observe(running(None), 100),
            Err(PollFailure::Deadline(Phase::Booting))
        );
    }

    #[test]
    fn backoff_restarts_when_the_instance_starts_booting() {
        let pending = pending();
        let mut t = launched(10_000);
        let mut waits = vec![];
        for _ in 0..7 {
            t.observe(pending, 0).unwrap();
            waits.push(t.wait);
        }
        t.observe(running(None), 0).unwrap();
        waits.push(t.wait);
        assert_eq!(waits, vec![5, 5, 10, 15, 20, 30, 30, 5]);
    }

    #[test]
    fn lambda_error_cause_gives_its_message() {
        let e = StepError {
            error: "InvalidBundle".into(),
            cause: r#"{"errorType":"InvalidBundle","errorMessage":"stack.json: /name: bad"}"#
                .into(),
        };
        assert_eq!(e.message(), "stack.json: /name: bad");
        let e = StepError {
            error: "States.Timeout".into(),
            cause: "timed out".into(),
        };
        assert_eq!(e.message(), "timed out");
    }

    #[test]
    fn finish_input_reads_the_state_machine_shape() {
        let v = serde_json::json!({"step": "rollback", "state": {
            "stackId": "a/s", "app": "a", "stack": "s", "deployment": "d-1",
            "source": {"bucket": "b", "key": "k"}, "decision": "deploy", "instances": ["w"],
            "startedAt": 1, "deadline": 2, "owner": "arn:exec", "attempt": 3,
            "results": [{"stackId": "a/s", "deployment": "d-1", "instance": "w", "deadline": 2, "instanceId": "i-1", "state": "running"}],
            "error": {"Error": "InstanceTerminated", "Cause": "x"}
        }});
        let f: FinishInput = serde_json::from_value(v).unwrap();
        assert_eq!(f.step, FinishStep::Rollback);
        assert_eq!(f.state.results[0].instance_id.as_deref(), Some("i-1"));
        assert_eq!(f.state.error.unwrap().error, "InstanceTerminated");
        assert_eq!(f.state.deployment.action, OpAction::Deploy);
        assert_eq!(f.state.deployment.attempt, 3);
        assert_eq!(f.state.deployment.op().source, "b/k");
    }
}
