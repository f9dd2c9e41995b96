//! JSON Schemas of `app.json` and `stack.json`, generated from these types (schemars) so that
//! an editor can complete and check the files. The hand-written validator in [`crate::config`]
//! is the authority; tests keep the two in step (same fields, same defaults, examples valid).

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const NAME: &str = r"^[a-zA-Z0-9-]{3,24}$";
const IMAGE: &str =
    r"^(ami-([0-9a-f]{8}|[0-9a-f]{17})|resolve:ssm:/[a-zA-Z0-9_./-]+(:[a-zA-Z0-9_.-]+)?)$";
const INSTANCE_TYPE: &str = r"^[a-z][a-z0-9-]*\.(nano|micro|small|medium|large|xlarge|[0-9]{1,3}xlarge|metal|metal-[0-9]{1,3}xl)$";
const USER: &str = r"^[a-z_][a-z0-9_-]{0,31}$";
const ENV_NAME: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";
/// An SSM parameter name (`name` or `/path/to/name`) or ARN, with an optional `:version` or
/// `:label`; [`crate::secrets`] checks the rest (length, depth, the reserved `aws`/`ssm`).
const SECRET: &str = r"^(/[a-zA-Z0-9_.-]+(/[a-zA-Z0-9_.-]+)*|[a-zA-Z0-9_.-]+|arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter/[a-zA-Z0-9_.-]+(/[a-zA-Z0-9_.-]+)*)(:[a-zA-Z0-9_.-]{1,100})?$";
const ACTION: &str = r"^(\*|[A-Za-z0-9-]+:[A-Za-z0-9*?-]+)$";
const RESOURCE: &str = r"^(\*|arn:[^:\s]+:[^:\s]+:[^:\s]*:[^:\s]*:\S+)$";
/// The shape of a schedule expression; [`crate::schedule`] checks the rest (cron's fields, the
/// `?` rule, real dates).
const SCHEDULE_EXPRESSION: &str = r"^(cron\([^()]+\)|rate\((0*1 (minute|hour|day)|0*([2-9]|[1-9][0-9]+) (minutes|hours|days))\)|at\([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\))$";

