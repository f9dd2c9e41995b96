//! What the deploy state machine carries between its steps, and the rules of the poll loop.
//! Small on purpose (well under Step Functions' 256 KiB): each instance's full plan lives in
//! the state store, keyed by deployment and instance.

use crate::plan::Source;
use serde::{Deserialize, Serialize};

/// How long a deploy may take from validation until every instance runs.
pub const DEFAULT_DEADLINE_SECONDS: u64 = 15 * 60;

/// What validation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Provision and launch every instance.
    Deploy,
    /// This version is already the stack's current one: nothing to do.
    Noop,
    /// A newer version of the bundle exists: this one stops here.
    Superseded,
}

/// The output of the validate step, the input of the Map and of finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `{app}/{stack}`: the state store's key.
    pub stack_id: String,
    pub app: String,
    pub stack: String,
    pub deployment: String,
    pub source: Source,
    pub decision: Decision,
    /// Instance names (the Map's items).
    pub instances: Vec<String>,
    /// Epoch milliseconds.
    pub started_at: u64,
    /// Epoch seconds after which polling gives up.
    pub deadline: u64,
}

/// One Map item: what provision, launch and poll take and return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTask {
    pub stack_id: String,
    pub deployment: String,
    pub instance: String,
    pub deadline: u64,
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

/// The input of the finish step: the deployment, each instance's last poll, and the error that
/// stopped it (if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishInput {
    #[serde(flatten)]
    pub deployment: Deployment,
    #[serde(default)]
    pub results: Vec<InstanceTask>,
    #[serde(default)]
    pub error: Option<StepError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    Superseded,
    Noop,
}

/// The execution's output: what a person reads in the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub stack: String,
    pub deployment: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub status: Outcome,
    pub instances: Vec<InstanceSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Instances of earlier deployments terminated now that this one runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
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
        let v = serde_json::json!({
            "stackId": "a/s", "app": "a", "stack": "s", "deployment": "d-1",
            "source": {"bucket": "b", "key": "k"}, "decision": "deploy", "instances": ["w"],
            "startedAt": 1, "deadline": 2,
            "results": [{"stackId": "a/s", "deployment": "d-1", "instance": "w", "deadline": 2, "instanceId": "i-1", "state": "running"}],
            "error": {"Error": "InstanceTerminated", "Cause": "x"}
        });
        let f: FinishInput = serde_json::from_value(v).unwrap();
        assert_eq!(f.results[0].instance_id.as_deref(), Some("i-1"));
        assert_eq!(f.error.unwrap().error, "InstanceTerminated");
    }
}
