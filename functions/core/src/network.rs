//! Where instances run: the VPC and subnets the installation names (the template's `VpcId` and
//! `SubnetIds` parameters), or the region's default VPC when it names none. Decided at validate
//! time from what EC2 describes, so a bad network fails the deploy before anything is created.

use serde::{Deserialize, Serialize};

/// What the installation asks for (`STACKDROP_VPC_ID`, `STACKDROP_SUBNET_IDS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    pub vpc_id: Option<String>,
    pub subnet_ids: Vec<String>,
}

impl Wanted {
    /// From the two settings as the template passes them: `""` for none, subnets comma-separated.
    pub fn parse(vpc_id: &str, subnet_ids: &str) -> Wanted {
        let vpc_id = Some(vpc_id.trim().to_string()).filter(|v| !v.is_empty());
        let mut subnet_ids: Vec<String> = subnet_ids
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        subnet_ids.dedup();
        Wanted { vpc_id, subnet_ids }
    }
}

/// A VPC as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vpc {
    pub id: String,
    pub cidr: String,
    pub is_default: bool,
}

/// A subnet as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub availability_zone: String,
}

/// Where one instance runs: its VPC (the security group's) and subnet. No subnet: EC2's
/// default subnet of the default VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub vpc_id: String,
    pub vpc_cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
}

/// The installation's network: a VPC and the subnets instances go to (empty: EC2 picks the
/// default VPC's default subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub vpc: Vpc,
    pub subnets: Vec<String>,
}

impl Network {
    /// Each instance of a stack gets a subnet of its own where there are several (spread over
    /// their zones), the same one on every deploy: by the instance's name, stably.
    pub fn placement(&self, instance: &str) -> Placement {
        let subnet_id = (!self.subnets.is_empty()).then(|| {
            let h = crate::naming::short_hash(instance);
            let n = u32::from_str_radix(&h, 16).unwrap_or(0) as usize;
            self.subnets[n % self.subnets.len()].clone()
        });
        Placement {
            vpc_id: self.vpc.id.clone(),
            vpc_cidr: self.vpc.cidr.clone(),
            subnet_id,
        }
    }
}

const FIX: &str = "set the VpcId and SubnetIds parameters of the stackdrop stack";

