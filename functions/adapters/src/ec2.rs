//! EC2: images, the security group, the launch template, and the instance itself.

use crate::error::{Failure, Kind};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, IpPermission, IpRange, LaunchTemplateBlockDeviceMappingRequest,
    LaunchTemplateEbsBlockDeviceRequest, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateSpecification, LaunchTemplateTagSpecificationRequest,
    LaunchTemplatesMonitoringRequest, RequestLaunchTemplateData, ResourceType, Tag,
    TagSpecification, UserIdGroupPair, VolumeType,
};
use aws_sdk_ec2::Client;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use stackdrop_core::network::{Placement, Subnet, Vpc, Wanted};
use stackdrop_core::plan::{InstancePlan, ENDPOINT};

fn ec2_tags(plan: &InstancePlan) -> Vec<Tag> {
    plan.tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

fn owned_by(tags: &[Tag], deployment: &str) -> bool {
    has_tag(tags, "stackdrop:deployment", deployment)
}

pub(crate) fn has_tag(tags: &[Tag], key: &str, value: &str) -> bool {
    tags.iter()
        .any(|t| t.key() == Some(key) && t.value() == Some(value))
}

fn not_ours(what: &str, name: &str, deployment: &str) -> Failure {
    not_owned(what, name, "stackdrop:deployment", deployment)
}

fn not_owned(what: &str, name: &str, key: &str, value: &str) -> Failure {
    Failure::new(
        Kind::AwsError,
        format!("{what} {name} exists but does not carry {key}={value}: stackdrop did not create it and will not adopt or delete it"),
    )
}

/// An image as the deploy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub architecture: String,
    pub root_device_name: Option<String>,
    /// The root snapshot's size in GiB.
    pub root_size_gib: Option<i32>,
}

/// How an image names an SSM parameter instead of an AMI.
pub const SSM_PREFIX: &str = "resolve:ssm:";

/// Resolves `resolve:ssm:/param` to an AMI id (EC2 does the same at launch; resolving here
/// lets the architecture be checked and pins the AMI for the whole deployment).
pub async fn resolve_image(
    ssm: &aws_sdk_ssm::Client,
    image: &str,
) -> Result<Result<String, String>, Failure> {
    let Some(param) = image.strip_prefix(SSM_PREFIX) else {
        return Ok(Ok(image.to_string()));
    };
    match ssm.get_parameter().name(param).send().await {
        Ok(out) => match out.parameter().and_then(|p| p.value()) {
            Some(v) => Ok(Ok(v.to_string())),
            None => Ok(Err(format!("SSM parameter {param} has no value"))),
        },
        Err(e)
            if e.code() == Some("ParameterNotFound")
                || e.code() == Some("ParameterVersionNotFound") =>
        {
            Ok(Err(format!(
                "SSM parameter {param} does not exist in this region"
            )))
        }
        Err(e) => Err(Failure::aws("GetParameter", e)),
    }
}

/// Describes an AMI; `Ok(None)` when it does not exist (or is not visible to this account).
pub async fn describe_image(ec2: &Client, id: &str) -> Result<Option<Image>, Failure> {
    match ec2.describe_images().image_ids(id).send().await {
        Ok(out) => Ok(out.images().first().map(|i| Image {
            id: id.to_string(),
            architecture: i
                .architecture()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
            root_device_name: i.root_device_name().map(String::from),
            root_size_gib: i
                .block_device_mappings()
                .iter()
                .find(|b| b.device_name() == i.root_device_name())
                .and_then(|b| b.ebs())
                .and_then(|e| e.volume_size()),
        })),
        Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(None),
        Err(e) => Err(Failure::aws("DescribeImages", e)),
    }
}

