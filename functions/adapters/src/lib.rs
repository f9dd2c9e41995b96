//! stackdrop-adapters: the only code that calls AWS. Clients are built once per cold start
//! ([`Clients::load`]); every write is create-or-update, so re-running a step changes nothing
//! that already exists.

pub mod connect;
pub mod ec2;
pub mod error;
pub mod events;
pub mod https;
pub mod iam;
pub mod logs;
pub mod s3;
pub mod scheduler;
pub mod store;

pub use error::{Failure, Kind};

use aws_config::BehaviorVersion;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The clients a step may need, from one loaded configuration. Each is built the first time
/// the step asks for it and kept for the life of the process (the sandbox): a function builds,
/// and links, only the clients it calls.
pub struct Clients {
    conf: aws_config::SdkConfig,
    s3: OnceLock<aws_sdk_s3::Client>,
    ec2: OnceLock<aws_sdk_ec2::Client>,
    iam: OnceLock<aws_sdk_iam::Client>,
    ssm: OnceLock<aws_sdk_ssm::Client>,
    ddb: OnceLock<aws_sdk_dynamodb::Client>,
    logs: OnceLock<aws_sdk_cloudwatchlogs::Client>,
    events: OnceLock<aws_sdk_eventbridge::Client>,
    scheduler: OnceLock<aws_sdk_scheduler::Client>,
    pub settings: Settings,
}

/// The deployer's settings, from the function's environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `STACKDROP_TABLE`: the state store.
    pub table: String,
    /// `STACKDROP_PERMISSIONS_BOUNDARY`: put on every role the deployer creates.
    pub permissions_boundary: Option<String>,
    /// `STACKDROP_LOG_RETENTION_DAYS` (default 30).
    pub log_retention_days: u32,
    /// `STACKDROP_EVENT_BUS` (default `default`): where results are published.
    pub event_bus: String,
    /// `STACKDROP_DEADLINE_SECONDS` (default 900).
    pub deadline_seconds: u64,
    /// `AWS_REGION`.
    pub region: String,
    /// `STACKDROP_STATE_MACHINE_ARN`: the deploy machine, which schedules start.
    pub state_machine_arn: Option<String>,
    /// `STACKDROP_SCHEDULER_ROLE_ARN`: the role EventBridge Scheduler starts it with.
    pub scheduler_role_arn: Option<String>,
    /// `STACKDROP_VPC_ID`, `STACKDROP_SUBNET_IDS` (comma-separated): where instances run
    /// (both empty: the default VPC).
    pub network: stackdrop_core::network::Wanted,
}

impl Settings {
    pub fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Settings {
            table: var("STACKDROP_TABLE").unwrap_or_else(|| "stackdrop-state".into()),
            permissions_boundary: var("STACKDROP_PERMISSIONS_BOUNDARY"),
            log_retention_days: var("STACKDROP_LOG_RETENTION_DAYS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30),
            event_bus: var("STACKDROP_EVENT_BUS").unwrap_or_else(|| "default".into()),
            deadline_seconds: var("STACKDROP_DEADLINE_SECONDS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(stackdrop_core::pipeline::DEFAULT_DEADLINE_SECONDS),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            state_machine_arn: var("STACKDROP_STATE_MACHINE_ARN"),
            scheduler_role_arn: var("STACKDROP_SCHEDULER_ROLE_ARN"),
            network: stackdrop_core::network::Wanted::parse(
                &var("STACKDROP_VPC_ID").unwrap_or_default(),
                &var("STACKDROP_SUBNET_IDS").unwrap_or_default(),
            ),
        }
    }

    /// What schedules start: None unless both the machine and the role are set.
    pub fn schedule_target(&self) -> Option<stackdrop_core::schedules::Target> {
        Some(stackdrop_core::schedules::Target {
            state_machine_arn: self.state_machine_arn.clone()?,
            role_arn: self.scheduler_role_arn.clone()?,
        })
    }
}

impl Clients {
    /// The state store, on this function's table.
    pub fn store(&self) -> store::Store {
        store::Store::new(self.ddb().clone(), &self.settings.table)
    }

    /// Loads the AWS configuration once (region, credentials, `AWS_ENDPOINT_URL` for local AWS).
    /// The function's name goes into every request's User-Agent (`app/NAME`): CloudTrail shows
    /// which function called, and the local environment attributes each call to its role.
    pub async fn load() -> Clients {
        let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok();
        Clients::from_conf(
            &lambda_config(function.as_deref()).await,
            Settings::from_env(),
        )
    }

    pub fn from_conf(conf: &aws_config::SdkConfig, settings: Settings) -> Clients {
        Clients {
            conf: conf.clone(),
            s3: OnceLock::new(),
            ec2: OnceLock::new(),
            iam: OnceLock::new(),
            ssm: OnceLock::new(),
            ddb: OnceLock::new(),
            logs: OnceLock::new(),
            events: OnceLock::new(),
            scheduler: OnceLock::new(),
            settings,
        }
    }

