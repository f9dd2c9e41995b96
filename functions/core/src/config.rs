//! The bundle's configuration: `app.json` and `stack.json`, Awsless' `instances` schema.
//!
//! Parsing walks the JSON by hand so that every problem is reported (not only the first), each
//! with its file and JSON pointer, and unknown fields get a "did you mean" hint. The typed model
//! it produces is the one [`crate::schema`] turns into a JSON Schema.

use crate::iam_actions;
use crate::naming;
use crate::problem::{join, Problem};
use crate::schedule::{self, Schedule};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const APP_FILE: &str = "app.json";
pub const STACK_FILE: &str = "stack.json";

/// Fields each object accepts. The JSON Schema is checked against these in tests.
pub const APP_FIELDS: &[&str] = &["$schema", "name", "region", "profile", "stage", "defaults"];
pub const APP_DEFAULTS_FIELDS: &[&str] = &["instance"];
pub const APP_INSTANCE_DEFAULTS_FIELDS: &[&str] = &["connect"];
pub const STACK_FIELDS: &[&str] = &["$schema", "name", "instances"];
pub const INSTANCE_FIELDS: &[&str] = &[
    "image",
    "type",
    "code",
    "user",
    "command",
    "environment",
    "secrets",
    "permissions",
    "waitForTermination",
    "schedule",
];
pub const PERMISSION_FIELDS: &[&str] = &["effect", "actions", "resources"];

/// Awsless stack features that stackdrop does not deploy: named as such rather than "unknown".
const AWSLESS_STACK_FEATURES: &[&str] = &[
    "depends",
    "functions",
    "queues",
    "tables",
    "topics",
    "pubsub",
    "rest",
    "http",
    "rpc",
    "graphql",
    "stores",
    "sites",
    "caches",
    "tasks",
    "crons",
    "configs",
    "searchs",
    "streams",
    "onFailure",
    "onLog",
    "icons",
    "images",
    "routers",
    "metrics",
    "alerts",
    "permissions",
    "tests",
    "buckets",
    "firehoses",
];

pub const DEFAULT_USER: &str = "ec2-user";

/// The whole validated configuration of one bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub app: String,
    pub stack: String,
    /// `defaults.instance.connect` of app.json.
    pub connect: bool,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The name as used in resource names (kebab-cased, as Awsless does).
    pub name: String,
    /// The key as written in stack.json (for error pointers).
    pub key: String,
    pub image: Image,
    #[serde(rename = "type")]
    pub instance_type: String,
    /// The code folder, normalized: relative to the bundle root, no `./`, no trailing `/`
    /// ("" is the whole bundle).
    pub code: String,
    pub user: String,
    pub command: Option<String>,
    /// In the order written.
    pub environment: Vec<(String, String)>,
    /// Variable name -> SSM parameter name or ARN (a stackdrop extension), in the order
    /// written: read on the instance at boot, see [`crate::secrets`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<(String, String)>,
    pub permissions: Vec<Permission>,
    pub wait_for_termination: bool,
    /// When to start and stop the instance (EventBridge Scheduler), if at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

impl Instance {
    pub fn pointer(&self) -> String {
        join("/instances", &self.key)
    }
}

/// An AMI id, or EC2's `resolve:ssm:` form that the launch resolves in the deploy region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Image {
    Ami(String),
    /// The parameter (everything after `resolve:ssm:`, version or label included).
    Ssm(String),
}

impl Image {
    pub fn parse(s: &str) -> Result<Image, String> {
        if let Some(param) = s.strip_prefix("resolve:ssm:") {
            if is_ssm_parameter(param) {
                return Ok(Image::Ssm(param.to_string()));
            }
            return Err(format!(
                "{s:?} is not a valid SSM parameter reference (expected resolve:ssm:/parameter/path, e.g. resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64)"
            ));
        }
        if is_ami_id(s) {
            return Ok(Image::Ami(s.to_string()));
        }
        Err(format!(
            "{s:?} is not an AMI id (ami- and 8 or 17 hex digits) nor resolve:ssm:/parameter/path"
        ))
    }

    /// The string EC2 accepts as ImageId.
    pub fn as_image_id(&self) -> String {
        match self {
            Image::Ami(id) => id.clone(),
            Image::Ssm(p) => format!("resolve:ssm:{p}"),
        }
    }
}

impl From<Image> for String {
    fn from(i: Image) -> String {
        i.as_image_id()
    }
}