/// What EC2 has of the network the installation asks for: the VPCs it names (its subnets'
/// VPCs, or the default VPC when it names none) and the subnets to choose from (those named, or
/// the VPC's). [`stackdrop_core::network::choose`] decides from them.
pub async fn describe_network(
    ec2: &Client,
    wanted: &Wanted,
) -> Result<(Vec<Vpc>, Vec<Subnet>), Failure> {
    let subnet_filter = if wanted.subnet_ids.is_empty() {
        wanted.vpc_id.as_deref().map(|v| filter("vpc-id", &[v]))
    } else {
        let ids: Vec<&str> = wanted.subnet_ids.iter().map(String::as_str).collect();
        Some(filter("subnet-id", &ids))
    };
    let mut subnets = Vec::new();
    if let Some(f) = subnet_filter {
        let mut pages = ec2.describe_subnets().filters(f).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| Failure::aws("DescribeSubnets", e))?;
            subnets.extend(page.subnets().iter().map(|s| Subnet {
                id: s.subnet_id().unwrap_or_default().into(),
                vpc_id: s.vpc_id().unwrap_or_default().into(),
                availability_zone: s.availability_zone().unwrap_or_default().into(),
            }));
        }
    }
    let mut vpc_ids: Vec<&str> = wanted.vpc_id.iter().map(String::as_str).collect();
    vpc_ids.extend(subnets.iter().map(|s| s.vpc_id.as_str()));
    vpc_ids.sort_unstable();
    vpc_ids.dedup();
    let vpc_filter = if vpc_ids.is_empty() {
        filter("is-default", &["true"])
    } else {
        filter("vpc-id", &vpc_ids)
    };
    let out = ec2
        .describe_vpcs()
        .filters(vpc_filter)
        .send()
        .await
        .map_err(|e| Failure::aws("DescribeVpcs", e))?;
    let vpcs = out
        .vpcs()
        .iter()
        .map(|v| Vpc {
            id: v.vpc_id().unwrap_or_default().into(),
            cidr: v.cidr_block().unwrap_or_default().into(),
            is_default: v.is_default().unwrap_or(false),
        })
        .collect();
    Ok((vpcs, subnets))
}

/// Where the plan's instance runs: as validate decided it, or (a plan recorded before
/// placements existed) the default VPC.
async fn placement_of(ec2: &Client, plan: &InstancePlan) -> Result<Placement, Failure> {
    if let Some(p) = &plan.placement {
        return Ok(p.clone());
    }
    let (vpc_id, vpc_cidr) = default_vpc(ec2).await?;
    Ok(Placement {
        vpc_id,
        vpc_cidr,
        subnet_id: None,
    })
}

/// The default VPC: its id and CIDR.
pub async fn default_vpc(ec2: &Client) -> Result<(String, String), Failure> {
    let out = ec2
        .describe_vpcs()
        .filters(filter("is-default", &["true"]))
        .send()
        .await
        .map_err(|e| Failure::aws("DescribeVpcs", e))?;
    let vpc = out
        .vpcs()
        .first()
        .ok_or_else(|| Failure::new(Kind::AwsError, "this region has no default VPC"))?;
    Ok((
        vpc.vpc_id().unwrap_or_default().to_string(),
        vpc.cidr_block().unwrap_or_default().to_string(),
    ))
}

/// Finds or creates the instance's security group (no ingress unless `connect`).
pub async fn ensure_security_group(
    ec2: &Client,
    plan: &InstancePlan,
) -> Result<(String, bool), Failure> {
    let sg = &plan.security_group;
    let placement = placement_of(ec2, plan).await?;
    let group = Group {
        name: &sg.name,
        description: &sg.description,
        vpc_id: &placement.vpc_id,
        tags: ec2_tags(plan),
        owner: ("stackdrop:deployment", &plan.deployment),
    };
    let (id, created) = ensure_group(ec2, &group).await?;
    for rule in &sg.ingress {
        let permission = IpPermission::builder()
            .ip_protocol(&rule.protocol)
            .from_port(rule.port as i32)
            .to_port(rule.port as i32);
        let permission = match rule.from.as_str() {
            ENDPOINT => crate::connect::endpoint_groups(ec2, &placement)
                .await?
                .into_iter()
                .fold(permission, |p, g| {
                    p.user_id_group_pairs(
                        UserIdGroupPair::builder()
                            .group_id(g)
                            .description(
                                "stackdrop connect: the VPC's EC2 Instance Connect Endpoint",
                            )
                            .build(),
                    )
                }),
            // A plan recorded before connect used the endpoint: the VPC's CIDR.
            from => permission.ip_ranges(
                IpRange::builder()
                    .cidr_ip(if from == "vpc" {
                        &placement.vpc_cidr
                    } else {
                        from
                    })
                    .description("stackdrop connect")
                    .build(),
            ),
        };
        authorize(ec2, &id, permission.build()).await?;
    }
    Ok((id, created))
}

