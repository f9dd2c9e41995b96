//! The `stackdrop` command as a user runs it: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stackdrop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackdrop"))
        .args(args)
        .output()
        .expect("stackdrop runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn hello() -> PathBuf {
    repo().join("examples/hello")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of examples/hello in a temp dir, for breaking it.
fn hello_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&hello(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, s.replace(from, to)).unwrap();
}

#[test]
fn the_example_folder_is_valid() {
    let out = stackdrop(&["validate", hello().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("valid (app hello-app, stack hello, 1 instance: greeter)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bundle_then_validate_the_zip() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("hello.zip");
    let out = stackdrop(&[
        "bundle",
        hello().to_str().unwrap(),
        "-o",
        zip.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 files"),
        "{}",
        text(&out.stdout)
    );
    let out = stackdrop(&["validate", zip.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!dir.path().join("hello.zip.partial").exists());
}

#[test]
fn a_zip_under_one_folder_reads_as_its_root() {
    // What `zip -r hello.zip hello/` makes: every entry under "hello/".
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("nested.zip");
    let st = Command::new("python3")
        .args([
            "-c",
            "import shutil,sys; shutil.make_archive(sys.argv[1], 'zip', sys.argv[2], 'hello')",
        ])
        .arg(dir.path().join("nested"))
        .arg(repo().join("examples"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = stackdrop(&["validate", zip.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stackdrop(&["plan", "--json", zip.to_str().unwrap()]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(plan["instances"][0]["launchTemplate"]["userData"]
        .as_str()
        .unwrap()
        .contains("SD_PREFIX='hello/src/hello/'"));
}

#[test]
fn every_problem_is_listed_with_file_and_path_and_exit_1() {
    let d = hello_copy();
    edit(
        &d.path().join("stack.json"),
        r#""type": "t3.micro""#,
        r#""type": "huge""#,
    );
    edit(&d.path().join("stack.json"), r#""command""#, r#""comand""#);
    edit(
        &d.path().join("stack.json"),
        r#""./src/hello""#,
        r#""./src/missing""#,
    );
    let out = stackdrop(&["validate", d.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(r#"stack.json: /instances/greeter/type: "huge" is not an EC2 instance type (expected family.size, e.g. "t3.medium")"#), "{err}");
    assert!(err.contains(r#"stack.json: /instances/greeter/comand: unknown field "comand"; did you mean "command"?"#), "{err}");
    assert!(err.contains("2 problems found"), "{err}");
    // The code folder is checked once the config itself is valid.
    edit(&d.path().join("stack.json"), r#""huge""#, r#""t3.micro""#);
    edit(&d.path().join("stack.json"), r#""comand""#, r#""command""#);
    let out = stackdrop(&["validate", d.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(
        r#"stack.json: /instances/greeter/code: folder "src/missing" is not in the bundle"#
    ));
}

#[test]
fn broken_json_names_line_and_column() {
    let d = hello_copy();
    edit(
        &d.path().join("app.json"),
        r#""name": "hello-app","#,
        r#""name": "hello-app""#,
    );
    let out = stackdrop(&["validate", d.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .starts_with("app.json: invalid JSON at line 4, column 3: expected `,` or `}`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn not_a_zip_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("stack.zip");
    std::fs::write(&f, b"this is not a zip file at all").unwrap();
    let out = stackdrop(&["validate", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("stack.zip: not a zip file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(stackdrop(&["validate"]).status.code(), Some(2));
    assert_eq!(stackdrop(&["frobnicate"]).status.code(), Some(2));
    let out = stackdrop(&["validate", "/no/such/path"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/no/such/path"));
}

#[test]
fn bundle_refuses_an_invalid_folder_and_writes_nothing() {
    let d = hello_copy();
    edit(&d.path().join("stack.json"), r#""t3.micro""#, r#""huge""#);
    let zip = d.path().join("out.zip");
    let out = stackdrop(&[
        "bundle",
        d.path().to_str().unwrap(),
        "-o",
        zip.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!zip.exists());
}

#[test]
fn plan_shows_what_would_be_created() {
    let out = stackdrop(&["plan", hello().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("IAM role          hello-app--hello--instance--greeter"),
        "{s}"
    );
    assert!(s.contains("log group         /stackdrop/instance/hello-app--hello--instance--greeter (retention 30 days)"), "{s}");
    assert!(
        s.contains("IMDSv2 required, hop limit 1, encrypted gp3 root volume"),
        "{s}"
    );
}

#[test]
fn plan_json_is_for_machines() {
    let out = stackdrop(&[
        "plan",
        "--json",
        "--bucket",
        "b",
        "--key",
        "k.zip",
        "--version-id",
        "v9",
        "--account",
        "111122223333",
        "--permissions-boundary",
        "arn:aws:iam::111122223333:policy/boundary",
        hello().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let i = &plan["instances"][0];
    assert_eq!(
        plan["source"],
        serde_json::json!({"bucket": "b", "key": "k.zip", "versionId": "v9"})
    );
    assert_eq!(
        i["role"]["permissionsBoundary"],
        "arn:aws:iam::111122223333:policy/boundary"
    );
    assert_eq!(i["launchTemplate"]["metadata"]["httpTokens"], "required");
    assert_eq!(
        i["image"],
        "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    );
    let ud = i["launchTemplate"]["userData"].as_str().unwrap();
    assert!(ud.contains("SD_VERSION='v9'") && ud.contains("SD_BUCKET='b'"));
}

#[test]
fn schema_prints_and_matches_the_committed_files() {
    for (arg, file) in [
        ("stack", "schema/stack.schema.json"),
        ("app", "schema/app.schema.json"),
    ] {
        let out = stackdrop(&["schema", arg]);
        assert!(out.status.success());
        let committed = std::fs::read_to_string(repo().join(file)).unwrap_or_default();
        assert_eq!(
            text(&out.stdout),
            committed,
            "{file} is stale: run `make schema`"
        );
    }
}

#[test]
fn examples_point_at_the_schema() {
    for f in ["app.json", "stack.json"] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(hello().join(f)).unwrap()).unwrap();
        let schema = v["$schema"].as_str().unwrap();
        assert!(
            hello().join(schema).exists(),
            "{f}: {schema} does not exist"
        );
    }
}
