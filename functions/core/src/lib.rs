//! stackdrop-core: every rule of stackdrop, with no AWS call in it.
//!
//! - [`bundle`]: reads a bundle zip over any random-access source ([`source::ReadAt`]):
//!   the central directory and the two JSON files only, never the code.
//! - [`config`]: the Awsless-compatible `app.json` / `stack.json` model and its validation;
//!   every problem is reported as `FILE: /json/pointer: message`.
//! - [`json`]: JSON parsed as written: a key given twice is an error, not "the last wins".
//! - [`connect`]: the EC2 Instance Connect Endpoint `connect` uses: reuse the VPC's, or create one.
//! - [`iam_actions`]: IAM's action catalogue (generated, embedded): is `s3:GetObject` an action?
//! - [`naming`]: resource names, shortened with a stable hash where AWS caps the length.
//! - [`network`]: the VPC and subnets instances run in (the installation's, or the default VPC).
//! - [`plan`]: everything the pipeline creates for a bundle version.
//! - [`schedule`]: per-instance schedules: EventBridge Scheduler's expressions and IANA time
//!   zones (generated list, embedded), checked offline.
//! - [`secrets`]: SSM parameters named as environment variables: their rules and the role's
//!   statements (the values are read on the instance, never here).
//! - [`userdata`]: the bootstrap script each instance runs.

pub mod bundle;
pub mod config;
pub mod connect;
pub mod iam_actions;
pub mod json;
pub mod lifecycle;
pub mod naming;
pub mod network;
pub mod pipeline;
pub mod plan;
pub mod problem;
pub mod schedule;
pub mod schedules;
pub mod schema;
pub mod secrets;
pub mod source;
pub mod trigger;
pub mod userdata;
pub mod validate;

pub use problem::Problem;
