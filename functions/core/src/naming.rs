//! Resource names: Awsless' `{app}--{stack}--instance--{name}`, shortened with a stable hash
//! suffix wherever AWS caps the length, and the ids that make every AWS write idempotent.

use sha2::{Digest, Sha256};

pub const IAM_ROLE_MAX: usize = 64;
pub const INSTANCE_PROFILE_MAX: usize = 128;
pub const LAUNCH_TEMPLATE_MAX: usize = 128;
pub const SECURITY_GROUP_MAX: usize = 255;
pub const LOG_GROUP_MAX: usize = 512;
pub const CLIENT_TOKEN_MAX: usize = 64;
pub const SCHEDULE_NAME_MAX: usize = 64;
pub const LOG_GROUP_PREFIX: &str = "/stackdrop/instance/";

/// Kebab-case as Awsless (change-case's `paramCase`) does: `myWorker` -> `my-worker`,
/// `APIServer2` -> `api-server2`.
pub fn kebab(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '-' || c == '_' || c == ' ' {
            if !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let boundary = prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower);
            if boundary && !out.ends_with('-') && !out.is_empty() {
                out.push('-');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// `{app}--{stack}--instance--{name}`.
pub fn resource_name(app: &str, stack: &str, instance: &str) -> String {
    format!("{app}--{stack}--instance--{instance}")
}

/// The first 8 hex digits of SHA-256: stable across runs, machines and versions.
pub fn short_hash(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes())[..4])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `name` if it fits in `max`, else a prefix of it, `-` and a hash of the whole name, `max` long.
/// Two different names never shorten to the same result unless their hashes collide.
pub fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let suffix = short_hash(name);
    let keep = max.saturating_sub(suffix.len() + 1);
    let mut prefix: String = name.chars().take(keep).collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    format!("{prefix}-{suffix}")
}

/// `{resource}--{deployment}`: what one deployment of one instance owns (role, profile, group,
/// template) is named for that deployment, so deployments never edit each other's resources.
pub fn owned_name(resource: &str, deployment: &str) -> String {
    format!("{resource}--{deployment}")
}

pub fn role_name(resource: &str, deployment: &str) -> String {
    shorten(&owned_name(resource, deployment), IAM_ROLE_MAX)
}

pub fn instance_profile_name(resource: &str, deployment: &str) -> String {
    shorten(&owned_name(resource, deployment), INSTANCE_PROFILE_MAX)
}

pub fn launch_template_name(resource: &str, deployment: &str) -> String {
    shorten(&owned_name(resource, deployment), LAUNCH_TEMPLATE_MAX)
}

pub fn security_group_name(resource: &str, deployment: &str) -> String {
    shorten(&owned_name(resource, deployment), SECURITY_GROUP_MAX)
}

pub fn log_group_name(resource: &str) -> String {
    shorten(&format!("{LOG_GROUP_PREFIX}{resource}"), LOG_GROUP_MAX)
}

