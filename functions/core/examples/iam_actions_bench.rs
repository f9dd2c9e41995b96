//! Cost of checking declared IAM actions against the embedded catalogue, run once by hand:
//!
//!     cargo run --release -p stackdrop-core --example iam_actions_bench
//!
//! Figures only; no test asserts on time.
use stackdrop_core::iam_actions;
use std::time::Instant;

const VALID: &[&str] = &[
    "s3:GetObject",
    "s3:putobject",
    "s3:Get*",
    "ec2:DescribeInstances",
    "ec2:Describe*",
    "ec2:RunInstances",
    "logs:PutLogEvents",
    "ssm:GetParameter",
    "sqs:SendMessage",
    "*",
];
const INVALID: &[&str] = &[
    "s3:GetObjcet",
    "s4:GetObject",
    "s3:ListObjects",
    "ec2:DescribeEverything",
    "s3:Gte*",
    "lamda:InvokeFunction",
    "ssm:GetSecretValue",
    "cloudwatch-logs:PutLogEvents",
    "sqs:SendMessages",
    "foo:Bar",
];

fn run(label: &str, actions: &[&str], n: usize) {
    let start = Instant::now();
    let mut failed = 0;
    for i in 0..n {
        failed += usize::from(iam_actions::check(actions[i % actions.len()]).is_err());
    }
    let took = start.elapsed();
    println!(
        "{label}: {n} actions ({failed} rejected) in {took:?}, {:?} each",
        took / n as u32
    );
}

fn main() {
    let start = Instant::now();
    let (services, actions) = iam_actions::builtin().counts();
    println!(
        "first use (parse the table): {:?}; {services} services, {actions} actions, {} bytes; {}",
        start.elapsed(),
        iam_actions::TABLE.len(),
        iam_actions::builtin().header()
    );
    run("valid", VALID, 1000);
    run("invalid", INVALID, 1000);
    for a in INVALID {
        println!("  {}", iam_actions::check(a).unwrap_err());
    }
}
