//! `stackdrop status`: what the state store says of a stack (or of every stack).

use crate::Fatal;
use aws_sdk_dynamodb::types::AttributeValue;
use stackdrop_adapters::store::{DeploymentRecord, Store};
use stackdrop_core::lifecycle::StackState;
use stackdrop_core::plan::Source;
use std::time::Duration;

#[derive(serde::Serialize)]
struct Status {
    stack_id: String,
    stack: StackState,
    current: Option<DeploymentRecord>,
    desired: Option<DeploymentRecord>,
    /// The last operations' attempts: execution, status, console link.
    executions: Vec<String>,
    /// The stack's EventBridge Scheduler schedules: name, expression, time zone.
    schedules: Vec<String>,
}

/// Runs a future on a one-thread runtime (the CLI's AWS commands are a handful of calls).
pub fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, Fatal> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal(e.to_string()))?;
    Ok(rt.block_on(f))
}

const FINAL: &[&str] = &[
    "running", "stopped", "failed", "deleted", "empty", "invalid",
];

async fn load(
    store: &Store,
    sfn: &aws_sdk_sfn::Client,
    scheduler: &aws_sdk_scheduler::Client,
    stack_id: &str,
) -> Result<Option<Status>, Fatal> {
    let fatal = |e: stackdrop_adapters::Failure| Fatal(e.to_string());
    let Some(stack) = store.stack(stack_id).await.map_err(fatal)? else {
        return Ok(None);
    };
    let current = match &stack.current {
        Some(d) => store.deployment(stack_id, d).await.map_err(fatal)?,
        None => None,
    };
    let desired = match &stack.desired {
        Some(d) if Some(&d.id) != stack.current.as_ref() => {
            store.deployment(stack_id, &d.id).await.map_err(fatal)?
        }
        _ => None,
    };
    let records = store.deployments(stack_id).await.map_err(fatal)?;
    let executions = crate::executions::recent(sfn, &records, 5).await;
    // The installation's bucket, from what it deployed (its schedule group is tagged with it).
    let bucket = current
        .as_ref()
        .or(desired.as_ref())
        .or(records.first())
        .map(|d| Source::bucket_of_uri(&d.source).to_string())
        .unwrap_or_default();
    let schedules = schedules(scheduler, stack_id, &bucket).await;
    Ok(Some(Status {
        stack_id: stack_id.to_string(),
        stack,
        current,
        desired,
        executions,
        schedules,
    }))
}

/// The stack's schedules as Scheduler has them (a line saying why, if it cannot tell).
async fn schedules(
    scheduler: &aws_sdk_scheduler::Client,
    stack_id: &str,
    bucket: &str,
) -> Vec<String> {
    use stackdrop_adapters::scheduler::{existing, Group, Owner};
    let (app, stack) = stack_id.split_once('/').unwrap_or_default();
    let group = stackdrop_core::naming::schedule_group(app, stack);
    let owner = Owner { app, stack, bucket };
    match existing(scheduler, &group, &owner).await {
        Ok(Group::Foreign(why)) => vec![why],
        Ok(group) => {
            let mut found = group.schedules().unwrap_or_default();
            found.sort_by(|a, b| a.name.cmp(&b.name));
            found
                .iter()
                .map(|s| format!("{} {} {}", s.name, s.expression, s.timezone))
                .collect()
        }
        Err(e) => vec![format!("unknown ({})", e.message)],
    }
}

