//! Errors with stable names: the `errorType` Step Functions matches in Retry and Catch.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use lambda_runtime::Diagnostic;
use std::fmt;

/// The names the state machine routes on. Never a Rust type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The input is not an S3 event nor `{"bucket","key"}`. Not retried.
    InvalidInput,
    /// The bundle or its configuration is wrong; the message lists every problem. Not retried.
    InvalidBundle,
    /// The installation's network (its VpcId / SubnetIds, or the region's default VPC) cannot
    /// hold instances; the message says what to set. Checked before anything is created. Not
    /// retried.
    InvalidNetwork,
    /// The bundle object is gone (deleted before the deploy ran). Not retried.
    BundleNotFound,
    /// A newer version of the bundle took over. The execution stops cleanly.
    Superseded,
    /// A new instance profile is not yet visible to EC2. Retried.
    InstanceProfileNotReady,
    /// AWS throttled us beyond the SDK's own retries. Retried.
    Throttled,
    /// The instance went to shutting-down/terminated/stopped; the message is EC2's reason.
    InstanceTerminated,
    /// The instance's bootstrap reported `failed`; the message is the bootstrap's own reason.
    BootstrapFailed,
    /// The instance was not up (running, its bootstrap `ok`) by the deadline.
    DeadlineExceeded,
    /// Something must finish first (e.g. a security group still in use). Retried.
    CleanupPending,
    /// The execution no longer holds the stack's lease: it changes nothing more. Not retried.
    LeaseLost,
    /// Another operation holds the stack and did not release it in time.
    StackBusy,
    /// A timeout, a dropped connection or a 5xx from AWS after the SDK's own retries. Retried.
    Transient,
    /// Any other AWS error.
    AwsError,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::InvalidInput => "InvalidInput",
            Kind::InvalidBundle => "InvalidBundle",
            Kind::InvalidNetwork => "InvalidNetwork",
            Kind::BundleNotFound => "BundleNotFound",
            Kind::Superseded => "Superseded",
            Kind::InstanceProfileNotReady => "InstanceProfileNotReady",
            Kind::Throttled => "Throttled",
            Kind::InstanceTerminated => "InstanceTerminated",
            Kind::BootstrapFailed => "BootstrapFailed",
            Kind::DeadlineExceeded => "DeadlineExceeded",
            Kind::CleanupPending => "CleanupPending",
            Kind::LeaseLost => "LeaseLost",
            Kind::StackBusy => "StackBusy",
            Kind::Transient => "Transient",
            Kind::AwsError => "AwsError",
        }
    }
}

/// A step's failure: a stable kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// Wraps an SDK error: throttling becomes [`Kind::Throttled`]; no answer at all (a timeout,
    /// a dropped connection: the SDK error has no service code) or a 5xx code
    /// [`Kind::Transient`]; the rest [`Kind::AwsError`]; with the operation, code and message.
    pub fn aws<E: ProvideErrorMetadata + fmt::Debug>(what: &str, err: E) -> Failure {
        let kind = match err.code() {
            Some(c) if is_throttling(c) => Kind::Throttled,
            Some(c) if is_server_fault(c) => Kind::Transient,
            Some(_) => Kind::AwsError,
            None => Kind::Transient,
        };
        let code = err.code().unwrap_or("no answer");
        let msg = err
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{err:?}"));
        Failure::new(kind, format!("{what}: {code}: {msg}"))
    }
}

pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "SlowDown"
            | "RequestThrottled"
            | "ThrottledException"
    )
}

pub fn is_server_fault(code: &str) -> bool {
    matches!(
        code,
        "InternalError"
            | "InternalFailure"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "Unavailable"
            | "InternalServerException"
    )
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for Failure {}

impl From<Failure> for Diagnostic {
    fn from(f: Failure) -> Diagnostic {
        Diagnostic {
            error_type: f.kind.name().to_string(),
            error_message: f.message,
        }
    }
}

/// The AWS error code of an SDK error, if the service answered one.
pub fn code_of<E: ProvideErrorMetadata>(err: &E) -> Option<&str> {
    err.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_carry_stable_names() {
        let d: Diagnostic = Failure::new(Kind::InstanceProfileNotReady, "wait").into();
        assert_eq!(d.error_type, "InstanceProfileNotReady");
        assert_eq!(d.error_message, "wait");
    }
}
