//! Validation of a whole bundle: the zip, both config files, and that each `code` folder is
//! in the zip. The S3-dependent checks (AMI exists, architecture) live with the adapters; the
//! rule they apply, [`check_image_architecture`], is here.

use crate::bundle::{self, Bundle, Limits};
use crate::config::{self, Config};
use crate::problem::{join, Problem};
use crate::source::ReadAt;
use std::collections::BTreeMap;

/// A bundle that passed every offline check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBundle {
    pub config: Config,
    /// The folder every entry sits under in the zip ("" or "name/").
    pub root: String,
    /// Instance name -> the bytes extracting its code folder writes ([`Bundle::folder_bytes`]):
    /// the plan passes it to the instance, whose extractor writes no more.
    pub code_bytes: BTreeMap<String, u64>,
}

/// Checks the configuration and that every `code` folder is in the bundle.
pub fn validate_bundle(bundle: &Bundle) -> Result<ValidBundle, Vec<Problem>> {
    let config = config::parse_config(&bundle.app_json, &bundle.stack_json)?;
    let problems: Vec<Problem> = config
        .instances
        .iter()
        .filter(|i| !bundle.has_folder(&i.code))
        .map(|i| {
            let what = if i.code.is_empty() {
                "the bundle holds no code".to_string()
            } else {
                format!("folder {:?} is not in the bundle", i.code)
            };
            Problem::new(config::STACK_FILE, join(&i.pointer(), "code"), what)
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let code_bytes = config
        .instances
        .iter()
        .map(|i| (i.name.clone(), bundle.folder_bytes(&i.code)))
        .collect();
    Ok(ValidBundle {
        config,
        root: bundle.root.clone(),
        code_bytes,
    })
}

/// A bundle that failed validation: every problem, and the stack it names when both files
/// at least carry a readable `name` (so the failure can be recorded where users look).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub problems: Vec<Problem>,
    /// `(app, stack)`.
    pub names: Option<(String, String)>,
}

/// The `name` of each file, read leniently (the rest may be broken).
pub fn names_of(bundle: &Bundle) -> Option<(String, String)> {
    let name = |bytes: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        config::check_name(v.get("name")?.as_str()?).ok()
    };
    Some((name(&bundle.app_json)?, name(&bundle.stack_json)?))
}

/// Reads and validates a bundle from any random-access source.
pub fn validate_source<S: ReadAt + ?Sized>(src: &S, name: &str) -> Result<ValidBundle, Rejected> {
    let bundle =
        bundle::read_bundle(src, name, &Limits::default()).map_err(|problems| Rejected {
            problems,
            names: None,
        })?;
    validate_bundle(&bundle).map_err(|problems| Rejected {
        problems,
        names: names_of(&bundle),
    })
}

/// The AMI's architecture (as DescribeImages reports it) must be the one the type runs.
pub fn check_image_architecture(
    instance: &config::Instance,
    image_id: &str,
    image_architecture: &str,
) -> Result<(), Problem> {
    let needed = config::architecture_of(&instance.instance_type);
    if needed == image_architecture {
        return Ok(());
    }
    Err(Problem::new(
        config::STACK_FILE,
        join(&instance.pointer(), "image"),
        format!(
            "{image_id} is an {image_architecture} image but {} runs {needed}",
            instance.instance_type
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[&str], stack: &str) -> Bundle {
        Bundle::from_files(
            files.iter().map(|s| s.to_string()).collect(),
            br#"{"name":"my-app"}"#.to_vec(),
            stack.as_bytes().to_vec(),
        )
    }

    #[test]
    fn a_rejected_bundle_still_names_its_stack_when_it_can() {
        let b = bundle(
            &["app.json", "stack.json"],
            r#"{"name":"jobs","instances":{"w":{"type":"huge"}}}"#,
        );
        assert!(validate_bundle(&b).is_err());
        assert_eq!(names_of(&b), Some(("my-app".into(), "jobs".into())));
        let b = bundle(
            &["app.json", "stack.json"],
            r#"{"name":"no spaces allowed","instances":{}}"#,
        );
        assert_eq!(names_of(&b), None);
        let b = bundle(&["app.json", "stack.json"], "{broken");
        assert_eq!(names_of(&b), None);
    }

    #[test]
    fn code_folder_must_exist_in_the_bundle() {
        let b = bundle(
            &["app.json", "stack.json", "src/web/index.js"],
            r#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"./src/worker"}}}"#,
        );
        let e = validate_bundle(&b).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            r#"stack.json: /instances/worker/code: folder "src/worker" is not in the bundle"#
        );
    }

    #[test]
    fn a_file_is_not_a_folder() {
        let b = bundle(
            &["app.json", "stack.json", "src/worker"],
            r#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"src/worker"}}}"#,
        );
        assert!(validate_bundle(&b).is_err());
    }

    #[test]
    fn existing_folder_passes() {
        let b = bundle(
            &["app.json", "src/worker/main.py", "stack.json"],
            r#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"./src/worker/"}}}"#,
        );
        let v = validate_bundle(&b).unwrap();
        assert_eq!(v.config.instances[0].code, "src/worker");
    }

    #[test]
    fn each_instance_gets_the_bytes_of_its_code_folder() {
        let b = Bundle::from_sized_files(
            vec![
                ("app.json".into(), 17),
                ("src/worker/main.py".into(), 100),
                ("src/worker/lib/x.py".into(), 20),
                ("src/web/index.js".into(), 7),
                ("stack.json".into(), 200),
            ],
            br#"{"name":"my-app"}"#.to_vec(),
            br#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"./src/worker"},"whole":{"image":"ami-12345678","type":"t3.micro","code":"."}}}"#.to_vec(),
        );
        let v = validate_bundle(&b).unwrap();
        assert_eq!(v.code_bytes["worker"], 120);
        assert_eq!(v.code_bytes["whole"], 344);
    }

    #[test]
    fn architecture_mismatch_names_image_and_type() {
        let b = bundle(
            &["app.json", "stack.json", "w/x"],
            r#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t4g.small","code":"w"}}}"#,
        );
        let v = validate_bundle(&b).unwrap();
        let e =
            check_image_architecture(&v.config.instances[0], "ami-12345678", "x86_64").unwrap_err();
        assert_eq!(e.to_string(), "stack.json: /instances/worker/image: ami-12345678 is an x86_64 image but t4g.small runs arm64");
        assert!(check_image_architecture(&v.config.instances[0], "ami-12345678", "arm64").is_ok());
    }
}
