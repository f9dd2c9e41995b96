//! EventBridge Scheduler: the stack's schedule group and its start/stop schedules. The group is
//! created with the stack's tags and is touched only when it carries them (a group of the same
//! name that stackdrop did not create is left alone, never adopted or deleted). What to change is
//! the core's decision ([`stackdrop_core::schedules::sync`]); every call here is safe to repeat.

use crate::error::{code_of, Failure, Kind};
use aws_sdk_scheduler::types::{
    FlexibleTimeWindow, FlexibleTimeWindowMode, ScheduleState, Tag, Target as SdkTarget,
};
use aws_sdk_scheduler::Client;
use stackdrop_core::schedules::{self, Existing, GroupOwner, Sync, Target, Wanted};

const NOT_FOUND: &str = "ResourceNotFoundException";
const CONFLICT: &str = "ConflictException";

/// The stack a group belongs to: its `stackdrop:app` and `stackdrop:stack` tags, and the
/// installation's bundle bucket (`stackdrop:source`).
pub struct Owner<'a> {
    pub app: &'a str,
    pub stack: &'a str,
    pub bucket: &'a str,
}

/// What is in the stack's group's place.
#[derive(Debug)]
pub enum Group {
    Missing,
    /// A group of that name without the stack's tags: never used, never deleted.
    Foreign(String),
    Ours(Vec<Existing>),
    /// The stack's, made before groups named their installation: ours ([`claim`] tags it).
    Untagged {
        arn: String,
        schedules: Vec<Existing>,
    },
}

impl Group {
    /// The stack's schedules, if the group is the stack's.
    pub fn schedules(self) -> Option<Vec<Existing>> {
        match self {
            Group::Ours(s) | Group::Untagged { schedules: s, .. } => Some(s),
            Group::Missing | Group::Foreign(_) => None,
        }
    }
}

/// The stack's group and its schedules (reads only).
pub async fn existing(client: &Client, group: &str, owner: &Owner<'_>) -> Result<Group, Failure> {
    let arn = match client.get_schedule_group().name(group).send().await {
        Ok(out) => out.arn().unwrap_or_default().to_string(),
        Err(e) if code_of(&e) == Some(NOT_FOUND) => return Ok(Group::Missing),
        Err(e) => return Err(Failure::aws("Scheduler GetScheduleGroup", e)),
    };
    let untagged = match owner_of(client, group, &arn, owner).await? {
        GroupOwner::Foreign(why) => return Ok(Group::Foreign(why)),
        GroupOwner::Ours => false,
        GroupOwner::OursUntagged => true,
    };
    let mut names = Vec::new();
    let mut pages = client
        .list_schedules()
        .group_name(group)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Failure::aws("Scheduler ListSchedules", e))?;
        names.extend(
            page.schedules()
                .iter()
                .filter_map(|s| s.name().map(String::from)),
        );
    }
    let mut out = Vec::new();
    for name in names {
        match client
            .get_schedule()
            .group_name(group)
            .name(&name)
            .send()
            .await
        {
            Ok(s) => out.push(Existing {
                name,
                expression: s.schedule_expression().unwrap_or_default().into(),
                timezone: s.schedule_expression_timezone().unwrap_or("UTC").into(),
                input: s
                    .target()
                    .and_then(|t| t.input())
                    .unwrap_or_default()
                    .into(),
                target_arn: s.target().map(|t| t.arn()).unwrap_or_default().into(),
                role_arn: s.target().map(|t| t.role_arn()).unwrap_or_default().into(),
            }),
            Err(e) if code_of(&e) == Some(NOT_FOUND) => {}
            Err(e) => return Err(Failure::aws("Scheduler GetSchedule", e)),
        }
    }
    Ok(if untagged {
        Group::Untagged {
            arn,
            schedules: out,
        }
    } else {
        Group::Ours(out)
    })
}

/// Whose the group is, from its tags ([`schedules::group_owner`] decides).
async fn owner_of(
    client: &Client,
    group: &str,
    arn: &str,
    owner: &Owner<'_>,
) -> Result<GroupOwner, Failure> {
    let tags = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| Failure::aws("Scheduler ListTagsForResource", e))?;
    let tags: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    Ok(schedules::group_owner(
        &tags,
        group,
        owner.app,
        owner.stack,
        owner.bucket,
    ))
}

/// Tags a group of the stack made before groups named their installation with this one's bucket.
pub async fn claim(client: &Client, arn: &str, owner: &Owner<'_>) -> Result<(), Failure> {
    client
        .tag_resource()
        .resource_arn(arn)
        .tags(tag(schedules::SOURCE_TAG, owner.bucket)?)
        .send()
        .await
        .map_err(|e| Failure::aws("Scheduler TagResource", e))?;
    Ok(())
}

fn tag(k: &str, v: &str) -> Result<Tag, Failure> {
    Tag::builder()
        .key(k)
        .value(v)
        .build()
        .map_err(|e| Failure::new(Kind::AwsError, e.to_string()))
}