/// A security group stackdrop finds by name in a VPC, or creates, tagged; one with that name
/// that lacks the `owner` tag is someone else's and refused.
pub(crate) struct Group<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub vpc_id: &'a str,
    pub tags: Vec<Tag>,
    pub owner: (&'a str, &'a str),
}

/// The group's id, and whether this call created it.
pub(crate) async fn ensure_group(ec2: &Client, g: &Group<'_>) -> Result<(String, bool), Failure> {
    let found = ec2
        .describe_security_groups()
        .filters(filter("group-name", &[g.name]))
        .filters(filter("vpc-id", &[g.vpc_id]))
        .send()
        .await
        .map_err(|e| Failure::aws("DescribeSecurityGroups", e))?;
    let (key, value) = g.owner;
    match found.security_groups().first() {
        Some(found) if has_tag(found.tags(), key, value) => {
            return Ok((found.group_id().unwrap_or_default().to_string(), false))
        }
        Some(_) => return Err(not_owned("security group", g.name, key, value)),
        None => {}
    }
    let res = ec2
        .create_security_group()
        .group_name(g.name)
        .description(g.description)
        .vpc_id(g.vpc_id)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .set_tags(Some(g.tags.clone()))
                .build(),
        )
        .send()
        .await;
    match res {
        Ok(out) => Ok((out.group_id().unwrap_or_default().to_string(), true)),
        Err(e) if e.code() == Some("InvalidGroup.Duplicate") => {
            Box::pin(ensure_group(ec2, g)).await
        }
        Err(e) => Err(Failure::aws("CreateSecurityGroup", e)),
    }
}

/// Adds one ingress permission; one that is there already is fine.
async fn authorize(ec2: &Client, group_id: &str, permission: IpPermission) -> Result<(), Failure> {
    let res = ec2
        .authorize_security_group_ingress()
        .group_id(group_id)
        .ip_permissions(permission)
        .send()
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("InvalidPermission.Duplicate") => Ok(()),
        Err(e) => Err(Failure::aws("AuthorizeSecurityGroupIngress", e)),
    }
}

/// The launch template data of a plan, given its security group.
pub fn template_data(plan: &InstancePlan, security_group_id: &str) -> RequestLaunchTemplateData {
    let lt = &plan.launch_template;
    let tags = ec2_tags(plan);
    RequestLaunchTemplateData::builder()
        .image_id(&lt.image_id)
        .instance_type(lt.instance_type.as_str().into())
        .iam_instance_profile(
            LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .name(&plan.instance_profile)
                .build(),
        )
        .security_group_ids(security_group_id)
        .user_data(base64::engine::general_purpose::STANDARD.encode(lt.user_data.as_bytes()))
        .metadata_options(
            LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .http_tokens(LaunchTemplateHttpTokensState::from(
                    lt.metadata.http_tokens.as_str(),
                ))
                .http_put_response_hop_limit(lt.metadata.http_put_response_hop_limit as i32)
                .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::from(
                    lt.metadata.http_endpoint.as_str(),
                ))
                .build(),
        )
        .block_device_mappings(
            LaunchTemplateBlockDeviceMappingRequest::builder()
                .device_name(&lt.root_volume.device_name)
                .ebs(
                    LaunchTemplateEbsBlockDeviceRequest::builder()
                        .encrypted(lt.root_volume.encrypted)
                        .set_volume_size(lt.root_volume.size_gib)
                        .volume_type(VolumeType::from(lt.root_volume.volume_type.as_str()))
                        .delete_on_termination(lt.root_volume.delete_on_termination)
                        .build(),
                )
                .build(),
        )
        .monitoring(
            LaunchTemplatesMonitoringRequest::builder()
                .enabled(lt.monitoring)
                .build(),
        )
        .tag_specifications(
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(tags.clone()))
                .build(),
        )
        .tag_specifications(
            LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Volume)
                .set_tags(Some(tags))
                .build(),
        )
        .build()
}

