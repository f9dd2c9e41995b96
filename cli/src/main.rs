//! `stackdrop`: validate and plan a bundle offline, zip a folder into a bundle, print the schema;
//! show a deployed stack's state (`status`), retry it, print its instances' logs (`logs`).
//!
//! Exit codes: 0 valid / done, 1 the bundle has problems (each printed as
//! `FILE: /json/pointer: message`), 2 usage errors and unreadable paths.

mod executions;
mod local;
mod logs;
mod status;

use clap::{Parser, Subcommand, ValueEnum};
use stackdrop_core::plan::{self, Context, Source};
use stackdrop_core::schema;
use stackdrop_core::validate::ValidBundle;
use stackdrop_core::Problem;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// In every AWS request's User-Agent (`app/stackdrop-cli`): CloudTrail, and the local
/// environment's IAM recorder, tell the operator's calls from the Lambdas'.
pub const APP_NAME: &str = "stackdrop-cli";

#[derive(Parser)]
#[command(
    name = "stackdrop",
    version,
    about = "Deploy a zip of code to EC2 by dropping it in S3."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a bundle (a zip or a folder); exit 1 and list every problem if it is invalid.
    Validate { path: PathBuf },
    /// Show what deploying a bundle would create.
    Plan {
        path: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// The bucket the bundle would be uploaded to.
        #[arg(long, default_value = "stackdrop-bundles")]
        bucket: String,
        /// The object key (default: the zip's file name, or the folder's name + .zip).
        #[arg(long)]
        key: Option<String>,
        /// The object version id.
        #[arg(long)]
        version_id: Option<String>,
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The AWS account id (ARNs carry `*` without it).
        #[arg(long)]
        account: Option<String>,
        /// The permissions boundary put on every role.
        #[arg(long)]
        permissions_boundary: Option<String>,
    },
    /// Zip a project folder the way the deployer reads it (validated first).
    Bundle {
        dir: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Show a deployed stack (`app/stack`), or every stack: versions, progress, instances, errors.
    Status {
        stack: Option<String>,
        /// Refresh every 2 s until the stack settles.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
        /// The state table (default: $STACKDROP_TABLE or stackdrop-state).
        #[arg(long, env = "STACKDROP_TABLE", default_value = "stackdrop-state")]
        table: String,
    },
    /// Start a fresh attempt of the stack's newest request (what the console's "New execution"
    /// with the same input does); prints the execution and its console link.
    Retry {
        stack: String,
        #[arg(long, env = "STACKDROP_TABLE", default_value = "stackdrop-state")]
        table: String,
        /// The deployer's name prefix (its state machines are PREFIX-deploy, PREFIX-teardown).
        #[arg(long, env = "STACKDROP_PREFIX", default_value = "stackdrop")]
        prefix: String,
    },
    /// Print the logs of a stack's instances (`app/stack`), oldest first: each instance's
    /// bootstrap report and its command's output, as `TIME INSTANCE/INSTANCE-ID STREAM: message`.
    Logs {
        stack: String,
        /// Only this instance's logs.
        instance: Option<String>,
        /// Keep printing new lines (every 2 s) until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print the JSON Schema of stack.json (default) or app.json.
    Schema {
        #[arg(value_enum, default_value = "stack")]
        file: SchemaFile,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaFile {
    Stack,
    App,
}

/// A failure of the command itself (exit 2), as opposed to problems in the bundle (exit 1).
struct Fatal(String);

impl Fatal {
    /// An AWS call `op` failed while `doing` (`"reading {table}"`): the operation, code and
    /// message, as the Lambdas report them.
    fn aws<E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::fmt::Debug>(
        doing: &str,
        op: &str,
        err: E,
    ) -> Fatal {
        Fatal(format!(
            "{doing}: {}",
            stackdrop_adapters::Failure::aws(op, err).message
        ))
    }
}

enum Outcome {
    Ok,
    Invalid(Vec<Problem>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid(problems)) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{} problem{} found",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
        Err(Fatal(msg)) => {
            eprintln!("stackdrop: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<Outcome, Fatal> {
    match cli.command {
        Command::Validate { path } => {
            let valid = match local::validate_path(&path)? {
                Ok(v) => v,
                Err(p) => return Ok(Outcome::Invalid(p)),
            };
            // The offline plan catches the size limits (user data, policy) too.
            if let Err(p) = plan::plan(&valid, &default_source(&path, None), &Context::default()) {
                return Ok(Outcome::Invalid(p));
            }
            println!("{}: valid ({})", path.display(), summary(&valid));
            Ok(Outcome::Ok)
        }
        Command::Plan {
            path,
            json,
            bucket,
            key,
            version_id,
            region,
            account,
            permissions_boundary,
        } => {
            let valid = match local::validate_path(&path)? {
                Ok(v) => v,
                Err(p) => return Ok(Outcome::Invalid(p)),
            };
            let mut source = default_source(&path, version_id);
            source.bucket = bucket;
            if let Some(k) = key {
                source.key = k;
            }
            let ctx = Context {
                region,
                account,
                permissions_boundary,
                ..Context::default()
            };
            let plan = match plan::plan(&valid, &source, &ctx) {
                Ok(p) => p,
                Err(p) => return Ok(Outcome::Invalid(p)),
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&plan).map_err(|e| Fatal(e.to_string()))?
                );
            } else {
                print!("{}", plan.describe());
            }
            Ok(Outcome::Ok)
        }
        Command::Bundle { dir, output } => {
            let valid = match local::validate_path(&dir)? {
                Ok(v) => v,
                Err(p) => return Ok(Outcome::Invalid(p)),
            };
            if !dir.is_dir() {
                return Err(Fatal(format!("{}: not a folder", dir.display())));
            }
            let stats = local::zip_folder(&dir, &output)?;
            println!(
                "{}: {} files, {} bytes ({})",
                output.display(),
                stats.files,
                stats.bytes,
                summary(&valid)
            );
            Ok(Outcome::Ok)
        }
        Command::Status {
            stack,
            watch,
            json,
            table,
        } => {
            status::run(stack, watch, json, table)?;
            Ok(Outcome::Ok)
        }
        Command::Retry {
            stack,
            table,
            prefix,
        } => {
            let arn = status::block_on(async {
                let conf = stackdrop_adapters::sdk_config(Some(crate::APP_NAME)).await;
                let store = stackdrop_adapters::store::Store::new(
                    aws_sdk_dynamodb::Client::new(&conf),
                    table,
                );
                executions::retry(&store, &aws_sdk_sfn::Client::new(&conf), &stack, &prefix).await
            })??;
            println!("started {arn}\n  {}", executions::console_link(&arn));
            Ok(Outcome::Ok)
        }
        Command::Logs {
            stack,
            instance,
            follow,
        } => {
            logs::run(stack, instance, follow)?;
            Ok(Outcome::Ok)
        }
        Command::Schema { file } => {
            let s = match file {
                SchemaFile::Stack => schema::stack_schema(),
                SchemaFile::App => schema::app_schema(),
            };
            print!("{}", schema::to_pretty(&s));
            Ok(Outcome::Ok)
        }
    }
}

fn summary(v: &ValidBundle) -> String {
    let names: Vec<&str> = v.config.instances.iter().map(|i| i.name.as_str()).collect();
    format!(
        "app {}, stack {}, {} instance{}: {}",
        v.config.app,
        v.config.stack,
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

fn default_source(path: &Path, version_id: Option<String>) -> Source {
    let name = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "stack".into());
    let key = if name.ends_with(".zip") {
        name
    } else {
        format!("{name}.zip")
    };
    Source {
        bucket: "stackdrop-bundles".into(),
        key,
        version_id,
    }
}
