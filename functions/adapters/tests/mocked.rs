//! What moto cannot do, with aws-smithy-mocks standing in for EC2 (research/local-aws.md):
//! moto has no instance-profile propagation delay, does not honour ClientToken, and never
//! throttles. Everything else is tested against moto over HTTP (tests/e2e).

use aws_sdk_ec2::error::ErrorMetadata;
use aws_sdk_ec2::operation::describe_instances::{DescribeInstancesError, DescribeInstancesOutput};
use aws_sdk_ec2::operation::run_instances::{RunInstancesError, RunInstancesOutput};
use aws_sdk_ec2::types::{Instance, InstanceState, InstanceStateName, Reservation, Tag};
use aws_sdk_ec2::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use stackdrop_adapters::{ec2, Kind};

#[path = "common/plan.rs"]
mod plan;
use plan::instance_plan;

fn no_instances() -> DescribeInstancesOutput {
    DescribeInstancesOutput::builder().build()
}

fn running(id: &str, deployment: &str) -> Instance {
    Instance::builder()
        .instance_id(id)
        .state(
            InstanceState::builder()
                .name(InstanceStateName::Running)
                .build(),
        )
        .tags(
            Tag::builder()
                .key("stackdrop:deployment")
                .value(deployment)
                .build(),
        )
        .build()
}

#[tokio::test]
async fn the_new_profile_race_is_a_named_retryable_error() {
    let describe = mock!(Client::describe_instances).then_output(no_instances);
    let run = mock!(Client::run_instances).then_error(|| {
        RunInstancesError::generic(
            ErrorMetadata::builder()
                .code("InvalidParameterValue")
                .message("Value (my-app--jobs--instance--worker) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &run]);
    let err = ec2::launch(&client, &instance_plan(), "lt-1", 1, "tok-1")
        .await
        .unwrap_err();
    assert_eq!(err.kind, Kind::InstanceProfileNotReady);
    assert_eq!(run.num_calls(), 1);
}

#[tokio::test]
async fn a_retry_after_the_race_launches_exactly_once() {
    // First attempt: the profile is not ready. Second attempt (the state machine's Retry): it is.
    let p = instance_plan();
    let deployment = p.tags["stackdrop:deployment"].clone();
    let describe = mock!(Client::describe_instances).then_output(no_instances);
    let token = stackdrop_core::naming::client_token(&deployment, &p.resource_name, 1);
    let profile = p.instance_profile.clone();
    let sent = token.clone();
    let run = mock!(Client::run_instances)
        .match_requests(move |r| {
            r.client_token() == Some(sent.as_str())
                && r.iam_instance_profile().and_then(|p| p.name()) == Some(profile.as_str())
        })
        .sequence()
        .error(|| {
            RunInstancesError::generic(
                ErrorMetadata::builder()
                    .code("InvalidParameterValue")
                    .message("Invalid IAM Instance Profile name")
                    .build(),
            )
        })
        .output(move || {
            RunInstancesOutput::builder()
                .instances(running("i-0abc", &deployment))
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &run]);
    assert_eq!(
        ec2::launch(&client, &p, "lt-1", 1, &token)
            .await
            .unwrap_err()
            .kind,
        Kind::InstanceProfileNotReady
    );
    let (inst, launched) = ec2::launch(&client, &p, "lt-1", 1, &token).await.unwrap();
    assert!(launched);
    assert_eq!(inst.id, "i-0abc");
    assert_eq!(run.num_calls(), 2, "one failed call, one launch");
}

#[tokio::test]
async fn an_instance_already_launched_by_this_deployment_is_reused() {
    // A redrive after the launch succeeded but before its result was recorded.
    let p = instance_plan();
    let deployment = p.tags["stackdrop:deployment"].clone();
    let describe = mock!(Client::describe_instances).then_output(move || {
        DescribeInstancesOutput::builder()
            .reservations(
                Reservation::builder()
                    .instances(running("i-0existing", &deployment))
                    .build(),
            )
            .build()
    });
    let run = mock!(Client::run_instances).then_output(|| RunInstancesOutput::builder().build());
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &run]);
    let (inst, launched) = ec2::launch(&client, &p, "lt-1", 1, "tok").await.unwrap();
    assert_eq!((inst.id.as_str(), launched), ("i-0existing", false));
    assert_eq!(run.num_calls(), 0, "RunInstances must not be called again");
}

#[tokio::test]
async fn the_client_token_is_the_attempts_and_sent() {
    // EC2 itself dedupes on ClientToken for 24 h after termination (moto does not): a retry of
    // one attempt sends the same token, a fresh attempt another (or it could never launch again).
    let p = instance_plan();
    let deployment = p.tags["stackdrop:deployment"].clone();
    let token = stackdrop_core::naming::client_token(&deployment, &p.resource_name, 3);
    assert_eq!(
        token,
        stackdrop_core::naming::client_token(&deployment, &p.resource_name, 3)
    );
    assert_ne!(
        token,
        stackdrop_core::naming::client_token(&deployment, &p.resource_name, 4)
    );
    assert!(token.len() <= 64);
    let describe = mock!(Client::describe_instances).then_output(no_instances);
    let sent = token.clone();
    let run = mock!(Client::run_instances)
        .match_requests(move |r| {
            r.client_token() == Some(sent.as_str())
                && r.min_count() == Some(1)
                && r.max_count() == Some(1)
        })
        .then_output(move || {
            RunInstancesOutput::builder()
                .instances(running("i-1", &deployment))
                .build()
        });
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe, &run]);
    ec2::launch(&client, &p, "lt-1", 3, &token).await.unwrap();
    assert_eq!(run.num_calls(), 1);
}

#[tokio::test]
async fn throttling_past_the_sdk_retries_is_named_throttled() {
    let describe = mock!(Client::describe_instances).then_error(|| {
        DescribeInstancesError::generic(
            ErrorMetadata::builder()
                .code("RequestLimitExceeded")
                .message("Request limit exceeded.")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&describe]);
    let err = ec2::describe_instance(&client, "i-1").await.unwrap_err();
    assert_eq!(err.kind, Kind::Throttled);
    assert!(
        err.message.contains("RequestLimitExceeded"),
        "{}",
        err.message
    );
}