impl TryFrom<String> for Image {
    type Error = String;
    fn try_from(s: String) -> Result<Image, String> {
        Image::parse(&s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn iam(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub effect: Effect,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

// ---------------------------------------------------------------- rules, one function each

/// Names of apps, stacks and instances: 3-24 characters of `[a-zA-Z0-9-]`.
pub fn check_name(s: &str) -> Result<String, String> {
    let ok = (3..=24).contains(&s.chars().count())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let kebab = naming::kebab(s);
    if !ok || kebab.is_empty() {
        return Err(format!(
            "{s:?} is not a valid name (3 to 24 characters of a-z, A-Z, 0-9 and \"-\")"
        ));
    }
    Ok(kebab)
}

pub fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// An SSM parameter name (with optional `:version` or `:label`) as EC2's `resolve:ssm:` takes it.
pub fn is_ssm_parameter(p: &str) -> bool {
    let (name, selector) = match p.rsplit_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (p, None),
    };
    let name_ok = (1..=2048).contains(&name.len())
        && name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
    let selector_ok = selector.is_none_or(|s| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    });
    name_ok && selector_ok
}

/// EC2's `family.size` form: any real instance type (t3.medium, m7i-flex.large, u-6tb1.metal,
/// mac2-m2pro.metal, c7gn.16xlarge, r7iz.metal-16xl), not a fixed list.
pub fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else {
        return false;
    };
    let family_ok = family.len() >= 2
        && family.len() <= 24
        && family.starts_with(|c: char| c.is_ascii_lowercase())
        && family.bytes().any(|b| b.is_ascii_digit())
        && family
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !family.ends_with('-')
        && !family.contains("--");
    let size_ok = matches!(
        size,
        "nano" | "micro" | "small" | "medium" | "large" | "xlarge" | "metal"
    ) || size
        .strip_suffix("xlarge")
        .is_some_and(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
        || size
            .strip_prefix("metal-")
            .and_then(|r| r.strip_suffix("xl"))
            .is_some_and(|n| {
                !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit())
            });
    family_ok && size_ok
}

/// The CPU architecture an instance type runs (as DescribeImages names it).
pub fn architecture_of(instance_type: &str) -> &'static str {
    let family = instance_type.split('.').next().unwrap_or("");
    if family == "a1" {
        return "arm64";
    }
    if family.starts_with("mac") {
        return if family == "mac1" {
            "x86_64_mac"
        } else {
            "arm64_mac"
        };
    }
    // Graviton families put a "g" right after the generation digit: t4g, m7g, c7gn, im4gn, x2gd.
    let bytes = family.as_bytes();
    let letters = bytes.iter().take_while(|b| b.is_ascii_lowercase()).count();
    let digits = bytes[letters..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > 0 && bytes.get(letters + digits) == Some(&b'g') {
        return "arm64";
    }
    "x86_64"
}

/// A POSIX user name as useradd accepts it.
pub fn is_user_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn bad_env_name(k: &str) -> String {
    format!("{k:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
}

pub fn is_env_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An ARN (`arn:partition:service:region:account:resource`, wildcards allowed) or `*`.
pub fn is_resource(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && !parts[2].is_empty()
        && !parts[5].is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Normalizes a `code` folder: relative, inside the bundle. `./src/worker/` -> `src/worker`,
/// `.` or `./` -> "" (the whole bundle).
pub fn normalize_code(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty (a folder of the bundle, e.g. \"./src/worker\")".into());
    }
    if s.starts_with('/') || s.starts_with('\\') || s.get(1..2) == Some(":") {
        return Err(format!("{s:?} must be a relative folder inside the bundle"));
    }
    if s.contains('\\') || s.contains('\0') {
        return Err(format!("{s:?} must use \"/\" between folders"));
    }
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{s:?} leaves the bundle (\"..\" is not allowed)")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// The closest known name, if close enough to be a likely typo.
pub fn did_you_mean<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .filter(|k| **k != "$schema")
        .map(|k| {
            (
                k,
                strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()),
            )
        })
        .filter(|(k, d)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| *k)
}

// ---------------------------------------------------------------- the walker

/// Collects problems for one file.
struct Checker<'a> {
    file: &'a str,
    problems: Vec<Problem>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl<'a> Checker<'a> {
    fn new(file: &'a str) -> Self {
        Checker {
            file,
            problems: Vec::new(),
        }
    }

    fn push(&mut self, pointer: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::new(self.file, pointer, message));
    }

    fn object<'v>(&mut self, v: &'v Value, ptr: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.push(ptr, format!("expected an object, found {}", kind(other)));
                None
            }
        }
    }

    fn string<'v>(&mut self, v: &'v Value, ptr: &str) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            other => {
                self.push(ptr, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, ptr: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.push(
                    ptr,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// Reports fields not in `known`; `extra` explains fields known elsewhere (Awsless features).
    fn unknown_fields(
        &mut self,
        m: &Map<String, Value>,
        ptr: &str,
        known: &[&str],
        awsless: &[&str],
    ) {
        for key in m.keys() {
            if known.contains(&key.as_str()) {
                continue;
            }
            let at = join(ptr, key);
            if awsless.contains(&key.as_str()) {
                self.push(
                    &at,
                    format!("{key:?} is an Awsless feature that stackdrop does not deploy (stackdrop reads \"instances\" only)"),
                );
            } else if let Some(hint) = did_you_mean(key, known) {
                self.push(
                    &at,
                    format!("unknown field {key:?}; did you mean {hint:?}?"),
                );
            } else {
                let list: Vec<&str> = known.iter().copied().filter(|k| *k != "$schema").collect();
                self.push(
                    &at,
                    format!("unknown field {key:?} (known fields: {})", list.join(", ")),
                );
            }
        }
    }

    fn required<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        ptr: &str,
        field: &str,
    ) -> Option<&'v Value> {
        let v = m.get(field);
        if v.is_none() {
            self.push(ptr_or_root(ptr), format!("{field:?} is required"));
        }
        v
    }

    fn name(&mut self, v: &Value, ptr: &str) -> Option<String> {
        let s = self.string(v, ptr)?;
        self.rule(ptr, check_name(s))
    }

    fn rule<T>(&mut self, ptr: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(msg) => {
                self.push(ptr, msg);
                None
            }
        }
    }

    /// A string or a non-empty list of strings, each accepted by `check` (its error is the
    /// message).
    fn string_or_list(
        &mut self,
        v: &Value,
        ptr: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Vec<String> {
        let items: Vec<(String, &Value)> = match v {
            Value::Array(list) => {
                if list.is_empty() {
                    self.push(ptr, "must not be empty");
                }
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (join(ptr, &i.to_string()), v))
                    .collect()
            }
            single => vec![(ptr.to_string(), single)],
        };
        let mut out = Vec::new();
        for (at, item) in items {
            match item {
                Value::String(s) => match check(s) {
                    Ok(()) => out.push(s.clone()),
                    Err(message) => self.push(&at, message),
                },
                other => self.push(
                    &at,
                    format!(
                        "expected a string or a list of strings, found {}",
                        kind(other)
                    ),
                ),
            }
        }
        out
    }
}

fn ptr_or_root(ptr: &str) -> &str {
    if ptr.is_empty() {
        "/"
    } else {
        ptr
    }
}

/// Parses a JSON file, naming the file, line and column when it is broken, and the object and
/// line of a key given twice (which plain JSON parsers resolve by silently keeping the last).
pub fn parse_json(file: &str, bytes: &[u8]) -> Result<Value, Problem> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    crate::json::parse(bytes).map_err(|e| match e {
        crate::json::Error::Duplicate(d, e) => Problem::new(
            file,
            d.pointer,
            format!(
                "the key {:?} appears twice (again at line {}); keep one",
                d.key,
                e.line()
            ),
        ),
        crate::json::Error::Syntax(e) => {
            let text = e.to_string();
            let reason = text
                .rfind(" at line ")
                .map(|i| text[..i].to_string())
                .unwrap_or(text);
            Problem::file(
                file,
                format!(
                    "invalid JSON at line {}, column {}: {reason}",
                    e.line(),
                    e.column()
                ),
            )
        }
    })
}

