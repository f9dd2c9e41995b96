//! The bootstrap script each instance runs (EC2 user data).
//!
//! The script is `scripts/bootstrap.sh`, with its two Python helpers `scripts/extract.py` and
//! `scripts/ship.py`: files in the repository (linted, unit-run), embedded here at build time.
//! [`render`] puts the per-instance values above the body, each one a shell-quoted `SD_*`
//! variable (the environment file base64-encoded), so no value from the bundle or the S3 event
//! can inject shell. The script, strict bash logged to `/var/log/stackdrop-bootstrap.log` (and,
//! through cloud-init, the console):
//! 1. downloads exactly the deployed bundle version to `/var/lib/stackdrop/{instance}/` (on
//!    disk: `/tmp` is a tmpfs of half the RAM on Amazon Linux 2023), removed once extracted,
//! 2. extracts only the instance's code folder into `~user/{instance}`, reading the zip with the
//!    validator's rules and writing at most what validation saw ([`UserDataInput::max_bytes`]),
//! 3. writes the environment file (system variables, then the user's) that the service sources,
//!    and, for an instance with `secrets`, reads their values from SSM Parameter Store with its
//!    own role into a second file the service sources after it (`scripts/secrets.py`; only the
//!    parameter names are in the user data, see [`crate::secrets`]),
//! 4. runs `command` as `user` in that absolute folder under systemd (`Restart=on-failure`), its
//!    output (stdout and stderr) in the journal, kept on disk (`Storage=persistent`, at most 1 GiB:
//!    `/etc/systemd/journald.conf.d/stackdrop.conf`), and `stackdrop-{instance}-logs.service`
//!    (`ship.py`, `Restart=always`, enabled) sends it to the stream `{instance-id}/app` of the log
//!    group with journald's timestamps, once and in order: it saves the journal cursor of what
//!    CloudWatch accepted in `/var/lib/stackdrop/{instance}/ship-app.cursor` and resumes after it
//!    on a restart, a reboot or a stop/start, retrying a failed send,
//! 5. reports the outcome outside the instance: the tag `stackdrop:bootstrap` (`ok` / `failed`),
//!    a line on the serial console (GetConsoleOutput) and the log stream `{instance-id}/bootstrap`.
//!    Any failed step reports `failed` with the step and its error and exits non-zero; `ok` comes
//!    last, once the service has stayed active [`SETTLE_SECONDS`].

use base64::Engine as _;

/// EC2's limit on raw user data.
pub const USER_DATA_MAX: usize = 16 * 1024;

pub const BOOTSTRAP_TAG: &str = "stackdrop:bootstrap";

/// How long the service must stay active before the bootstrap reports `ok`.
pub const SETTLE_SECONDS: u32 = 5;

/// The bootstrap's body (the per-instance variables go above it).
pub const BOOTSTRAP_SH: &str = include_str!("../scripts/bootstrap.sh");
/// Extracts the instance's code folder with the validator's rules (`bundle.rs`).
pub const EXTRACT_PY: &str = include_str!("../scripts/extract.py");
/// Ships the service's journal to CloudWatch Logs from a saved cursor.
pub const SHIP_PY: &str = include_str!("../scripts/ship.py");
/// Reads the instance's secrets from SSM Parameter Store into the file the service sources
/// (in the user data of instances with secrets only).
pub const SECRETS_PY: &str = include_str!("../scripts/secrets.py");

/// Everything the script needs, all already validated.
#[derive(Debug, Clone)]
pub struct UserDataInput<'a> {
    pub app: &'a str,
    pub stack: &'a str,
    pub instance: &'a str,
    pub deployment: &'a str,
    pub region: &'a str,
    pub log_group: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    /// Where the code folder sits in the zip: the bundle root plus `code`, `/`-terminated, or
    /// "" for the whole zip.
    pub zip_prefix: &'a str,
    /// The most bytes extraction may write: what validation saw under `zip_prefix` in the zip's
    /// central directory ([`crate::bundle::Bundle::folder_bytes`]).
    pub max_bytes: u64,
    pub user: &'a str,
    pub command: Option<&'a str>,
    pub environment: &'a [(String, String)],
    /// Variable name -> SSM parameter name or ARN: only these names travel, never a value.
    pub secrets: &'a [(String, String)],
}

/// Quotes a string for bash: the result, pasted anywhere a word goes, is exactly `s`, and nothing
/// in it is expanded or executed (quotes, `$`, backticks, newlines, non-ASCII included).
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The system variables every instance gets, before the user's.
pub fn system_environment(input: &UserDataInput) -> Vec<(String, String)> {
    vec![
        ("APP".into(), input.app.into()),
        ("STACK".into(), input.stack.into()),
        ("INSTANCE".into(), input.instance.into()),
        ("CLOUDWATCH_LOG_GROUP_NAME".into(), input.log_group.into()),
        ("AWS_REGION".into(), input.region.into()),
        ("AWS_DEFAULT_REGION".into(), input.region.into()),
    ]
}

/// The environment file the service sources: one `export NAME='value'` line per variable, in
/// order (the user's after the system's, so a user value wins). Names are validated
/// (`[A-Za-z_][A-Za-z0-9_]*`); values are quoted by [`shell_quote`].
pub fn render_env_file(vars: &[(String, String)]) -> String {
    let mut out =
        String::from("# written by stackdrop: sourced by the service, never edited by hand\n");
    for (name, value) in vars {
        debug_assert!(crate::config::is_env_name(name));
        out.push_str("export ");
        out.push_str(name);
        out.push('=');
        out.push_str(&shell_quote(value));
        out.push('\n');
    }
    out
}

/// The service's unit, each `@NAME@` filled in by the bootstrap (`sd_fill_unit`). Its `run`
/// script, written by the bootstrap (which knows the user's home), sources the environment,
/// enters the absolute code folder (or fails) and execs the command.
pub const APP_UNIT: &str = include_str!("../scripts/app.service");
/// The shipper's unit: the service's journal to `{instance-id}/app`, from the cursor it saved
/// (`ship.py`). `KillMode=mixed`: a stop (restart, reboot) signals the shipper alone, which
/// finishes the send under way.
pub const LOGS_UNIT: &str = include_str!("../scripts/logs.service");

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `data` as gzip (`gzip -dc` reads it), base64-encoded: the constant scripts take a third of
/// their size this way, and a long environment much less.
fn gzip_b64(data: &[u8]) -> String {
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3];
    gz.extend(miniz_oxide::deflate::compress_to_vec(data, 10));
    gz.extend(crc32fast::hash(data).to_le_bytes());
    gz.extend((data.len() as u32).to_le_bytes());
    b64(&gz)
}

/// A script as it is embedded: every line that is only a comment (not a `#!` line) left empty,
/// so the user data carries no commentary and error reports still name the file's own lines.
/// The scripts keep `#` out of their multi-line strings and heredocs (a test compares the
/// Python helpers' syntax trees before and after).
pub fn embedded(script: &str) -> String {
    script
        .split_inclusive('\n')
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with('#') && !t.starts_with("#!") {
                if line.ends_with('\n') {
                    "\n"
                } else {
                    ""
                }
            } else {
                line
            }
        })
        .collect()
}

/// The script the instance writes to `/usr/local/lib/stackdrop/bootstrap.sh` and runs: the two
/// helpers as variables, then [`BOOTSTRAP_SH`] (whose error reports name its own lines), each
/// [`embedded`].
pub fn payload() -> String {
    format!(
        "SD_EXTRACT_PY={}\nSD_SHIP_PY={}\nSD_APP_UNIT_TEMPLATE={}\nSD_SHIP_UNIT_TEMPLATE={}\n{}",
        shell_quote(&embedded(EXTRACT_PY)),
        shell_quote(&embedded(SHIP_PY)),
        shell_quote(APP_UNIT),
        shell_quote(LOGS_UNIT),
        embedded(BOOTSTRAP_SH)
    )
}

fn payload_gzip_b64() -> &'static str {
    static PAYLOAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAYLOAD.get_or_init(|| gzip_b64(payload().as_bytes()))
}

fn secrets_py_gzip_b64() -> &'static str {
    static SECRETS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRETS.get_or_init(|| gzip_b64(embedded(SECRETS_PY).as_bytes()))
}

