//! The instance's log group, with retention. Kept on teardown (logs outlive the stack).

use crate::error::Failure;
use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::Client;
use stackdrop_core::plan::InstancePlan;

/// Creates the group if missing and sets its retention. Returns whether it was created.
pub async fn ensure_log_group(logs: &Client, plan: &InstancePlan) -> Result<bool, Failure> {
    let group = &plan.log_group;
    let mut req = logs.create_log_group().log_group_name(&group.name);
    for (k, v) in &plan.tags {
        req = req.tags(k, v);
    }
    let created = match req.send().await {
        Ok(_) => true,
        Err(e) if e.code() == Some("ResourceAlreadyExistsException") => false,
        Err(e) => return Err(Failure::aws("CreateLogGroup", e)),
    };
    logs.put_retention_policy()
        .log_group_name(&group.name)
        .retention_in_days(group.retention_days as i32)
        .send()
        .await
        .map_err(|e| Failure::aws("PutRetentionPolicy", e))?;
    Ok(created)
}