/// A deployment is one bundle version: the same object version always gets the same id, so
/// re-running any step finds what an earlier run made.
pub fn deployment_id(bucket: &str, key: &str, version_id: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [bucket, key, version_id.unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("d-{}", hex(&h.finalize()[..8]))
}

/// The deployment of a bundle version on the AMIs its `resolve:ssm:` images resolved to
/// (instance name -> AMI): `base` when it has none, so a bundle of fixed AMIs keeps one id per
/// version; another id for every other set of AMIs (a new release behind the parameter).
pub fn deployment_on(base: &str, resolved: &std::collections::BTreeMap<String, String>) -> String {
    if resolved.is_empty() {
        return base.to_string();
    }
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    for (name, ami) in resolved {
        for part in [name, ami] {
            h.update([0]);
            h.update(part.as_bytes());
        }
    }
    format!("d-{}", hex(&h.finalize()[..8]))
}

/// The schedule group of one stack (EventBridge Scheduler: at most 64 of `[0-9A-Za-z-_.]`).
pub fn schedule_group(app: &str, stack: &str) -> String {
    shorten(&format!("stackdrop--{app}--{stack}"), SCHEDULE_NAME_MAX)
}

/// One schedule of one instance: `{instance}--start` or `{instance}--stop`.
pub fn schedule_name(instance: &str, action: &str) -> String {
    shorten(&format!("{instance}--{action}"), SCHEDULE_NAME_MAX)
}

/// A teardown is one request about one key: the delete marker's version (or the latest
/// version, for a plain `{"action":"teardown"}`).
pub fn teardown_id(bucket: &str, key: &str, version_id: Option<&str>) -> String {
    format!("t-{}", &deployment_id(bucket, key, version_id)[2..])
}

/// RunInstances' ClientToken for one instance of one attempt of a deployment (at most 64 ASCII
/// characters). EC2 remembers a token for at least a day after the instance is gone, so every
/// attempt has its own: a deploy retried after a failure really launches again.
pub fn client_token(deployment: &str, resource: &str, attempt: u64) -> String {
    let token = format!("{deployment}-{}-{attempt}", short_hash(resource));
    debug_assert!(token.len() <= CLIENT_TOKEN_MAX);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_name_is_awsless_scheme() {
        assert_eq!(
            resource_name("my-app", "jobs", "worker"),
            "my-app--jobs--instance--worker"
        );
    }

    #[test]
    fn short_names_are_kept_whole() {
        let n = resource_name("my-app", "jobs", "worker");
        assert_eq!(
            role_name(&n, "d-0123456789abcdef"),
            format!("{n}--d-0123456789abcdef")
        );
        assert_eq!(
            log_group_name(&n),
            "/stackdrop/instance/my-app--jobs--instance--worker"
        );
    }

    #[test]
    fn long_role_names_are_shortened_to_64_with_a_stable_hash() {
        let n = resource_name(&"a".repeat(24), &"b".repeat(24), &"c".repeat(24));
        assert_eq!(n.len(), 86);
        let r = role_name(&n, "d-1");
        assert_eq!(r.len(), 64);
        assert_eq!(r, role_name(&n, "d-1"), "stable");
        assert_ne!(r, role_name(&n, "d-2"), "each deployment has its own");
        assert!(
            r.starts_with("aaaaaaaaaaaaaaaaaaaaaaaa--bbbbbbbbbbbbbbbbbbbbbbbb--ins-"),
            "{r}"
        );
        assert!(
            r.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c)),
            "IAM chars: {r}"
        );
        // Names differing only past the cut stay distinct.
        let other = resource_name(&"a".repeat(24), &"b".repeat(24), &"d".repeat(24));
        assert_ne!(role_name(&other, "d-1"), r);
    }

    #[test]
    fn a_new_ami_behind_a_parameter_is_a_new_deployment() {
        use std::collections::BTreeMap;
        let base = deployment_id("b", "k", Some("v1"));
        assert_eq!(deployment_on(&base, &BTreeMap::new()), base, "fixed AMIs");
        let on = |ami: &str| {
            deployment_on(
                &base,
                &BTreeMap::from([("web".to_string(), ami.to_string())]),
            )
        };
        assert_eq!(on("ami-1"), on("ami-1"));
        assert_ne!(on("ami-1"), on("ami-2"));
        assert_ne!(on("ami-1"), base);
        assert!(on("ami-1").starts_with("d-") && on("ami-1").len() == base.len());
    }

    #[test]
    fn schedule_names_fit_scheduler() {
        let g = schedule_group(&"a".repeat(40), &"s".repeat(40));
        assert!(g.len() <= SCHEDULE_NAME_MAX && g.starts_with("stackdrop--"));
        assert_eq!(schedule_group("shop", "web"), "stackdrop--shop--web");
        assert_eq!(schedule_name("worker", "start"), "worker--start");
        assert!(schedule_name(&"w".repeat(80), "stop").len() <= SCHEDULE_NAME_MAX);
    }

    #[test]
    fn deployment_id_is_stable_and_distinct() {
        let a = deployment_id("b", "k", Some("v1"));
        assert_eq!(a, deployment_id("b", "k", Some("v1")));
        assert_ne!(a, deployment_id("b", "k", Some("v2")));
        assert_ne!(
            deployment_id("b", "k1", None),
            deployment_id("b", "k", Some("1"))
        );
        assert_eq!(a.len(), 18);
    }

    #[test]
    fn client_token_fits_ec2_limit() {
        let t = client_token(&deployment_id("b", "k", None), &"x".repeat(86), u64::MAX);
        assert!(t.len() <= 64 && t.is_ascii(), "{t}");
        let d = deployment_id("b", "k", None);
        assert_ne!(client_token(&d, "r", 1), client_token(&d, "r", 2));
    }

    #[test]
    fn kebab_matches_param_case() {
        assert_eq!(kebab("myWorker"), "my-worker");
        assert_eq!(kebab("MyWorker"), "my-worker");
        assert_eq!(kebab("worker"), "worker");
        assert_eq!(kebab("APIServer"), "api-server");
        assert_eq!(kebab("web2Api"), "web2-api");
        assert_eq!(kebab("a--b"), "a-b");
    }
}