/// The end of the user data: unpack the payload (above, in `SD_BOOTSTRAP_GZ`) and run it.
const LOADER: &str = r#"set -euo pipefail
sd_gunzip() {
  if command -v gzip >/dev/null; then gzip -dc; else python3 -c 'import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))'; fi
}
install -d -m 0755 -- "$SD_ROOT/usr/local/lib/stackdrop"
printf %s "$SD_BOOTSTRAP_GZ" | base64 -d | sd_gunzip >"$SD_ROOT/usr/local/lib/stackdrop/bootstrap.sh"
# shellcheck source=/dev/null
. "$SD_ROOT/usr/local/lib/stackdrop/bootstrap.sh"
"#;

/// Renders the whole user data script: the per-instance values as shell-quoted variables (the
/// environment file and the payload gzipped and base64-encoded), then a loader that unpacks the
/// payload ([`payload`]) and runs it.
pub fn render(input: &UserDataInput) -> String {
    let q = shell_quote;
    let i = input.instance;
    let mut env = system_environment(input);
    env.extend(input.environment.iter().cloned());
    let vars: [(&str, String); 19] = [
        // "" on an instance: the unit tests point it at a scratch folder.
        ("SD_ROOT", String::new()),
        ("SD_APP", input.app.into()),
        ("SD_STACK", input.stack.into()),
        ("SD_INSTANCE", i.into()),
        ("SD_DEPLOYMENT", input.deployment.into()),
        ("SD_REGION", input.region.into()),
        ("SD_LOG_GROUP", input.log_group.into()),
        ("SD_BUCKET", input.bucket.into()),
        ("SD_KEY", input.key.into()),
        ("SD_VERSION", input.version_id.unwrap_or("").into()),
        ("SD_PREFIX", input.zip_prefix.into()),
        ("SD_MAX_BYTES", input.max_bytes.to_string()),
        ("SD_USER", input.user.into()),
        (
            "SD_HAS_COMMAND",
            if input.command.is_some() { "1" } else { "0" }.into(),
        ),
        ("SD_COMMAND", input.command.unwrap_or("").into()),
        ("SD_SETTLE", SETTLE_SECONDS.to_string()),
        ("SD_ENV_GZ", gzip_b64(render_env_file(&env).as_bytes())),
        ("SD_SECRETS", crate::secrets::render_list(input.secrets)),
        // Only where needed: the bytes count against the 16 KB.
        (
            "SD_SECRETS_PY_GZ",
            if input.secrets.is_empty() {
                String::new()
            } else {
                secrets_py_gzip_b64().to_string()
            },
        ),
    ];
    let mut s = String::with_capacity(12 * 1024);
    s.push_str(&format!(
        "#!/bin/bash\n# stackdrop bootstrap: {app}/{stack}/{i}, deployment {d}\n",
        app = input.app,
        stack = input.stack,
        d = input.deployment
    ));
    for (name, value) in vars.iter() {
        s.push_str(name);
        s.push('=');
        s.push_str(&q(value));
        s.push('\n');
    }
    s.push_str("SD_BOOTSTRAP_GZ=");
    s.push_str(payload_gzip_b64());
    s.push('\n');
    s.push_str(LOADER);
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    /// A unit as the bootstrap's `sd_fill_unit` must write it (the tests' oracle): each `@NAME@`
    /// replaced by the instance's value. Names are
    /// `[a-z0-9-]`, the user a validated login name and the group `/stackdrop/instance/...`: nothing
    /// to quote in a unit file.
    fn fill_unit(template: &str, input: &UserDataInput) -> String {
        [
            ("@APP@", input.app),
            ("@STACK@", input.stack),
            ("@INSTANCE@", input.instance),
            ("@USER@", input.user),
            ("@REGION@", input.region),
            ("@LOG_GROUP@", input.log_group),
        ]
        .iter()
        .fold(template.to_string(), |t, (k, v)| t.replace(k, v))
    }

    pub(crate) fn sample<'a>(
        env: &'a [(String, String)],
        command: Option<&'a str>,
    ) -> UserDataInput<'a> {
        UserDataInput {
            app: "my-app",
            stack: "jobs",
            instance: "worker",
            deployment: "d-0123456789abcdef",
            region: "us-east-1",
            log_group: "/stackdrop/instance/my-app--jobs--instance--worker",
            bucket: "stackdrop-bundles",
            key: "stacks/it's a $(key).zip",
            version_id: Some("3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"),
            zip_prefix: "src/worker/",
            max_bytes: 1 << 20,
            user: "ec2-user",
            command,
            environment: env,
            secrets: &[],
        }
    }

    /// Runs `script` in real bash and returns stdout; fails the test on a non-zero exit.
    fn bash(script: &str, dir: &Path) -> Vec<u8> {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "bash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Sources the rendered env file in real bash and prints each variable NUL-terminated.
    fn read_back(vars: &[(String, String)], dir: &Path) -> Vec<Vec<u8>> {
        std::fs::write(dir.join("env"), render_env_file(vars)).unwrap();
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        let script = format!(
            "set -eu; env -i bash -c '. ./env; for n in {}; do printf \"%s\\0\" \"${{!n}}\"; done'",
            names.join(" ")
        );
        let out = bash(&script, dir);
        let mut parts: Vec<Vec<u8>> = out.split(|b| *b == 0).map(|p| p.to_vec()).collect();
        parts.pop();
        parts
    }

    /// The per-instance variables of a rendered script (everything above the body).
    fn header(ud: &str) -> &str {
        ud.strip_suffix(LOADER).expect("the loader comes last")
    }

    #[test]
    fn hostile_values_arrive_byte_for_byte_and_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let values = [
            "it's \"quoted\"",
            "$(touch pwned) `touch pwned` ${HOME}",
            "line one\nline two\n",
            "back\\slash \\' '\\''",
            "ünïcödé ✓ 🚀",
            "",
            "'",
            "a'$'b",
        ];
        let vars: Vec<(String, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("V{i}"), v.to_string()))
            .collect();
        let got = read_back(&vars, dir.path());
        for ((_, want), got) in vars.iter().zip(&got) {
            assert_eq!(got, want.as_bytes());
        }
        assert!(!dir.path().join("pwned").exists(), "a value was executed");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
        #[test]
        fn any_environment_round_trips_through_real_bash(
            values in proptest::collection::vec(
                prop_oneof![
                    "[^\u{0}]{0,40}",
                    "[$`'\"\\\\\n (){};|&<>*?~!#a-z]{0,40}",
                    Just("$(touch pwned)".to_string()),
                    Just("`touch pwned`".to_string()),
                ],
                1..8,
            )
        ) {
            let dir = tempfile::tempdir().unwrap();
            let vars: Vec<(String, String)> = values.iter().enumerate().map(|(i, v)| (format!("P_{i}"), v.clone())).collect();
            let got = read_back(&vars, dir.path());
            prop_assert_eq!(got.len(), vars.len());
            for ((_, want), got) in vars.iter().zip(&got) {
                prop_assert_eq!(got.as_slice(), want.as_bytes());
            }
            prop_assert!(!dir.path().join("pwned").exists(), "a value was executed");
        }
    }

    #[test]
    fn user_values_come_after_system_ones_so_they_win() {
        let env = vec![("APP".to_string(), "override".to_string())];
        let input = sample(&env, None);
        let mut all = system_environment(&input);
        all.extend(env.iter().cloned());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("env"), render_env_file(&all)).unwrap();
        let out = bash("env -i bash -c '. ./env; printf %s \"$APP/$STACK/$INSTANCE/$CLOUDWATCH_LOG_GROUP_NAME\"'", dir.path());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "override/jobs/worker//stackdrop/instance/my-app--jobs--instance--worker"
        );
    }

    #[test]
    fn embedding_drops_only_comments() {
        // The Python helpers: the same syntax tree (docstrings included) with and without.
        let dir = tempfile::tempdir().unwrap();
        for (name, script) in [
            ("extract", EXTRACT_PY),
            ("ship", SHIP_PY),
            ("secrets", SECRETS_PY),
        ] {
            std::fs::write(dir.path().join(format!("{name}.py")), script).unwrap();
            std::fs::write(dir.path().join(format!("{name}.e.py")), embedded(script)).unwrap();
            let tree = |file: String| {
                bash(
                    &format!("python3 -c 'import ast, sys; print(ast.dump(ast.parse(open(sys.argv[1]).read())))' {file}"),
                    dir.path(),
                )
            };
            assert_eq!(
                tree(format!("{name}.py")),
                tree(format!("{name}.e.py")),
                "{name}"
            );
            assert!(embedded(script).len() <= script.len(), "{name}");
        }
        // The bootstrap: the same lines (its error reports name them), none a comment.
        let e = embedded(BOOTSTRAP_SH);
        assert_eq!(e.lines().count(), BOOTSTRAP_SH.lines().count());
        for (line, original) in e.lines().zip(BOOTSTRAP_SH.lines()) {
            assert!(
                line == original || (line.is_empty() && original.trim_start().starts_with('#'))
            );
        }
        assert!(!e.lines().any(|l| l.trim_start().starts_with("# ")));
        assert_eq!(
            embedded("#!/bin/sh\n  # a\nx # b\n#"),
            "#!/bin/sh\n\nx # b\n"
        );
    }

    #[test]
    fn rendered_user_data_is_valid_bash_and_fits() {
        let env = vec![("NODE_ENV".to_string(), "production".to_string())];
        let ud = render(&sample(&env, Some("npm install && npm start")));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ud.sh"), &ud).unwrap();
        bash("bash -n ud.sh", dir.path());
        assert!(ud.starts_with("#!/bin/bash\n"));
        assert!(ud.contains("set -euo pipefail") && BOOTSTRAP_SH.contains("set -Eeuo pipefail"));
        // Room left for the user's environment and command.
        assert!(ud.len() < 12 * 1024, "{} bytes", ud.len());
    }

    #[test]
    fn the_rendered_script_passes_shellcheck() {
        if Command::new("shellcheck")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("shellcheck is not installed (apt-get install shellcheck): not linted");
            return;
        }
        let env = vec![("NODE_ENV".to_string(), "production".to_string())];
        for command in [Some("npm start"), None] {
            let dir = tempfile::tempdir().unwrap();
            let ud = render(&sample(&env, command));
            // The user data, and what it runs: its variables, then the payload.
            let vars: String = header(&ud)
                .lines()
                .filter(|l| !l.starts_with("SD_BOOTSTRAP_GZ="))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(dir.path().join("ud.sh"), &ud).unwrap();
            std::fs::write(dir.path().join("run.sh"), vars + &payload()).unwrap();
            // The user data alone uses few of its variables: the payload it sources does.
            // SC2016: the values are single-quoted on purpose (the sample's key holds `$(key)`).
            for args in [
                &["--exclude=SC2034,SC2016", "ud.sh"][..],
                &["--exclude=SC2016", "run.sh"],
            ] {
                let out = Command::new("shellcheck")
                    .args(["--shell=bash", "--severity=style"])
                    .args(args)
                    .current_dir(dir.path())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }

    #[test]
    fn hostile_bucket_key_and_user_never_reach_the_shell_unquoted() {
        let env = vec![];
        let mut input = sample(&env, Some("true"));
        input.key = "x'; touch pwned; echo '$(touch pwned)`touch pwned`";
        let ud = render(&input);
        // Execute only the variables of the script and read the key back.
        let dir = tempfile::tempdir().unwrap();
        let out = bash(&format!("{}printf %s \"$SD_KEY\"", header(&ud)), dir.path());
        assert_eq!(String::from_utf8(out).unwrap(), input.key);
        assert!(!dir.path().join("pwned").exists());
    }

    #[test]
    fn embedded_values_read_back_exactly() {
        let env = vec![("GREETING".to_string(), "it's $(not) run".to_string())];
        let input = sample(&env, Some("echo \"$GREETING\" && sleep 1"));
        let ud = render(&input);
        let dir = tempfile::tempdir().unwrap();
        let mut all = system_environment(&input);
        all.extend(env.iter().cloned());
        for (var, want) in [
            ("SD_COMMAND", "echo \"$GREETING\" && sleep 1".to_string()),
            ("SD_APP", input.app.to_string()),
            ("SD_STACK", input.stack.to_string()),
        ] {
            let got = bash(&format!("{}printf %s \"${var}\"", header(&ud)), dir.path());
            assert_eq!(String::from_utf8(got).unwrap(), want, "{var}");
        }
        let got = bash(
            &format!(
                "{}printf %s \"$SD_ENV_GZ\" | base64 -d | gzip -dc",
                header(&ud)
            ),
            dir.path(),
        );
        assert_eq!(String::from_utf8(got).unwrap(), render_env_file(&all));
        let got = bash(
            &format!(
                "{}printf %s \"$SD_BOOTSTRAP_GZ\" | base64 -d | gzip -dc",
                header(&ud)
            ),
            dir.path(),
        );
        assert_eq!(String::from_utf8(got).unwrap(), payload());
        let got = bash(
            &format!(
                "{}printf %s \"$SD_EXTRACT_PY|$SD_SHIP_PY\"",
                payload().strip_suffix(&embedded(BOOTSTRAP_SH)).unwrap()
            ),
            dir.path(),
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("{}|{}", embedded(EXTRACT_PY), embedded(SHIP_PY))
        );
        assert!(fill_unit(APP_UNIT, &input).contains("\nUser=ec2-user\n"));
        assert!(fill_unit(APP_UNIT, &input).contains("\nRestart=on-failure\n"));
    }

    // ---- the whole script in real bash, every tool it calls stubbed ----

    /// One stub for every tool the bootstrap calls that touches the system or AWS: it logs its
    /// command line to $T/calls, fails when $T/fail-<what> exists (printing that file), and plays
    /// S3 (the bundle is $T/bundle.zip), IMDS, EC2 tags, SSM parameters (the N-th call answers
    /// $T/ssm-N.json, else $T/ssm.json), CloudWatch Logs ($T/events) and
    /// systemd ($T/state, $T/restarts, $T/status; journalctl prints $T/app-output, the service's).
    const STUB: &str = r#"#!/bin/bash
me=${0##*/}
printf '%s\n' "$me $*" >>"$T/calls"
fail() { if [ -e "$T/fail-$1" ]; then cat -- "$T/fail-$1" >&2; exit "${2:-1}"; fi; }
case $me in
  aws)
    case "$1 $2" in
      "s3api get-object") fail get-object 254; out=${!#}; printf '%s\n' "$out" >>"$T/download-path"; cp -- "$T/bundle.zip" "$out"; echo '{}' ;;
      "ec2 create-tags") fail create-tags 254 ;;
      "ssm get-parameters") fail get-parameters 254; n=$(grep -c '^aws ssm get-parameters' "$T/calls"); cat -- "$T/ssm-$n.json" 2>/dev/null || cat -- "$T/ssm.json" ;;
      "logs put-log-events") for a; do case $a in file://*) cat -- "${a#file://}" >>"$T/events" ;; esac; done ;;
    esac ;;
  curl) fail imds 22; case "$*" in *api/token*) echo token ;; *instance-id*) printf i-0123456789abcdef0 ;; esac ;;
  systemctl)
    case $1 in
      daemon-reload) fail daemon-reload ;;
      enable|restart) fail "$1" ;;
      is-active) s=$(cat -- "$T/state" 2>/dev/null || echo active); echo "$s"; [ "$s" = active ] ;;
      show) case $2 in --property=NRestarts) cat -- "$T/restarts" 2>/dev/null || echo 0 ;; *) cat -- "$T/status" 2>/dev/null || echo 0 ;; esac ;;
    esac ;;
  journalctl) cat -- "$T/app-output" 2>/dev/null || true ;;
  getent) [ -e "$T/user-exists" ] || exit 2; fail getent; uid=1000; [ -e "$T/user-uid" ] && uid=$(cat "$T/user-uid"); echo "$2:x:$uid:1000::$T/home/$2:/bin/bash" ;;
  useradd) fail useradd; touch "$T/user-exists"; mkdir -p -- "$T/home/${!#}" ;;
  chown|chgrp) fail "$me" ;;
  sleep) ;;