/// What app.json says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub connect: bool,
}

pub fn parse_app(bytes: &[u8]) -> Result<App, Vec<Problem>> {
    let value = parse_json(APP_FILE, bytes).map_err(|p| vec![p])?;
    let mut c = Checker::new(APP_FILE);
    let app = check_app(&mut c, &value);
    match app {
        Some(app) if c.problems.is_empty() => Ok(app),
        _ => Err(c.problems),
    }
}

fn check_app(c: &mut Checker, value: &Value) -> Option<App> {
    let m = c.object(value, "")?;
    c.unknown_fields(m, "", APP_FIELDS, &[]);
    let name = c.required(m, "", "name").and_then(|v| c.name(v, "/name"));
    for f in ["$schema", "region", "profile", "stage"] {
        if let Some(v) = m.get(f) {
            c.string(v, &join("", f));
        }
    }
    let mut connect = false;
    if let Some(d) = m.get("defaults") {
        if let Some(dm) = c.object(d, "/defaults") {
            c.unknown_fields(dm, "/defaults", APP_DEFAULTS_FIELDS, &[]);
            if let Some(i) = dm.get("instance") {
                if let Some(im) = c.object(i, "/defaults/instance") {
                    c.unknown_fields(im, "/defaults/instance", APP_INSTANCE_DEFAULTS_FIELDS, &[]);
                    if let Some(v) = im.get("connect") {
                        connect = c.boolean(v, "/defaults/instance/connect").unwrap_or(false);
                    }
                }
            }
        }
    }
    Some(App {
        name: name?,
        connect,
    })
}

/// Parses and checks both files; every problem of both is reported.
pub fn parse_config(app_json: &[u8], stack_json: &[u8]) -> Result<Config, Vec<Problem>> {
    let app = parse_app(app_json);
    let stack = parse_stack(stack_json);
    match (app, stack) {
        (Ok(app), Ok((stack, instances))) => Ok(Config {
            app: app.name,
            stack,
            connect: app.connect,
            instances,
        }),
        (a, s) => Err(a
            .err()
            .unwrap_or_default()
            .into_iter()
            .chain(s.err().unwrap_or_default())
            .collect()),
    }
}

pub fn parse_stack(bytes: &[u8]) -> Result<(String, Vec<Instance>), Vec<Problem>> {
    let value = parse_json(STACK_FILE, bytes).map_err(|p| vec![p])?;
    let mut c = Checker::new(STACK_FILE);
    let out = check_stack(&mut c, &value);
    match out {
        Some(out) if c.problems.is_empty() => Ok(out),
        _ => Err(c.problems),
    }
}

fn check_stack(c: &mut Checker, value: &Value) -> Option<(String, Vec<Instance>)> {
    let m = c.object(value, "")?;
    c.unknown_fields(m, "", STACK_FIELDS, AWSLESS_STACK_FEATURES);
    if let Some(v) = m.get("$schema") {
        c.string(v, "/$schema");
    }
    let name = c.required(m, "", "name").and_then(|v| c.name(v, "/name"));
    let mut instances = Vec::new();
    if let Some(v) = c.required(m, "", "instances") {
        if let Some(im) = c.object(v, "/instances") {
            if im.is_empty() {
                c.push("/instances", "must declare at least one instance");
            }
            let mut seen: Vec<(String, String)> = Vec::new();
            for (key, iv) in im {
                let ptr = join("/instances", key);
                let Some(name) = c.rule(&ptr, check_name(key)) else {
                    // Still check the body, so that one bad name does not hide other problems.
                    check_instance(c, iv, &ptr, key, key);
                    continue;
                };
                if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
                    c.push(
                        &ptr,
                        format!("{key:?} and {other:?} both become the resource name {name:?}"),
                    );
                }
                seen.push((name.clone(), key.clone()));
                if let Some(i) = check_instance(c, iv, &ptr, key, &name) {
                    instances.push(i);
                }
            }
        }
    }
    Some((name?, instances))
}

