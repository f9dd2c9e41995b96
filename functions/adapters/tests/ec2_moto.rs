//! The EC2 adapter against moto's EC2 in server mode, over HTTP with the real SDK client: a
//! security group or launch template that has the name stackdrop would give but was not made by
//! this deployment is neither adopted nor deleted, and what stackdrop made it finds again; the
//! installation's network (an explicit subnet, a VPC of its own, no default VPC) is found and
//! used, or named as what to fix.

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
use stackdrop_core::network::{self, Wanted};

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

/// A VPC of the installation's own (not the default), with two subnets in two zones.
async fn own_vpc(c: &Client) -> (String, String, String) {
    let vpc = c
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_string();
    let mut subnets = vec![];
    for (cidr, az) in [("10.9.1.0/24", "us-east-1a"), ("10.9.2.0/24", "us-east-1b")] {
        let s = c
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(az)
            .send()
            .await
            .unwrap();
        subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_string());
    }
    (vpc, subnets.remove(0), subnets.remove(0))
}

#[tokio::test]
async fn an_explicit_subnet_places_the_group_and_the_instance_in_its_vpc() {
    let m = moto::start();
    let c = client(&m).await;
    let (vpc, _, second) = own_vpc(&c).await;
    let wanted = Wanted::parse("", &second);
    let (vpcs, subnets) = ec2::describe_network(&c, &wanted).await.unwrap();
    let network = network::choose(&wanted, "us-east-1", &vpcs, &subnets).unwrap();
    assert_eq!(
        (network.vpc.id.as_str(), network.vpc.cidr.as_str()),
        (vpc.as_str(), "10.9.0.0/16")
    );
    let mut plan = instance_plan();
    plan.placement = Some(network.placement(&plan.name));
    plan.launch_template.root_volume.size_gib = Some(8); // validate takes it from the image

    let (group, _) = ec2::ensure_security_group(&c, &plan).await.unwrap();
    let g = c
        .describe_security_groups()
        .group_ids(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(g.security_groups()[0].vpc_id(), Some(vpc.as_str()));
    let iam = aws_sdk_iam::Client::new(&m.conf().await);
    iam.create_instance_profile()
        .instance_profile_name(&plan.instance_profile)
        .send()
        .await
        .unwrap();
    let (template, version, _) = ec2::ensure_launch_template(&c, &plan, &group)
        .await
        .unwrap();
    let (instance, launched) = ec2::launch(&c, &plan, &template, version, "token-1")
        .await
        .unwrap();
    assert!(launched);
    let d = c
        .describe_instances()
        .instance_ids(&instance.id)
        .send()
        .await
        .unwrap();
    let i = &d.reservations()[0].instances()[0];
    assert_eq!(
        (i.subnet_id(), i.vpc_id()),
        (Some(second.as_str()), Some(vpc.as_str()))
    );
}

#[tokio::test]
async fn a_vpc_alone_spreads_over_its_subnets_and_a_bad_network_names_what_to_fix() {
    let m = moto::start();
    let c = client(&m).await;
    let (vpc, first, second) = own_vpc(&c).await;
    let choose = |vpc_id: &str, subnets: &str| {
        let c = c.clone();
        let wanted = Wanted::parse(vpc_id, subnets);
        async move {
            let (vpcs, found) = ec2::describe_network(&c, &wanted).await.unwrap();
            network::choose(&wanted, "us-east-1", &vpcs, &found)
        }
    };
    assert_eq!(
        choose(&vpc, "").await.unwrap().subnets,
        [first.clone(), second]
    );
    assert_eq!(
        choose("", "subnet-0123456789abcdef0").await.unwrap_err(),
        "SubnetIds names subnet-0123456789abcdef0, which does not exist in us-east-1"
    );
    assert_eq!(
        choose("vpc-0123456789abcdef0", "").await.unwrap_err(),
        "VpcId vpc-0123456789abcdef0 does not exist in us-east-1"
    );
    let default = default_vpc(&c).await;
    assert!(choose(&default, &first)
        .await
        .unwrap_err()
        .starts_with(&format!(
            "SubnetIds must all be in VPC {default}: {first} (in {vpc}) is not"
        )));
}

#[tokio::test]
async fn an_account_without_a_default_vpc_fails_before_anything_is_made() {
    let m = moto::start();
    let c = client(&m).await;
    let default = default_vpc(&c).await;
    let vpc_filter = aws_sdk_ec2::types::Filter::builder()
        .name("vpc-id")
        .values(&default)
        .build();
    let subnets = c
        .describe_subnets()
        .filters(vpc_filter.clone())
        .send()
        .await
        .unwrap();
    for s in subnets.subnets() {
        c.delete_subnet()
            .subnet_id(s.subnet_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    let gateways = c
        .describe_internet_gateways()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("attachment.vpc-id")
                .values(&default)
                .build(),
        )
        .send()
        .await
        .unwrap();
    for g in gateways.internet_gateways() {
        let id = g.internet_gateway_id().unwrap();
        c.detach_internet_gateway()
            .internet_gateway_id(id)
            .vpc_id(&default)
            .send()
            .await
            .unwrap();
        c.delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await
            .unwrap();
    }
    c.delete_vpc().vpc_id(&default).send().await.unwrap();

    let (vpcs, found) = ec2::describe_network(&c, &Wanted::default()).await.unwrap();
    assert_eq!(
        network::choose(&Wanted::default(), "us-east-1", &vpcs, &found).unwrap_err(),
        "us-east-1 has no default VPC: set the VpcId and SubnetIds parameters of the stackdrop stack"
    );
}
