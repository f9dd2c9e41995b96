//! The plan: from a valid configuration and the bundle's S3 location, everything the pipeline
//! creates, per instance. Pure data: the adapters turn it into AWS calls.

use crate::config::{Config, Instance};
use crate::naming;
use crate::problem::{join, Problem};
use crate::userdata::{self, UserDataInput, USER_DATA_MAX};
use crate::validate::ValidBundle;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// IAM's limit on an inline role policy (characters, whitespace excluded).
pub const INLINE_POLICY_MAX: usize = 10_240;
pub const SSM_MANAGED_POLICY: &str = "AmazonSSMManagedInstanceCore";
pub const DEFAULT_LOG_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_ROOT_DEVICE: &str = "/dev/xvda";
/// Every role and instance profile stackdrop creates lives under this IAM path.
pub const IAM_PATH: &str = "/stackdrop/";

/// Where the bundle is: the deployment is this exact object version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

impl Source {
    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// The bucket of a [`Source::uri`] (`s3://BUCKET/KEY` -> `BUCKET`).
    pub fn bucket_of_uri(uri: &str) -> &str {
        let rest = uri.strip_prefix("s3://").unwrap_or(uri);
        rest.split('/').next().unwrap_or_default()
    }
}

/// What the plan needs to know of the account it deploys into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    pub region: String,
    pub partition: String,
    /// None offline (the CLI): ARNs then carry `*` for the account.
    pub account: Option<String>,
    /// The deployer's permissions boundary, put on every role it creates.
    pub permissions_boundary: Option<String>,
    pub log_retention_days: u32,
    /// Instance name -> the AMI its `resolve:ssm:` image resolved to (validate fills it in).
    /// Part of the deployment id: the same bundle version on a newer AMI is a new deployment,
    /// which is how `refresh` replaces instances whose image changed.
    #[serde(default)]
    pub resolved_images: BTreeMap<String, String>,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            region: "us-east-1".into(),
            partition: "aws".into(),
            account: None,
            permissions_boundary: None,
            log_retention_days: DEFAULT_LOG_RETENTION_DAYS,
            resolved_images: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub app: String,
    pub stack: String,
    pub deployment: String,
    pub source: Source,
    pub region: String,
    pub instances: Vec<InstancePlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePlan {
    pub name: String,
    pub resource_name: String,
    pub image: String,
    pub instance_type: String,
    /// The architecture the instance type needs (`x86_64`, `arm64`, ...).
    pub architecture: String,
    pub wait_for_termination: bool,
    /// The bytes extracting its code folder writes, as validation saw them in the zip: the
    /// instance's extractor writes no more.
    #[serde(default)]
    pub code_bytes: u64,
    /// The deployment this plan belongs to: it owns the role, profile, group and template.
    pub deployment: String,
    pub tags: BTreeMap<String, String>,
    pub role: RolePlan,
    pub instance_profile: String,
    pub log_group: LogGroupPlan,
    pub security_group: SecurityGroupPlan,
    pub launch_template: LaunchTemplatePlan,
    /// Its VPC and subnet, decided at validate time from the installation's network (None in a
    /// plan made offline, or recorded before stackdrop knew networks: the default VPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::network::Placement>,
    /// When EventBridge Scheduler starts and stops it (synced when the deployment is current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::Schedule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolePlan {
    pub name: String,
    /// The IAM path of the role and its instance profile: the deployer's permissions are
    /// scoped to it.
    pub path: String,
    pub trust_policy: Value,
    pub inline_policy_name: String,
    pub inline_policy: Value,
    pub managed_policy_arns: Vec<String>,
    pub permissions_boundary: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupPlan {
    pub name: String,
    pub retention_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupPlan {
    pub name: String,
    pub description: String,
    /// No ingress unless `connect`: SSH from the VPC's EC2 Instance Connect Endpoint only.
    /// Egress stays EC2's default (all).
    pub ingress: Vec<Ingress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ingress {
    pub protocol: String,
    pub port: u16,
    /// [`ENDPOINT`]: the security group(s) of the VPC's EC2 Instance Connect Endpoint, found
    /// or created when provisioning. (`vpc`, in plans recorded before: the VPC's CIDR.)
    pub from: String,
}

/// [`Ingress::from`] for the VPC's EC2 Instance Connect Endpoint.
pub const ENDPOINT: &str = "connect-endpoint";

impl Ingress {
    /// What `connect` opens: SSH from the VPC's EC2 Instance Connect Endpoint.
    pub fn ssh_from_endpoint() -> Ingress {
        Ingress {
            protocol: "tcp".into(),
            port: 22,
            from: ENDPOINT.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchTemplatePlan {
    pub name: String,
    pub image_id: String,
    pub instance_type: String,
    pub metadata: MetadataOptions,
    pub root_volume: RootVolume,
    pub monitoring: bool,
    /// Raw (not base64) user data; at most [`USER_DATA_MAX`] bytes.
    pub user_data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOptions {
    pub http_tokens: String,
    pub http_put_response_hop_limit: u8,
    pub http_endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootVolume {
    /// The AMI's root device; the deploy step replaces the default with the AMI's own.
    pub device_name: String,
    /// The AMI's root snapshot size (GiB), filled in by the deploy step; None offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_gib: Option<i32>,
    pub encrypted: bool,
    pub volume_type: String,
    pub delete_on_termination: bool,
}

/// An S3 object key as it must appear in an IAM resource ARN: `*`, `?` and `$` are literal.
pub fn iam_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '*' => out.push_str("${*}"),
            '?' => out.push_str("${?}"),
            '$' => out.push_str("${$}"),
            c => out.push(c),
        }
    }
    out
}

/// Tag values: at most 256 characters.
fn tag_value(s: &str) -> String {
    s.chars().take(256).collect()
}

/// IAM tag values allow only letters, digits, spaces and `_ . : / = + - @`.
pub fn iam_tag_value(s: &str) -> String {
    tag_value(s)
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn tags(
    app: &str,
    stack: &str,
    instance: &str,
    resource: &str,
    deployment: &str,
    source: &Source,
) -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    t.insert("Name".into(), resource.into());
    t.insert("stackdrop:app".into(), app.into());
    t.insert("stackdrop:stack".into(), stack.into());
    t.insert("stackdrop:instance".into(), instance.into());
    t.insert("stackdrop:deployment".into(), deployment.into());
    t.insert("stackdrop:source".into(), tag_value(&source.uri()));
    if let Some(v) = &source.version_id {
        t.insert("stackdrop:source-version".into(), tag_value(v));
    }
    t
}

pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "ec2.amazonaws.com" },
            "Action": "sts:AssumeRole"
        }]
    })
}