/// A fingerprint of what the template must hold: a version is reused only when it matches.
pub fn template_fingerprint(plan: &InstancePlan, security_group_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&plan.launch_template).unwrap_or_default());
    h.update(serde_json::to_vec(&plan.tags).unwrap_or_default());
    h.update(plan.instance_profile.as_bytes());
    h.update(security_group_id.as_bytes());
    let d = h.finalize();
    format!(
        "stackdrop:{}",
        d[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The id of the plan's launch template, if it exists; an error if it exists but this
/// deployment did not create it.
pub async fn find_launch_template_id(
    ec2: &Client,
    plan: &InstancePlan,
) -> Result<Option<String>, Failure> {
    let name = &plan.launch_template.name;
    match ec2
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
    {
        Ok(out) => match out.launch_templates().first() {
            Some(t) if owned_by(t.tags(), &plan.deployment) => {
                Ok(t.launch_template_id().map(String::from))
            }
            Some(_) => Err(not_ours("launch template", name, &plan.deployment)),
            None => Ok(None),
        },
        Err(e) if e.code().is_some_and(|c| c.contains("NotFound")) => Ok(None),
        Err(e) => Err(Failure::aws("DescribeLaunchTemplates", e)),
    }
}

/// Finds or creates the launch template, with a version holding exactly this plan (a new
/// version only when it changed). Returns (template id, version number, created something).
pub async fn ensure_launch_template(
    ec2: &Client,
    plan: &InstancePlan,
    security_group_id: &str,
) -> Result<(String, i64, bool), Failure> {
    let name = &plan.launch_template.name;
    let fingerprint = template_fingerprint(plan, security_group_id);
    let template_id = find_launch_template_id(ec2, plan).await?;
    let Some(template_id) = template_id else {
        let res = ec2
            .create_launch_template()
            .launch_template_name(name)
            .version_description(&fingerprint)
            .launch_template_data(template_data(plan, security_group_id))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .set_tags(Some(ec2_tags(plan)))
                    .build(),
            )
            .send()
            .await;
        return match res {
            Ok(out) => {
                let t = out.launch_template();
                Ok((
                    t.and_then(|t| t.launch_template_id())
                        .unwrap_or_default()
                        .to_string(),
                    t.and_then(|t| t.latest_version_number()).unwrap_or(1),
                    true,
                ))
            }
            Err(e) if e.code().is_some_and(|c| c.contains("AlreadyExists")) => {
                Box::pin(ensure_launch_template(ec2, plan, security_group_id)).await
            }
            Err(e) => Err(Failure::aws("CreateLaunchTemplate", e)),
        };
    };
    // Reuse a version that already holds this plan (a re-run, a retry, a redrive).
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_id(&template_id)
        .send()
        .await
        .map_err(|e| Failure::aws("DescribeLaunchTemplateVersions", e))?;
    if let Some(v) = versions
        .launch_template_versions()
        .iter()
        .find(|v| v.version_description() == Some(fingerprint.as_str()))
    {
        return Ok((template_id, v.version_number().unwrap_or(1), false));
    }
    let out = ec2
        .create_launch_template_version()
        .launch_template_id(&template_id)
        .version_description(&fingerprint)
        .launch_template_data(template_data(plan, security_group_id))
        .send()
        .await
        .map_err(|e| Failure::aws("CreateLaunchTemplateVersion", e))?;
    let version = out
        .launch_template_version()
        .and_then(|v| v.version_number())
        .unwrap_or(1);
    Ok((template_id, version, true))
}

/// An instance as the poll loop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceState {
    pub id: String,
    pub state: String,
    pub reason: Option<String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub deployment: Option<String>,
    /// The `stackdrop:instance` tag: the instance's name in stack.json.
    pub name: Option<String>,
    /// The `stackdrop:bootstrap` tag the instance writes on itself: `ok` or `failed`.
    pub bootstrap: Option<String>,
}