/// Creates the stack's group (tagged with the stack) if it does not exist yet.
pub async fn ensure_group(client: &Client, group: &str, owner: &Owner<'_>) -> Result<(), Failure> {
    let res = client
        .create_schedule_group()
        .name(group)
        .tags(tag(schedules::APP_TAG, owner.app)?)
        .tags(tag(schedules::STACK_TAG, owner.stack)?)
        .tags(tag(schedules::SOURCE_TAG, owner.bucket)?)
        .send()
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if code_of(&e) == Some(CONFLICT) => Ok(()),
        Err(e) => Err(Failure::aws("Scheduler CreateScheduleGroup", e)),
    }
}

/// Does what `sync` says in `group`. A create that finds the schedule there already updates it
/// (a retried step), an update that finds it gone creates it, a delete of a gone one is done.
pub async fn apply(
    client: &Client,
    group: &str,
    sync: &Sync,
    target: &Target,
) -> Result<(), Failure> {
    for w in &sync.create {
        match create(client, group, w, target).await {
            Err((Some(c), _)) if c == CONFLICT => update(client, group, w, target).await,
            r => r,
        }
        .map_err(|(_, f)| f)?;
    }
    for w in &sync.update {
        match update(client, group, w, target).await {
            Err((Some(c), _)) if c == NOT_FOUND => create(client, group, w, target).await,
            r => r,
        }
        .map_err(|(_, f)| f)?;
    }
    for name in &sync.delete {
        delete_schedule(client, group, name).await?;
    }
    Ok(())
}

fn parts(w: &Wanted, target: &Target) -> Result<(FlexibleTimeWindow, SdkTarget), Failure> {
    let window = FlexibleTimeWindow::builder()
        .mode(FlexibleTimeWindowMode::Off)
        .build()
        .map_err(|e| Failure::new(Kind::AwsError, e.to_string()))?;
    let t = SdkTarget::builder()
        .arn(&target.state_machine_arn)
        .role_arn(&target.role_arn)
        .input(&w.input)
        .build()
        .map_err(|e| Failure::new(Kind::AwsError, e.to_string()))?;
    Ok((window, t))
}

/// CreateSchedule and UpdateSchedule take the same whole schedule (their builders are two types
/// with the same setters). The error keeps AWS's code, which `apply` decides on.
macro_rules! whole_schedule {
    ($req:expr, $group:expr, $w:expr, $target:expr, $what:literal) => {{
        let (window, t) = parts($w, $target).map_err(|f| (None, f))?;
        $req.group_name($group)
            .name(&$w.name)
            .description(format!("stackdrop: {} instance {}", $w.action, $w.instance))
            .schedule_expression(&$w.expression)
            .schedule_expression_timezone(&$w.timezone)
            .flexible_time_window(window)
            .target(t)
            .state(ScheduleState::Enabled)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| (code_of(&e).map(String::from), Failure::aws($what, e)))
    }};
}

/// A failed call: AWS's error code (if it answered one) and the failure.
type Refused = (Option<String>, Failure);

async fn create(client: &Client, group: &str, w: &Wanted, target: &Target) -> Result<(), Refused> {
    whole_schedule!(
        client.create_schedule(),
        group,
        w,
        target,
        "Scheduler CreateSchedule"
    )
}

async fn update(client: &Client, group: &str, w: &Wanted, target: &Target) -> Result<(), Refused> {
    whole_schedule!(
        client.update_schedule(),
        group,
        w,
        target,
        "Scheduler UpdateSchedule"
    )
}

async fn delete_schedule(client: &Client, group: &str, name: &str) -> Result<(), Failure> {
    match client
        .delete_schedule()
        .group_name(group)
        .name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code_of(&e) == Some(NOT_FOUND) => Ok(()),
        Err(e) => Err(Failure::aws("Scheduler DeleteSchedule", e)),
    }
}

/// Deletes every schedule of the stack's group, then the group (teardown, or no schedule
/// left). Nothing to do when the group is gone; a group that is not the stack's is left alone
/// (the reason is returned).
pub async fn delete_group(
    client: &Client,
    group: &str,
    owner: &Owner<'_>,
) -> Result<Option<String>, Failure> {
    let schedules = match existing(client, group, owner).await? {
        Group::Missing => return Ok(None),
        Group::Foreign(why) => return Ok(Some(why)),
        ours => ours.schedules().unwrap_or_default(),
    };
    for s in &schedules {
        delete_schedule(client, group, &s.name).await?;
    }
    match client.delete_schedule_group().name(group).send().await {
        Ok(_) => Ok(None),
        Err(e) if code_of(&e) == Some(NOT_FOUND) => Ok(None),
        Err(e) => Err(Failure::aws("Scheduler DeleteScheduleGroup", e)),
    }
}
