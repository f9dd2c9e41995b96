//! `connect`: SSH through an EC2 Instance Connect Endpoint, the VPC's only one (EC2 allows one
//! per VPC). One that exists is reused, whoever made it, and never deleted by stackdrop; one is
//! created otherwise, with a security group of its own that the instance's group admits on port
//! 22 (nothing else reaches port 22: no CIDR is opened).

/// Tag key on the endpoint and its security group that stackdrop creates: the VPC's id.
pub const TAG: &str = "stackdrop:connect-endpoint";

/// An endpoint as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub state: String,
    pub subnet_id: String,
    pub security_group_ids: Vec<String>,
}

/// What to do about the VPC's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Use this one: admit port 22 from its security groups (empty: it uses the VPC's default
    /// group, which is then the one admitted).
    Reuse {
        id: String,
        security_group_ids: Vec<String>,
    },
    /// None usable: create one in this subnet.
    Create { subnet_id: String },
}

/// States in which an endpoint is, or is becoming, usable (EC2's `create-in-progress`,
/// `create-complete`); failed and deleted ones are ignored (and block nothing).
fn usable(state: &str) -> bool {
    matches!(state, "create-complete" | "create-in-progress")
}

/// Decides from the VPC's endpoints and where the instance runs. `subnets` are the VPC's
/// subnets in a stable order, for an instance without one of its own (the default VPC).
pub fn decide(
    endpoints: &[Endpoint],
    instance_subnet: Option<&str>,
    subnets: &[String],
) -> Result<Decision, String> {
    let mut live: Vec<&Endpoint> = endpoints.iter().filter(|e| usable(&e.state)).collect();
    // Complete before in progress, then by id: every run picks the same one.
    live.sort_by_key(|e| (e.state != "create-complete", e.id.clone()));
    if let Some(e) = live.first() {
        return Ok(Decision::Reuse {
            id: e.id.clone(),
            security_group_ids: e.security_group_ids.clone(),
        });
    }
    match instance_subnet.or(subnets.first().map(String::as_str)) {
        Some(s) => Ok(Decision::Create {
            subnet_id: s.to_string(),
        }),
        None => {
            Err("connect: the VPC has no subnet to put an EC2 Instance Connect Endpoint in".into())
        }
    }
}

/// The name of the security group stackdrop gives an endpoint it creates in `vpc_id`.
pub fn group_name(vpc_id: &str) -> String {
    format!("stackdrop-connect-endpoint-{vpc_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, state: &str, groups: &[&str]) -> Endpoint {
        Endpoint {
            id: id.into(),
            state: state.into(),
            subnet_id: "subnet-1".into(),
            security_group_ids: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn an_existing_endpoint_is_reused_whoever_made_it() {
        let found = [
            ep("eice-b", "create-in-progress", &["sg-b"]),
            ep("eice-a", "create-complete", &["sg-a"]),
        ];
        assert_eq!(
            decide(&found, Some("subnet-9"), &[]).unwrap(),
            Decision::Reuse {
                id: "eice-a".into(),
                security_group_ids: vec!["sg-a".into()]
            }
        );
        assert_eq!(
            decide(&found[..1], None, &[]).unwrap(),
            Decision::Reuse {
                id: "eice-b".into(),
                security_group_ids: vec!["sg-b".into()]
            }
        );
    }

    #[test]
    fn failed_or_deleted_endpoints_do_not_count() {
        let found = [
            ep("eice-x", "create-failed", &[]),
            ep("eice-y", "delete-complete", &[]),
            ep("eice-z", "delete-in-progress", &[]),
        ];
        assert_eq!(
            decide(&found, Some("subnet-9"), &["subnet-1".into()]).unwrap(),
            Decision::Create {
                subnet_id: "subnet-9".into()
            }
        );
    }

    #[test]
    fn without_a_subnet_of_its_own_the_first_of_the_vpc_is_used() {
        assert_eq!(
            decide(&[], None, &["subnet-1".into(), "subnet-2".into()]).unwrap(),
            Decision::Create {
                subnet_id: "subnet-1".into()
            }
        );
        assert!(decide(&[], None, &[]).is_err());
    }
}
