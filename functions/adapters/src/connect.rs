//! `connect`: the VPC's EC2 Instance Connect Endpoint, found or created
//! ([`stackdrop_core::connect::decide`] chooses); the instance's group admits port 22 from the
//! endpoint's security groups. stackdrop never deletes an endpoint: one it did not create is not
//! its to delete, and one it did may serve other stacks of the VPC (an endpoint costs nothing
//! while idle).

use crate::ec2::{ensure_group, Group};
use crate::error::{Failure, Kind};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use aws_sdk_ec2::Client;
use stackdrop_core::connect::{self, Decision, Endpoint};
use stackdrop_core::network::Placement;

fn vpc_filter(vpc_id: &str) -> Filter {
    Filter::builder().name("vpc-id").values(vpc_id).build()
}

/// The security groups port 22 is admitted from: the VPC's endpoint's (created if it has none).
pub async fn endpoint_groups(ec2: &Client, placement: &Placement) -> Result<Vec<String>, Failure> {
    let found = describe_endpoints(ec2, &placement.vpc_id).await?;
    let subnet = placement.subnet_id.as_deref();
    let decision = match connect::decide(&found, subnet, &[]) {
        Ok(d) => d,
        // No subnet of its own (the default VPC's default subnets): the VPC's first.
        Err(_) => connect::decide(&found, subnet, &subnets_of(ec2, &placement.vpc_id).await?)
            .map_err(|why| Failure::new(Kind::InvalidNetwork, why))?,
    };
    match decision {
        Decision::Reuse {
            security_group_ids, ..
        } if !security_group_ids.is_empty() => Ok(security_group_ids),
        Decision::Reuse { .. } => Ok(vec![default_group(ec2, &placement.vpc_id).await?]),
        Decision::Create { subnet_id } => create(ec2, &placement.vpc_id, &subnet_id).await,
    }
}

async fn describe_endpoints(ec2: &Client, vpc_id: &str) -> Result<Vec<Endpoint>, Failure> {
    let mut out = Vec::new();
    let mut pages = ec2
        .describe_instance_connect_endpoints()
        .filters(vpc_filter(vpc_id))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Failure::aws("DescribeInstanceConnectEndpoints", e))?;
        out.extend(page.instance_connect_endpoints().iter().map(|e| Endpoint {
            id: e.instance_connect_endpoint_id().unwrap_or_default().into(),
            state: e.state().map(|s| s.as_str()).unwrap_or_default().into(),
            subnet_id: e.subnet_id().unwrap_or_default().into(),
            security_group_ids: e.security_group_ids().to_vec(),
        }));
    }
    Ok(out)
}

/// The VPC's subnets by zone, then id.
async fn subnets_of(ec2: &Client, vpc_id: &str) -> Result<Vec<String>, Failure> {
    let out = ec2
        .describe_subnets()
        .filters(vpc_filter(vpc_id))
        .send()
        .await
        .map_err(|e| Failure::aws("DescribeSubnets", e))?;
    let mut subnets: Vec<(&str, &str)> = out
        .subnets()
        .iter()
        .map(|s| {
            (
                s.availability_zone().unwrap_or_default(),
                s.subnet_id().unwrap_or_default(),
            )
        })
        .collect();
    subnets.sort_unstable();
    Ok(subnets.into_iter().map(|(_, id)| id.to_string()).collect())
}

/// An endpoint made without groups uses the VPC's default group.
async fn default_group(ec2: &Client, vpc_id: &str) -> Result<String, Failure> {
    let out = ec2
        .describe_security_groups()
        .filters(vpc_filter(vpc_id))
        .filters(
            Filter::builder()
                .name("group-name")
                .values("default")
                .build(),
        )
        .send()
        .await
        .map_err(|e| Failure::aws("DescribeSecurityGroups", e))?;
    out.security_groups()
        .first()
        .and_then(|g| g.group_id())
        .map(str::to_string)
        .ok_or_else(|| {
            Failure::new(
                Kind::AwsError,
                format!("VPC {vpc_id} has no default security group"),
            )
        })
}

/// The endpoint's own group (no ingress; EC2's default egress), then the endpoint in it. The
/// client token makes a re-run of this step (or a second stack at once) create one endpoint.
async fn create(ec2: &Client, vpc_id: &str, subnet_id: &str) -> Result<Vec<String>, Failure> {
    let name = connect::group_name(vpc_id);
    let tags = vec![
        Tag::builder().key("Name").value(&name).build(),
        Tag::builder().key(connect::TAG).value(vpc_id).build(),
    ];
    let group = Group {
        name: &name,
        description: "stackdrop connect: the EC2 Instance Connect Endpoint's own group",
        vpc_id,
        tags: tags.clone(),
        owner: (connect::TAG, vpc_id),
    };
    let (group_id, _) = ensure_group(ec2, &group).await?;
    ec2.create_instance_connect_endpoint()
        .subnet_id(subnet_id)
        .security_group_ids(&group_id)
        .client_token(format!("stackdrop-connect-{vpc_id}"))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::InstanceConnectEndpoint)
                .set_tags(Some(tags))
                .build(),
        )
        .send()
        .await
        .map_err(|e| Failure::aws("CreateInstanceConnectEndpoint", e))?;
    tracing::info!(vpc = vpc_id, subnet = subnet_id, group = %group_id, "created an EC2 Instance Connect Endpoint");
    Ok(vec![group_id])
}
