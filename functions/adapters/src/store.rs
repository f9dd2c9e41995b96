//! The state store: one DynamoDB table keyed by stack (`pk = stack#{app}/{stack}`).
//!
//! | sk | holds |
//! |---|---|
//! | `stack` | `current` / `desired` deployment, `desiredAt` (the bundle version's time), `inProgress` (the lease), `status`, `lastError` |
//! | `deployment#{id}` | its source, `status`, `steps` (what happened when), `instances` (id, state, IPs), `error` |
//! | `plan#{id}#{instance}` | the instance's full plan (JSON) |
//!
//! The lease is a conditional write: a deployment claims the stack only if no newer bundle
//! version has (`desiredAt <= mine`), so an older deployment still in flight sees it was
//! superseded and stops cleanly.

use crate::error::{Failure, Kind};
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub fn pk(stack_id: &str) -> String {
    format!("stack#{stack_id}")
}

pub const STACK_SK: &str = "stack";

pub fn deployment_sk(deployment: &str) -> String {
    format!("deployment#{deployment}")
}

pub fn plan_sk(deployment: &str, instance: &str) -> String {
    format!("plan#{deployment}#{instance}")
}

/// The stack's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackRecord {
    pub stack_id: String,
    pub current: Option<String>,
    pub current_source: Option<String>,
    pub desired: Option<String>,
    pub desired_source: Option<String>,
    pub desired_at: u64,
    pub in_progress: Option<String>,
    pub status: Option<String>,
    pub last_error: Option<String>,
    pub updated_at: u64,
}

/// One deployment's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    pub deployment: String,
    pub source: String,
    pub status: String,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
    /// `(at_ms, step, detail)`, oldest first.
    pub steps: Vec<Step>,
    /// Instance name -> its last known state.
    pub instances: HashMap<String, InstanceRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub at: u64,
    pub step: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub instance_id: Option<String>,
    pub state: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This deployment is the stack's desired one now.
    Claimed { previous_current: Option<String> },
    /// This version is already the stack's current one.
    AlreadyCurrent,
    /// A newer bundle version holds the stack.
    Superseded { by: String },
}

#[derive(Clone)]
pub struct Store {
    pub ddb: Client,
    pub table: String,
}

fn s(v: &str) -> Av {
    Av::S(v.to_string())
}

fn n(v: u64) -> Av {
    Av::N(v.to_string())
}

