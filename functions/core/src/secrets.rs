//! Secrets: environment variables whose values are SSM Parameter Store parameters (String,
//! StringList or SecureString), read on the instance at boot by its own role.
//!
//! `stack.json` names them per instance, next to `environment` (a stackdrop extension; Awsless
//! files without it are unchanged): `"secrets": { "DB_PASSWORD": "/my-app/db-password" }`,
//! variable name -> parameter name or ARN, optionally `:version` or `:label`. Only the names
//! travel: the user data carries `NAME=parameter` lines ([`render_list`]), the plan the role's
//! statements ([`statements`]); the values never leave the instance. There the bootstrap's
//! `secrets` step runs `scripts/secrets.py`, which calls `aws ssm get-parameters
//! --with-decryption` and writes `/etc/stackdrop/{instance}.secrets.env` (root, group of the
//! user, 0640), each value shell-quoted; the service's run script sources it after the
//! environment file, so a stop and start finds it again without a fetch.

use crate::config::Instance;
use crate::iam_actions::wildcard_match;
use crate::plan::Context;
use serde_json::{json, Value};

/// SSM's longest parameter name (its documented 2048 includes 1037 characters for its own use).
pub const NAME_MAX: usize = 1011;
/// SSM's deepest hierarchy.
pub const DEPTH_MAX: usize = 15;
/// SSM's longest label (versions are numbers).
const SELECTOR_MAX: usize = 100;
/// The two read actions: the bootstrap calls GetParameters; GetParameter is granted alike so
/// the app may re-read a secret itself. AmazonSSMManagedInstanceCore allows both on `*`.
pub const READ_ACTIONS: [&str; 2] = ["ssm:GetParameter", "ssm:GetParameters"];

const EXAMPLE: &str = "e.g. \"/my-app/db-password\" or \"arn:aws:ssm:us-east-1:123456789012:parameter/my-app/db-password\"";

/// A reference split: the parameter (name or ARN, no selector) and its `:version` / `:label`.
fn split_selector(s: &str) -> (&str, Option<&str>) {
    // In an ARN the selector can only follow the name, after "parameter/".
    let name_at = match s.strip_prefix("arn:") {
        Some(_) => s
            .find(":parameter/")
            .map_or(s.len(), |i| i + ":parameter/".len()),
        None => 0,
    };
    match s[name_at..].rfind(':') {
        Some(i) => (&s[..name_at + i], Some(&s[name_at + i + 1..])),
        None => (s, None),
    }
}

/// Checks a parameter name as SSM creates it: `name` or `/path/to/name`, levels of
/// `a-zA-Z0-9_.-`, at most [`DEPTH_MAX`] levels and [`NAME_MAX`] characters, not beginning with
/// `aws` or `ssm` (reserved, any case). `shown` is what the user wrote, for the message.
fn check_name(name: &str, shown: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{shown:?} names no SSM parameter ({EXAMPLE})"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c)))
    {
        return Err(format!(
            "{shown:?} is not an SSM parameter name: {bad:?} is not allowed (letters, digits, \"_\", \".\", \"-\", and \"/\" between levels; {EXAMPLE})"
        ));
    }
    let rel = name.strip_prefix('/').unwrap_or(name);
    if rel.contains('/') && !name.starts_with('/') {
        return Err(format!(
            "{shown:?}: a parameter name with levels starts with \"/\" (\"/{name}\")"
        ));
    }
    if rel.split('/').any(str::is_empty) {
        return Err(format!(
            "{shown:?}: an SSM parameter name has no empty level (\"//\" or a \"/\" at the end)"
        ));
    }
    let depth = rel.split('/').count();
    if depth > DEPTH_MAX {
        return Err(format!(
            "{shown:?} has {depth} levels; SSM allows at most {DEPTH_MAX}"
        ));
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "{shown:?} is {} characters long; SSM parameter names have at most {NAME_MAX}",
            name.len()
        ));
    }
    let lower = rel.to_ascii_lowercase();
    if lower.starts_with("aws") || lower.starts_with("ssm") {
        return Err(format!(
            "{shown:?}: parameter names beginning with \"aws\" or \"ssm\" are reserved by AWS"
        ));
    }
    Ok(())
}

/// Checks one `secrets` value: an SSM parameter name or ARN, optionally `:version` or `:label`.
pub fn check_reference(s: &str) -> Result<(), String> {
    let (param, selector) = split_selector(s);
    if let Some(sel) = selector {
        if sel.is_empty()
            || sel.len() > SELECTOR_MAX
            || !sel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(format!(
                "{s:?}: the version or label after \":\" must be 1 to {SELECTOR_MAX} letters, digits, \"_\", \".\" or \"-\""
            ));
        }
    }
    if !param.starts_with("arn:") {
        return check_name(param, s);
    }
    let parts: Vec<&str> = param.splitn(6, ':').collect();
    let well_formed = parts.len() == 6
        && parts[1].starts_with("aws")
        && parts[1]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && parts[2] == "ssm"
        && !parts[3].is_empty()
        && parts[3]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("parameter/");
    if !well_formed {
        return Err(format!(
            "{s:?} is not an SSM parameter ARN (arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME, {EXAMPLE})"
        ));
    }
    // The ARN of "/a/b" ends "parameter/a/b": the name's own "/" is not repeated.
    let rel = &parts[5]["parameter/".len()..];
    if rel.starts_with('/') {
        return Err(format!(
            "{s:?}: in an ARN the name follows \"parameter/\" without its leading \"/\""
        ));
    }
    let name = if rel.contains('/') {
        format!("/{rel}")
    } else {
        rel.to_string()
    };
    check_name(&name, s)
}

