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

/// The last message in `stream` that starts with `prefix` (among its newest events), if the
/// group and stream exist.
pub async fn last_message(
    logs: &Client,
    group: &str,
    stream: &str,
    prefix: &str,
) -> Result<Option<String>, Failure> {
    let out = match logs
        .get_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .start_from_head(false)
        .limit(50)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) => return Err(Failure::aws("GetLogEvents", e)),
    };
    Ok(out
        .events()
        .iter()
        .rev()
        .filter_map(|e| e.message())
        .find(|m| m.starts_with(prefix))
        .map(str::to_string))
}