esac
"#;

    /// The real tools the bootstrap (and the stub) need; nothing else is on its PATH.
    const REAL_TOOLS: &[&str] = &[
        "bash", "cat", "cp", "cut", "date", "install", "mkdir", "mv", "rm", "tail", "tee", "touch",
        "tr", "chmod", "base64", "gzip", "grep",
    ];
    const STUBBED: &[&str] = &[
        "aws",
        "curl",
        "systemctl",
        "journalctl",
        "getent",
        "useradd",
        "chown",
        "chgrp",
        "sleep",
    ];

    struct World {
        dir: tempfile::TempDir,
    }

    struct Run {
        status: std::process::ExitStatus,
        out: String,
        calls: String,
        console: String,
        events: String,
    }

    impl Run {
        fn tags(&self) -> Vec<&str> {
            self.calls
                .lines()
                .filter(|l| l.starts_with("aws ec2 create-tags"))
                .filter_map(|l| l.rsplit("Value=").next())
                .collect()
        }

        fn assert_failed(&self, reason: &str) {
            assert!(!self.status.success(), "exit 0:\n{}", self.out);
            assert_eq!(self.tags(), ["failed"], "{}", self.calls);
            let line = format!("stackdrop bootstrap failed: {reason}");
            assert!(
                self.console.contains(&line),
                "console: {}\nout: {}",
                self.console,
                self.out
            );
            assert!(self.events.contains(&line), "events: {}", self.events);
            assert!(!self.out.contains("stackdrop bootstrap ok"), "{}", self.out);
        }
    }

    /// The Python the tests run the helpers with: `python3`, or $STACKDROP_TEST_PYTHON (to try
    /// the helpers on Amazon Linux 2023's 3.9 and on newer ones).
    fn python() -> String {
        std::env::var("STACKDROP_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
    }

    fn tool_path(tool: &str) -> PathBuf {
        let probe = if tool == "python3" {
            Command::new(python())
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
        } else {
            Command::new("bash")
                .args(["-c", &format!("command -v {tool}")])
                .output()
        };
        let out = probe.expect("the tool is found");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    }

    impl World {
        fn new(bundle: &[u8]) -> World {
            let dir = tempfile::tempdir().unwrap();
            let t = dir.path();
            for sub in ["bin", "root/dev", "home"] {
                std::fs::create_dir_all(t.join(sub)).unwrap();
            }
            std::fs::write(t.join("bundle.zip"), bundle).unwrap();
            std::fs::write(t.join("root/dev/console"), "").unwrap();
            let stub = t.join("stub");
            std::fs::write(&stub, STUB).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
            for tool in REAL_TOOLS.iter().chain(&["python3"]) {
                std::os::unix::fs::symlink(tool_path(tool), t.join("bin").join(tool)).unwrap();
            }
            for tool in STUBBED {
                std::os::unix::fs::symlink(&stub, t.join("bin").join(tool)).unwrap();
            }
            World { dir }
        }

        fn t(&self) -> &Path {
            self.dir.path()
        }

        fn code(&self) -> PathBuf {
            self.t().join("home/ec2-user/worker")
        }

        fn set(&self, file: &str, content: &str) {
            std::fs::write(self.t().join(file), content).unwrap();
        }

        fn read(&self, file: &str) -> String {
            std::fs::read_to_string(self.t().join(file)).unwrap_or_default()
        }

        fn run(&self, ud: &str) -> Run {
            let root = self.t().join("root");
            let ud = ud.replacen(
                "\nSD_ROOT=''\n",
                &format!("\nSD_ROOT={}\n", shell_quote(&root.display().to_string())),
                1,
            );
            std::fs::write(self.t().join("ud.sh"), ud).unwrap();
            let out: Output = Command::new(self.t().join("bin/bash"))
                .arg("ud.sh")
                .env_clear()
                .env("PATH", self.t().join("bin"))
                .env("T", self.t())
                .current_dir(self.t())
                .output()
                .unwrap();
            // CloudWatch Logs events, as the stub received them.
            let events = self
                .read("events")
                .lines()
                .flat_map(|l| serde_json::from_str::<Vec<serde_json::Value>>(l).unwrap())
                .map(|e| e["message"].as_str().unwrap().to_string() + "\n")
                .collect();
            Run {
                status: out.status,
                out: String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
                calls: self.read("calls"),
                console: self.read("root/dev/console"),
                events,
            }
        }
    }

    /// A stored zip of `(raw name, flags, data)` entries, made by Unix, written by hand: bsdtar's
    /// `./` names, Info-ZIP's flagless UTF-8 and code page 437 names, which the zip crate cannot
    /// write.
    pub(crate) fn raw_zip(entries: &[(&[u8], u16, &[u8])]) -> Vec<u8> {
        let (mut out, mut cd) = (Vec::new(), Vec::new());
        for (name, flags, data) in entries {
            let offset = out.len() as u32;
            let mut common = Vec::new();
            common.extend(20u16.to_le_bytes());
            common.extend(flags.to_le_bytes());
            common.extend(0u16.to_le_bytes()); // stored
            common.extend(0u32.to_le_bytes()); // time, date
            common.extend(crc32fast::hash(data).to_le_bytes());
            common.extend((data.len() as u32).to_le_bytes());
            common.extend((data.len() as u32).to_le_bytes());
            common.extend((name.len() as u16).to_le_bytes());
            common.extend(0u16.to_le_bytes()); // extra
            out.extend(0x0403_4b50u32.to_le_bytes());
            out.extend(&common);
            out.extend(*name);
            out.extend(*data);
            cd.extend(0x0201_4b50u32.to_le_bytes());
            cd.extend(0x0314u16.to_le_bytes()); // made by Unix
            cd.extend(&common);
            cd.extend([0u8; 6]); // comment, disk, internal attributes
            cd.extend((0o100_644u32 << 16).to_le_bytes());
            cd.extend(offset.to_le_bytes());
            cd.extend(*name);
        }
        let (cd_at, n) = (out.len() as u32, entries.len() as u16);
        out.extend(&cd);
        out.extend(0x0605_4b50u32.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend(n.to_le_bytes());
        out.extend(n.to_le_bytes());
        out.extend((cd.len() as u32).to_le_bytes());
        out.extend(cd_at.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    const APP: &[u8] = br#"{"name":"my-app"}"#;
    const STACK: &[u8] = br#"{"name":"jobs","instances":{"worker":{"image":"ami-12345678","type":"t3.micro","code":"src/worker"}}}"#;

    /// A bundle with the two JSON files and `code` entries, as a zip tool would write it.
    fn bundle(code: &[(&[u8], u16, &[u8])]) -> Vec<u8> {
        let mut all: Vec<(&[u8], u16, &[u8])> =
            vec![(b"app.json", 0, APP), (b"stack.json", 0, STACK)];
        all.extend_from_slice(code);
        raw_zip(&all)
    }

    fn good_bundle() -> Vec<u8> {
        bundle(&[
            (b"src/worker/main.sh", 0, b"echo hi\n"),
            (b"src/other/x", 0, b"not this one"),
        ])
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let out = bash(
            &format!(
                "cd {} && find . -type f | sort",
                shell_quote(&dir.display().to_string())
            ),
            Path::new("/"),
        );
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_good_bundle_reports_ok_once_the_service_stayed_up() {
        let w = World::new(&good_bundle());
        let env = vec![("GREETING".to_string(), "it's $(not) run".to_string())];
        let input = sample(&env, Some("./main.sh"));
        let r = w.run(&render(&input));
        assert!(r.status.success(), "{}", r.out);
        assert_eq!(r.tags(), ["ok"], "{}", r.calls);
        assert!(r
            .console
            .contains("stackdrop bootstrap ok: service stackdrop-worker.service is up"));
        assert!(r.events.contains("stackdrop bootstrap ok"), "{}", r.events);
        assert_eq!(files_under(&w.code()), ["./main.sh"]);
        // The settle time passed, checked every second, before `ok`.
        let calls: Vec<&str> = r.calls.lines().collect();
        let enable = calls
            .iter()
            .position(|c| {
                c.starts_with(
                    "systemctl enable --now stackdrop-worker.service stackdrop-worker-logs.service",
                )
            })
            .unwrap();
        let ok = calls
            .iter()
            .position(|c| c.starts_with("aws ec2 create-tags"))
            .unwrap();
        let between = &calls[enable..ok];
        assert_eq!(
            between.iter().filter(|c| **c == "sleep 1").count(),
            SETTLE_SECONDS as usize,
            "{between:?}"
        );
        assert_eq!(
            between
                .iter()
                .filter(|c| c.starts_with("systemctl is-active"))
                .count(),
            SETTLE_SECONDS as usize
        );
        // The files the bootstrap wrote.
        let mut all = system_environment(&input);
        all.extend(env.iter().cloned());
        assert_eq!(
            w.read("root/etc/stackdrop/worker.env"),
            render_env_file(&all)
        );
        assert_eq!(
            w.read("root/etc/systemd/system/stackdrop-worker.service"),
            fill_unit(APP_UNIT, &input)
        );
        assert_eq!(
            w.read("root/usr/local/lib/stackdrop/extract.py"),
            embedded(EXTRACT_PY)
        );
        assert_eq!(
            w.read("root/usr/local/lib/stackdrop/ship.py"),
            embedded(SHIP_PY)
        );
        assert_eq!(
            w.read("root/etc/systemd/system/stackdrop-worker-logs.service"),
            fill_unit(LOGS_UNIT, &input)
        );
        // The journal on disk and bounded, journald restarted to read it, before the units start.
        assert_eq!(
            w.read("root/etc/systemd/journald.conf.d/stackdrop.conf"),
            "[Journal]\nStorage=persistent\nSystemMaxUse=1G\nSystemMaxFileSize=64M\n"
        );
        let restart = calls
            .iter()
            .position(|c| *c == "systemctl restart systemd-journald")
            .unwrap();
        assert!(restart < enable);
    }

    #[test]
    fn the_units_send_the_output_to_the_journal_and_ship_it_from_the_cursor() {
        let input = sample(&[], Some("npm start"));
        let app = fill_unit(APP_UNIT, &input);
        for line in [
            "StandardOutput=journal",
            "StandardError=journal",
            // journald's default (10000 lines in 30 s, then dropped) would lose a busy service's.
            "LogRateLimitIntervalSec=0",
        ] {
            assert!(app.contains(&format!("\n{line}\n")), "{line} in {app}");
        }
        assert!(!app.contains("/var/log/stackdrop"), "{app}");
        let ship = fill_unit(LOGS_UNIT, &input);
        for line in [
            "ExecStart=/usr/bin/python3 /usr/local/lib/stackdrop/ship.py stackdrop-worker.service \
             /stackdrop/instance/my-app--jobs--instance--worker app /var/lib/stackdrop/worker/ship-app.cursor",
            "Environment=AWS_DEFAULT_REGION=us-east-1",
            "Restart=always",
            // A stop (restart, reboot) signals the shipper alone: it finishes its send.
            "KillMode=mixed",
            "WantedBy=multi-user.target",
        ] {
            assert!(ship.contains(&format!("\n{line}\n")), "{line} in {ship}");
        }
    }

    /// ship.py's own tests (scripts/tests/test_ship.py: a fake journalctl, AWS CLI and IMDS).
    #[test]
    fn the_shipper_passes_its_python_tests() {
        bash(
            &format!(
                "{} -m unittest discover -s scripts/tests",
                shell_quote(&python())
            ),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        );
    }

    #[test]
    fn the_bundle_is_downloaded_to_disk_and_removed_once_extracted() {
        let w = World::new(&good_bundle());
        let r = w.run(&render(&sample(&[], Some("true"))));
        assert!(r.status.success(), "{}", r.out);
        let want = w.t().join("root/var/lib/stackdrop/worker/bundle.zip");
        assert_eq!(w.read("download-path"), format!("{}\n", want.display()));
        assert!(!want.exists(), "the bundle is left behind");
        assert!(
            r.calls.contains("aws s3api get-object --bucket stackdrop-bundles --key stacks/it's a $(key).zip --version-id 3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY "),
            "{}",
            r.calls
        );
    }

    #[test]
    fn a_failed_download_reports_failed_and_starts_nothing() {
        let w = World::new(&good_bundle());
        w.set(
            "fail-get-object",
            "\nAn error occurred (NoSuchVersion) when calling the GetObject operation: The specified version does not exist.\n",
        );
        let r = w.run(&render(&sample(&[], Some("true"))));
        r.assert_failed("step download: aws exited 254: \nAn error occurred (NoSuchVersion) when calling the GetObject operation: The specified version does not exist.");
        assert_eq!(
            r.calls.matches("aws s3api get-object").count(),
            5,
            "retried"
        );
        assert!(!r.calls.contains("systemctl"), "{}", r.calls);
        assert!(!w.code().exists());
        assert!(!w
            .t()
            .join("root/var/lib/stackdrop/worker/bundle.zip")
            .exists());
    }

    #[test]
    fn every_failing_step_reports_failed_with_its_name() {
        for (stub, step) in [
            ("useradd", "user"),
            ("chown", "extract"),
            ("chgrp", "environment"),
            ("daemon-reload", "start"),
            ("enable", "start"),
        ] {
            let w = World::new(&good_bundle());
            w.set(&format!("fail-{stub}"), &format!("{stub}: it broke"));
            let r = w.run(&render(&sample(&[], Some("true"))));
            r.assert_failed(&format!("step {step}: "));
            assert!(
                r.console.contains(&format!("{stub}: it broke")),
                "{stub}: {}",
                r.console
            );
        }
    }

    #[test]
    fn without_gzip_python_unpacks_the_payload() {
        let w = World::new(&good_bundle());
        std::fs::remove_file(w.t().join("bin/gzip")).unwrap();
        let r = w.run(&render(&sample(&[], Some("true"))));
        assert!(r.status.success(), "{}", r.out);
        assert_eq!(r.tags(), ["ok"]);
        assert!(w
            .read("root/etc/stackdrop/worker.env")
            .contains("export INSTANCE='worker'\n"));
    }

    #[test]
    fn an_unexpected_failure_names_the_line_of_bootstrap_sh() {
        let w = World::new(&good_bundle());
        w.set("user-exists", "");
        w.set("fail-getent", "getent: broken");
        let r = w.run(&render(&sample(&[], Some("true"))));
        let line = BOOTSTRAP_SH
            .lines()
            .position(|l| l.starts_with("SD_HOME=$(getent"))
            .unwrap()
            + 1;
        r.assert_failed(&format!(
            "step user: bootstrap.sh line {line}: SD_HOME=$(getent passwd \"$SD_USER\" | cut -d: -f6) exited 1"
        ));
    }

    #[test]
    fn a_user_that_is_root_on_the_image_fails_before_anything_runs() {
        // The validator refuses "root"; an image may still give another name uid 0.
        let w = World::new(&good_bundle());
        w.set("user-exists", "");
        w.set("user-uid", "0");
        let r = w.run(&render(&sample(&[], Some("true"))));
        r.assert_failed("step user: user ec2-user is root (uid 0) on this image; stackdrop never runs the command as root");
        assert!(files_under(&w.t().join("home")).is_empty());
    }

    #[test]
    fn an_ok_that_cannot_be_tagged_is_a_failure() {
        let w = World::new(&good_bundle());
        w.set(
            "fail-create-tags",
            "An error occurred (UnauthorizedOperation)",
        );
        let r = w.run(&render(&sample(&[], Some("true"))));
        assert!(!r.status.success());
        assert_eq!(r.tags(), ["ok", "failed"], "both tried, both refused");
        assert!(!r.console.contains("bootstrap ok"), "{}", r.console);
        assert!(r.console.contains(
            "stackdrop bootstrap failed: step report: the tag stackdrop:bootstrap=ok could not be written"
        ), "{}", r.console);
    }

    #[test]
    fn a_missing_tool_fails_the_bootstrap_before_anything_runs() {
        let w = World::new(&good_bundle());
        std::fs::remove_file(w.t().join("bin/python3")).unwrap();
        let r = w.run(&render(&sample(&[], Some("true"))));
        r.assert_failed("step tools: python3 is not installed on this image");
        assert!(!r.calls.contains("get-object"));
    }

    #[test]
    fn a_command_that_dies_at_once_fails_the_bootstrap_with_its_last_log_lines() {
        let w = World::new(&good_bundle());
        w.set(
            "app-output",
            "starting\nError: Cannot find module 'express'\n",
        );
        w.set("state", "activating");
        w.set("restarts", "1");
        w.set("status", "1");
        let r = w.run(&render(&sample(&[], Some("node server.js"))));
        r.assert_failed("step settle: the command stopped within 5s (exit status 1, now activating, 1 restarts)");
        assert!(
            r.console
                .contains("starting\nError: Cannot find module 'express'"),
            "{}",
            r.console
        );
        assert!(
            r.events.contains("Error: Cannot find module 'express'"),
            "{}",
            r.events
        );
        // A restart after a first check that found it active is caught too.
        let w = World::new(&good_bundle());
        w.set("restarts", "1");
        let r = w.run(&render(&sample(&[], Some("node server.js"))));
        r.assert_failed(
            "step settle: the command stopped within 5s (exit status 0, now active, 1 restarts)",
        );
    }

    #[test]
    fn no_command_means_no_service_and_no_settle() {
        let w = World::new(&good_bundle());
        let r = w.run(&render(&sample(&[], None)));
        assert!(r.status.success(), "{}", r.out);
        assert_eq!(r.tags(), ["ok"]);
        assert!(r
            .console
            .contains("stackdrop bootstrap ok: code in place (no command)"));
        // No output to ship either.
        assert!(!r.calls.contains("systemctl enable"), "{}", r.calls);
        for unit in ["stackdrop-worker.service", "stackdrop-worker-logs.service"] {
            assert!(!w.t().join("root/etc/systemd/system").join(unit).exists());
        }
        assert!(!r.calls.contains("sleep"));
    }

    #[test]
    fn the_service_runs_in_the_absolute_code_folder_or_not_at_all() {
        let w = World::new(&good_bundle());
        // A user HOME elsewhere must not move the command.
        let env = vec![("HOME".to_string(), "/".to_string())];
        let r = w.run(&render(&sample(
            &env,
            Some("printf '%s|%s' \"$PWD\" \"$GREETING\"; touch ran"),
        )));
        assert!(r.status.success(), "{}", r.out);
        let run = w.t().join("root/usr/local/lib/stackdrop/worker/run");
        let service = |home: &Path| {
            Command::new(w.t().join("bin/bash"))
                .arg(&run)
                .env_clear()
                .env("HOME", home)
                .env("PATH", w.t().join("bin"))
                .current_dir(w.t())
                .output()
                .unwrap()
        };
        let out = service(w.t());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{}|", w.code().display())
        );
        assert!(w.code().join("ran").exists());
        // The folder gone: the command does not run anywhere else.
        std::fs::remove_dir_all(w.code()).unwrap();
        let out = service(w.t());
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("stackdrop: the code folder"));
        assert!(!w.t().join("ran").exists() && !w.t().join("home/ec2-user/ran").exists());
    }

    #[test]
    fn bsdtar_and_info_zip_names_extract_as_they_validate() {
        // `zip -r x.zip .` / bsdtar: "./" prefixes; Info-ZIP: UTF-8 names without the flag;
        // doubled slashes; folder entries.
        let zip = bundle(&[
            (b"./", 0, b""),
            (b"./src/", 0, b""),
            (b"./src/worker/", 0, b""),
            (b"./src/worker/main.sh", 0, b"echo hi\n"),
            (
                "src/worker/caf\u{e9}/men\u{fc}.txt".as_bytes(),
                0,
                b"flagless utf-8",
            ),
            ("src/worker/\u{1F680}.txt".as_bytes(), 0x800, b"flagged"),
            (b"src/worker/cp437-\x82t\xe9", 0, b"code page 437"),
            (b"src//worker//deep/./x", 0, b"doubled"),
        ]);
        let b = crate::bundle::read_bundle(&zip, "b.zip", &Default::default()).unwrap();
        assert!(b.has_folder("src/worker"));
        let w = World::new(&zip);
        let mut input = sample(&[], Some("true"));
        input.max_bytes = b.folder_bytes("src/worker");
        let r = w.run(&render(&input));
        assert!(r.status.success(), "{}", r.out);
        assert_eq!(
            files_under(&w.code()),
            [
                "./caf\u{e9}/men\u{fc}.txt",
                "./cp437-\u{e9}t\u{398}",
                "./deep/x",
                "./main.sh",
                "./\u{1F680}.txt",
            ]
        );
    }

    #[test]
    fn extracting_nothing_or_too_much_fails_the_bootstrap() {
        let w = World::new(&good_bundle());
        let mut input = sample(&[], Some("true"));
        input.zip_prefix = "src/elsewhere/";
        w.run(&render(&input))
            .assert_failed("step extract: python3 exited 1: extract: no file of the bundle lies under 'src/elsewhere/'");
        let w = World::new(&good_bundle());
        let mut input = sample(&[], Some("true"));
        input.max_bytes = 7; // "echo hi\n" is 8
        w.run(&render(&input)).assert_failed(
            "step extract: python3 exited 1: extract: the files under 'src/worker/' hold more than the 7 bytes validation saw",
        );
        assert!(!w.code().exists());
    }

    // ---- the extractor and the validator read every zip alike ----

    /// Runs extract.py's `extract` on each `(zip, prefix, max_bytes)` in one Python process:
    /// the files written (path -> size), or the error.
    fn python_extract(
        cases: &[(Vec<u8>, String, u64)],
    ) -> Vec<Result<BTreeMap<String, u64>, String>> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("extract.py"), EXTRACT_PY).unwrap();
        let manifest: Vec<serde_json::Value> = cases
            .iter()
            .enumerate()
            .map(|(n, (zip, prefix, max))| {
                let z = d.join(format!("{n}.zip"));
                std::fs::write(&z, zip).unwrap();
                serde_json::json!({"zip": z, "prefix": prefix, "max": max, "dest": d.join(format!("out{n}"))})
            })
            .collect();
        std::fs::write(
            d.join("cases.json"),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
        let harness = r#"
import json, os, sys
sys.path.insert(0, ".")
import extract
out = []
for c in json.load(open("cases.json")):
    os.mkdir(c["dest"])
    try:
        extract.extract(c["zip"], c["prefix"], c["dest"], c["max"])
        files = {}
        for top, _, names in os.walk(c["dest"]):
            for n in names:
                p = os.path.join(top, n)
                files[os.path.relpath(p, c["dest"])] = os.path.getsize(p)
        out.append({"ok": files})
    except Exception as e:
        out.append({"err": "%s: %s" % (type(e).__name__, e)})
print(json.dumps(out))
"#;
        let out = Command::new(python())
            .args(["-c", harness])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        v.into_iter()
            .map(|r| match r.get("ok") {
                Some(files) => Ok(serde_json::from_value(files.clone()).unwrap()),
                None => Err(r["err"].as_str().unwrap().to_string()),
            })
            .collect()
    }

    /// What the validator says extracting `folder` must give: `None` when it rejects the
    /// bundle (or has no such folder), else the prefix, path -> size (the last entry wins) and
    /// the bound. `Some(Err)` when it rejects an unsafe name, which the extractor must refuse too.
    type View = Option<Result<(String, BTreeMap<String, u64>, u64), ()>>;
    fn validator_view(zip: &[u8], folder: &str) -> View {
        let b = match crate::bundle::read_bundle(zip, "b.zip", &Default::default()) {
            Ok(b) => b,
            Err(problems) => {
                let unsafe_name = problems.iter().any(|p| {
                    let p = p.to_string();
                    [
                        " has an empty name",
                        " is not valid UTF-8",
                        " contains a NUL byte",
                        " contains a backslash",
                        " is an absolute path",
                        " path component",
                        " more unsafe entry names",
                    ]
                    .iter()
                    .any(|why| p.ends_with(why))
                });
                return unsafe_name.then_some(Err(()));
            }
        };
        if !b.has_folder(folder) {
            return None;
        }
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let files = b
            .sizes
            .iter()
            .filter_map(|(p, n)| Some((p.strip_prefix(prefix.as_str())?.to_string(), *n)))
            .collect();
        Some(Ok((
            format!("{}{prefix}", b.root),
            files,
            b.folder_bytes(folder),
        )))
    }

    /// Raw name pieces: ordinary, empty, ".", "..", flagless and flagged UTF-8, code page 437,
    /// invalid UTF-8, backslash, drive letter, NUL, __MACOSX.
    const PIECES: &[&[u8]] = &[
        b"src",
        b"src",
        b"src",
        b"src",
        b"src",
        b"src",
        b"a",
        b"a",
        b"a",
        b"b",
        b"b",
        "caf\u{e9}".as_bytes(),
        b"",
        b"",
        b".",
        b".",
        b"..",
        "\u{e9}t\u{e9}".as_bytes(),
        b"\x82t\x82",
        b"\xff\xfe",
        b"\xc3",
        b"x\\y",
        b"c:",
        b"n\0ul",
        b"__MACOSX",
        b"app.json",
        "\u{1F680}".as_bytes(),
        b"with space",
    ];

    /// A small deterministic generator (no dependency): the same corpus every run.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    #[test]
    fn the_extractor_agrees_with_the_validator_on_every_name() {
        let mut rng = Lcg(10);
        let mut cases = Vec::new();
        let mut expected = Vec::new();
        for n in 0..400 {
            let root: &[u8] = [&b""[..], b"proj/", b"./proj/", b"proj//"][rng.below(4)];
            let mut entries: Vec<(Vec<u8>, u16, Vec<u8>)> = vec![
                ([root, b"app.json"].concat(), 0, APP.to_vec()),
                ([root, b"stack.json"].concat(), 0, STACK.to_vec()),
            ];
            for e in 0..1 + rng.below(6) {
                let mut name = root.to_vec();
                if rng.below(4) == 0 {
                    name.extend_from_slice(b"./");
                }
                // Half the entries from the safe pieces only (the first 16).
                let pieces = if rng.below(2) == 0 { 16 } else { PIECES.len() };
                for c in 0..1 + rng.below(4) {
                    if c > 0 {
                        name.push(b'/');
                    }
                    name.extend_from_slice(PIECES[rng.below(pieces)]);
                }
                if rng.below(6) == 0 {
                    name.push(b'/');
                }
                let flags = if rng.below(3) == 0 { 0x800 } else { 0 };
                // Sizes tell entries apart: the one the extractor kept is the one expected.
                entries.push((name, flags, vec![b'x'; n % 7 + e * 11]));
            }
            let raw: Vec<(&[u8], u16, &[u8])> = entries
                .iter()
                .map(|(a, f, d)| (a.as_slice(), *f, d.as_slice()))
                .collect();
            let zip = raw_zip(&raw);
            let folder = ["src", "", "src/a"][rng.below(3)];
            let view = validator_view(&zip, folder);
            let (prefix, max) = match &view {
                Some(Ok((prefix, _, max))) => (prefix.clone(), *max),
                _ => (
                    format!(
                        "{}{folder}/",
                        String::from_utf8_lossy(root).replace("./", "")
                    ),
                    1 << 20,
                ),
            };
            cases.push((zip, prefix, max));
            expected.push((entries, folder, view));
        }
        let got = python_extract(&cases);
        let (mut accepted, mut refused) = (0, 0);
        for ((entries, folder, view), got) in expected.iter().zip(&got) {
            let names: Vec<String> = entries
                .iter()
                .map(|(n, f, _)| format!("{:?}/{f:#x}", String::from_utf8_lossy(n)))
                .collect();
            match (view, got) {
                (Some(Ok((_, want, _))), Ok(files)) => {
                    assert_eq!(files, want, "{folder:?} in {names:?}");
                    accepted += 1;
                }
                (Some(Err(())), Err(e)) if e.starts_with("Refused: ") && e.contains("entry") => {
                    refused += 1
                }
                // Rejected for another reason (a duplicate app.json, no such folder): never
                // deployed, whatever the extractor would do.
                (None, _) => {}
                (want, got) => {
                    panic!("{folder:?} in {names:?}: validator {want:?}, extractor {got:?}")
                }
            }
        }
        assert!(
            accepted > 50 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
        // At the bound exactly it writes everything; one byte less and it refuses.
        let tight: Vec<(Vec<u8>, String, u64)> = cases
            .iter()
            .zip(&expected)
            .filter(|((_, _, max), (_, _, view))| matches!(view, Some(Ok(_))) && *max > 0)
            .map(|((zip, prefix, max), _)| (zip.clone(), prefix.clone(), max - 1))
            .collect();
        assert!(!tight.is_empty());
        for r in python_extract(&tight) {
            assert!(
                r.as_ref().is_err_and(|e| e.contains("validation saw")),
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_extractor_never_writes_through_a_link_or_outside_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("extract.py"), EXTRACT_PY).unwrap();
        std::fs::write(d.join("b.zip"), bundle(&[(b"src/x", 0, b"data")])).unwrap();
        std::fs::create_dir_all(d.join("outside")).unwrap();
        for (link, name) in [("src", "a folder"), ("src/x", "a file")] {
            let dest = d.join(format!("dest-{}", link.replace('/', "-")));
            std::fs::create_dir_all(dest.join("src")).unwrap();
            if link == "src" {
                std::fs::remove_dir(dest.join("src")).unwrap();
            }
            std::os::unix::fs::symlink(d.join("outside").join("x"), dest.join(link)).unwrap();
            let out = Command::new(python())
                .args(["extract.py", "b.zip", ""])
                .arg(&dest)
                .arg("1000")
                .current_dir(d)
                .output()
                .unwrap();
            assert!(!out.status.success(), "{name}");
            assert!(!d.join("outside/x").exists(), "written through {name} link");
        }
    }

    #[test]
    fn an_encrypted_code_file_is_refused_by_both_in_the_same_words() {
        let zip = bundle(&[(b"src/main.sh", 0, b"echo hi"), (b"src/key.pem", 1, b"x")]);
        let words = "entry \"src/key.pem\" is encrypted; stackdrop cannot unpack encrypted files";
        let problems = crate::bundle::read_bundle(zip.as_slice(), "b.zip", &Default::default())
            .expect_err("the validator must refuse it");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].to_string(), format!("b.zip: {words}"));
        let got = python_extract(&[(zip, "src/".into(), 1 << 20)]);
        assert_eq!(
            got[0].as_ref().unwrap_err(),
            &format!("Refused: entry 'src/key.pem' {}", &words[20..])
        );
    }

    #[test]
    fn the_extractor_reads_code_page_437_as_the_validator_does() {
        // Every high byte, no UTF-8 flag (and not valid UTF-8): both sides decode it alike.
        let mut low = b"src/".to_vec();
        low.extend(0x80u8..0xc0);
        let mut high = b"src/".to_vec();
        high.extend(0xc0u8..=0xff);
        let zip = bundle(&[(&low, 0, b"x"), (&high, 0, b"yy")]);
        let (prefix, want, max) = validator_view(&zip, "src").unwrap().unwrap();
        assert_eq!(want.len(), 2);
        let got = python_extract(&[(zip, prefix, max)]);
        assert_eq!(got[0].as_ref().unwrap(), &want);
    }

    // ---- secrets: read on the instance, never anywhere else ----

    /// Values no quoting hack survives: quotes, `$`, backticks, newlines, non-ASCII, empty.
    const SECRET_VALUES: &[(&str, &str, &str)] = &[
        (
            "DB_PASSWORD",
            "/my-app/db-password",
            "it's \"q\" $(touch pwned) `touch pwned` ${HOME} $0",
        ),
        (
            "API_KEY",
            "arn:aws:ssm:us-east-1:210987654321:parameter/shared/api-key",
            "line one\nline two\n\n",
        ),
        (
            "UNICODE",
            "/my-app/unicode",
            "ünïcödé ✓ 🚀 \\' '\\'' \t tab",
        ),
        ("EMPTY", "/my-app/empty", ""),
        ("PINNED", "/my-app/db-password:3", "'"),
    ];

    /// SSM's answer to GetParameters for `params` (reference, value): Name and ARN as AWS gives
    /// them, the selector in Selector.
    fn ssm_answer(params: &[(&str, &str)], invalid: &[&str]) -> String {
        let parameters: Vec<serde_json::Value> = params
            .iter()
            .map(|(reference, value)| {
                let (param, selector) = match reference.rsplit_once(':') {
                    Some((p, s)) if !s.contains('/') => (p, format!(":{s}")),
                    _ => (*reference, String::new()),
                };
                let arn = crate::secrets::parameter_arn(param, "aws", "us-east-1", "123456789012");
                let name = param.to_string();
                let mut p = serde_json::json!({"Name": name, "Type": "SecureString", "Value": value, "Version": 3, "ARN": arn, "DataType": "text"});
                if !selector.is_empty() {
                    p["Selector"] = selector.into();
                }
                p
            })
            .collect();
        serde_json::json!({"Parameters": parameters, "InvalidParameters": invalid}).to_string()
    }

    fn secret_list() -> Vec<(String, String)> {
        SECRET_VALUES
            .iter()
            .map(|(n, p, _)| (n.to_string(), p.to_string()))
            .collect()
    }

    /// Runs the bootstrap of an instance with `secrets` (variable, parameter) and `command`.
    fn run_with_secrets(w: &World, secrets: &[(&str, &str)], command: &str) -> Run {
        let secrets: Vec<(String, String)> = secrets
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_string()))
            .collect();
        let mut input = sample(&[], Some(command));
        input.secrets = &secrets;
        w.run(&render(&input))
    }

    /// Runs the service's run script as systemd would (no environment) and returns its stdout.
    fn run_service(w: &World) -> Output {
        Command::new(w.t().join("bin/bash"))
            .arg(w.t().join("root/usr/local/lib/stackdrop/worker/run"))
            .env_clear()
            .env("PATH", w.t().join("bin"))
            .current_dir(w.t())
            .output()
            .unwrap()
    }

    #[test]
    fn secrets_arrive_byte_for_byte_and_are_printed_nowhere() {
        let w = World::new(&good_bundle());
        // /my-app/db-password twice (plain and :3): separate calls, told apart.
        w.set(
            "ssm-1.json",
            &ssm_answer(
                &SECRET_VALUES[..4]
                    .iter()
                    .map(|(_, p, v)| (*p, *v))
                    .collect::<Vec<_>>(),
                &[],
            ),
        );
        w.set(
            "ssm-2.json",
            &ssm_answer(&[(SECRET_VALUES[4].1, SECRET_VALUES[4].2)], &[]),
        );
        let secrets = secret_list();
        let names: Vec<&str> = SECRET_VALUES.iter().map(|(n, _, _)| *n).collect();
        let command = format!(
            "for n in {}; do printf '%s\\0' \"${{!n}}\"; done",
            names.join(" ")
        );
        let mut input = sample(&[], Some(&command));
        input.secrets = &secrets;
        let ud = render(&input);
        let r = w.run(&ud);
        assert!(r.status.success(), "{}", r.out);
        assert_eq!(r.tags(), ["ok"]);
        assert_eq!(
            r.calls.lines().filter(|l| l.starts_with("aws ssm")).collect::<Vec<_>>(),
            [
                "aws ssm get-parameters --with-decryption --output json --names /my-app/db-password arn:aws:ssm:us-east-1:210987654321:parameter/shared/api-key /my-app/unicode /my-app/empty",
                "aws ssm get-parameters --with-decryption --output json --names /my-app/db-password:3",
            ]
        );
        let file = w.t().join("root/etc/stackdrop/worker.secrets.env");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(
            r.calls
                .contains(&format!("chgrp -- 1000 {}\n", file.display())),
            "{}",
            r.calls
        );
        // The service sources it after the environment, and gets every byte.
        let run = w.read("root/usr/local/lib/stackdrop/worker/run");
        let env_at = run.find("/etc/stackdrop/worker.env || exit 1\n").unwrap();
        let secrets_at = run
            .find("/etc/stackdrop/worker.secrets.env || exit 1\n")
            .unwrap();
        assert!(env_at < secrets_at, "{run}");
        let out = run_service(&w);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        let want: Vec<&[u8]> = SECRET_VALUES
            .iter()
            .map(|(_, _, v)| v.as_bytes())
            .chain([&b""[..]])
            .collect();
        assert_eq!(got, want);
        assert!(
            !w.t().join("pwned").exists() && !w.code().join("pwned").exists(),
            "a value ran"
        );
        // No value in the user data, the bootstrap's output (the console through cloud-init),
        // its log file, the console, the log stream, or any command line.
        let log = w.read("root/var/log/stackdrop-bootstrap.log");
        assert!(
            log.contains("secrets: DB_PASSWORD, API_KEY, UNICODE, EMPTY, PINNED written to "),
            "{log}"
        );
        for (_, _, value) in SECRET_VALUES.iter().filter(|(_, _, v)| v.len() > 1) {
            for (what, text) in [
                ("user data", &ud),
                ("output", &r.out),
                ("log", &log),
                ("console", &r.console),
                ("events", &r.events),
                ("calls", &r.calls),
            ] {
                assert!(!text.contains(value), "{value:?} is in the {what}");
            }
        }
    }

    #[test]
    fn without_secrets_nothing_is_read() {
        let w = World::new(&good_bundle());
        let r = w.run(&render(&sample(&[], Some("true"))));
        assert!(r.status.success(), "{}", r.out);
        assert!(
            !r.calls.contains("aws ssm") && !r.out.contains("secrets"),
            "{}",
            r.out
        );
        assert!(!w.t().join("root/etc/stackdrop/worker.secrets.env").exists());
        assert!(!w
            .t()
            .join("root/usr/local/lib/stackdrop/secrets.py")
            .exists());
        assert!(!w
            .read("root/usr/local/lib/stackdrop/worker/run")
            .contains("secrets"));
    }

    #[test]
    fn a_missing_secret_fails_the_bootstrap_with_its_name() {
        let w = World::new(&good_bundle());
        w.set(
            "ssm.json",
            &ssm_answer(
                &[("/my-app/db-password", "s3cr3t-value")],
                &["/my-app/missing", "/my-app/db-password:9"],
            ),
        );
        let r = run_with_secrets(
            &w,
            &[
                ("DB_PASSWORD", "/my-app/db-password"),
                ("MISSING", "/my-app/missing"),
                ("OLD", "/my-app/db-password:9"),
            ],
            "true",
        );
        r.assert_failed("step secrets: python3 exited 1: secrets: SSM Parameter Store has no parameter (or version, or label) /my-app/missing (MISSING), /my-app/db-password:9 (OLD)");
        assert_eq!(
            r.calls.matches("aws ssm get-parameters").count(),
            2,
            "not retried: {}",
            r.calls
        );
        assert!(!w.t().join("root/etc/stackdrop/worker.secrets.env").exists());
        assert!(!r.calls.contains("systemctl"));
        assert!(!r.out.contains("s3cr3t-value") && !r.console.contains("s3cr3t-value"));
    }

    #[test]
    fn a_refused_read_is_retried_then_fails_with_awss_reason() {
        let w = World::new(&good_bundle());
        w.set(
            "fail-get-parameters",
            "\nAn error occurred (AccessDeniedException) when calling the GetParameters operation: User: arn:aws:sts::123456789012:assumed-role/r/i-0 is not authorized to perform: ssm:GetParameters on resource: arn:aws:ssm:us-east-1:123456789012:parameter/other\n",
        );
        let r = run_with_secrets(&w, &[("X", "/other")], "true");
        r.assert_failed("step secrets: python3 exited 3: secrets: aws ssm get-parameters /other exited 254: An error occurred (AccessDeniedException) when calling the GetParameters operation: User: arn:aws:sts::123456789012:assumed-role/r/i-0 is not authorized to perform: ssm:GetParameters on resource: arn:aws:ssm:us-east-1:123456789012:parameter/other");
        assert_eq!(
            r.calls.matches("aws ssm get-parameters").count(),
            5,
            "{}",
            r.calls
        );
        assert!(!r.calls.contains("systemctl"));
    }

    #[test]
    fn a_refused_read_that_recovers_is_no_failure() {
        let w = World::new(&good_bundle());
        // The first call answers nothing useful (an empty reply), the second the value.
        w.set("ssm-1.json", "");
        w.set("ssm.json", &ssm_answer(&[("/a", "v")], &[]));
        let r = run_with_secrets(&w, &[("A", "/a")], "true");
        assert!(r.status.success(), "{}", r.out);
        assert!(
            r.out
                .contains("secrets: aws ssm get-parameters /a printed no answer"),
            "{}",
            r.out
        );
        assert_eq!(w.read("root/etc/stackdrop/worker.secrets.env"), "# written by stackdrop at boot from SSM Parameter Store: sourced by the service\nexport A='v'\n");
    }

    #[test]
    fn more_than_ten_secrets_take_several_calls() {
        let w = World::new(&good_bundle());
        let refs: Vec<String> = (0..23).map(|i| format!("/p/{i}")).collect();
        let values: Vec<(&str, &str)> = refs.iter().map(|r| (r.as_str(), r.as_str())).collect();
        w.set("ssm.json", &ssm_answer(&values, &[]));
        let secrets: Vec<(String, String)> = refs
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("S{i}"), r.clone()))
            .collect();
        let mut input = sample(&[], Some("true"));
        input.secrets = &secrets;
        let r = w.run(&render(&input));
        assert!(r.status.success(), "{}", r.out);
        let calls: Vec<usize> = r
            .calls
            .lines()
            .filter(|l| l.starts_with("aws ssm"))
            .map(|l| l.split(" --names ").nth(1).unwrap().split(' ').count())
            .collect();
        assert_eq!(calls, [10, 10, 3]);
        let file = w.read("root/etc/stackdrop/worker.secrets.env");
        assert!(
            file.contains("export S0='/p/0'\n") && file.contains("export S22='/p/22'\n"),
            "{file}"
        );
    }
}