fn check_instance(
    c: &mut Checker,
    v: &Value,
    ptr: &str,
    key: &str,
    name: &str,
) -> Option<Instance> {
    let m = c.object(v, ptr)?;
    c.unknown_fields(m, ptr, INSTANCE_FIELDS, &[]);
    let at = |f: &str| join(ptr, f);

    let image = c
        .required(m, ptr, "image")
        .and_then(|v| c.string(v, &at("image")))
        .and_then(|s| c.rule(&at("image"), Image::parse(s)));
    let instance_type = c
        .required(m, ptr, "type")
        .and_then(|v| c.string(v, &at("type")))
        .and_then(|s| {
            let r = if is_instance_type(s) {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "{s:?} is not an EC2 instance type (expected family.size, e.g. \"t3.medium\")"
                ))
            };
            c.rule(&at("type"), r)
        });
    let code = c
        .required(m, ptr, "code")
        .and_then(|v| c.string(v, &at("code")))
        .and_then(|s| c.rule(&at("code"), normalize_code(s)));
    let user = match m.get("user") {
        None => Some(DEFAULT_USER.to_string()),
        Some(v) => c.string(v, &at("user")).and_then(|s| {
            let r = if s == "root" {
                Err("the command never runs as root: name another user, or leave \"user\" out for ec2-user (created if the image lacks it)".to_string())
            } else if is_user_name(s) {
                Ok(s.to_string())
            } else {
                Err(format!("{s:?} is not a valid user name (up to 32 of a-z, 0-9, \"_\" and \"-\", starting with a letter or \"_\")"))
            };
            c.rule(&at("user"), r)
        }),
    };
    let mut command_ok = true;
    let command = match m.get("command") {
        None => None,
        Some(v) => match c.string(v, &at("command")) {
            Some(s) if s.trim().is_empty() => {
                c.push(
                    &at("command"),
                    "must not be empty (leave it out to start nothing)",
                );
                command_ok = false;
                None
            }
            Some(s) if s.contains('\0') => {
                c.push(&at("command"), "must not contain a NUL character");
                command_ok = false;
                None
            }
            Some(s) => Some(s.to_string()),
            None => {
                command_ok = false;
                None
            }
        },
    };
    let mut environment = Vec::new();
    let mut env_ok = true;
    if let Some(v) = m.get("environment") {
        match c.object(v, &at("environment")) {
            Some(em) => {
                for (k, ev) in em {
                    let eptr = join(&at("environment"), k);
                    if !is_env_name(k) {
                        c.push(&eptr, bad_env_name(k));
                        env_ok = false;
                    }
                    match ev {
                        Value::String(s) if s.contains('\0') => {
                            c.push(&eptr, "must not contain a NUL character");
                            env_ok = false;
                        }
                        Value::String(s) => environment.push((k.clone(), s.clone())),
                        other => {
                            c.push(&eptr, format!("expected a string, found {}", kind(other)));
                            env_ok = false;
                        }
                    }
                }
            }
            None => env_ok = false,
        }
    }
    let (secrets, secrets_ok) = match m.get("secrets") {
        None => (Vec::new(), true),
        Some(v) => check_secrets(c, v, &at("secrets"), &environment, env_ok),
    };
    let mut permissions = Vec::new();
    let mut perms_ok = true;
    if let Some(v) = m.get("permissions") {
        let pptr = at("permissions");
        match v {
            Value::Array(list) => {
                for (i, pv) in list.iter().enumerate() {
                    let before = c.problems.len();
                    let p = check_permission(c, pv, &join(&pptr, &i.to_string()));
                    match p {
                        Some(p) if c.problems.len() == before => permissions.push(p),
                        _ => perms_ok = false,
                    }
                }
            }
            other => {
                c.push(&pptr, format!("expected a list, found {}", kind(other)));
                perms_ok = false;
            }
        }
    }
    let wait_for_termination = match m.get("waitForTermination") {
        None => Some(true),
        Some(v) => c.boolean(v, &at("waitForTermination")),
    };
    let schedule = match m.get("schedule") {
        None => Some(None),
        Some(v) => check_schedule(c, v, &at("schedule")).map(Some),
    };
    if !(command_ok && env_ok && secrets_ok && perms_ok) {
        return None;
    }
    Some(Instance {
        name: name.to_string(),
        key: key.to_string(),
        image: image?,
        instance_type: instance_type?,
        code: code?,
        user: user?,
        command,
        environment,
        secrets,
        permissions,
        wait_for_termination: wait_for_termination?,
        schedule: schedule?,
    })
}

/// `secrets`: variable name -> SSM parameter reference ([`crate::secrets::check_reference`]).
/// A name may not also be in `environment` (`env_ok`: whether that was read whole).
fn check_secrets(
    c: &mut Checker,
    v: &Value,
    ptr: &str,
    environment: &[(String, String)],
    env_ok: bool,
) -> (Vec<(String, String)>, bool) {
    let Some(sm) = c.object(v, ptr) else {
        return (Vec::new(), false);
    };
    let before = c.problems.len();
    let mut secrets = Vec::new();
    for (k, sv) in sm {
        let sptr = join(ptr, k);
        if !is_env_name(k) {
            c.push(&sptr, bad_env_name(k));
        } else if env_ok && environment.iter().any(|(n, _)| n == k) {
            c.push(
                &sptr,
                format!(
                    "{k:?} is also in \"environment\": a variable is a value or a secret, not both"
                ),
            );
        }
        if let Some(s) = c.string(sv, &sptr) {
            if c.rule(&sptr, crate::secrets::check_reference(s)).is_some() {
                secrets.push((k.clone(), s.to_string()));
            }
        }
    }
    let ok = c.problems.len() == before;
    (secrets, ok)
}

fn check_permission(c: &mut Checker, v: &Value, ptr: &str) -> Option<Permission> {
    let m = c.object(v, ptr)?;
    c.unknown_fields(m, ptr, PERMISSION_FIELDS, &[]);
    let effect = match m.get("effect") {
        None => Some(Effect::Allow),
        Some(v) => match c.string(v, &join(ptr, "effect")) {
            Some("allow") => Some(Effect::Allow),
            Some("deny") => Some(Effect::Deny),
            Some(s) => {
                c.push(
                    &join(ptr, "effect"),
                    format!("{s:?} is not an effect (\"allow\" or \"deny\")"),
                );
                None
            }
            None => None,
        },
    };
    // Actions are checked against IAM's catalogue (iam_actions), in deny statements too.
    let actions = c
        .required(m, ptr, "actions")
        .map(|v| c.string_or_list(v, &join(ptr, "actions"), iam_actions::check));
    let resources = c.required(m, ptr, "resources").map(|v| {
        c.string_or_list(v, &join(ptr, "resources"), |s| match is_resource(s) {
            true => Ok(()),
            false => Err(format!("{s:?} is not an ARN or \"*\"")),
        })
    });
    Some(Permission {
        effect: effect?,
        actions: actions?,
        resources: resources?,
    })
}

