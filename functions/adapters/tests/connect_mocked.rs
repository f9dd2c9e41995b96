//! `connect` and the EC2 Instance Connect Endpoint. moto has no Instance Connect Endpoint API
//! (DescribeInstanceConnectEndpoints, CreateInstanceConnectEndpoint), so aws-smithy-mocks stands
//! in for EC2 here; what each call asked EC2 to do is what is asserted. The rest of the group's
//! life is tested against moto (ec2_moto.rs).

use aws_sdk_ec2::operation::authorize_security_group_ingress::AuthorizeSecurityGroupIngressOutput;
use aws_sdk_ec2::operation::create_instance_connect_endpoint::{
    CreateInstanceConnectEndpointInput, CreateInstanceConnectEndpointOutput,
};
use aws_sdk_ec2::operation::create_security_group::{
    CreateSecurityGroupInput, CreateSecurityGroupOutput,
};
use aws_sdk_ec2::operation::describe_instance_connect_endpoints::DescribeInstanceConnectEndpointsOutput;
use aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput;
use aws_sdk_ec2::types::{
    Ec2InstanceConnectEndpoint, Ec2InstanceConnectEndpointState, IpPermission,
};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use stackdrop_adapters::ec2;
use stackdrop_core::network::Placement;
use stackdrop_core::plan::{Ingress, InstancePlan};
use std::sync::{Arc, Mutex};

#[path = "common/plan.rs"]
mod plan;

/// The plan of an instance in subnet-app of vpc-app, with `connect` on or off.
fn plan_with(connect: bool) -> InstancePlan {
    let mut p = plan::instance_plan();
    p.placement = Some(Placement {
        vpc_id: "vpc-app".into(),
        vpc_cidr: "10.9.0.0/16".into(),
        subnet_id: Some("subnet-app".into()),
    });
    p.security_group.ingress = if connect {
        vec![Ingress::ssh_from_endpoint()]
    } else {
        vec![]
    };
    p
}

/// Records every request of one operation (and matches them all).
fn recorded<I: Clone + Send + Sync + 'static>() -> (
    Arc<Mutex<Vec<I>>>,
    impl Fn(&I) -> bool + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (seen, move |i: &I| {
        s.lock().unwrap().push(i.clone());
        true
    })
}

/// EC2 with no group yet (each is created, named sg-for-NAME), the VPC's endpoints as given,
/// and every ingress and endpoint creation recorded.
struct Ec2 {
    client: Client,
    ingress: Arc<Mutex<Vec<IpPermission>>>,
    groups: Arc<Mutex<Vec<CreateSecurityGroupInput>>>,
    endpoints: Arc<Mutex<Vec<CreateInstanceConnectEndpointInput>>>,
    describe_endpoints: Rule,
}

fn ec2_with(existing: Vec<Ec2InstanceConnectEndpoint>) -> Ec2 {
    let no_groups = mock!(Client::describe_security_groups)
        .then_output(|| DescribeSecurityGroupsOutput::builder().build());
    let (groups, g) = recorded::<CreateSecurityGroupInput>();
    let create_group = mock!(Client::create_security_group)
        .match_requests(g)
        .then_compute_output(|i| {
            CreateSecurityGroupOutput::builder()
                .group_id(format!("sg-for-{}", i.group_name().unwrap()))
                .build()
        });
    let ingress = Arc::new(Mutex::new(Vec::new()));
    let seen = ingress.clone();
    let authorize = mock!(Client::authorize_security_group_ingress)
        .match_requests(move |i| {
            seen.lock()
                .unwrap()
                .extend(i.ip_permissions().iter().cloned());
            true
        })
        .then_output(|| AuthorizeSecurityGroupIngressOutput::builder().build());
    let describe_endpoints =
        mock!(Client::describe_instance_connect_endpoints).then_output(move || {
            DescribeInstanceConnectEndpointsOutput::builder()
                .set_instance_connect_endpoints(Some(existing.clone()))
                .build()
        });
    let (endpoints, e) = recorded::<CreateInstanceConnectEndpointInput>();
    let create_endpoint = mock!(Client::create_instance_connect_endpoint)
        .match_requests(e)
        .then_output(|| CreateInstanceConnectEndpointOutput::builder().build());
    let client = mock_client!(
        aws_sdk_ec2,
        RuleMode::MatchAny,
        [
            &no_groups,
            &create_group,
            &authorize,
            &describe_endpoints,
            &create_endpoint
        ]
    );
    Ec2 {
        client,
        ingress,
        groups,
        endpoints,
        describe_endpoints,
    }
}