/// The ARN IAM (and KMS's encryption context) sees for a checked reference: the ARN as written,
/// or the deploy region's, selector dropped. `account` is `*` when unknown (offline).
pub fn parameter_arn(reference: &str, partition: &str, region: &str, account: &str) -> String {
    let (param, _) = split_selector(reference);
    if param.starts_with("arn:") {
        return param.to_string();
    }
    let rel = param.strip_prefix('/').unwrap_or(param);
    format!("arn:{partition}:ssm:{region}:{account}:parameter/{rel}")
}

/// What the user data carries: one `NAME=parameter` line per secret, in the order written
/// (neither holds `=` nor a newline). "" without secrets.
pub fn render_list(secrets: &[(String, String)]) -> String {
    secrets
        .iter()
        .map(|(name, reference)| format!("{name}={reference}\n"))
        .collect()
}

/// The secrets' part of the instance role's inline policy.
///
/// With secrets: `ReadOwnSecrets` allows [`READ_ACTIONS`] on exactly their parameters, and
/// `DecryptOwnSecrets` allows `kms:Decrypt` on any key (the parameters may use a customer
/// managed key, unknown here) only through SSM in the deploy region and only for these
/// parameters (`kms:EncryptionContext:PARAMETER_ARN`, the context Parameter Store encrypts
/// SecureStrings with). The default key `alias/aws/ssm` needs no statement: its key policy
/// lets every principal of the account decrypt through SSM.
///
/// Always: `OnlyOwnParameters` denies [`READ_ACTIONS`] on every other parameter, because
/// AmazonSSMManagedInstanceCore (attached for Session Manager) allows them on `*`: without it
/// any instance could read every stack's secrets. Parameters the instance's declared
/// permissions allow reading stay readable; a declared `*` leaves the statement out.
pub fn statements(instance: &Instance, ctx: &Context) -> Vec<Value> {
    let account = ctx.account.as_deref().unwrap_or("*");
    let mut arns: Vec<String> = Vec::new();
    for (_, reference) in &instance.secrets {
        let arn = parameter_arn(reference, &ctx.partition, &ctx.region, account);
        if !arns.contains(&arn) {
            arns.push(arn);
        }
    }
    let mut out = Vec::new();
    if !arns.is_empty() {
        out.push(json!({
            "Sid": "ReadOwnSecrets",
            "Effect": "Allow",
            "Action": READ_ACTIONS,
            "Resource": arns,
        }));
        let dns = if ctx.partition == "aws-cn" {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        out.push(json!({
            "Sid": "DecryptOwnSecrets",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {
                "StringEquals": { "kms:ViaService": format!("ssm.{}.{dns}", ctx.region) },
                "StringLike": { "kms:EncryptionContext:PARAMETER_ARN": arns },
            }
        }));
    }
    let mut readable = arns;
    for perm in &instance.permissions {
        let reads = perm.effect == crate::config::Effect::Allow
            && perm
                .actions
                .iter()
                .any(|a| READ_ACTIONS.iter().any(|r| wildcard_match(a, r)));
        if !reads {
            continue;
        }
        if perm.resources.iter().any(|r| r == "*") {
            return out;
        }
        for r in &perm.resources {
            if !readable.contains(r) {
                readable.push(r.clone());
            }
        }
    }
    out.push(if readable.is_empty() {
        json!({ "Sid": "OnlyOwnParameters", "Effect": "Deny", "Action": READ_ACTIONS, "Resource": "*" })
    } else {
        json!({ "Sid": "OnlyOwnParameters", "Effect": "Deny", "Action": READ_ACTIONS, "NotResource": readable })
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_drop_the_selector_and_the_leading_slash() {
        let arn = |r: &str| parameter_arn(r, "aws", "eu-west-1", "*");
        assert_eq!(arn("/a/b"), "arn:aws:ssm:eu-west-1:*:parameter/a/b");
        assert_eq!(arn("/a/b:3"), "arn:aws:ssm:eu-west-1:*:parameter/a/b");
        assert_eq!(arn("flat:prod"), "arn:aws:ssm:eu-west-1:*:parameter/flat");
        assert_eq!(
            arn("arn:aws:ssm:us-east-1:123456789012:parameter/x/y:7"),
            "arn:aws:ssm:us-east-1:123456789012:parameter/x/y"
        );
        assert_eq!(
            arn("arn:aws:ssm:us-east-1:123456789012:parameter/x"),
            "arn:aws:ssm:us-east-1:123456789012:parameter/x"
        );
    }

    #[test]
    fn the_list_is_one_line_a_secret() {
        let s = [
            ("A".to_string(), "/a".to_string()),
            ("B".to_string(), "b:1".to_string()),
        ];
        assert_eq!(render_list(&s), "A=/a\nB=b:1\n");
        assert_eq!(render_list(&[]), "");
    }
}
