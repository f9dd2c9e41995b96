//! The plan of one instance (my-app/jobs, worker), as validate makes it: shared by the tests
//! that drive the EC2 adapter (included with `#[path]`: mocked.rs, ec2_moto.rs).

use stackdrop_core::config::parse_config;
use stackdrop_core::plan::{plan, Context, InstancePlan, Source};
use stackdrop_core::validate::ValidBundle;

pub fn instance_plan() -> InstancePlan {
    let c = parse_config(
        br#"{"name":"my-app"}"#,
        br#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"."}}}"#,
    )
    .unwrap();
    let src = Source {
        bucket: "b".into(),
        key: "k.zip".into(),
        version_id: Some("v1".into()),
    };
    let valid = ValidBundle {
        config: c,
        root: String::new(),
        code_bytes: Default::default(),
    };
    plan(&valid, &src, &Context::default())
        .unwrap()
        .instances
        .remove(0)
}
