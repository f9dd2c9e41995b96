//! The deployment's result on EventBridge (`source: stackdrop`), for rules and notifications.

use crate::error::Failure;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use stackdrop_core::pipeline::{Outcome, Summary};

pub fn detail_type(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "Stackdrop Deployment Succeeded",
        Outcome::Failed => "Stackdrop Deployment Failed",
        Outcome::Superseded => "Stackdrop Deployment Superseded",
        Outcome::Noop => "Stackdrop Deployment Unchanged",
    }
}

pub async fn publish(events: &Client, bus: &str, summary: &Summary) -> Result<(), Failure> {
    let entry = PutEventsRequestEntry::builder()
        .source("stackdrop")
        .detail_type(detail_type(summary.status))
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