/// `schedule`: walks the object; the rules (expressions, time zones) and their tests are in
/// [`crate::schedule`].
fn check_schedule(c: &mut Checker, v: &Value, ptr: &str) -> Option<Schedule> {
    let m = c.object(v, ptr)?;
    let before = c.problems.len();
    c.unknown_fields(m, ptr, schedule::FIELDS, &[]);
    if m.is_empty() {
        c.push(ptr, schedule::EMPTY);
    } else if !m.contains_key("start") && !m.contains_key("stop") && c.problems.len() == before {
        c.push(ptr, schedule::NOTHING);
    }
    let expression = |c: &mut Checker, field: &str| -> Option<String> {
        let at = join(ptr, field);
        let s = c.string(m.get(field)?, &at)?;
        c.rule(&at, schedule::check_expression(s))
            .map(|()| s.to_string())
    };
    let start = expression(c, "start");
    let stop = expression(c, "stop");
    if let (Some(a), Some(b)) = (&start, &stop) {
        c.rule(&join(ptr, "stop"), schedule::check_start_stop(a, b));
    }
    let timezone = match m.get("timezone") {
        None => Some(schedule::DEFAULT_TIMEZONE.to_string()),
        Some(v) => {
            let at = join(ptr, "timezone");
            c.string(v, &at).and_then(|s| {
                c.rule(&at, schedule::check_timezone(s))
                    .map(|()| s.to_string())
            })
        }
    };
    let timezone = timezone?;
    (c.problems.len() == before).then_some(Schedule {
        start,
        stop,
        timezone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"{ "name": "my-app", "defaults": { "instance": { "connect": false } } }"#;

    fn stack_with(instance: &str) -> String {
        format!(r#"{{ "name": "jobs", "instances": {{ "worker": {instance} }} }}"#)
    }

    const WORKER: &str = r#"{
        "image": "ami-0c55b159cbfafe1f0", "type": "t3.medium", "code": "./src/worker",
        "user": "ec2-user", "command": "npm install && npm start",
        "environment": { "NODE_ENV": "production" },
        "permissions": [ { "effect": "allow", "actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::my-bucket/*"] } ],
        "waitForTermination": true }"#;

    fn errors(app: &str, stack: &str) -> Vec<String> {
        parse_config(app.as_bytes(), stack.as_bytes())
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    fn instance_errors(instance: &str) -> Vec<String> {
        errors(APP, &stack_with(instance))
    }

    fn one_error(instance: &str) -> String {
        let e = instance_errors(instance);
        assert_eq!(e.len(), 1, "{e:#?}");
        e[0].clone()
    }

    #[test]
    fn design_example_parses_with_values_kept() {
        let c = parse_config(APP.as_bytes(), stack_with(WORKER).as_bytes()).unwrap();
        assert_eq!(
            (c.app.as_str(), c.stack.as_str(), c.connect),
            ("my-app", "jobs", false)
        );
        let w = &c.instances[0];
        assert_eq!(w.name, "worker");
        assert_eq!(w.image, Image::Ami("ami-0c55b159cbfafe1f0".into()));
        assert_eq!(w.instance_type, "t3.medium");
        assert_eq!(w.code, "src/worker");
        assert_eq!(w.command.as_deref(), Some("npm install && npm start"));
        assert_eq!(
            w.environment,
            vec![("NODE_ENV".to_string(), "production".to_string())]
        );
        assert_eq!(w.permissions[0].actions, vec!["s3:GetObject"]);
        assert!(w.wait_for_termination);
    }

    #[test]
    fn defaults_apply() {
        let c = parse_config(
            br#"{"name":"my-app"}"#,
            stack_with(r#"{"image":"ami-12345678","type":"t3.micro","code":"src","permissions":[{"actions":"s3:GetObject","resources":"*"}]}"#).as_bytes(),
        )
        .unwrap();
        let w = &c.instances[0];
        assert_eq!(w.user, "ec2-user");
        assert!(w.wait_for_termination);
        assert!(!c.connect);
        assert_eq!(w.permissions[0].effect, Effect::Allow);
        assert_eq!(w.permissions[0].actions, vec!["s3:GetObject"]);
        assert_eq!(w.permissions[0].resources, vec!["*"]);
        assert_eq!(w.command, None);
    }

    #[test]
    fn connect_default_is_read() {
        let c = parse_config(
            br#"{"name":"my-app","defaults":{"instance":{"connect":true}}}"#,
            stack_with(WORKER).as_bytes(),
        )
        .unwrap();
        assert!(c.connect);
    }

    #[test]
    fn awsless_app_fields_are_accepted() {
        let app = br#"{"$schema":"x","name":"my-app","region":"eu-west-1","profile":"dev","stage":"prod"}"#;
        assert!(parse_config(app, stack_with(WORKER).as_bytes()).is_ok());
    }

    #[test]
    fn an_instance_given_twice_is_an_error_not_the_last_one_kept() {
        let stack = "{\n  \"name\": \"jobs\",\n  \"instances\": {\n    \"worker\": {\"image\": \"ami-12345678\", \"type\": \"t3.micro\", \"code\": \".\"},\n    \"worker\": {\"image\": \"ami-12345678\", \"type\": \"t3.large\", \"code\": \".\"}\n  }\n}";
        assert_eq!(
            errors(APP, stack),
            vec![
                r#"stack.json: /instances: the key "worker" appears twice (again at line 5); keep one"#
            ]
        );
        assert_eq!(
            errors(r#"{"name":"a","name":"b"}"#, &stack_with(WORKER)),
            vec![r#"app.json: the key "name" appears twice (again at line 1); keep one"#]
        );
    }

    #[test]
    fn broken_json_names_file_line_and_column() {
        let e = errors(APP, "{\n  \"name\": \"jobs\",\n  \"instances\": {\n}\n,}");
        assert_eq!(
            e,
            vec!["stack.json: invalid JSON at line 5, column 2: trailing comma"]
        );
        let e = errors("{\"name\": \"my-app\"", &stack_with(WORKER));
        assert_eq!(
            e,
            vec!["app.json: invalid JSON at line 1, column 17: EOF while parsing an object"]
        );
    }

    #[test]
    fn every_problem_of_both_files_is_reported() {
        let e = errors(
            r#"{"name":"x"}"#,
            r#"{"name":"jobs","instances":{"worker":{"image":"nope","type":"huge","code":"../up"}}}"#,
        );
        assert_eq!(
            e,
            vec![
                r#"app.json: /name: "x" is not a valid name (3 to 24 characters of a-z, A-Z, 0-9 and "-")"#,
                r#"stack.json: /instances/worker/image: "nope" is not an AMI id (ami- and 8 or 17 hex digits) nor resolve:ssm:/parameter/path"#,
                r#"stack.json: /instances/worker/type: "huge" is not an EC2 instance type (expected family.size, e.g. "t3.medium")"#,
                r#"stack.json: /instances/worker/code: "../up" leaves the bundle (".." is not allowed)"#,
            ]
        );
    }

    #[test]
    fn unknown_field_suggests_the_close_one() {
        let e =
            one_error(r#"{"image":"ami-12345678","type":"t3.micro","code":"src","comand":"x"}"#);
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/comand: unknown field "comand"; did you mean "command"?"#
        );
        let e = one_error(
            r#"{"image":"ami-12345678","type":"t3.micro","code":"src","waitfortermination":false}"#,
        );
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/waitfortermination: unknown field "waitfortermination"; did you mean "waitForTermination"?"#
        );
    }

    #[test]
    fn unknown_field_far_from_any_lists_the_known_ones() {
        let e = errors(r#"{"name":"my-app","banana":1}"#, &stack_with(WORKER));
        assert_eq!(
            e,
            vec![
                r#"app.json: /banana: unknown field "banana" (known fields: name, region, profile, stage, defaults)"#
            ]
        );
    }

    #[test]
    fn awsless_features_are_named_as_such() {
        let e = errors(
            APP,
            r#"{"name":"jobs","functions":{},"instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"."}}}"#,
        );
        assert_eq!(
            e,
            vec![
                r#"stack.json: /functions: "functions" is an Awsless feature that stackdrop does not deploy (stackdrop reads "instances" only)"#
            ]
        );
    }

    #[test]
    fn required_fields() {
        let e = instance_errors(r#"{}"#);
        assert_eq!(
            e,
            vec![
                r#"stack.json: /instances/worker: "image" is required"#,
                r#"stack.json: /instances/worker: "type" is required"#,
                r#"stack.json: /instances/worker: "code" is required"#,
            ]
        );
        let e = errors(r#"{}"#, r#"{"name":"jobs"}"#);
        assert_eq!(
            e,
            vec![
                r#"app.json: /: "name" is required"#,
                r#"stack.json: /: "instances" is required"#
            ]
        );
    }

    #[test]
    fn empty_instances() {
        let e = errors(APP, r#"{"name":"jobs","instances":{}}"#);
        assert_eq!(
            e,
            vec!["stack.json: /instances: must declare at least one instance"]
        );
    }

    #[test]
    fn names_rule_and_kebab_case() {
        assert_eq!(check_name("myWorker").unwrap(), "my-worker");
        assert_eq!(check_name("APIServer2").unwrap(), "api-server2");
        assert_eq!(check_name("web-1").unwrap(), "web-1");
        assert!(check_name("ab").is_err());
        assert!(check_name(&"a".repeat(25)).is_err());
        assert!(check_name("my_worker").is_err());
        let e = errors(
            APP,
            r#"{"name":"jobs","instances":{"my worker":{"image":"ami-12345678","type":"t3.micro","code":"."}}}"#,
        );
        assert_eq!(
            e,
            vec![
                r#"stack.json: /instances/my worker: "my worker" is not a valid name (3 to 24 characters of a-z, A-Z, 0-9 and "-")"#
            ]
        );
    }

    #[test]
    fn names_that_kebab_case_alike_collide() {
        let e = errors(
            APP,
            r#"{"name":"jobs","instances":{"myWorker":{"image":"ami-12345678","type":"t3.micro","code":"."},"my-worker":{"image":"ami-12345678","type":"t3.micro","code":"."}}}"#,
        );
        assert_eq!(
            e,
            vec![
                r#"stack.json: /instances/my-worker: "my-worker" and "myWorker" both become the resource name "my-worker""#
            ]
        );
    }

    #[test]
    fn image_rule() {
        assert!(Image::parse("ami-0c55b159cbfafe1f0").is_ok());
        assert!(Image::parse("ami-12345678").is_ok());
        assert!(Image::parse("ami-1234567").is_err());
        assert!(Image::parse("ami-0C55B159CBFAFE1F0").is_err());
        assert_eq!(
            Image::parse(
                "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
            )
            .unwrap(),
            Image::Ssm(
                "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64".into()
            )
        );
        assert!(Image::parse("resolve:ssm:/my/param:3").is_ok());
        assert!(Image::parse("resolve:ssm:no-slash").is_err());
        assert!(Image::parse("resolve:ssm:/bad param").is_err());
        let e = one_error(r#"{"image":"resolve:ssm:/x y","type":"t3.micro","code":"."}"#);
        assert!(e.starts_with(r#"stack.json: /instances/worker/image: "resolve:ssm:/x y" is not a valid SSM parameter reference"#), "{e}");
    }

    #[test]
    fn instance_type_rule_takes_any_real_type() {
        for t in [
            "t3.medium",
            "t4g.nano",
            "g4dn.xlarge",
            "m7i-flex.large",
            "u-6tb1.metal",
            "c7gn.16xlarge",
            "r7iz.metal-16xl",
            "mac2-m2pro.metal",
            "p5.48xlarge",
            "x2iedn.32xlarge",
            "inf2.xlarge",
        ] {
            assert!(is_instance_type(t), "{t}");
        }
        for t in [
            "huge",
            "t3",
            "t3.",
            ".large",
            "T3.large",
            "t3.huge",
            "t.large",
            "t3.2large",
            "t3.medium.x",
        ] {
            assert!(!is_instance_type(t), "{t}");
        }
    }

    #[test]
    fn architecture_follows_family() {
        assert_eq!(architecture_of("t3.medium"), "x86_64");
        assert_eq!(architecture_of("t4g.small"), "arm64");
        assert_eq!(architecture_of("c7gn.large"), "arm64");
        assert_eq!(architecture_of("im4gn.large"), "arm64");
        assert_eq!(architecture_of("g4dn.xlarge"), "x86_64");
        assert_eq!(architecture_of("g5g.xlarge"), "arm64");
        assert_eq!(architecture_of("a1.large"), "arm64");
        assert_eq!(architecture_of("mac2.metal"), "arm64_mac");
        assert_eq!(architecture_of("mac1.metal"), "x86_64_mac");
    }

    #[test]
    fn code_rule() {
        assert_eq!(normalize_code("./src/worker/").unwrap(), "src/worker");
        assert_eq!(normalize_code(".").unwrap(), "");
        assert!(normalize_code("/etc").is_err());
        assert!(normalize_code("src/../../x").is_err());
        assert!(normalize_code("C:/x").is_err());
        let e = one_error(r#"{"image":"ami-12345678","type":"t3.micro","code":"/srv/app"}"#);
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/code: "/srv/app" must be a relative folder inside the bundle"#
        );
    }

    #[test]
    fn root_is_refused_as_the_user() {
        assert_eq!(
            instance_errors(
                r#"{"image":"ami-12345678","type":"t3.micro","code":".","user":"root"}"#
            ),
            vec![
                r#"stack.json: /instances/worker/user: the command never runs as root: name another user, or leave "user" out for ec2-user (created if the image lacks it)"#
            ]
        );
    }

    #[test]
    fn user_rule() {
        assert!(is_user_name("ec2-user") && is_user_name("_svc") && is_user_name("app1"));
        assert!(
            !is_user_name("Root")
                && !is_user_name("1app")
                && !is_user_name("a b")
                && !is_user_name("x$")
        );
        let e =
            one_error(r#"{"image":"ami-12345678","type":"t3.micro","code":".","user":"bad user"}"#);
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/user: "bad user" is not a valid user name (up to 32 of a-z, 0-9, "_" and "-", starting with a letter or "_")"#
        );
    }

    #[test]
    fn environment_rule() {
        let e = instance_errors(
            r#"{"image":"ami-12345678","type":"t3.micro","code":".","environment":{"1BAD":"x","OK":5,"A-B":"y"}}"#,
        );
        assert_eq!(
            e,
            vec![
                r#"stack.json: /instances/worker/environment/1BAD: "1BAD" is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"#,
                r#"stack.json: /instances/worker/environment/OK: expected a string, found a number"#,
                r#"stack.json: /instances/worker/environment/A-B: "A-B" is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"#,
            ]
        );
        let e = one_error(
            r#"{"image":"ami-12345678","type":"t3.micro","code":".","environment":{"X":"a\u0000b"}}"#,
        );
        assert_eq!(
            e,
            "stack.json: /instances/worker/environment/X: must not contain a NUL character"
        );
    }

    #[test]
    fn secrets_name_ssm_parameters() {
        let c = parse_config(
            APP.as_bytes(),
            stack_with(r#"{"image":"ami-12345678","type":"t3.micro","code":".","environment":{"NODE_ENV":"production"},
                "secrets":{"DB_PASSWORD":"/my-app/db-password","API_KEY":"arn:aws:ssm:us-east-1:123456789012:parameter/x/api-key","FLAT":"flat.name_1-2","V":"/my-app/db-password:3","L":"/a/b:prod","ARN_V":"arn:aws-cn:ssm:cn-north-1:123456789012:parameter/x:7"}}"#).as_bytes(),
        )
        .unwrap();
        let w = &c.instances[0];
        let pairs: Vec<(&str, &str)> = w
            .secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("DB_PASSWORD", "/my-app/db-password"),
                (
                    "API_KEY",
                    "arn:aws:ssm:us-east-1:123456789012:parameter/x/api-key"
                ),
                ("FLAT", "flat.name_1-2"),
                ("V", "/my-app/db-password:3"),
                ("L", "/a/b:prod"),
                (
                    "ARN_V",
                    "arn:aws-cn:ssm:cn-north-1:123456789012:parameter/x:7"
                ),
            ]
        );
        // Without the key (Awsless' files): none, and the serialized instance does not mention it.
        let c = parse_config(APP.as_bytes(), stack_with(WORKER).as_bytes()).unwrap();
        assert!(c.instances[0].secrets.is_empty());
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("secrets"), "{json}");
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
        let empty = r#"{"image":"ami-12345678","type":"t3.micro","code":".","secrets":{}}"#;
        assert!(parse_config(APP.as_bytes(), stack_with(empty).as_bytes()).is_ok());
    }

    #[test]
    fn secrets_rules() {
        let long = format!("/{}", "a".repeat(1011));
        let deep = "/a".repeat(16);
        let e = instance_errors(&format!(
            r#"{{"image":"ami-12345678","type":"t3.micro","code":".","environment":{{"DUP":"x"}},"secrets":{{
                "DUP":"/my-app/dup",
                "1BAD":"/ok",
                "NUM":5,
                "SPACE":"/my app/x",
                "REL":"my-app/x",
                "EMPTY":"",
                "DOUBLE":"/a//b",
                "TRAIL":"/a/",
                "DEEP":"{deep}",
                "LONG":"{long}",
                "AWS":"/aws/service/x",
                "SSM":"SSMx",
                "SEL":"/a:",
                "SEL2":"/a:b c",
                "ARN":"arn:aws:ssm:us-east-1:1234:parameter/x",
                "ARN2":"arn:aws:s3:::bucket",
                "ARN3":"arn:aws:ssm:us-east-1:123456789012:parameter//x"}}}}"#
        ));
        let p = "stack.json: /instances/worker/secrets";
        assert_eq!(
            e,
            vec![
                format!(
                    r#"{p}/DUP: "DUP" is also in "environment": a variable is a value or a secret, not both"#
                ),
                format!(
                    r#"{p}/1BAD: "1BAD" is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"#
                ),
                format!("{p}/NUM: expected a string, found a number"),
                format!(
                    r#"{p}/SPACE: "/my app/x" is not an SSM parameter name: ' ' is not allowed (letters, digits, "_", ".", "-", and "/" between levels; e.g. "/my-app/db-password" or "arn:aws:ssm:us-east-1:123456789012:parameter/my-app/db-password")"#
                ),
                format!(
                    r#"{p}/REL: "my-app/x": a parameter name with levels starts with "/" ("/my-app/x")"#
                ),
                format!(
                    r#"{p}/EMPTY: "" names no SSM parameter (e.g. "/my-app/db-password" or "arn:aws:ssm:us-east-1:123456789012:parameter/my-app/db-password")"#
                ),
                format!(
                    r#"{p}/DOUBLE: "/a//b": an SSM parameter name has no empty level ("//" or a "/" at the end)"#
                ),
                format!(
                    r#"{p}/TRAIL: "/a/": an SSM parameter name has no empty level ("//" or a "/" at the end)"#
                ),
                format!(r#"{p}/DEEP: "{deep}" has 16 levels; SSM allows at most 15"#),
                format!(
                    r#"{p}/LONG: "{long}" is 1012 characters long; SSM parameter names have at most 1011"#
                ),
                format!(
                    r#"{p}/AWS: "/aws/service/x": parameter names beginning with "aws" or "ssm" are reserved by AWS"#
                ),
                format!(
                    r#"{p}/SSM: "SSMx": parameter names beginning with "aws" or "ssm" are reserved by AWS"#
                ),
                format!(
                    r#"{p}/SEL: "/a:": the version or label after ":" must be 1 to 100 letters, digits, "_", "." or "-""#
                ),
                format!(
                    r#"{p}/SEL2: "/a:b c": the version or label after ":" must be 1 to 100 letters, digits, "_", "." or "-""#
                ),
                format!(
                    r#"{p}/ARN: "arn:aws:ssm:us-east-1:1234:parameter/x" is not an SSM parameter ARN (arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME, e.g. "/my-app/db-password" or "arn:aws:ssm:us-east-1:123456789012:parameter/my-app/db-password")"#
                ),
                format!(
                    r#"{p}/ARN2: "arn:aws:s3:::bucket" is not an SSM parameter ARN (arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME, e.g. "/my-app/db-password" or "arn:aws:ssm:us-east-1:123456789012:parameter/my-app/db-password")"#
                ),
                format!(
                    r#"{p}/ARN3: "arn:aws:ssm:us-east-1:123456789012:parameter//x": in an ARN the name follows "parameter/" without its leading "/""#
                ),
            ]
        );
        let e =
            one_error(r#"{"image":"ami-12345678","type":"t3.micro","code":".","secrets":["/a"]}"#);
        assert_eq!(
            e,
            "stack.json: /instances/worker/secrets: expected an object, found a list"
        );
        let e = one_error(r#"{"image":"ami-12345678","type":"t3.micro","code":".","secret":{}}"#);
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/secret: unknown field "secret"; did you mean "secrets"?"#
        );
    }

    #[test]
    fn effect_rule() {
        let e = one_error(
            r#"{"image":"ami-12345678","type":"t3.micro","code":".","permissions":[{"effect":"permit","actions":"s3:GetObject","resources":"*"}]}"#,
        );
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/permissions/0/effect: "permit" is not an effect ("allow" or "deny")"#
        );
    }

    #[test]
    fn actions_rule() {
        let e = instance_errors(
            r#"{"image":"ami-12345678","type":"t3.micro","code":".","permissions":[{"actions":[],"resources":"*"},{"actions":["GetObject"],"resources":"*"}]}"#,
        );
        assert_eq!(
            e,
            vec![
                "stack.json: /instances/worker/permissions/0/actions: must not be empty",
                r#"stack.json: /instances/worker/permissions/1/actions/0: "GetObject" is not an IAM action (service:Action, e.g. "s3:GetObject")"#,
            ]
        );
    }

    #[test]
    fn actions_are_checked_against_iam() {
        // Wildcards that match, any case, and `*` pass; the rest name the position in the list.
        let e = instance_errors(
            r#"{"image":"ami-12345678","type":"t3.micro","code":".","permissions":[
                {"actions":["s3:Get*","S3:putobject","ec2:Describe?nstances","*"],"resources":"*"},
                {"effect":"deny","actions":["s3:GetObject","s3:GetObjcet","s4:GetObject","s3:ListObjects","s3:Gte*"],"resources":"*"},
                {"actions":"s3:HeadObject","resources":"*"}]}"#,
        );
        assert_eq!(
            e,
            vec![
                r#"stack.json: /instances/worker/permissions/1/actions/1: "s3:GetObjcet" is not an IAM action; did you mean "s3:GetObject"?"#,
                r#"stack.json: /instances/worker/permissions/1/actions/2: "s4:GetObject" is not an IAM action: unknown service prefix "s4"; did you mean "s3:GetObject"?"#,
                r#"stack.json: /instances/worker/permissions/1/actions/3: "s3:ListObjects" is not an IAM action: IAM authorizes the ListObjects operation with "s3:ListBucket""#,
                r#"stack.json: /instances/worker/permissions/1/actions/4: "s3:Gte*" matches no s3 action"#,
                r#"stack.json: /instances/worker/permissions/2/actions: "s3:HeadObject" is not an IAM action: IAM authorizes the HeadObject operation with "s3:GetObject""#,
            ]
        );
    }

    #[test]
    fn resources_rule() {
        assert!(
            is_resource("arn:aws:s3:::my-bucket/*")
                && is_resource("*")
                && is_resource("arn:aws:sqs:*:*:queue")
        );
        assert!(
            !is_resource("my-bucket")
                && !is_resource("arn:aws:s3")
                && !is_resource("arn:aws:s3:::a b")
        );
        let e = one_error(
            r#"{"image":"ami-12345678","type":"t3.micro","code":".","permissions":[{"actions":"s3:GetObject","resources":["bucket"]}]}"#,
        );
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/permissions/0/resources/0: "bucket" is not an ARN or "*""#
        );
        let e = one_error(
            r#"{"image":"ami-12345678","type":"t3.micro","code":".","permissions":[{"actions":"s3:GetObject"}]}"#,
        );
        assert_eq!(
            e,
            r#"stack.json: /instances/worker/permissions/0: "resources" is required"#
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let e = instance_errors(
            r#"{"image":5,"type":"t3.micro","code":".","waitForTermination":"yes","permissions":{}}"#,
        );
        assert_eq!(
            e,
            vec![
                "stack.json: /instances/worker/image: expected a string, found a number",
                "stack.json: /instances/worker/permissions: expected a list, found an object",
                "stack.json: /instances/worker/waitForTermination: expected true or false, found a string",
            ]
        );
    }

    #[test]
    fn pointer_escapes_slash_and_tilde() {
        let e = errors(APP, r#"{"name":"jobs","instances":{"a/b~c":{}}}"#);
        assert!(
            e[0].starts_with("stack.json: /instances/a~1b~0c: "),
            "{e:?}"
        );
    }
}