fn tag_of(i: &aws_sdk_ec2::types::Instance, key: &str) -> Option<String> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(String::from)
}

fn to_state(i: &aws_sdk_ec2::types::Instance) -> InstanceState {
    InstanceState {
        id: i.instance_id().unwrap_or_default().to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        reason: i
            .state_reason()
            .and_then(|r| r.message())
            .map(String::from)
            .or_else(|| {
                i.state_transition_reason()
                    .filter(|r| !r.is_empty())
                    .map(String::from)
            }),
        private_ip: i.private_ip_address().map(String::from),
        public_ip: i.public_ip_address().map(String::from),
        deployment: tag_of(i, "stackdrop:deployment"),
        name: tag_of(i, "stackdrop:instance"),
        bootstrap: tag_of(i, stackdrop_core::userdata::BOOTSTRAP_TAG),
    }
}

/// Instances carrying all these tags, in the given states (all states when empty).
pub async fn find_instances(
    ec2: &Client,
    tags: &[(&str, &str)],
    states: &[&str],
) -> Result<Vec<InstanceState>, Failure> {
    let mut req = ec2.describe_instances();
    for (k, v) in tags {
        req = req.filters(filter(&format!("tag:{k}"), &[v]));
    }
    if !states.is_empty() {
        req = req.filters(filter("instance-state-name", states));
    }
    let mut out = Vec::new();
    let mut pages = req.into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Failure::aws("DescribeInstances", e))?;
        for r in page.reservations() {
            out.extend(r.instances().iter().map(to_state));
        }
    }
    Ok(out)
}

pub const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];
/// Every state but `terminated`: what cleanup must still see go.
pub const NOT_GONE: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

/// This deployment's instance of `plan`, if one was launched already (any live state).
pub async fn find_launched(
    ec2: &Client,
    plan: &InstancePlan,
) -> Result<Option<InstanceState>, Failure> {
    let t = &plan.tags;
    let tags = [
        ("stackdrop:app", t["stackdrop:app"].as_str()),
        ("stackdrop:stack", t["stackdrop:stack"].as_str()),
        ("stackdrop:instance", t["stackdrop:instance"].as_str()),
        ("stackdrop:deployment", t["stackdrop:deployment"].as_str()),
    ];
    Ok(find_instances(ec2, &tags, LIVE_STATES)
        .await?
        .into_iter()
        .next())
}

/// These instances' states; those EC2 does not know (any more, or yet) are left out.
pub async fn describe_instances(
    ec2: &Client,
    ids: &[String],
) -> Result<Vec<InstanceState>, Failure> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(i) = describe_instance(ec2, id).await? {
            out.push(i);
        }
    }
    Ok(out)
}

/// Whether an EC2 error is the new-instance-profile race.
pub fn is_profile_not_ready<E: ProvideErrorMetadata>(e: &E) -> bool {
    let msg = e.message().unwrap_or("").to_ascii_lowercase();
    matches!(
        e.code(),
        Some("InvalidParameterValue") | Some("InvalidIamInstanceProfile.NotFound")
    ) && (msg.contains("iam instance profile")
        || msg.contains("iaminstanceprofile")
        || msg.contains("instance profile"))
}