/// app.json: the application a stack belongs to.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stackdrop app.json")]
pub struct AppFile {
    /// The JSON Schema this file follows (for editors).
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// The app's name: 3-24 characters of a-z, A-Z, 0-9 and "-" (kebab-cased in resource names).
    #[schemars(regex(pattern = NAME))]
    pub name: String,
    /// Accepted for Awsless compatibility; stackdrop deploys in the region of its bundle bucket.
    #[serde(default)]
    pub region: Option<String>,
    /// Accepted for Awsless compatibility; not used by stackdrop.
    #[serde(default)]
    pub profile: Option<String>,
    /// Accepted for Awsless compatibility; not used by stackdrop.
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub defaults: Option<AppDefaults>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppDefaults {
    #[serde(default)]
    pub instance: Option<InstanceDefaults>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceDefaults {
    /// SSH only through the VPC's EC2 Instance Connect Endpoint (made if none). Default false.
    #[serde(default)]
    pub connect: bool,
}

/// stack.json: the instances of one stack.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "stackdrop stack.json")]
pub struct StackFile {
    /// The JSON Schema this file follows (for editors).
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// The stack's name: 3-24 characters of a-z, A-Z, 0-9 and "-".
    #[schemars(regex(pattern = NAME))]
    pub name: String,
    /// The EC2 instances of the stack, by name (3-24 characters of a-z, A-Z, 0-9 and "-").
    #[schemars(extend("propertyNames" = { "pattern": NAME }, "minProperties" = 1))]
    pub instances: BTreeMap<String, InstanceSpec>,
}

/// One EC2 instance running the bundled code.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// An AMI id (ami-...) or resolve:ssm:/parameter/path, e.g.
    /// resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64.
    #[schemars(regex(pattern = IMAGE))]
    pub image: String,
    /// An EC2 instance type (family.size), e.g. t3.medium.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = INSTANCE_TYPE))]
    pub instance_type: String,
    /// The folder of the bundle with the instance's code, e.g. ./src/worker.
    pub code: String,
    /// The user that owns the code and runs the command. Default ec2-user.
    #[serde(default = "default_user")]
    #[schemars(regex(pattern = USER))]
    pub user: String,
    /// The shell command run in the code folder, as `user`, restarted when it fails.
    #[serde(default)]
    pub command: Option<String>,
    /// Environment variables of the command.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": ENV_NAME }))]
    pub environment: BTreeMap<String, String>,
    /// Environment variables of the command read from SSM Parameter Store (a stackdrop
    /// extension): variable name -> parameter name or ARN, e.g. "/my-app/db-password", optionally
    /// with :version or :label. String, StringList or SecureString; read on the instance at boot
    /// by its own role, which may read these parameters and no other; the values are never in the
    /// user data, the plan or the state. A name may not also be in environment.
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": ENV_NAME }))]
    pub secrets: BTreeMap<String, SecretRef>,
    /// IAM permissions of the instance's role.
    #[serde(default)]
    pub permissions: Vec<PermissionSpec>,
    /// Wait until the instance is terminated when tearing down. Default true.
    #[serde(rename = "waitForTermination", default = "default_true")]
    pub wait_for_termination: bool,
    /// Start and stop the instance on a schedule (EventBridge Scheduler, set up by the deploy).
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
}

/// When EventBridge Scheduler starts and stops the instance: "start", "stop" or both.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [{ "required": ["start"] }, { "required": ["stop"] }]))]
pub struct ScheduleSpec {
    /// When to start the instance: cron(minutes hours day-of-month month day-of-week year),
    /// rate(value unit) or at(yyyy-mm-ddThh:mm:ss), e.g. cron(0 7 ? * MON-FRI *).
    #[serde(default)]
    #[schemars(regex(pattern = SCHEDULE_EXPRESSION), length(max = 256))]
    pub start: Option<String>,
    /// When to stop the instance, e.g. cron(0 19 ? * MON-FRI *).
    #[serde(default)]
    #[schemars(regex(pattern = SCHEDULE_EXPRESSION), length(max = 256))]
    pub stop: Option<String>,
    /// The IANA time zone the expressions are evaluated in, e.g. Europe/Amsterdam. Default UTC.
    #[serde(default = "default_timezone")]
    #[schemars(schema_with = "time_zone_schema")]
    pub timezone: String,
}

fn default_timezone() -> String {
    crate::schedule::DEFAULT_TIMEZONE.to_string()
}

fn time_zone_schema(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({ "type": "string", "enum": crate::schedule::time_zones() })
}

fn default_user() -> String {
    crate::config::DEFAULT_USER.to_string()
}

fn default_true() -> bool {
    true
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionSpec {
    /// allow (default) or deny.
    #[serde(default)]
    pub effect: EffectSpec,
    /// IAM actions (service:Action, wildcards allowed): one or a list.
    pub actions: OneOrMany<Action>,
    /// ARNs or "*": one or a list.
    pub resources: OneOrMany<Resource>,
}

#[derive(Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum EffectSpec {
    #[default]
    Allow,
    Deny,
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(#[schemars(length(min = 1))] Vec<T>),
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SecretRef(#[schemars(regex(pattern = SECRET), length(max = 2048))] pub String);

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Action(#[schemars(regex(pattern = ACTION))] pub String);

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Resource(#[schemars(regex(pattern = RESOURCE))] pub String);

pub fn app_schema() -> Schema {
    schemars::schema_for!(AppFile)
}

pub fn stack_schema() -> Schema {
    schemars::schema_for!(StackFile)
}

/// Pretty JSON, as committed under `schema/` and printed by `stackdrop schema`.
pub fn to_pretty(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).expect("a schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde_json::Value;

    fn properties<'a>(schema: &'a Value, def: Option<&str>) -> Vec<&'a str> {
        let obj = match def {
            None => schema,
            Some(d) => &schema["$defs"][d],
        };
        let mut keys: Vec<&str> = obj["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        keys
    }

    fn sorted(fields: &[&'static str]) -> Vec<&'static str> {
        let mut v = fields.to_vec();
        v.sort();
        v
    }

    #[test]
    fn schema_fields_match_the_validator() {
        let app = app_schema().to_value();
        let stack = stack_schema().to_value();
        assert_eq!(properties(&app, None), sorted(config::APP_FIELDS));
        assert_eq!(
            properties(&app, Some("AppDefaults")),
            sorted(config::APP_DEFAULTS_FIELDS)
        );
        assert_eq!(
            properties(&app, Some("InstanceDefaults")),
            sorted(config::APP_INSTANCE_DEFAULTS_FIELDS)
        );
        assert_eq!(properties(&stack, None), sorted(config::STACK_FIELDS));
        assert_eq!(
            properties(&stack, Some("InstanceSpec")),
            sorted(config::INSTANCE_FIELDS)
        );
        assert_eq!(
            properties(&stack, Some("PermissionSpec")),
            sorted(config::PERMISSION_FIELDS)
        );
        assert_eq!(
            properties(&stack, Some("ScheduleSpec")),
            sorted(crate::schedule::FIELDS)
        );
        assert_eq!(
            stack["$defs"]["ScheduleSpec"]["additionalProperties"],
            Value::Bool(false)
        );
        assert_eq!(stack["additionalProperties"], Value::Bool(false));
        assert_eq!(
            stack["$defs"]["InstanceSpec"]["additionalProperties"],
            Value::Bool(false)
        );
    }

    #[test]
    fn schema_defaults_match_the_validator() {
        let stack = stack_schema().to_value();
        let inst = &stack["$defs"]["InstanceSpec"]["properties"];
        assert_eq!(inst["user"]["default"], config::DEFAULT_USER);
        assert_eq!(inst["waitForTermination"]["default"], true);
        assert_eq!(stack["required"], serde_json::json!(["name", "instances"]));
        let mut req: Vec<&str> = stack["$defs"]["InstanceSpec"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        req.sort();
        assert_eq!(req, vec!["code", "image", "type"]);
        let schedule = &stack["$defs"]["ScheduleSpec"];
        assert_eq!(
            schedule["properties"]["timezone"]["default"],
            crate::schedule::DEFAULT_TIMEZONE
        );
        // Empty, or a time zone alone, is an error in both.
        assert_eq!(
            schedule["anyOf"],
            serde_json::json!([{ "required": ["start"] }, { "required": ["stop"] }])
        );
    }

    #[test]
    fn schema_time_zones_are_the_validators() {
        let stack = stack_schema().to_value();
        let zones = &stack["$defs"]["ScheduleSpec"]["properties"]["timezone"]["enum"];
        let zones: Vec<&str> = zones
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(zones, crate::schedule::time_zones());
    }

    #[test]
    fn committed_schemas_are_current() {
        // The CLI's tests check the same through `stackdrop schema`; this one runs with the core
        // crate alone. Regenerate with `make schema`.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (file, schema) in [
            ("schema/stack.schema.json", stack_schema()),
            ("schema/app.schema.json", app_schema()),
        ] {
            let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
            assert!(
                committed == to_pretty(&schema),
                "{file} is stale: run `make schema`"
            );
        }
    }

    #[test]
    fn schema_patterns_agree_with_the_rules() {
        // The regexes in the schema accept what the validator accepts, on sample values.
        let stack = stack_schema().to_value();
        let inst = &stack["$defs"]["InstanceSpec"]["properties"];
        assert_eq!(inst["type"]["pattern"], INSTANCE_TYPE);
        assert_eq!(inst["image"]["pattern"], IMAGE);
        assert_eq!(inst["user"]["pattern"], USER);
        assert_eq!(stack["$defs"]["SecretRef"]["pattern"], SECRET);
        let schedule = &stack["$defs"]["ScheduleSpec"]["properties"];
        assert_eq!(schedule["start"]["pattern"], SCHEDULE_EXPRESSION);
        assert_eq!(schedule["stop"]["pattern"], SCHEDULE_EXPRESSION);
    }
}
