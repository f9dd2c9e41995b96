//! The instance's IAM role and instance profile: create-or-update, and removal.

use crate::error::{Failure, Kind};
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::Tag;
use aws_sdk_iam::Client;
use stackdrop_core::plan::{iam_tag_value, InstancePlan};

fn is_code<E: ProvideErrorMetadata>(e: &E, code: &str) -> bool {
    e.code() == Some(code)
}

fn tags(plan: &InstancePlan) -> Vec<Tag> {
    plan.tags
        .iter()
        .filter_map(|(k, v)| Tag::builder().key(k).value(iam_tag_value(v)).build().ok())
        .collect()
}

fn owned_by(tags: &[Tag], deployment: &str) -> bool {
    tags.iter()
        .any(|t| t.key() == "stackdrop:deployment" && t.value() == deployment)
}

fn not_ours(role: &str, deployment: &str) -> Failure {
    Failure::new(
        Kind::AwsError,
        format!("IAM role {role} exists but does not carry stackdrop:deployment={deployment}: stackdrop did not create it and will not adopt or delete it"),
    )
}

/// What changed, for the step's record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoleOutcome {
    pub created_role: bool,
    pub created_profile: bool,
}

/// Makes the role and profile match the plan. Running it twice changes nothing.
pub async fn ensure_role_and_profile(
    iam: &Client,
    plan: &InstancePlan,
) -> Result<RoleOutcome, Failure> {
    let role = &plan.role;
    let mut outcome = RoleOutcome::default();
    let trust = role.trust_policy.to_string();
    match iam.get_role().role_name(&role.name).send().await {
        Ok(existing) => {
            let r = existing.role();
            if !r.is_some_and(|r| owned_by(r.tags(), &plan.deployment)) {
                return Err(not_ours(&role.name, &plan.deployment));
            }
            let boundary = r
                .and_then(|r| r.permissions_boundary())
                .and_then(|b| b.permissions_boundary_arn());
            if let Some(want) = &role.permissions_boundary {
                if boundary != Some(want.as_str()) {
                    iam.put_role_permissions_boundary()
                        .role_name(&role.name)
                        .permissions_boundary(want)
                        .send()
                        .await
                        .map_err(|e| Failure::aws("PutRolePermissionsBoundary", e))?;
                }
            }
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            let res = iam
                .create_role()
                .role_name(&role.name)
                .path(&role.path)
                .assume_role_policy_document(&trust)
                .description(format!("stackdrop instance role of {}", plan.resource_name))
                .set_permissions_boundary(role.permissions_boundary.clone())
                .set_tags(Some(tags(plan)))
                .send()
                .await;
            match res {
                Ok(_) => outcome.created_role = true,
                // A concurrent run created it first: fine, the rest below converges.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| is_code(e, "EntityAlreadyExists")) => {}
                Err(e) => return Err(Failure::aws("CreateRole", e)),
            }
        }
        Err(e) => return Err(Failure::aws("GetRole", e)),
    }
    iam.put_role_policy()
        .role_name(&role.name)
        .policy_name(&role.inline_policy_name)
        .policy_document(role.inline_policy.to_string())
        .send()
        .await
        .map_err(|e| Failure::aws("PutRolePolicy", e))?;
    for arn in &role.managed_policy_arns {
        iam.attach_role_policy()
            .role_name(&role.name)
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| Failure::aws("AttachRolePolicy", e))?;
    }

    let profile = &plan.instance_profile;
    let roles_in_profile: Vec<String> = match iam
        .get_instance_profile()
        .instance_profile_name(profile)
        .send()
        .await
    {
        Ok(p) => p
            .instance_profile()
            .map(|p| {
                p.roles()
                    .iter()
                    .map(|r| r.role_name().to_string())
                    .collect()
            })
            .unwrap_or_default(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            let res = iam
                .create_instance_profile()
                .instance_profile_name(profile)
                .path(&role.path)
                .set_tags(Some(tags(plan)))
                .send()
                .await;
            match res {
                Ok(_) => outcome.created_profile = true,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| is_code(e, "EntityAlreadyExists")) => {}
                Err(e) => return Err(Failure::aws("CreateInstanceProfile", e)),
            }
            Vec::new()
        }
        Err(e) => return Err(Failure::aws("GetInstanceProfile", e)),
    };
    if !roles_in_profile.iter().any(|r| r == &role.name) {
        for other in &roles_in_profile {
            iam.remove_role_from_instance_profile()
                .instance_profile_name(profile)
                .role_name(other)
                .send()
                .await
                .map_err(|e| Failure::aws("RemoveRoleFromInstanceProfile", e))?;
        }
        let res = iam
            .add_role_to_instance_profile()
            .instance_profile_name(profile)
            .role_name(&role.name)
            .send()
            .await;
        match res {
            Ok(_) => {}
            // A profile holds one role: a concurrent run added it already.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| is_code(e, "LimitExceeded")) => {}
            Err(e) => return Err(Failure::aws("AddRoleToInstanceProfile", e)),
        }
    }
    Ok(outcome)
}

/// Deletes the profile and role (and the role's policies). Missing pieces are fine.
pub async fn delete_role_and_profile(iam: &Client, plan: &InstancePlan) -> Result<(), Failure> {
    let role = &plan.role;
    let gone = |code: Option<&str>| code == Some("NoSuchEntity");
    match iam.get_role().role_name(&role.name).send().await {
        Ok(r)
            if r.role()
                .is_some_and(|r| owned_by(r.tags(), &plan.deployment)) => {}
        Ok(_) => return Err(not_ours(&role.name, &plan.deployment)),
        Err(e) if gone(e.code()) => {}
        Err(e) => return Err(Failure::aws("GetRole", e)),
    }
    if let Err(e) = iam
        .remove_role_from_instance_profile()
        .instance_profile_name(&plan.instance_profile)
        .role_name(&role.name)
        .send()
        .await
    {
        if !gone(e.code()) {
            return Err(Failure::aws("RemoveRoleFromInstanceProfile", e));
        }
    }
    if let Err(e) = iam
        .delete_instance_profile()
        .instance_profile_name(&plan.instance_profile)
        .send()
        .await
    {
        if !gone(e.code()) {
            return Err(Failure::aws("DeleteInstanceProfile", e));
        }
    }
    for arn in &role.managed_policy_arns {
        if let Err(e) = iam
            .detach_role_policy()
            .role_name(&role.name)
            .policy_arn(arn)
            .send()
            .await
        {
            if !gone(e.code()) {
                return Err(Failure::aws("DetachRolePolicy", e));
            }
        }
    }
    if let Err(e) = iam
        .delete_role_policy()
        .role_name(&role.name)
        .policy_name(&role.inline_policy_name)
        .send()
        .await
    {
        if !gone(e.code()) {
            return Err(Failure::aws("DeleteRolePolicy", e));
        }
    }
    match iam.delete_role().role_name(&role.name).send().await {
        Ok(_) => Ok(()),
        Err(e) if gone(e.code()) => Ok(()),
        Err(e) if e.code() == Some("DeleteConflict") => Err(Failure::new(
            Kind::CleanupPending,
            format!("role {} is still in use", role.name),
        )),
        Err(e) => Err(Failure::aws("DeleteRole", e)),
    }
}