fn endpoint(
    id: &str,
    state: Ec2InstanceConnectEndpointState,
    group: &str,
) -> Ec2InstanceConnectEndpoint {
    Ec2InstanceConnectEndpoint::builder()
        .instance_connect_endpoint_id(id)
        .state(state)
        .vpc_id("vpc-app")
        .subnet_id("subnet-other")
        .security_group_ids(group)
        .build()
}

/// (port, source group) of every permission granted.
fn from_groups(ingress: &[IpPermission]) -> Vec<(i32, String)> {
    ingress
        .iter()
        .flat_map(|p| {
            assert!(p.ip_ranges().is_empty(), "no CIDR is opened: {p:?}");
            p.user_id_group_pairs()
                .iter()
                .map(|g| (p.from_port().unwrap(), g.group_id().unwrap().to_string()))
        })
        .collect()
}

#[tokio::test]
async fn the_vpcs_endpoint_is_reused_whoever_made_it_and_only_it_reaches_port_22() {
    let theirs = endpoint(
        "eice-theirs",
        Ec2InstanceConnectEndpointState::CreateComplete,
        "sg-theirs",
    );
    let failed = endpoint(
        "eice-failed",
        Ec2InstanceConnectEndpointState::CreateFailed,
        "sg-x",
    );
    let ec2 = ec2_with(vec![failed, theirs]);
    let plan = plan_with(true);
    let (group, created) = ec2::ensure_security_group(&ec2.client, &plan)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(group, format!("sg-for-{}", plan.security_group.name));
    assert_eq!(
        from_groups(&ec2.ingress.lock().unwrap()),
        [(22, "sg-theirs".to_string())]
    );
    assert!(
        ec2.endpoints.lock().unwrap().is_empty(),
        "no second endpoint"
    );
    assert_eq!(
        ec2.groups.lock().unwrap().len(),
        1,
        "only the instance's group"
    );
}

#[tokio::test]
async fn without_one_an_endpoint_is_created_in_the_instances_subnet_with_a_group_of_its_own() {
    let ec2 = ec2_with(vec![]);
    ec2::ensure_security_group(&ec2.client, &plan_with(true))
        .await
        .unwrap();
    let created = ec2.endpoints.lock().unwrap().clone();
    let [e] = created.as_slice() else {
        panic!("{created:?}")
    };
    assert_eq!(e.subnet_id(), Some("subnet-app"));
    let own = "sg-for-stackdrop-connect-endpoint-vpc-app".to_string();
    assert_eq!(e.security_group_ids(), std::slice::from_ref(&own));
    assert_eq!(e.client_token(), Some("stackdrop-connect-vpc-app"));
    let tags = &e.tag_specifications()[0].tags();
    assert!(tags
        .iter()
        .any(|t| t.key() == Some("stackdrop:connect-endpoint") && t.value() == Some("vpc-app")));
    let groups = ec2.groups.lock().unwrap().clone();
    assert_eq!(groups[0].vpc_id(), Some("vpc-app"));
    assert_eq!(from_groups(&ec2.ingress.lock().unwrap()), [(22, own)]);
}

#[tokio::test]
async fn connect_off_opens_nothing_and_asks_for_no_endpoint() {
    // Each deployment has its own group: turning connect off deploys a group without port 22,
    // and the group that had it goes with the old deployment.
    let ec2 = ec2_with(vec![]);
    ec2::ensure_security_group(&ec2.client, &plan_with(false))
        .await
        .unwrap();
    assert!(ec2.ingress.lock().unwrap().is_empty());
    assert_eq!(ec2.describe_endpoints.num_calls(), 0);
    assert!(ec2.endpoints.lock().unwrap().is_empty());
}
