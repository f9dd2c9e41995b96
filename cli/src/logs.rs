//! `stackdrop logs STACK [INSTANCE] [--follow]`: the log groups of a stack's instances, their
//! streams `{instance-id}/bootstrap` and `{instance-id}/app`, in time order.

use crate::Fatal;
use aws_sdk_cloudwatchlogs::Client;
use aws_smithy_types::date_time::{DateTime, Format};
use stackdrop_core::naming;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far back each `--follow` poll looks: the shipper sends a batch within seconds, so an event
/// arrives with a timestamp at most this old.
const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// One event of one instance's log group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Line {
    pub timestamp: i64,
    pub instance: String,
    pub stream: String,
    pub message: String,
    pub id: String,
}

impl Line {
    /// `TIMESTAMP INSTANCE/INSTANCE-ID STREAM: message`.
    pub fn render(&self) -> String {
        let when = DateTime::from_millis(self.timestamp)
            .fmt(Format::DateTime)
            .unwrap_or_else(|_| self.timestamp.to_string());
        let (id, suffix) = self.stream.split_once('/').unwrap_or(("-", &self.stream));
        format!(
            "{when} {}/{id} {suffix}: {}",
            self.instance,
            self.message.trim_end_matches('\n')
        )
    }
}

/// The stack's instances that have a log group: (instance name, group), by name.
async fn groups(
    logs: &Client,
    stack_id: &str,
    instance: Option<&str>,
) -> Result<Vec<(String, String)>, Fatal> {
    let Some((app, stack)) = stack_id.split_once('/') else {
        return Err(Fatal(format!(
            "{stack_id:?}: name the stack as app/stack (as `stackdrop status` lists them)"
        )));
    };
    let (app, stack) = (naming::kebab(app), naming::kebab(stack));
    // Names are kebab-case, never `--`: what follows the prefix is exactly an instance name.
    let prefix = format!(
        "{}{}",
        naming::LOG_GROUP_PREFIX,
        naming::resource_name(&app, &stack, "")
    );
    let mut found = Vec::new();
    let mut pages = logs
        .describe_log_groups()
        .log_group_name_prefix(&prefix)
        .into_paginator()
        .items()
        .send();
    while let Some(group) = pages.next().await {
        let group = group.map_err(|e| {
            Fatal::aws(
                &format!("reading the log groups {prefix}*"),
                "DescribeLogGroups",
                e,
            )
        })?;
        if let Some(name) = group.log_group_name() {
            found.push((name[prefix.len()..].to_string(), name.to_string()));
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(Fatal(format!(
            "no logs for stack {app}/{stack}: no log group {prefix}* (not deployed yet, or in \
             another account or region)"
        )));
    }
    let Some(want) = instance else {
        return Ok(found);
    };
    let want = naming::kebab(want);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    match found.iter().find(|(n, _)| *n == want) {
        Some(g) => Ok(vec![g.clone()]),
        None => Err(Fatal(format!(
            "no logs for instance {want} of {app}/{stack} (instances with logs: {})",
            names.join(", ")
        ))),
    }
}

/// Every event of the groups from `start` (ms, inclusive) on, in time order.
async fn events(
    logs: &Client,
    groups: &[(String, String)],
    start: Option<i64>,
) -> Result<Vec<Line>, Fatal> {
    let mut lines = Vec::new();
    for (instance, group) in groups {
        let mut pages = logs
            .filter_log_events()
            .log_group_name(group)
            .set_start_time(start)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| Fatal::aws(&format!("reading {group}"), "FilterLogEvents", e))?;
            for e in page.events() {
                lines.push(Line {
                    timestamp: e.timestamp().unwrap_or_default(),
                    instance: instance.clone(),
                    stream: e.log_stream_name().unwrap_or_default().to_string(),
                    message: e.message().unwrap_or_default().to_string(),
                    id: e.event_id().unwrap_or_default().to_string(),
                });
            }
        }
    }
    // Stable: a stream's events with the same timestamp stay in its order.
    lines.sort_by_key(|l| l.timestamp);
    Ok(lines)
}

/// The lines not seen yet, remembered in `seen` (by event id, forgotten once older than `floor`).
pub fn fresh(lines: Vec<Line>, seen: &mut BTreeSet<(i64, String)>, floor: i64) -> Vec<Line> {
    *seen = seen.split_off(&(floor, String::new()));
    lines
        .into_iter()
        .filter(|l| seen.insert((l.timestamp, l.id.clone())))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub fn run(stack: String, instance: Option<String>, follow: bool) -> Result<(), Fatal> {
    crate::status::block_on(async {
        let conf = stackdrop_adapters::sdk_config(Some(crate::APP_NAME)).await;
        let logs = Client::new(&conf);
        let groups = groups(&logs, &stack, instance.as_deref()).await?;
        let mut out = std::io::stdout().lock();
        let (mut seen, mut start) = (BTreeSet::new(), None);
        loop {
            let lines = events(&logs, &groups, start).await?;
            let newest = lines.iter().map(|l| l.timestamp).max().unwrap_or(0);
            let floor = newest.max(now_ms()) - LOOKBACK_MS;
            for l in fresh(lines, &mut seen, start.unwrap_or(i64::MIN)) {
                // A closed pipe (`| head`) ends the command quietly.
                if writeln!(out, "{}", l.render()).is_err() {
                    return Ok(());
                }
            }
            if !follow || out.flush().is_err() {
                return Ok(());
            }
            start = Some(floor);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(timestamp: i64, id: &str) -> Line {
        Line {
            timestamp,
            instance: "web".into(),
            stream: "i-0abc/app".into(),
            message: format!("m{id}\n"),
            id: id.into(),
        }
    }

    #[test]
    fn a_line_names_its_time_instance_and_stream() {
        assert_eq!(
            line(1_709_294_400_123, "1").render(),
            "2024-03-01T12:00:00.123Z web/i-0abc app: m1"
        );
    }

    #[test]
    fn follow_prints_each_event_once_and_forgets_old_ids() {
        let mut seen = BTreeSet::new();
        let got = fresh(vec![line(10, "a"), line(20, "b")], &mut seen, 0);
        assert_eq!(got.len(), 2);
        let got = fresh(
            vec![line(20, "b"), line(20, "c"), line(30, "d")],
            &mut seen,
            15,
        );
        assert_eq!(got, [line(20, "c"), line(30, "d")]);
        assert!(!seen.contains(&(10, "a".to_string())), "{seen:?}");
    }
}