async fn all_stacks(store: &Store) -> Result<Vec<String>, Fatal> {
    let mut ids = Vec::new();
    let mut start = None;
    loop {
        let out = store
            .ddb
            .scan()
            .table_name(&store.table)
            .filter_expression("sk = :s")
            .expression_attribute_values(":s", AttributeValue::S("stack".into()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| Fatal::aws(&format!("reading {}", store.table), "Scan", e))?;
        for item in out.items() {
            if let Some(pk) = item.get("pk").and_then(|v| v.as_s().ok()) {
                ids.push(pk.trim_start_matches("stack#").to_string());
            }
        }
        match out.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    ids.sort();
    Ok(ids)
}

fn when(ms: u64, since: u64) -> String {
    if since == 0 || ms < since {
        return String::new();
    }
    format!("+{:.1}s", (ms - since) as f64 / 1000.0)
}

fn render(s: &Status) -> String {
    let st = &s.stack;
    let mut out = format!(
        "stack {}: {}\n  current  {}\n  desired  {}\n",
        s.stack_id,
        st.status.as_deref().unwrap_or("unknown"),
        st.current
            .as_deref()
            .map(|d| format!("{d} ({})", st.current_source.as_deref().unwrap_or("")))
            .unwrap_or_else(|| "none".into()),
        st.desired
            .as_ref()
            .map(|d| format!(
                "{} {:?} of s3://{}{}",
                d.id,
                d.action,
                d.source,
                d.version
                    .as_deref()
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default()
            ))
            .unwrap_or_else(|| "none".into()),
    );
    if let Some(l) = &st.lease {
        out.push_str(&format!(
            "  in progress  {} attempt {} ({})\n",
            l.op, l.attempt, l.owner
        ));
    }
    if let Some(e) = &st.last_error {
        out.push_str(&format!("  last error  {e}\n"));
    }
    for (label, d) in [
        ("requested", &s.desired),
        ("current deployment", &s.current),
    ] {
        let Some(d) = d else { continue };
        out.push_str(&format!(
            "\n{label} {} ({}): {}\n",
            d.deployment, d.source, d.status
        ));
        for step in &d.steps {
            out.push_str(&format!(
                "  {:>8}  {:<9} {}\n",
                when(step.at, d.started_at),
                step.step,
                step.detail
            ));
        }
        let mut names: Vec<&String> = d.instances.keys().collect();
        names.sort();
        for n in names {
            let i = &d.instances[n];
            out.push_str(&format!(
                "  instance {n}: {} {}{}{}\n",
                i.instance_id.as_deref().unwrap_or("-"),
                i.state.as_deref().unwrap_or("-"),
                i.private_ip
                    .as_deref()
                    .map(|ip| format!(" private {ip}"))
                    .unwrap_or_default(),
                i.public_ip
                    .as_deref()
                    .map(|ip| format!(" public {ip}"))
                    .unwrap_or_default(),
            ));
        }
        if let Some(e) = &d.error {
            out.push_str(&format!("  error: {e}\n"));
        }
    }
    if !s.schedules.is_empty() {
        let (app, stack) = s.stack_id.split_once('/').unwrap_or_default();
        out.push_str(&format!(
            "\nschedules (group {}):\n",
            stackdrop_core::naming::schedule_group(app, stack)
        ));
        for line in &s.schedules {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if !s.executions.is_empty() {
        out.push_str("\nrecent operations (newest first):\n");
        for line in &s.executions {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub fn run(stack: Option<String>, watch: bool, json: bool, table: String) -> Result<(), Fatal> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal(e.to_string()))?;
    rt.block_on(async {
        let conf = stackdrop_adapters::sdk_config(Some(crate::APP_NAME)).await;
        let store = Store::new(aws_sdk_dynamodb::Client::new(&conf), table);
        let sfn = aws_sdk_sfn::Client::new(&conf);
        let scheduler = aws_sdk_scheduler::Client::new(&conf);
        let ids = match &stack {
            Some(s) => vec![s.clone()],
            None => all_stacks(&store).await?,
        };
        if ids.is_empty() && !json {
            println!("no stacks deployed yet (table {})", store.table);
            return Ok(());
        }
        loop {
            let mut statuses = Vec::new();
            for id in &ids {
                match load(&store, &sfn, &scheduler, id).await? {
                    Some(s) => statuses.push(s),
                    None if stack.is_some() => {
                        return Err(Fatal(format!(
                            "no stack {id:?} in {} (stacks are named app/stack)",
                            store.table
                        )))
                    }
                    None => {}
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&statuses).map_err(|e| Fatal(e.to_string()))?
                );
            } else {
                if watch {
                    print!("\x1b[2J\x1b[H");
                }
                for s in &statuses {
                    println!("{}", render(s));
                }
            }
            let settled = statuses
                .iter()
                .all(|s| FINAL.contains(&s.stack.status.as_deref().unwrap_or("")));
            if !watch || settled {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}
