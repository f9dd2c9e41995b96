//! The state store: one DynamoDB table keyed by stack (`pk = stack#{app}/{stack}`).
//!
//! | sk | holds |
//! |---|---|
//! | `stack` | the core's [`StackState`]: `rev`, `desired`, `current`, `lease`, `attempt`, `status`, launched `instances` |
//! | `deployment#{id}` | its source, `status`, `steps` (what happened when), `instances` (id, state, IPs), `error`, `cleaned` |
//! | `plan#{id}#{instance}` | the instance's full plan (JSON) |
//!
//! and `pk = source#{bucket}/{key}`, `sk = source`: the stack a key deployed (for teardown).
//!
//! The stack item changes only by read-modify-write conditional on the revision read
//! ([`Store::update_stack`]): the decisions are the core's pure functions over what was read,
//! and a concurrent writer makes the loser read again and decide again. The lease fence
//! ([`Store::renew`], [`Store::register_instance`]) is a conditional update on the lease itself.

use crate::error::{Failure, Kind};
use aws_sdk_dynamodb::types::AttributeValue as Av;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use stackdrop_core::lifecycle::{Launched, StackState, LEASE_SECONDS};
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

fn source_pk(bucket: &str, key: &str) -> String {
    format!("source#{bucket}/{key}")
}

/// One deployment's (or teardown's) record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    pub deployment: String,
    pub source: String,
    pub status: String,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// Oldest first.
    #[serde(default, deserialize_with = "json_strings")]
    pub steps: Vec<Step>,
    /// Instance name -> its last known state.
    #[serde(default, deserialize_with = "json_string_map")]
    pub instances: HashMap<String, InstanceRecord>,
    /// Its role, profile, group and template are gone.
    #[serde(default)]
    pub cleaned: bool,
    /// The names of its instances (their plans are `plan#{id}#{name}`).
    #[serde(default)]
    pub names: Vec<String>,
    /// Each attempt and the execution that ran it, oldest first.
    #[serde(default, deserialize_with = "json_strings")]
    pub attempts: Vec<Attempt>,
    /// How many times provision started creating its resources.
    #[serde(default)]
    pub provisions: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub attempt: u64,
    pub execution: String,
    pub at: u64,
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

// Steps and instance records are stored as JSON strings (appended by concurrent Map branches).
fn json_strings<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    let raw: Vec<String> = Deserialize::deserialize(d)?;
    Ok(raw
        .iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect())
}

fn json_string_map<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<HashMap<String, T>, D::Error> {
    let raw: HashMap<String, String> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_str(&v).ok()?)))
        .collect())
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

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

fn unreadable(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(
        Kind::AwsError,
        format!("the state store's {what} is unreadable: {e}"),
    )
}

/// The execution lost the stack's lease (it expired and another operation took it, or the
/// attempt is being rolled back): it must change nothing more.
pub fn lease_lost(owner: &str, attempt: u64) -> Failure {
    Failure::new(
        Kind::LeaseLost,
        format!("execution {owner} no longer holds the stack for attempt {attempt}"),
    )
}

/// What [`Store::update_stack`]'s decision returns: the state to write, and a result.
#[allow(clippy::large_enum_variant)] // one short-lived value per write
pub enum Change<T> {
    Write(StackState, T),
    Keep(T),
}

impl Store {
    pub fn new(ddb: Client, table: impl Into<String>) -> Store {
        Store {
            ddb,
            table: table.into(),
        }
    }

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