/// Decides the network from what was asked and what EC2 described (the asked-for VPC and
/// subnets, or the default VPC), or says what is wrong in the installation's words.
pub fn choose(
    wanted: &Wanted,
    region: &str,
    vpcs: &[Vpc],
    subnets: &[Subnet],
) -> Result<Network, String> {
    let missing: Vec<&str> = wanted
        .subnet_ids
        .iter()
        .filter(|id| !subnets.iter().any(|s| &s.id == *id))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "SubnetIds names {}, which {} not exist in {region}",
            missing.join(", "),
            if missing.len() == 1 { "does" } else { "do" }
        ));
    }
    let chosen: Vec<&Subnet> = wanted
        .subnet_ids
        .iter()
        .filter_map(|id| subnets.iter().find(|s| &s.id == id))
        .collect();
    let vpc_id = match (&wanted.vpc_id, chosen.first()) {
        (Some(v), _) => v.clone(),
        (None, Some(s)) => s.vpc_id.clone(),
        (None, None) => match vpcs.iter().find(|v| v.is_default) {
            Some(v) => v.id.clone(),
            None => return Err(format!("{region} has no default VPC: {FIX}")),
        },
    };
    let Some(vpc) = vpcs.iter().find(|v| v.id == vpc_id) else {
        return Err(format!("VpcId {vpc_id} does not exist in {region}"));
    };
    let elsewhere: Vec<String> = chosen
        .iter()
        .filter(|s| s.vpc_id != vpc.id)
        .map(|s| format!("{} (in {})", s.id, s.vpc_id))
        .collect();
    if !elsewhere.is_empty() {
        return Err(format!(
            "SubnetIds must all be in VPC {}: {} {} not",
            vpc.id,
            elsewhere.join(", "),
            if elsewhere.len() == 1 { "is" } else { "are" }
        ));
    }
    let subnets: Vec<String> = if !chosen.is_empty() {
        chosen.iter().map(|s| s.id.clone()).collect()
    } else if vpc.is_default && wanted.vpc_id.is_none() {
        Vec::new() // EC2's default subnets
    } else {
        let mut own: Vec<&Subnet> = subnets.iter().filter(|s| s.vpc_id == vpc.id).collect();
        own.sort_by(|a, b| (&a.availability_zone, &a.id).cmp(&(&b.availability_zone, &b.id)));
        if own.is_empty() {
            return Err(format!("VPC {} has no subnet: {FIX}", vpc.id));
        }
        own.iter().map(|s| s.id.clone()).collect()
    };
    Ok(Network {
        vpc: vpc.clone(),
        subnets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vpc(id: &str, is_default: bool) -> Vpc {
        Vpc {
            id: id.into(),
            cidr: format!("10.{}.0.0/16", id.len()),
            is_default,
        }
    }

    fn subnet(id: &str, vpc_id: &str, az: &str) -> Subnet {
        Subnet {
            id: id.into(),
            vpc_id: vpc_id.into(),
            availability_zone: az.into(),
        }
    }

    fn world() -> (Vec<Vpc>, Vec<Subnet>) {
        (
            vec![
                vpc("vpc-default", true),
                vpc("vpc-app", false),
                vpc("vpc-empty", false),
            ],
            vec![
                subnet("subnet-d1", "vpc-default", "us-east-1a"),
                subnet("subnet-b", "vpc-app", "us-east-1b"),
                subnet("subnet-a", "vpc-app", "us-east-1a"),
            ],
        )
    }

    fn choose_in(vpc_id: &str, subnet_ids: &str) -> Result<Network, String> {
        let (vpcs, subnets) = world();
        choose(
            &Wanted::parse(vpc_id, subnet_ids),
            "us-east-1",
            &vpcs,
            &subnets,
        )
    }

    #[test]
    fn nothing_asked_is_the_default_vpc_and_its_default_subnets() {
        let n = choose_in("", "").unwrap();
        assert_eq!(n.vpc.id, "vpc-default");
        assert!(n.subnets.is_empty());
        assert_eq!(n.placement("worker").subnet_id, None);
        assert_eq!(n.placement("worker").vpc_cidr, n.vpc.cidr);
    }

    #[test]
    fn a_region_without_a_default_vpc_says_what_to_set() {
        let (_, subnets) = world();
        let vpcs = vec![vpc("vpc-app", false)];
        assert_eq!(
            choose(&Wanted::default(), "eu-west-3", &vpcs, &subnets).unwrap_err(),
            "eu-west-3 has no default VPC: set the VpcId and SubnetIds parameters of the stackdrop stack"
        );
    }

    #[test]
    fn a_vpc_alone_uses_all_its_subnets_by_zone() {
        let n = choose_in("vpc-app", "").unwrap();
        assert_eq!(n.vpc.id, "vpc-app");
        assert_eq!(n.subnets, ["subnet-a", "subnet-b"]);
    }

    #[test]
    fn subnets_name_their_vpc_in_the_order_given() {
        let n = choose_in("", " subnet-b , subnet-a,").unwrap();
        assert_eq!(n.vpc.id, "vpc-app");
        assert_eq!(n.subnets, ["subnet-b", "subnet-a"]);
        assert_eq!(
            choose_in("vpc-app", "subnet-a").unwrap().subnets,
            ["subnet-a"]
        );
    }

    #[test]
    fn every_unusable_network_says_what_is_wrong() {
        let fix = "set the VpcId and SubnetIds parameters of the stackdrop stack";
        for (vpc, subnets, why) in [
            (
                "vpc-empty",
                "",
                format!("VPC vpc-empty has no subnet: {fix}"),
            ),
            (
                "vpc-gone",
                "",
                "VpcId vpc-gone does not exist in us-east-1".into(),
            ),
            (
                "",
                "subnet-a,subnet-x,subnet-y",
                "SubnetIds names subnet-x, subnet-y, which do not exist in us-east-1".into(),
            ),
            (
                "",
                "subnet-a,subnet-d1",
                "SubnetIds must all be in VPC vpc-app: subnet-d1 (in vpc-default) is not".into(),
            ),
            (
                "vpc-default",
                "subnet-a",
                "SubnetIds must all be in VPC vpc-default: subnet-a (in vpc-app) is not".into(),
            ),
            (
                "vpc-gone",
                "subnet-a",
                "VpcId vpc-gone does not exist in us-east-1".into(),
            ),
        ] {
            assert_eq!(
                choose_in(vpc, subnets).unwrap_err(),
                why,
                "{vpc:?} {subnets:?}"
            );
        }
    }

    #[test]
    fn naming_the_default_vpc_uses_its_subnets_explicitly() {
        assert_eq!(choose_in("vpc-default", "").unwrap().subnets, ["subnet-d1"]);
    }

    #[test]
    fn each_instance_keeps_its_subnet_and_a_stack_spreads_over_them() {
        let n = choose_in("vpc-app", "").unwrap();
        let names: Vec<String> = (0..20).map(|i| format!("worker-{i}")).collect();
        let placed: Vec<String> = names
            .iter()
            .map(|i| n.placement(i).subnet_id.unwrap())
            .collect();
        assert_eq!(
            placed,
            names
                .iter()
                .map(|i| n.placement(i).subnet_id.unwrap())
                .collect::<Vec<_>>()
        );
        assert!(placed.contains(&"subnet-a".into()) && placed.contains(&"subnet-b".into()));
    }
}