/// Launches the instance from the template, unless this deployment already did.
/// Returns (instance, launched now).
pub async fn launch(
    ec2: &Client,
    plan: &InstancePlan,
    template_id: &str,
    version: i64,
    client_token: &str,
) -> Result<(InstanceState, bool), Failure> {
    if let Some(existing) = find_launched(ec2, plan).await? {
        return Ok((existing, false));
    }
    let res = ec2
        .run_instances()
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(template_id)
                .version(version.to_string())
                .build(),
        )
        .min_count(1)
        .max_count(1)
        .set_subnet_id(plan.placement.as_ref().and_then(|p| p.subnet_id.clone()))
        .client_token(client_token)
        // Also given directly: the template holds both, and some EC2 emulations ignore them there.
        .iam_instance_profile(
            IamInstanceProfileSpecification::builder()
                .name(&plan.instance_profile)
                .build(),
        )
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_tokens(HttpTokensState::Required)
                .http_put_response_hop_limit(
                    plan.launch_template.metadata.http_put_response_hop_limit as i32,
                )
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .build(),
        )
        .send()
        .await;
    match res {
        Ok(out) => {
            let i = out
                .instances()
                .first()
                .ok_or_else(|| Failure::new(Kind::AwsError, "RunInstances returned no instance"))?;
            Ok((to_state(i), true))
        }
        Err(e) if e.as_service_error().is_some_and(is_profile_not_ready) => Err(Failure::new(
            Kind::InstanceProfileNotReady,
            format!(
                "instance profile {} is not yet visible to EC2 (new profiles take a few seconds)",
                plan.instance_profile
            ),
        )),
        Err(e) if e.code() == Some("IdempotentParameterMismatch") => Err(Failure::new(
            Kind::AwsError,
            format!("RunInstances: client token {client_token} was used with other parameters"),
        )),
        Err(e) => Err(Failure::aws("RunInstances", e)),
    }
}

pub async fn describe_instance(ec2: &Client, id: &str) -> Result<Option<InstanceState>, Failure> {
    match ec2.describe_instances().instance_ids(id).send().await {
        Ok(out) => Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .map(to_state)),
        Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(None),
        Err(e) => Err(Failure::aws("DescribeInstances", e)),
    }
}

/// Starts (`start`) or stops these instances.
pub async fn power(ec2: &Client, ids: &[String], start: bool) -> Result<(), Failure> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids = Some(ids.to_vec());
    let res = if start {
        ec2.start_instances()
            .set_instance_ids(ids)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Failure::aws("StartInstances", e))
    } else {
        ec2.stop_instances()
            .set_instance_ids(ids)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Failure::aws("StopInstances", e))
    };
    match res {
        Err(f) if f.message.contains("IncorrectInstanceState") => Ok(()), // on its way already
        other => other,
    }
}

pub async fn terminate(ec2: &Client, ids: &[String]) -> Result<(), Failure> {
    if ids.is_empty() {
        return Ok(());
    }
    match ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // One id EC2 does not know (yet, or any more) fails the whole call: ask one by one.
        Err(e) if e.code() == Some("InvalidInstanceID.NotFound") && ids.len() > 1 => {
            for id in ids {
                Box::pin(terminate(ec2, std::slice::from_ref(id))).await?;
            }
            Ok(())
        }
        Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(()),
        Err(e) => Err(Failure::aws("TerminateInstances", e)),
    }
}

/// Deletes the plan's launch template, if this deployment created it.
pub async fn delete_template(ec2: &Client, plan: &InstancePlan) -> Result<(), Failure> {
    let Some(id) = find_launch_template_id(ec2, plan).await? else {
        return Ok(());
    };
    match ec2
        .delete_launch_template()
        .launch_template_id(&id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| c.contains("NotFound")) => Ok(()),
        Err(e) => Err(Failure::aws("DeleteLaunchTemplate", e)),
    }
}

/// Deletes the plan's security group, if this deployment created it. A group still used by a
/// terminating instance is [`Kind::CleanupPending`].
pub async fn delete_group(ec2: &Client, plan: &InstancePlan) -> Result<(), Failure> {
    let found = ec2
        .describe_security_groups()
        .filters(filter("group-name", &[&plan.security_group.name]))
        .filters(filter("tag:stackdrop:deployment", &[&plan.deployment]))
        .send()
        .await
        .map_err(|e| Failure::aws("DescribeSecurityGroups", e))?;
    for g in found.security_groups() {
        match ec2
            .delete_security_group()
            .set_group_id(g.group_id().map(String::from))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("InvalidGroup.NotFound") => {}
            Err(e) if e.code() == Some("DependencyViolation") => {
                return Err(Failure::new(
                    Kind::CleanupPending,
                    format!(
                        "security group {} is still in use by a terminating instance",
                        plan.security_group.name
                    ),
                ))
            }
            Err(e) => return Err(Failure::aws("DeleteSecurityGroup", e)),
        }
    }
    Ok(())
}