fn get_s(item: &HashMap<String, Av>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n(item: &HashMap<String, Av>, k: &str) -> u64 {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

impl Store {
    pub fn new(ddb: Client, table: impl Into<String>) -> Store {
        Store {
            ddb,
            table: table.into(),
        }
    }

    /// An UpdateItem on one item of the stack.
    fn update(
        &self,
        stack_id: &str,
        sk: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.ddb
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&pk(stack_id)))
            .key("sk", s(sk))
    }

    async fn get(&self, stack_id: &str, sk: &str) -> Result<Option<HashMap<String, Av>>, Failure> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&pk(stack_id)))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Failure::aws("DynamoDB GetItem", e))?;
        Ok(out.item)
    }

    pub async fn stack(&self, stack_id: &str) -> Result<Option<StackRecord>, Failure> {
        Ok(self.get(stack_id, STACK_SK).await?.map(|i| StackRecord {
            stack_id: stack_id.to_string(),
            current: get_s(&i, "current"),
            current_source: get_s(&i, "currentSource"),
            desired: get_s(&i, "desired"),
            desired_source: get_s(&i, "desiredSource"),
            desired_at: get_n(&i, "desiredAt"),
            in_progress: get_s(&i, "inProgress"),
            status: get_s(&i, "status"),
            last_error: get_s(&i, "lastError"),
            updated_at: get_n(&i, "updatedAt"),
        }))
    }

    /// Takes the stack for `deployment` unless a newer bundle version already has it.
    pub async fn claim(
        &self,
        stack_id: &str,
        deployment: &str,
        source: &str,
        version_time_ms: u64,
        now_ms: u64,
    ) -> Result<Claim, Failure> {
        let before = self.stack(stack_id).await?.unwrap_or_default();
        if before.current.as_deref() == Some(deployment) {
            return Ok(Claim::AlreadyCurrent);
        }
        let res = self.update(stack_id, STACK_SK)
            .update_expression("SET desired = :d, desiredSource = :src, desiredAt = :t, inProgress = :d, #st = :status, updatedAt = :now")
            .condition_expression("attribute_not_exists(desiredAt) OR desiredAt <= :t OR desired = :d")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":d", s(deployment))
            .expression_attribute_values(":src", s(source))
            .expression_attribute_values(":t", n(version_time_ms))
            .expression_attribute_values(":status", s("deploying"))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Claim::Claimed {
                previous_current: before.current,
            }),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {
                let by = self
                    .stack(stack_id)
                    .await?
                    .and_then(|r| r.desired)
                    .unwrap_or_default();
                Ok(Claim::Superseded { by })
            }
            Err(e) => Err(Failure::aws("DynamoDB UpdateItem (claim)", e)),
        }
    }

    /// Fails with [`Kind::Superseded`] when another deployment is now the desired one.
    pub async fn ensure_desired(&self, stack_id: &str, deployment: &str) -> Result<(), Failure> {
        let rec = self.stack(stack_id).await?;
        match rec.and_then(|r| r.desired) {
            Some(d) if d != deployment => Err(Failure::new(
                Kind::Superseded,
                format!("deployment {deployment} was superseded by {d}"),
            )),
            _ => Ok(()),
        }
    }

    /// The plan of a Map item's instance, provided its deployment is still the desired one.
    pub async fn task_plan(
        &self,
        task: &stackdrop_core::pipeline::InstanceTask,
    ) -> Result<stackdrop_core::plan::InstancePlan, Failure> {
        self.ensure_desired(&task.stack_id, &task.deployment)
            .await?;
        self.plan(&task.stack_id, &task.deployment, &task.instance)
            .await
    }

    /// Creates the deployment's record once (a re-run keeps the first one's history).
    pub async fn start_deployment(
        &self,
        stack_id: &str,
        deployment: &str,
        source: &str,
        now_ms: u64,
    ) -> Result<(), Failure> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk(stack_id)))
            .item("sk", s(&deployment_sk(deployment)))
            .item("deployment", s(deployment))
            .item("source", s(source))
            .item("status", s("validated"))
            .item("startedAt", n(now_ms))
            .item("steps", Av::L(vec![]))
            .item("instances", Av::M(HashMap::new()))
            .condition_expression("attribute_not_exists(sk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => Ok(()),
            Err(e) => Err(Failure::aws("DynamoDB PutItem (deployment)", e)),
        }
    }

    /// Appends a step to the deployment's history and sets its status.
    pub async fn record_step(
        &self,
        stack_id: &str,
        deployment: &str,
        status: &str,
        step: &str,
        detail: &str,
        now_ms: u64,
    ) -> Result<(), Failure> {
        let entry = serde_json::to_string(&Step {
            at: now_ms,
            step: step.into(),
            detail: detail.into(),
        })
        .unwrap_or_default();
        self.update(stack_id, &deployment_sk(deployment))
            .update_expression(
                "SET steps = list_append(if_not_exists(steps, :empty), :e), #st = :status",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":e", Av::L(vec![s(&entry)]))
            .expression_attribute_values(":empty", Av::L(vec![]))
            .expression_attribute_values(":status", s(status))
            .send()
            .await
            .map_err(|e| Failure::aws("DynamoDB UpdateItem (step)", e))?;
        Ok(())
    }

    pub async fn set_instance(
        &self,
        stack_id: &str,
        deployment: &str,
        name: &str,
        rec: &InstanceRecord,
    ) -> Result<(), Failure> {
        let json = serde_json::to_string(rec).unwrap_or_default();
        self.update(stack_id, &deployment_sk(deployment))
            .update_expression("SET instances.#n = :i")
            .expression_attribute_names("#n", name)
            .expression_attribute_values(":i", s(&json))
            .send()
            .await
            .map_err(|e| Failure::aws("DynamoDB UpdateItem (instance)", e))?;
        Ok(())
    }

    pub async fn deployment(
        &self,
        stack_id: &str,
        deployment: &str,
    ) -> Result<Option<DeploymentRecord>, Failure> {
        Ok(self
            .get(stack_id, &deployment_sk(deployment))
            .await?
            .map(|i| {
                let steps = i
                    .get("steps")
                    .and_then(|v| v.as_l().ok())
                    .map(|l| {
                        l.iter()
                            .filter_map(|e| e.as_s().ok())
                            .filter_map(|e| serde_json::from_str(e).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                let instances = i
                    .get("instances")
                    .and_then(|v| v.as_m().ok())
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| {
                                Some((k.clone(), serde_json::from_str(v.as_s().ok()?).ok()?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                DeploymentRecord {
                    deployment: get_s(&i, "deployment").unwrap_or_default(),
                    source: get_s(&i, "source").unwrap_or_default(),
                    status: get_s(&i, "status").unwrap_or_default(),
                    started_at: get_n(&i, "startedAt"),
                    finished_at: i.get("finishedAt").map(|_| get_n(&i, "finishedAt")),
                    error: get_s(&i, "error"),
                    steps,
                    instances,
                }
            }))
    }

    pub async fn put_plan(
        &self,
        stack_id: &str,
        deployment: &str,
        instance: &str,
        plan_json: &str,
    ) -> Result<(), Failure> {
        self.ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&pk(stack_id)))
            .item("sk", s(&plan_sk(deployment, instance)))
            .item("plan", s(plan_json))
            .send()
            .await
            .map_err(|e| Failure::aws("DynamoDB PutItem (plan)", e))?;
        Ok(())
    }

    pub async fn plan(
        &self,
        stack_id: &str,
        deployment: &str,
        instance: &str,
    ) -> Result<stackdrop_core::plan::InstancePlan, Failure> {
        let item = self.get(stack_id, &plan_sk(deployment, instance)).await?;
        let json = item
            .as_ref()
            .and_then(|i| get_s(i, "plan"))
            .ok_or_else(|| Failure::new(Kind::InvalidInput, format!("no plan for instance {instance} of deployment {deployment} (was it validated?)")))?;
        serde_json::from_str(&json).map_err(|e| {
            Failure::new(
                Kind::InvalidInput,
                format!("stored plan of {instance} is unreadable: {e}"),
            )
        })
    }

    /// Records how the deployment ended. On success it becomes the stack's current one, unless
    /// a newer deployment claimed the stack meanwhile (then: superseded, returned as false).
    pub async fn finish(
        &self,
        stack_id: &str,
        deployment: &str,
        source: &str,
        status: &str,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, Failure> {
        let mut became_current = false;
        if status == "succeeded" {
            let res = self.update(stack_id, STACK_SK)
                .update_expression("SET #cur = :d, currentSource = :src, #st = :running, updatedAt = :now REMOVE inProgress, lastError")
                .condition_expression("desired = :d")
                .expression_attribute_names("#cur", "current")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":d", s(deployment))
                .expression_attribute_values(":src", s(source))
                .expression_attribute_values(":running", s("running"))
                .expression_attribute_values(":now", n(now_ms))
                .send()
                .await;
            match res {
                Ok(_) => became_current = true,
                Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {}
                Err(e) => return Err(Failure::aws("DynamoDB UpdateItem (current)", e)),
            }
        } else if status == "failed" {
            // The stack's status speaks of the deployment that holds the lease only.
            let res = self
                .update(stack_id, STACK_SK)
                .update_expression(
                    "SET #st = :failed, lastError = :e, updatedAt = :now REMOVE inProgress",
                )
                .condition_expression("inProgress = :d")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":d", s(deployment))
                .expression_attribute_values(":failed", s("failed"))
                .expression_attribute_values(":e", s(error.unwrap_or("")))
                .expression_attribute_values(":now", n(now_ms))
                .send()
                .await;
            match res {
                Ok(_) => {}
                Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {}
                Err(e) => return Err(Failure::aws("DynamoDB UpdateItem (failed)", e)),
            }
        }
        let final_status = if status == "succeeded" && !became_current {
            "superseded"
        } else {
            status
        };
        let mut up = self
            .update(stack_id, &deployment_sk(deployment))
            .update_expression(if error.is_some() {
                "SET #st = :s, finishedAt = :now, #err = :e"
            } else {
                "SET #st = :s, finishedAt = :now"
            })
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":s", s(final_status))
            .expression_attribute_values(":now", n(now_ms));
        if let Some(e) = error {
            up = up
                .expression_attribute_names("#err", "error")
                .expression_attribute_values(":e", s(e));
        }
        up.send()
            .await
            .map_err(|e| Failure::aws("DynamoDB UpdateItem (finish)", e))?;
        Ok(status != "succeeded" || became_current)
    }
}
