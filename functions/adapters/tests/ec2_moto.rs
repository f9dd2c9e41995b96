//! The EC2 adapter against moto's EC2 in server mode, over HTTP with the real SDK client: a
//! security group or launch template that has the name stackdrop would give but was not made by
//! this deployment is neither adopted nor deleted, and what stackdrop made it finds again.

#[path = "common/moto.rs"]
mod moto;
#[path = "common/plan.rs"]
mod plan;

use aws_sdk_ec2::types::{
    IpPermission, IpRange, RequestLaunchTemplateData, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use plan::instance_plan;
use stackdrop_adapters::ec2;

async fn client(m: &moto::Moto) -> Client {
    Client::new(&m.conf().await)
}

/// The default VPC's id.
async fn default_vpc(c: &Client) -> String {
    ec2::default_vpc(c).await.unwrap().0
}

/// Ingress rules of a group as (port, cidr).
async fn ingress(c: &Client, id: &str) -> Vec<(i32, String)> {
    let out = c
        .describe_security_groups()
        .group_ids(id)
        .send()
        .await
        .unwrap();
    let g = &out.security_groups()[0];
    let mut rules = vec![];
    for p in g.ip_permissions() {
        for r in p.ip_ranges() {
            rules.push((
                p.from_port().unwrap_or(-1),
                r.cidr_ip().unwrap_or_default().to_string(),
            ));
        }
    }
    rules
}

fn someones_tags(resource: ResourceType) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .tags(Tag::builder().key("owner").value("someone else").build())
        .build()
}

#[tokio::test]
async fn someone_elses_group_with_our_name_is_refused_and_left_as_it_is() {
    let m = moto::start();
    let c = client(&m).await;
    let plan = instance_plan();
    let theirs = c
        .create_security_group()
        .group_name(&plan.security_group.name)
        .description("not stackdrop's")
        .vpc_id(default_vpc(&c).await)
        .tag_specifications(someones_tags(ResourceType::SecurityGroup))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    c.authorize_security_group_ingress()
        .group_id(&theirs)
        .ip_permissions(
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(80)
                .to_port(80)
                .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .unwrap();

    let err = ec2::ensure_security_group(&c, &plan).await.unwrap_err();
    assert_eq!(
        err.message,
        format!(
            "security group {} exists but does not carry stackdrop:deployment={}: stackdrop did not create it and will not adopt or delete it",
            plan.security_group.name, plan.deployment
        )
    );
    ec2::delete_group(&c, &plan).await.unwrap();
    assert_eq!(ingress(&c, &theirs).await, vec![(80, "0.0.0.0/0".into())]);
}

#[tokio::test]
async fn someone_elses_launch_template_with_our_name_is_refused_and_not_deleted() {
    let m = moto::start();
    let c = client(&m).await;
    let plan = instance_plan();
    let theirs = c
        .create_launch_template()
        .launch_template_name(&plan.launch_template.name)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-12345678")
                .build(),
        )
        .tag_specifications(someones_tags(ResourceType::LaunchTemplate))
        .send()
        .await
        .unwrap()
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_string();

    let err = ec2::ensure_launch_template(&c, &plan, "sg-0123")
        .await
        .unwrap_err();
    assert!(
        err.message.starts_with(&format!(
            "launch template {} exists but does not carry stackdrop:deployment={}",
            plan.launch_template.name, plan.deployment
        )),
        "{err}"
    );
    assert!(ec2::delete_template(&c, &plan).await.is_err());
    let left = c
        .describe_launch_templates()
        .launch_template_ids(&theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(left.launch_templates().len(), 1);
}

#[tokio::test]
async fn what_this_deployment_made_is_found_again_not_made_twice() {
    let m = moto::start();
    let c = client(&m).await;
    let plan = instance_plan();
    let (group, created) = ec2::ensure_security_group(&c, &plan).await.unwrap();
    assert!(created);
    assert_eq!(
        ec2::ensure_security_group(&c, &plan).await.unwrap(),
        (group.clone(), false)
    );
    let (template, version, created) = ec2::ensure_launch_template(&c, &plan, &group)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        ec2::ensure_launch_template(&c, &plan, &group)
            .await
            .unwrap(),
        (template, version, false)
    );
    let named = c
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(&plan.security_group.name)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(named.security_groups().len(), 1);
}
