//! The deployment's result on EventBridge (`source: stackdrop`), for rules and notifications.

use crate::error::Failure;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use stackdrop_core::lifecycle::OpAction;
use stackdrop_core::pipeline::{Outcome, Summary};

/// The event for an operation's outcome; None for those that changed nothing (superseded,
/// duplicate, no-op: the execution output says why).
pub fn detail_type(action: OpAction, outcome: Outcome) -> Option<&'static str> {
    match (action, outcome) {
        (OpAction::Deploy, Outcome::Succeeded) => Some("Stack Deployed"),
        (OpAction::Deploy, Outcome::Failed) => Some("Stack Deploy Failed"),
        (OpAction::Teardown, Outcome::Deleted) => Some("Stack Deleted"),
        (OpAction::Teardown, Outcome::Failed) => Some("Stack Teardown Failed"),
        (OpAction::Start, Outcome::Succeeded) => Some("Instance Started"),
        (OpAction::Stop, Outcome::Succeeded) => Some("Instance Stopped"),
        (OpAction::Start | OpAction::Stop, Outcome::Failed) => Some("Instance Power Failed"),
        (OpAction::Reconcile, Outcome::Succeeded) => Some("Stack Reconciled"),
        (OpAction::Reconcile, Outcome::Failed) => Some("Stack Reconcile Failed"),
        _ => None,
    }
}

pub async fn publish(events: &Client, bus: &str, summary: &Summary) -> Result<(), Failure> {
    let Some(detail_type) = detail_type(summary.action, summary.status) else {
        return Ok(());
    };
    let entry = PutEventsRequestEntry::builder()
        .source("stackdrop")
        .detail_type(detail_type)
        .detail(serde_json::to_string(summary).unwrap_or_default())
        .event_bus_name(bus)
        .build();
    let out = events
        .put_events()
        .entries(entry)
        .send()
        .await
        .map_err(|e| Failure::aws("PutEvents", e))?;
    if out.failed_entry_count() > 0 {
        let why = out
            .entries()
            .iter()
            .filter_map(|e| e.error_message())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Failure::new(
            crate::Kind::AwsError,
            format!("PutEvents: {why}"),
        ));
    }
    Ok(())
}