/// The declared permissions plus exactly what the instance needs: read its own bundle version,
/// write its own log group, tag itself with its bootstrap result, read its own secrets and no
/// other SSM parameter ([`crate::secrets::statements`]).
pub fn inline_policy(
    config: &Config,
    instance: &Instance,
    log_group: &str,
    source: &Source,
    ctx: &Context,
) -> Value {
    let p = &ctx.partition;
    let region = &ctx.region;
    let account = ctx.account.as_deref().unwrap_or("*");
    let mut statements: Vec<Value> = instance
        .permissions
        .iter()
        .enumerate()
        .map(|(i, perm)| {
            json!({
                "Sid": format!("Declared{i}"),
                "Effect": perm.effect.iam(),
                "Action": perm.actions,
                "Resource": perm.resources,
            })
        })
        .collect();
    let object_arn = format!(
        "arn:{p}:s3:::{}/{}",
        source.bucket,
        iam_literal(&source.key)
    );
    statements.push(match &source.version_id {
        Some(v) => json!({
            "Sid": "ReadOwnBundleVersion",
            "Effect": "Allow",
            "Action": "s3:GetObjectVersion",
            "Resource": object_arn,
            "Condition": { "StringEquals": { "s3:VersionId": v } }
        }),
        None => json!({
            "Sid": "ReadOwnBundle",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": object_arn,
        }),
    });
    statements.push(json!({
        "Sid": "WriteOwnLogGroup",
        "Effect": "Allow",
        // GetLogEvents: a shipper restarted after a send it saw no answer to asks whether it arrived.
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:GetLogEvents"],
        "Resource": format!("arn:{p}:logs:{region}:{account}:log-group:{log_group}:*"),
    }));
    statements.push(json!({
        "Sid": "ReportBootstrap",
        "Effect": "Allow",
        "Action": "ec2:CreateTags",
        "Resource": format!("arn:{p}:ec2:{region}:{account}:instance/*"),
        "Condition": {
            "StringEquals": {
                "ec2:ResourceTag/stackdrop:app": config.app,
                "ec2:ResourceTag/stackdrop:stack": config.stack,
                "ec2:ResourceTag/stackdrop:instance": instance.name,
            },
            "ForAllValues:StringEquals": { "aws:TagKeys": [userdata::BOOTSTRAP_TAG] }
        }
    }));
    statements.extend(crate::secrets::statements(instance, ctx));
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// Plans every instance of the stack from a validated bundle: its configuration, the folder
/// its files sit under (`root`, "" or "name/") and what extracting each code folder writes
/// (`code_bytes`). Problems: user data over 16 KB, an inline policy over IAM's limit.
pub fn plan(valid: &ValidBundle, source: &Source, ctx: &Context) -> Result<Plan, Vec<Problem>> {
    let config = &valid.config;
    let zip_root = valid.root.as_str();
    let deployment = naming::deployment_on(
        &naming::deployment_id(&source.bucket, &source.key, source.version_id.as_deref()),
        &ctx.resolved_images,
    );
    let mut problems = Vec::new();
    let mut instances = Vec::new();
    for instance in &config.instances {
        let resource = naming::resource_name(&config.app, &config.stack, &instance.name);
        let log_group = naming::log_group_name(&resource);
        let zip_prefix = match instance.code.as_str() {
            "" => zip_root.to_string(),
            code => format!("{zip_root}{code}/"),
        };
        let code_bytes = valid.code_bytes.get(&instance.name).copied().unwrap_or(0);
        let user_data = userdata::render(&UserDataInput {
            app: &config.app,
            stack: &config.stack,
            instance: &instance.name,
            deployment: &deployment,
            region: &ctx.region,
            log_group: &log_group,
            bucket: &source.bucket,
            key: &source.key,
            version_id: source.version_id.as_deref(),
            zip_prefix: &zip_prefix,
            max_bytes: code_bytes,
            user: &instance.user,
            command: instance.command.as_deref(),
            environment: &instance.environment,
            secrets: &instance.secrets,
        });
        if user_data.len() > USER_DATA_MAX {
            problems.push(Problem::new(
                "stack.json",
                instance.pointer(),
                format!(
                    "the instance's user data would be {} bytes, over EC2's limit of {USER_DATA_MAX} bytes (16 KB); shorten \"environment\" or \"command\"",
                    user_data.len()
                ),
            ));
        }
        let policy = inline_policy(config, instance, &log_group, source, ctx);
        let policy_len = policy.to_string().len();
        if policy_len > INLINE_POLICY_MAX {
            problems.push(Problem::new(
                "stack.json",
                join(&instance.pointer(), "permissions"),
                format!("the role's policy would be {policy_len} characters, over IAM's limit of {INLINE_POLICY_MAX}"),
            ));
        }
        let tags = tags(
            &config.app,
            &config.stack,
            &instance.name,
            &resource,
            &deployment,
            source,
        );
        let ingress = if config.connect {
            vec![Ingress::ssh_from_endpoint()]
        } else {
            vec![]
        };
        instances.push(InstancePlan {
            name: instance.name.clone(),
            image: instance.image.as_image_id(),
            instance_type: instance.instance_type.clone(),
            architecture: crate::config::architecture_of(&instance.instance_type).into(),
            wait_for_termination: instance.wait_for_termination,
            code_bytes,
            schedule: instance.schedule.clone(),
            placement: None,
            deployment: deployment.clone(),
            tags,
            role: RolePlan {
                name: naming::role_name(&resource, &deployment),
                path: IAM_PATH.into(),
                trust_policy: trust_policy(),
                inline_policy_name: "stackdrop-instance".into(),
                inline_policy: policy,
                managed_policy_arns: vec![format!(
                    "arn:{}:iam::aws:policy/{SSM_MANAGED_POLICY}",
                    ctx.partition
                )],
                permissions_boundary: ctx.permissions_boundary.clone(),
            },
            instance_profile: naming::instance_profile_name(&resource, &deployment),
            log_group: LogGroupPlan {
                name: log_group,
                retention_days: ctx.log_retention_days,
            },
            security_group: SecurityGroupPlan {
                name: naming::security_group_name(&resource, &deployment),
                description: format!(
                    "stackdrop {}/{}/{}",
                    config.app, config.stack, instance.name
                ),
                ingress,
            },
            launch_template: LaunchTemplatePlan {
                name: naming::launch_template_name(&resource, &deployment),
                image_id: instance.image.as_image_id(),
                instance_type: instance.instance_type.clone(),
                metadata: MetadataOptions {
                    http_tokens: "required".into(),
                    http_put_response_hop_limit: 1,
                    http_endpoint: "enabled".into(),
                },
                root_volume: RootVolume {
                    device_name: DEFAULT_ROOT_DEVICE.into(),
                    size_gib: None,
                    encrypted: true,
                    volume_type: "gp3".into(),
                    delete_on_termination: true,
                },
                monitoring: true,
                user_data,
            },
            resource_name: resource,
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Plan {
        app: config.app.clone(),
        stack: config.stack.clone(),
        deployment,
        source: source.clone(),
        region: ctx.region.clone(),
        instances,
    })
}

impl Plan {
    /// A readable account of what the plan creates.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "stack {}/{} from {}{}\ndeployment {} in {}\n",
            self.app,
            self.stack,
            self.source.uri(),
            self.source
                .version_id
                .as_deref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default(),
            self.deployment,
            self.region
        );
        for i in &self.instances {
            let actions: usize = i.role.inline_policy["Statement"]
                .as_array()
                .map_or(0, |s| s.len());
            s.push_str(&format!(
                "\ninstance {} ({} on {}, {})\n  + IAM role          {} ({} policy statements, {}{})\n  + instance profile  {}\n  + log group         {} (retention {} days)\n  + security group    {} ({})\n  + launch template   {} (IMDSv2 required, hop limit 1, encrypted {} root volume)\n  + EC2 instance      user data {} bytes, waitForTermination {}\n",
                i.name,
                i.instance_type,
                i.image,
                i.architecture,
                i.role.name,
                actions,
                SSM_MANAGED_POLICY,
                i.role.permissions_boundary.as_deref().map(|b| format!(", boundary {b}")).unwrap_or_default(),
                i.instance_profile,
                i.log_group.name,
                i.log_group.retention_days,
                i.security_group.name,
                if i.security_group.ingress.is_empty() { "no ingress".to_string() } else { "SSH from the VPC".to_string() },
                i.launch_template.name,
                i.launch_template.root_volume.volume_type,
                i.launch_template.user_data.len(),
                i.wait_for_termination,
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    #[test]
    fn a_source_uri_gives_back_its_bucket() {
        let s = Source {
            bucket: "bundles-1".into(),
            key: "dir/app.zip".into(),
            version_id: None,
        };
        assert_eq!(Source::bucket_of_uri(&s.uri()), "bundles-1");
        assert_eq!(Source::bucket_of_uri(""), "");
    }

    const APP: &[u8] = br#"{"name":"my-app"}"#;

    /// A validated bundle of `config` under `root`, each code folder 1000 bytes.
    fn valid(config: Config, root: &str) -> ValidBundle {
        let code_bytes = config
            .instances
            .iter()
            .map(|i| (i.name.clone(), 1000))
            .collect();
        ValidBundle {
            config,
            root: root.into(),
            code_bytes,
        }
    }

    fn config(instance: &str) -> Config {
        parse_config(
            APP,
            format!(r#"{{"name":"jobs","instances":{{"worker":{instance}}}}}"#).as_bytes(),
        )
        .unwrap()
    }

    fn source() -> Source {
        Source {
            bucket: "stackdrop-bundles".into(),
            key: "jobs.zip".into(),
            version_id: Some("v1".into()),
        }
    }

    fn ctx() -> Context {
        Context {
            account: Some("123456789012".into()),
            permissions_boundary: Some(
                "arn:aws:iam::123456789012:policy/stackdrop-boundary".into(),
            ),
            ..Context::default()
        }
    }

    const WORKER: &str = r#"{"image":"ami-12345678","type":"t3.medium","code":"./src/worker","command":"npm start","permissions":[{"actions":"s3:GetObject","resources":"arn:aws:s3:::my-bucket/*"}]}"#;

    #[test]
    fn names_tags_and_ids() {
        let p = plan(&valid(config(WORKER), ""), &source(), &ctx()).unwrap();
        let i = &p.instances[0];
        assert_eq!(i.resource_name, "my-app--jobs--instance--worker");
        let owned = format!("my-app--jobs--instance--worker--{}", p.deployment);
        assert_eq!(i.role.name, owned);
        assert_eq!(i.instance_profile, owned);
        assert_eq!(i.launch_template.name, owned);
        assert_eq!(i.security_group.name, owned);
        assert_eq!(
            i.log_group.name,
            "/stackdrop/instance/my-app--jobs--instance--worker"
        );
        assert_eq!(i.tags["stackdrop:app"], "my-app");
        assert_eq!(i.tags["stackdrop:stack"], "jobs");
        assert_eq!(i.tags["stackdrop:instance"], "worker");
        assert_eq!(i.tags["stackdrop:deployment"], p.deployment);
        assert_eq!(
            i.tags["stackdrop:source"],
            "s3://stackdrop-bundles/jobs.zip"
        );
        assert_eq!(i.tags["stackdrop:source-version"], "v1");
        assert_eq!(
            p.deployment,
            naming::deployment_id("stackdrop-bundles", "jobs.zip", Some("v1"))
        );
        assert_eq!(i.deployment, p.deployment);
        assert_eq!(
            i.role.name,
            naming::role_name(&i.resource_name, &p.deployment)
        );
    }

    #[test]
    fn two_installations_never_share_an_iam_name() {
        // IAM names are account-wide: the deployment id hashes the bundle's bucket, which is
        // one installation's, in one region (S3 bucket names are global).
        let mine = plan(&valid(config(WORKER), ""), &source(), &ctx()).unwrap();
        let other = Source {
            bucket: "stackdrop-bundles-eu-west-1".into(),
            ..source()
        };
        let theirs = plan(&valid(config(WORKER), ""), &other, &ctx()).unwrap();
        let (a, b) = (&mine.instances[0], &theirs.instances[0]);
        assert_ne!(a.role.name, b.role.name);
        assert_ne!(a.instance_profile, b.instance_profile);
        assert_ne!(a.launch_template.name, b.launch_template.name);
        assert_ne!(a.security_group.name, b.security_group.name);
    }

    #[test]
    fn launch_template_is_secure_by_default() {
        let p = plan(&valid(config(WORKER), ""), &source(), &ctx()).unwrap();
        let lt = &p.instances[0].launch_template;
        assert_eq!(lt.metadata.http_tokens, "required");
        assert_eq!(lt.metadata.http_put_response_hop_limit, 1);
        assert!(lt.root_volume.encrypted);
        assert_eq!(lt.image_id, "ami-12345678");
        assert!(p.instances[0].security_group.ingress.is_empty());
    }

    #[test]
    fn role_has_declared_permissions_plus_exactly_what_the_instance_needs() {
        let p = plan(&valid(config(WORKER), ""), &source(), &ctx()).unwrap();
        let role = &p.instances[0].role;
        assert_eq!(
            role.trust_policy["Statement"][0]["Principal"]["Service"],
            "ec2.amazonaws.com"
        );
        assert_eq!(role.path, "/stackdrop/");
        assert_eq!(
            role.permissions_boundary.as_deref(),
            Some("arn:aws:iam::123456789012:policy/stackdrop-boundary")
        );
        assert_eq!(
            role.managed_policy_arns,
            vec!["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
        );
        let st = role.inline_policy["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 5);
        assert_eq!(st[0]["Action"], json!(["s3:GetObject"]));
        assert_eq!(st[0]["Resource"], json!(["arn:aws:s3:::my-bucket/*"]));
        assert_eq!(st[1]["Action"], "s3:GetObjectVersion");
        assert_eq!(st[1]["Resource"], "arn:aws:s3:::stackdrop-bundles/jobs.zip");
        assert_eq!(st[1]["Condition"]["StringEquals"]["s3:VersionId"], "v1");
        assert_eq!(st[2]["Resource"], "arn:aws:logs:us-east-1:123456789012:log-group:/stackdrop/instance/my-app--jobs--instance--worker:*");
        assert_eq!(st[3]["Action"], "ec2:CreateTags");
        assert_eq!(
            st[3]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
            json!(["stackdrop:bootstrap"])
        );
        // AmazonSSMManagedInstanceCore allows reading every parameter: not this instance.
        assert_eq!(
            st[4],
            json!({"Sid": "OnlyOwnParameters", "Effect": "Deny", "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": "*"})
        );
    }

    const SECRETS: &str = r#"{"image":"ami-12345678","type":"t3.medium","code":".","command":"npm start",
        "environment":{"NODE_ENV":"production"},
        "secrets":{"DB_PASSWORD":"/my-app/db-password","API_KEY":"arn:aws:ssm:us-east-1:210987654321:parameter/shared/api-key","PINNED":"/my-app/db-password:3","TOKEN":"token"}}"#;

    #[test]
    fn secrets_are_readable_by_the_role_and_no_other_parameter() {
        let p = plan(&valid(config(SECRETS), ""), &source(), &ctx()).unwrap();
        let st = p.instances[0].role.inline_policy["Statement"]
            .as_array()
            .unwrap();
        let arns = json!([
            "arn:aws:ssm:us-east-1:123456789012:parameter/my-app/db-password",
            "arn:aws:ssm:us-east-1:210987654321:parameter/shared/api-key",
            "arn:aws:ssm:us-east-1:123456789012:parameter/token",
        ]);
        assert_eq!(
            &st[3..],
            &[
                json!({"Sid": "ReadOwnSecrets", "Effect": "Allow", "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": arns}),
                json!({"Sid": "DecryptOwnSecrets", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {
                    "StringEquals": {"kms:ViaService": "ssm.us-east-1.amazonaws.com"},
                    "StringLike": {"kms:EncryptionContext:PARAMETER_ARN": arns}}}),
                json!({"Sid": "OnlyOwnParameters", "Effect": "Deny", "Action": ["ssm:GetParameter", "ssm:GetParameters"], "NotResource": arns}),
            ]
        );
        // Offline the account is unknown: any account, as the logs statement does.
        let offline = plan(&valid(config(SECRETS), ""), &source(), &Context::default()).unwrap();
        let st = &offline.instances[0].role.inline_policy["Statement"];
        assert_eq!(
            st[3]["Resource"][0],
            "arn:aws:ssm:us-east-1:*:parameter/my-app/db-password"
        );
        assert_eq!(
            st[3]["Resource"][1],
            "arn:aws:ssm:us-east-1:210987654321:parameter/shared/api-key"
        );
        // The user data names the parameters, in the order written.
        let ud = &p.instances[0].launch_template.user_data;
        assert!(ud.contains("\nSD_SECRETS='DB_PASSWORD=/my-app/db-password\nAPI_KEY=arn:aws:ssm:us-east-1:210987654321:parameter/shared/api-key\nPINNED=/my-app/db-password:3\nTOKEN=token\n'\n"), "{ud}");
    }

    #[test]
    fn declared_parameter_reads_stay_readable() {
        let declared = |actions: &str, resources: &str| {
            let c = config(&format!(
                r#"{{"image":"ami-12345678","type":"t3.medium","code":".","secrets":{{"A":"/a"}},"permissions":[
                    {{"actions":"s3:GetObject","resources":"*"}},
                    {{"effect":"deny","actions":"ssm:*","resources":"arn:aws:ssm:*:*:parameter/never"}},
                    {{"actions":{actions},"resources":{resources}}}]}}"#
            ));
            let p = plan(&valid(c, ""), &source(), &ctx()).unwrap();
            p.instances[0].role.inline_policy["Statement"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone()
        };
        assert_eq!(
            declared(
                r#"["ssm:getparameter*"]"#,
                r#"["arn:aws:ssm:*:*:parameter/config/*"]"#
            )["NotResource"],
            json!([
                "arn:aws:ssm:us-east-1:123456789012:parameter/a",
                "arn:aws:ssm:*:*:parameter/config/*"
            ])
        );
        // Declared on every parameter: nothing to deny.
        assert_eq!(
            declared(r#""ssm:Get*""#, r#""*""#)["Sid"],
            "DecryptOwnSecrets"
        );
        assert_eq!(declared(r#""*""#, r#""*""#)["Sid"], "DecryptOwnSecrets");
        // Other actions change nothing.
        assert_eq!(
            declared(r#""ssm:PutParameter""#, r#""*""#)["NotResource"],
            json!(["arn:aws:ssm:us-east-1:123456789012:parameter/a"])
        );
    }

    #[test]
    fn no_secret_value_is_in_the_plan() {
        // The plan knows names only: a value cannot be in it. What it may hold of a secret is
        // exactly its variable and parameter names.
        let p = plan(&valid(config(SECRETS), ""), &source(), &ctx()).unwrap();
        let text = serde_json::to_string(&p).unwrap();
        for name in ["DB_PASSWORD", "API_KEY", "PINNED", "TOKEN"] {
            assert_eq!(text.matches(name).count(), 1, "{name}");
        }
        let none = plan(&valid(config(WORKER), ""), &source(), &ctx()).unwrap();
        let ud = &none.instances[0].launch_template.user_data;
        assert!(ud.contains("\nSD_SECRETS=''\nSD_SECRETS_PY_GZ=''\n"));
    }

    #[test]
    fn unversioned_bundle_reads_the_object_and_wildcards_in_keys_are_literal() {
        let src = Source {
            bucket: "b".into(),
            key: "a*b?$.zip".into(),
            version_id: None,
        };
        let p = plan(&valid(config(WORKER), ""), &src, &Context::default()).unwrap();
        let st = &p.instances[0].role.inline_policy["Statement"][1];
        assert_eq!(st["Action"], "s3:GetObject");
        assert_eq!(st["Resource"], "arn:aws:s3:::b/a${*}b${?}${$}.zip");
        assert_eq!(p.instances[0].role.inline_policy["Statement"][2]["Resource"], "arn:aws:logs:us-east-1:*:log-group:/stackdrop/instance/my-app--jobs--instance--worker:*");
    }

    #[test]
    fn connect_opens_ssh_from_the_connect_endpoint_only() {
        let c = parse_config(
            br#"{"name":"my-app","defaults":{"instance":{"connect":true}}}"#,
            format!(r#"{{"name":"jobs","instances":{{"worker":{WORKER}}}}}"#).as_bytes(),
        )
        .unwrap();
        let p = plan(&valid(c, ""), &source(), &ctx()).unwrap();
        assert_eq!(
            p.instances[0].security_group.ingress,
            vec![Ingress {
                protocol: "tcp".into(),
                port: 22,
                from: ENDPOINT.into()
            }]
        );
    }

    #[test]
    fn user_data_points_at_the_code_folder_under_the_zip_root() {
        let p = plan(&valid(config(WORKER), "project/"), &source(), &ctx()).unwrap();
        assert!(p.instances[0]
            .launch_template
            .user_data
            .contains("SD_PREFIX='project/src/worker/'"));
        let whole = plan(
            &valid(
                config(r#"{"image":"ami-12345678","type":"t3.medium","code":"."}"#),
                "",
            ),
            &source(),
            &ctx(),
        )
        .unwrap();
        assert!(whole.instances[0]
            .launch_template
            .user_data
            .contains("SD_PREFIX=''"));
    }

    #[test]
    fn user_data_over_16kb_names_the_instance() {
        // Values that do not compress (the environment travels gzipped).
        let mut seed = 1u64;
        let mut noise = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    char::from(
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                            [(seed >> 33) as usize % 62],
                    )
                })
                .collect()
        };
        let env: Vec<String> = (0..40)
            .map(|i| format!(r#""VAR_{i}":"{}""#, noise(400)))
            .collect();
        let c = config(&format!(
            r#"{{"image":"ami-12345678","type":"t3.medium","code":".","environment":{{{}}}}}"#,
            env.join(",")
        ));
        let e = plan(&valid(c, ""), &source(), &ctx()).unwrap_err();
        assert_eq!(e.len(), 1);
        let msg = e[0].to_string();
        assert!(
            msg.starts_with("stack.json: /instances/worker: the instance's user data would be "),
            "{msg}"
        );
        assert!(msg.ends_with(" bytes, over EC2's limit of 16384 bytes (16 KB); shorten \"environment\" or \"command\""), "{msg}");
    }

    #[test]
    fn a_large_stack_stays_under_16kb_per_instance() {
        // 20 instances, each with 30 variables of 100 characters and a long command.
        let env: Vec<String> = (0..30)
            .map(|i| format!(r#""VARIABLE_NUMBER_{i}":"{}""#, "v'$`\\\"".repeat(20)))
            .collect();
        // And 20 secrets with long names.
        let secrets: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    r#""SECRET_NUMBER_{i}":"/my-app/production/database/credentials/secret-{i}""#
                )
            })
            .collect();
        let inst: Vec<String> = (0..20)
            .map(|n| format!(r#""worker-{n:02}":{{"image":"ami-12345678","type":"t3.medium","code":".","command":"{}","environment":{{{}}},"secrets":{{{}}}}}"#, "./run --flag ".repeat(20), env.join(","), secrets.join(",")))
            .collect();
        let c = parse_config(
            APP,
            format!(r#"{{"name":"jobs","instances":{{{}}}}}"#, inst.join(",")).as_bytes(),
        )
        .unwrap();
        let p = plan(&valid(c, "some-root-folder/"), &source(), &ctx()).unwrap();
        assert_eq!(p.instances.len(), 20);
        for i in &p.instances {
            assert!(
                i.launch_template.user_data.len() <= USER_DATA_MAX,
                "{}",
                i.launch_template.user_data.len()
            );
        }
    }

    #[test]
    fn oversized_policy_names_the_permissions() {
        let perms: Vec<String> = (0..60).map(|i| format!(r#"{{"actions":"s3:GetObject","resources":"arn:aws:s3:::bucket-number-{i}-{}/*"}}"#, "p".repeat(150))).collect();
        let c = config(&format!(
            r#"{{"image":"ami-12345678","type":"t3.medium","code":".","permissions":[{}]}}"#,
            perms.join(",")
        ));
        let e = plan(&valid(c, ""), &source(), &ctx()).unwrap_err();
        assert!(
            e[0].to_string().starts_with(
                "stack.json: /instances/worker/permissions: the role's policy would be "
            ),
            "{}",
            e[0]
        );
    }

    #[test]
    fn iam_tag_values_are_sanitized() {
        assert_eq!(iam_tag_value("s3://b/a (1)!.zip"), "s3://b/a _1__.zip");
    }

    #[test]
    fn plan_round_trips_as_json() {
        let p = plan(&valid(config(WORKER), ""), &source(), &ctx()).unwrap();
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
