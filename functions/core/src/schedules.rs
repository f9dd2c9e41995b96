//! The stack's EventBridge Scheduler schedules: which ones its current deployment asks for
//! (from each instance's `schedule`), and what to create, update and delete to get there. One
//! schedule group per stack ([`crate::naming::schedule_group`]); each schedule starts the deploy
//! state machine with `{"action":"start"|"stop","bucket","key","instance"}`.

use crate::naming;
use crate::schedule::Schedule;

/// What every schedule of the installation targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The deploy state machine.
    pub state_machine_arn: String,
    /// The role EventBridge Scheduler assumes to start it.
    pub role_arn: String,
}

/// A schedule the current deployment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub instance: String,
    /// `start` or `stop`.
    pub action: String,
    pub expression: String,
    pub timezone: String,
    /// The state machine's input, as JSON text.
    pub input: String,
}

/// A schedule that exists in the stack's group, as Scheduler describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    pub name: String,
    pub expression: String,
    pub timezone: String,
    pub input: String,
    pub target_arn: String,
    pub role_arn: String,
}

/// What one sync does. Empty when the group is as asked already.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sync {
    pub create: Vec<Wanted>,
    pub update: Vec<Wanted>,
    pub delete: Vec<String>,
}

impl Sync {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The schedules of `instances` (name and `schedule`), for the stack deployed from
/// `bucket`/`key`, sorted by name.
pub fn wanted<'a>(
    instances: impl IntoIterator<Item = (&'a str, Option<&'a Schedule>)>,
    bucket: &str,
    key: &str,
) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = instances
        .into_iter()
        .filter_map(|(name, s)| s.map(|s| (name, s)))
        .flat_map(|(name, s)| {
            s.actions()
                .into_iter()
                .map(move |(action, expression)| Wanted {
                    name: naming::schedule_name(name, action),
                    instance: name.to_string(),
                    action: action.to_string(),
                    expression: expression.to_string(),
                    timezone: s.timezone.clone(),
                    input: serde_json::json!({
                        "action": action, "bucket": bucket, "key": key, "instance": name,
                    })
                    .to_string(),
                })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Creates what is missing, updates what differs (expression, time zone, input, target or
/// role), deletes what no instance asks for any more; leaves the rest alone.
pub fn sync(wanted: &[Wanted], existing: &[Existing], target: &Target) -> Sync {
    let mut plan = Sync::default();
    for w in wanted {
        match existing.iter().find(|e| e.name == w.name) {
            None => plan.create.push(w.clone()),
            Some(e) if !same(w, e, target) => plan.update.push(w.clone()),
            Some(_) => {}
        }
    }
    let mut gone: Vec<String> = existing
        .iter()
        .filter(|e| !wanted.iter().any(|w| w.name == e.name))
        .map(|e| e.name.clone())
        .collect();
    gone.sort();
    plan.delete = gone;
    plan
}

fn same(w: &Wanted, e: &Existing, target: &Target) -> bool {
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    w.expression == e.expression
        && w.timezone == e.timezone
        && json(&w.input).is_some()
        && json(&w.input) == json(&e.input)
        && target.state_machine_arn == e.target_arn
        && target.role_arn == e.role_arn
}

/// Tag keys on a stack's schedule group: the stack, and the installation (its bundle bucket).
pub const APP_TAG: &str = "stackdrop:app";
pub const STACK_TAG: &str = "stackdrop:stack";
pub const SOURCE_TAG: &str = "stackdrop:source";

/// Whose a schedule group of the stack's name is, from its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOwner {
    /// This stack's, in this installation.
    Ours,
    /// This stack's, made before groups named their installation: ours, to be tagged with it.
    OursUntagged,
    /// Someone else's, or another installation's (two buckets in one region deploying the same
    /// app and stack): never used, never deleted. Why, as the deploy's warning says it.
    Foreign(String),
}

/// Decides from the group's tags whether the stack (`app`/`stack`) deployed from `bucket` owns it.
pub fn group_owner(
    tags: &[(String, String)],
    group: &str,
    app: &str,
    stack: &str,
    bucket: &str,
) -> GroupOwner {
    let tag = |k: &str| {
        tags.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if tag(APP_TAG) != Some(app) || tag(STACK_TAG) != Some(stack) {
        return GroupOwner::Foreign(format!("schedule group {group} exists but was not created by stackdrop for {app}/{stack} (no matching stackdrop:app/stackdrop:stack tags): its schedules were neither created nor deleted; rename or remove that group and deploy again"));
    }
    match tag(SOURCE_TAG) {
        None => GroupOwner::OursUntagged,
        Some(b) if b == bucket => GroupOwner::Ours,
        Some(other) => GroupOwner::Foreign(format!("schedule group {group} belongs to {app}/{stack} of another stackdrop installation (bucket {other}) in this region: its schedules were neither created nor deleted; give the app another name in this installation to schedule it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(start: Option<&str>, stop: Option<&str>, tz: &str) -> Schedule {
        Schedule {
            start: start.map(String::from),
            stop: stop.map(String::from),
            timezone: tz.into(),
        }
    }

    fn target() -> Target {
        Target {
            state_machine_arn: "arn:aws:states:eu-west-1:1:stateMachine:stackdrop-deploy".into(),
            role_arn: "arn:aws:iam::1:role/stackdrop-scheduler".into(),
        }
    }

    fn existing_of(w: &Wanted) -> Existing {
        Existing {
            name: w.name.clone(),
            expression: w.expression.clone(),
            timezone: w.timezone.clone(),
            input: w.input.clone(),
            target_arn: target().state_machine_arn,
            role_arn: target().role_arn,
        }
    }

    #[test]
    fn each_instance_gets_its_start_and_stop_with_its_own_input() {
        let office = sched(
            Some("cron(0 7 ? * MON-FRI *)"),
            Some("cron(0 19 ? * MON-FRI *)"),
            "Europe/Amsterdam",
        );
        let nightly = sched(None, Some("rate(1 day)"), "UTC");
        let w = wanted(
            [
                ("web", Some(&office)),
                ("jobs", Some(&nightly)),
                ("db", None),
            ],
            "bundles",
            "shop.zip",
        );
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["jobs--stop", "web--start", "web--stop"]);
        let start = &w[1];
        assert_eq!(
            (start.expression.as_str(), start.timezone.as_str()),
            ("cron(0 7 ? * MON-FRI *)", "Europe/Amsterdam")
        );
        let input: serde_json::Value = serde_json::from_str(&start.input).unwrap();
        assert_eq!(
            input,
            serde_json::json!({"action":"start","bucket":"bundles","key":"shop.zip","instance":"web"})
        );
    }

    #[test]
    fn sync_creates_updates_and_deletes_only_what_differs() {
        let v1 = wanted(
            [(
                "web",
                Some(&sched(
                    Some("cron(0 7 * * ? *)"),
                    Some("rate(1 day)"),
                    "UTC",
                )),
            )],
            "b",
            "k",
        );
        let nothing = sync(&v1, &[], &target());
        assert_eq!((nothing.create.len(), nothing.update.len()), (2, 0));
        let all: Vec<Existing> = v1.iter().map(existing_of).collect();
        assert!(
            sync(&v1, &all, &target()).is_empty(),
            "run twice: no change"
        );

        // v2 moves the start to 08:00 Amsterdam and drops the stop.
        let v2 = wanted(
            [(
                "web",
                Some(&sched(Some("cron(0 8 * * ? *)"), None, "Europe/Amsterdam")),
            )],
            "b",
            "k",
        );
        let s = sync(&v2, &all, &target());
        assert!(s.create.is_empty());
        assert_eq!(s.update.len(), 1);
        assert_eq!(s.update[0].timezone, "Europe/Amsterdam");
        assert_eq!(s.delete, ["web--stop"]);

        // No schedule left: everything in the group goes.
        assert_eq!(sync(&[], &all, &target()).delete.len(), 2);
    }

    #[test]
    fn a_schedule_changed_by_hand_or_pointing_elsewhere_is_put_back() {
        let w = wanted(
            [("web", Some(&sched(Some("rate(5 hours)"), None, "UTC")))],
            "b",
            "k",
        );
        let mut e = existing_of(&w[0]);
        // The same input, keys in another order: the same schedule.
        e.input = r#"{"key":"k","instance":"web","bucket":"b","action":"start"}"#.into();
        assert!(sync(&w, std::slice::from_ref(&e), &target()).is_empty());
        for change in [
            |e: &mut Existing| e.expression = "rate(6 hours)".into(),
            |e: &mut Existing| e.timezone = "Asia/Tokyo".into(),
            |e: &mut Existing| e.input = r#"{"action":"stop"}"#.into(),
            |e: &mut Existing| e.input = "not json".into(),
            |e: &mut Existing| e.target_arn = "arn:other".into(),
            |e: &mut Existing| e.role_arn = "arn:other".into(),
        ] {
            let mut changed = e.clone();
            change(&mut changed);
            assert_eq!(sync(&w, &[changed], &target()).update.len(), 1);
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_group_is_the_stacks_in_this_installation_only() {
        let ours = tags(&[(APP_TAG, "a"), (STACK_TAG, "s"), (SOURCE_TAG, "bundles-1")]);
        assert_eq!(
            group_owner(&ours, "g", "a", "s", "bundles-1"),
            GroupOwner::Ours
        );
        // Another installation's group for the same app and stack, in the same region.
        let GroupOwner::Foreign(why) = group_owner(&ours, "g", "a", "s", "bundles-2") else {
            panic!("another installation's group taken as ours");
        };
        assert!(
            why.contains("another stackdrop installation (bucket bundles-1)"),
            "{why}"
        );
        // Made before groups named their installation.
        let old = tags(&[(APP_TAG, "a"), (STACK_TAG, "s")]);
        assert_eq!(
            group_owner(&old, "g", "a", "s", "bundles-2"),
            GroupOwner::OursUntagged
        );
        for other in [
            tags(&[]),
            tags(&[(APP_TAG, "a")]),
            tags(&[(APP_TAG, "a"), (STACK_TAG, "other")]),
            tags(&[(APP_TAG, "b"), (STACK_TAG, "s"), (SOURCE_TAG, "bundles-1")]),
        ] {
            let GroupOwner::Foreign(why) = group_owner(&other, "g", "a", "s", "bundles-1") else {
                panic!("{other:?} taken as ours");
            };
            assert!(
                why.starts_with("schedule group g exists but was not created by stackdrop for a/s")
            );
        }
    }
}