    pub fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3.get_or_init(|| {
            // Path-style S3 addressing works everywhere, and is required by local endpoints.
            let conf = aws_sdk_s3::config::Builder::from(&self.conf)
                .force_path_style(self.conf.endpoint_url().is_some())
                .build();
            aws_sdk_s3::Client::from_conf(conf)
        })
    }

    pub fn ec2(&self) -> &aws_sdk_ec2::Client {
        self.ec2
            .get_or_init(|| aws_sdk_ec2::Client::new(&self.conf))
    }

    pub fn iam(&self) -> &aws_sdk_iam::Client {
        self.iam
            .get_or_init(|| aws_sdk_iam::Client::new(&self.conf))
    }

    pub fn ssm(&self) -> &aws_sdk_ssm::Client {
        self.ssm
            .get_or_init(|| aws_sdk_ssm::Client::new(&self.conf))
    }

    pub fn ddb(&self) -> &aws_sdk_dynamodb::Client {
        self.ddb
            .get_or_init(|| aws_sdk_dynamodb::Client::new(&self.conf))
    }

    pub fn logs(&self) -> &aws_sdk_cloudwatchlogs::Client {
        self.logs
            .get_or_init(|| aws_sdk_cloudwatchlogs::Client::new(&self.conf))
    }

    pub fn events(&self) -> &aws_sdk_eventbridge::Client {
        self.events
            .get_or_init(|| aws_sdk_eventbridge::Client::new(&self.conf))
    }

    pub fn scheduler(&self) -> &aws_sdk_scheduler::Client {
        self.scheduler
            .get_or_init(|| aws_sdk_scheduler::Client::new(&self.conf))
    }
}

/// Sets up logging as Lambda expects it (JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`).
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// Every function's `main`: logging, the clients built once per cold start, then the handler
/// for each event; a [`Failure`] reaches Step Functions as its stable error name.
pub async fn serve<E, O, F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    E: serde::de::DeserializeOwned + Send + 'static,
    O: serde::Serialize + Send + 'static,
    F: Fn(&'static Clients, lambda_runtime::LambdaEvent<E>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<O, Failure>> + Send,
{
    init_logging();
    // Lives as long as the process, like the runtime loop that uses it.
    let clients: &'static Clients = Box::leak(Box::new(Clients::load().await));
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler(clients, event)
    }))
    .await
}

/// The AWS configuration from the environment and the shared config files, as the AWS CLI
/// finds it (the CLI's): every request's User-Agent names `app` (`app/NAME`) when it is a
/// valid app name.
pub async fn sdk_config(app: Option<&str>) -> aws_config::SdkConfig {
    loader(app).load().await
}

/// A Lambda function's AWS configuration. Lambda hands a function its role's credentials and
/// its region only in environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`), where the SDK's default chains would find them first
/// anyway; reading them there directly builds none of those chains (profile files, SSO, web
/// identity, container and instance metadata providers): about 0.8 ms of CPU, a fifth of a
/// cold start's init (BENCHMARKS.md). `AWS_ENDPOINT_URL` is still honoured (local AWS).
pub async fn lambda_config(function: Option<&str>) -> aws_config::SdkConfig {
    use aws_config::environment::{
        EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
    };
    loader(function)
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .region(EnvironmentVariableRegionProvider::new())
        .load()
        .await
}

/// The loader both start from: stackdrop's HTTP client, and `app` in the User-Agent (each
/// Lambda its function name, the CLI `stackdrop-cli`).
fn loader(app: Option<&str>) -> aws_config::ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https::client());
    match app_name(app) {
        Some(name) => loader.app_name(name),
        None => loader,
    }
}

/// The SDK app name for a Lambda function name, when it is a valid one (every function name
/// is: letters, digits, `-` and `_`; the SDK only warns about one over 50 characters).
pub fn app_name(function_name: Option<&str>) -> Option<aws_config::AppName> {
    aws_config::AppName::new(function_name?.to_string()).ok()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_s() -> u64 {
    now_ms() / 1000
}

/// The account id in a Lambda function ARN (`arn:aws:lambda:REGION:ACCOUNT:function:NAME`).
pub fn account_of(function_arn: &str) -> Option<String> {
    function_arn
        .split(':')
        .nth(4)
        .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
        .map(String::from)
}

/// The partition in a Lambda function ARN (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition_of(function_arn: &str) -> String {
    function_arn
        .split(':')
        .nth(1)
        .filter(|p| !p.is_empty())
        .unwrap_or("aws")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_name_is_the_app_name() {
        let name = app_name(Some("stackdrop-validate")).expect("a valid app name");
        assert_eq!(name.as_ref(), "stackdrop-validate");
        assert!(app_name(None).is_none());
        assert!(app_name(Some("")).is_none());
        assert!(app_name(Some("not valid")).is_none());
    }
}