    async fn get_item(&self, pk: &str, sk: &str) -> Result<Option<HashMap<String, Av>>, Failure> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Failure::aws("DynamoDB GetItem", e))?;
        Ok(out.item)
    }

    pub async fn stack(&self, stack_id: &str) -> Result<Option<StackState>, Failure> {
        match self.get_item(&pk(stack_id), STACK_SK).await? {
            Some(item) => serde_dynamo::from_item(item)
                .map(Some)
                .map_err(|e| unreadable("stack record", e)),
            None => Ok(None),
        }
    }

    /// Reads the stack, lets `decide` choose, writes the new state if it asks, conditional on
    /// the revision read; on a concurrent write, reads and decides again.
    pub async fn update_stack<T>(
        &self,
        stack_id: &str,
        now_ms: u64,
        mut decide: impl FnMut(&StackState) -> Result<Change<T>, Failure>,
    ) -> Result<T, Failure> {
        for _ in 0..20 {
            let before = self.stack(stack_id).await?;
            let exists = before.is_some();
            let before = before.unwrap_or_default();
            let (mut after, result) = match decide(&before)? {
                Change::Keep(r) => return Ok(r),
                Change::Write(after, r) => (after, r),
            };
            after.rev = before.rev + 1;
            after.updated_at = now_ms;
            let mut item: HashMap<String, Av> =
                serde_dynamo::to_item(&after).map_err(|e| unreadable("stack record", e))?;
            item.insert("pk".into(), s(&pk(stack_id)));
            item.insert("sk".into(), s(STACK_SK));
            let mut put = self
                .ddb
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            put = if exists {
                put.condition_expression("rev = :rev")
                    .expression_attribute_values(":rev", n(before.rev))
            } else {
                put.condition_expression("attribute_not_exists(pk)")
            };
            match put.send().await {
                Ok(_) => return Ok(result),
                Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => continue,
                Err(e) => return Err(Failure::aws("DynamoDB PutItem (stack)", e)),
            }
        }
        Err(Failure::new(
            Kind::Throttled,
            format!("the stack record of {stack_id} kept changing under this write; try again"),
        ))
    }

    /// The fence every step passes before it writes: extends the lease if `owner` still holds it
    /// for `attempt` (and, with `creating`, is not rolling back) and `op` is still the desired
    /// operation. Otherwise [`Kind::Superseded`] (a newer request) or [`Kind::LeaseLost`].
    pub async fn fence(
        &self,
        stack_id: &str,
        owner: &str,
        attempt: u64,
        op: &str,
        creating: bool,
        now_s: u64,
    ) -> Result<(), Failure> {
        self.renew(stack_id, owner, attempt, Some(op), creating, now_s)
            .await
    }

    /// The fence of the finishing steps: the lease only (they run whatever is desired now).
    pub async fn hold(
        &self,
        stack_id: &str,
        owner: &str,
        attempt: u64,
        now_s: u64,
    ) -> Result<(), Failure> {
        self.renew(stack_id, owner, attempt, None, false, now_s)
            .await
    }

    async fn renew(
        &self,
        stack_id: &str,
        owner: &str,
        attempt: u64,
        op: Option<&str>,
        creating: bool,
        now_s: u64,
    ) -> Result<(), Failure> {
        let mut cond = "lease.#owner = :o AND lease.attempt = :a".to_string();
        if op.is_some() {
            cond.push_str(" AND desired.id = :op");
        }
        if creating {
            cond.push_str(" AND lease.closing = :no");
        }
        let mut req = self
            .update(stack_id, STACK_SK)
            .update_expression("SET lease.expires = :e, rev = rev + :one")
            .condition_expression(cond)
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":a", n(attempt))
            .expression_attribute_values(":e", n(now_s + LEASE_SECONDS))
            .expression_attribute_values(":one", n(1));
        if let Some(op) = op {
            req = req.expression_attribute_values(":op", s(op));
        }
        if creating {
            req = req.expression_attribute_values(":no", Av::Bool(false));
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {
                let state = self.stack(stack_id).await?.unwrap_or_default();
                match (state.desired, op) {
                    (Some(d), Some(op)) if d.id != op => Err(Failure::new(
                        Kind::Superseded,
                        format!("{op} was superseded by {}", d.id),
                    )),
                    _ => Err(lease_lost(owner, attempt)),
                }
            }
            Err(e) => Err(Failure::aws("DynamoDB UpdateItem (lease)", e)),
        }
    }

    /// The plan of a Map item's instance, once the item passed the fence.
    pub async fn task_plan(
        &self,
        task: &stackdrop_core::pipeline::InstanceTask,
        creating: bool,
        now_s: u64,
    ) -> Result<stackdrop_core::plan::InstancePlan, Failure> {
        self.fence(
            &task.stack_id,
            &task.owner,
            task.attempt,
            &task.deployment,
            creating,
            now_s,
        )
        .await?;
        self.plan(&task.stack_id, &task.deployment, &task.instance)
            .await
    }

    /// Records a launched instance under the fence. [`Kind::LeaseLost`] means the attempt is
    /// closed: the caller must terminate what it launched.
    pub async fn register_instance(
        &self,
        stack_id: &str,
        owner: &str,
        attempt: u64,
        id: &str,
        launched: &Launched,
    ) -> Result<(), Failure> {
        let value: Av = serde_dynamo::to_attribute_value(launched)
            .map_err(|e| unreadable("instance record", e))?;
        let res = self
            .update(stack_id, STACK_SK)
            .update_expression("SET instances.#id = :v, rev = rev + :one")
            .condition_expression(
                "lease.#owner = :o AND lease.attempt = :a AND lease.closing = :no",
            )
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#id", id)
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":a", n(attempt))
            .expression_attribute_values(":no", Av::Bool(false))
            .expression_attribute_values(":v", value)
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => {
                Err(lease_lost(owner, attempt))
            }
            Err(e) => Err(Failure::aws("DynamoDB UpdateItem (instance)", e)),
        }
    }

    /// Creates the deployment's record once (a re-run keeps the first one's history).
    pub async fn start_deployment(
        &self,
        stack_id: &str,
        deployment: &str,
        source: &str,
        names: &[String],
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
            .item("cleaned", Av::Bool(false))
            .item("names", Av::L(names.iter().map(|n| s(n)).collect()))
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

    /// Records that `execution` runs attempt `attempt` of the operation (once per attempt).
    pub async fn record_attempt(
        &self,
        stack_id: &str,
        deployment: &str,
        a: &Attempt,
    ) -> Result<(), Failure> {
        let entry = serde_json::to_string(a).unwrap_or_default();
        let res = self
            .update(stack_id, &deployment_sk(deployment))
            .update_expression(
                "SET attempts = list_append(if_not_exists(attempts, :empty), :e), lastAttempt = :n",
            )
            .condition_expression("attribute_not_exists(lastAttempt) OR lastAttempt < :n")
            .expression_attribute_values(":e", Av::L(vec![s(&entry)]))
            .expression_attribute_values(":empty", Av::L(vec![]))
            .expression_attribute_values(":n", n(a.attempt))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => Ok(()),
            Err(e) => Err(Failure::aws("DynamoDB UpdateItem (attempt)", e)),
        }
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
        match self
            .get_item(&pk(stack_id), &deployment_sk(deployment))
            .await?
        {
            Some(item) => serde_dynamo::from_item(item)
                .map(Some)
                .map_err(|e| unreadable("deployment record", e)),
            None => Ok(None),
        }
    }

    /// Every deployment record of the stack, oldest first.
    pub async fn deployments(&self, stack_id: &str) -> Result<Vec<DeploymentRecord>, Failure> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :d)")
                .expression_attribute_values(":pk", s(&pk(stack_id)))
                .expression_attribute_values(":d", s("deployment#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| Failure::aws("DynamoDB Query (deployments)", e))?;
            for item in page.items() {
                out.push(
                    serde_dynamo::from_item(item.clone())
                        .map_err(|e| unreadable("deployment record", e))?,
                );
            }
            match page.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        out.sort_by_key(|d: &DeploymentRecord| d.started_at);
        Ok(out)
    }

    /// Records how the deployment ended (status, error) in its own record.
    pub async fn finish_deployment(
        &self,
        stack_id: &str,
        deployment: &str,
        status: &str,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Failure> {
        let mut up = self
            .update(stack_id, &deployment_sk(deployment))
            .update_expression(if error.is_some() {
                "SET #st = :s, finishedAt = :now, #err = :e"
            } else {
                "SET #st = :s, finishedAt = :now REMOVE #err"
            })
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#err", "error")
            .expression_attribute_values(":s", s(status))
            .expression_attribute_values(":now", n(now_ms));
        if let Some(e) = error {
            up = up.expression_attribute_values(":e", s(e));
        }
        up.send()
            .await
            .map_err(|e| Failure::aws("DynamoDB UpdateItem (finish)", e))?;
        Ok(())
    }

    /// Provision is about to create the deployment's resources (again, after a rollback and
    /// a new attempt): its record must say they exist before they do. Bumps `provisions`.
    pub async fn mark_provisioning(&self, stack_id: &str, deployment: &str) -> Result<(), Failure> {
        self.update(stack_id, &deployment_sk(deployment))
            .update_expression("SET cleaned = :f ADD provisions :one")
            .expression_attribute_values(":f", Av::Bool(false))
            .expression_attribute_values(":one", n(1))
            .send()
            .await
            .map_err(|e| Failure::aws("DynamoDB UpdateItem (provisioning)", e))?;
        Ok(())
    }

    /// Marks the deployment's resources as deleted, unless a provision started since
    /// `provisions` was read (then false: what it creates is swept by a later cleanup).
    pub async fn mark_cleaned(
        &self,
        stack_id: &str,
        deployment: &str,
        provisions: u64,
    ) -> Result<bool, Failure> {
        let res = self
            .update(stack_id, &deployment_sk(deployment))
            .update_expression("SET cleaned = :t")
            .condition_expression(
                "attribute_exists(sk) AND (attribute_not_exists(provisions) OR provisions = :p)",
            )
            .expression_attribute_values(":t", Av::Bool(true))
            .expression_attribute_values(":p", n(provisions))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(is_conditional_failure) => Ok(false),
            Err(e) => Err(Failure::aws("DynamoDB UpdateItem (cleaned)", e)),
        }
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
        let item = self
            .get_item(&pk(stack_id), &plan_sk(deployment, instance))
            .await?;
        let json = item
            .as_ref()
            .and_then(|i| i.get("plan"))
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| Failure::new(Kind::InvalidInput, format!("no plan for instance {instance} of deployment {deployment} (was it validated?)")))?;
        serde_json::from_str(json).map_err(|e| {
            Failure::new(
                Kind::InvalidInput,
                format!("stored plan of {instance} is unreadable: {e}"),
            )
        })
    }

    /// Remembers which stack a bundle key deployed (teardown starts from the key alone).
    pub async fn put_source(&self, bucket: &str, key: &str, stack_id: &str) -> Result<(), Failure> {
        self.ddb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&source_pk(bucket, key)))
            .item("sk", s("source"))
            .item("stackId", s(stack_id))
            .send()
            .await
            .map_err(|e| Failure::aws("DynamoDB PutItem (source)", e))?;
        Ok(())
    }

    pub async fn source_stack(&self, bucket: &str, key: &str) -> Result<Option<String>, Failure> {
        Ok(self
            .get_item(&source_pk(bucket, key), "source")
            .await?
            .and_then(|i| i.get("stackId").and_then(|v| v.as_s().ok()).cloned()))
    }
}
