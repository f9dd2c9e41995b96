//! The bootstrap script each instance runs (EC2 user data).
//!
//! Strict bash, everything logged to `/var/log/stackdrop-bootstrap.log` (and, through cloud-init,
//! the console). Every value that comes from the bundle or the S3 event reaches the script only
//! single-quoted or base64-encoded, so no field can inject shell. It:
//! 1. downloads exactly the deployed bundle version,
//! 2. extracts only the instance's code folder into the user's home (`~user/{instance}`),
//! 3. writes the environment file (system variables, then the user's) that the service sources,
//! 4. runs `command` as `user` in that folder under systemd (`Restart=on-failure`), its output
//!    appended to `/var/log/stackdrop/{instance}.log` and shipped to the log group,
//! 5. reports success or failure outside the instance: the instance tag `stackdrop:bootstrap`
//!    (`ok` / `failed`), a line on the serial console (GetConsoleOutput) and a log stream
//!    `{instance-id}/bootstrap` in the log group.

use base64::Engine as _;

/// EC2's limit on raw user data.
pub const USER_DATA_MAX: usize = 16 * 1024;

pub const BOOTSTRAP_TAG: &str = "stackdrop:bootstrap";

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
    pub user: &'a str,
    pub command: Option<&'a str>,
    pub environment: &'a [(String, String)],
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

/// The script the service runs as the user: source the environment, go to the code, exec the
/// command through bash (the command *is* shell, by design; nothing else is).
pub fn render_run_script(instance: &str, command: &str) -> String {
    format!(
        "#!/bin/bash\n. /etc/stackdrop/{instance}.env\ncd -- \"$HOME\"/{instance}\nexec /bin/bash -c {}\n",
        shell_quote(command)
    )
}

fn unit(input: &UserDataInput) -> String {
    let i = input.instance;
    format!(
        "[Unit]\nDescription=stackdrop {app}/{stack}/{i}\nWants=network-online.target\nAfter=network-online.target\nStartLimitIntervalSec=0\n\n\
[Service]\nType=simple\nUser={user}\nWorkingDirectory=~\nExecStart=/usr/local/lib/stackdrop/{i}/run\nRestart=on-failure\nRestartSec=5\n\
StandardOutput=append:/var/log/stackdrop/{i}.log\nStandardError=inherit\n\n[Install]\nWantedBy=multi-user.target\n",
        app = input.app,
        stack = input.stack,
        user = input.user,
    )
}

fn ship_unit(input: &UserDataInput) -> String {
    let i = input.instance;
    format!(
        "[Unit]\nDescription=stackdrop log shipper for {i}\nWants=network-online.target\nAfter=network-online.target\nStartLimitIntervalSec=0\n\n\
[Service]\nType=simple\nExecStart=/usr/bin/python3 /usr/local/lib/stackdrop/ship.py /var/log/stackdrop/{i}.log /etc/stackdrop/{i}.env app\nRestart=always\nRestartSec=10\n\n\
[Install]\nWantedBy=multi-user.target\n"
    )
}

/// Ships a log file to CloudWatch Logs in batches (python3 and the AWS CLI are on Amazon Linux).
const SHIP_PY: &str = r#"import json, os, subprocess, sys, tempfile, time, urllib.request
path, envfile, suffix = sys.argv[1:4]
env = {}
for line in open(envfile, encoding="utf-8"):
    if line.startswith("export CLOUDWATCH_LOG_GROUP_NAME="):
        env["group"] = line.split("=", 1)[1].strip().strip("'")
def imds(p):
    t = urllib.request.urlopen(urllib.request.Request("http://169.254.169.254/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"}), timeout=5).read().decode()
    return urllib.request.urlopen(urllib.request.Request("http://169.254.169.254/latest/meta-data/" + p, headers={"X-aws-ec2-metadata-token": t}), timeout=5).read().decode()
group, stream = env["group"], imds("instance-id") + "/" + suffix
aws = ["aws", "logs", "--log-group-name", group, "--log-stream-name", stream]
subprocess.run(aws[:2] + ["create-log-stream"] + aws[2:], stderr=subprocess.DEVNULL)
while not os.path.exists(path):
    time.sleep(2)
f, batch, size, last = open(path, "rb"), [], 0, time.time()
while True:
    line = f.readline()
    if line:
        msg = line.decode("utf-8", "replace").rstrip("\n")[:200000] or " "
        batch.append({"timestamp": int(time.time() * 1000), "message": msg})
        size += len(msg) + 26
    if batch and (len(batch) >= 1000 or size > 800000 or (not line and time.time() - last >= 5)):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as t:
            json.dump(batch, t)
        subprocess.run(aws[:2] + ["put-log-events"] + aws[2:] + ["--log-events", "file://" + t.name])
        os.unlink(t.name)
        batch, size, last = [], 0, time.time()
    if not line:
        time.sleep(1)
"#;

/// Extracts one folder of the zip, refusing entries that would leave the target.
const EXTRACT_PY: &str = r#"import os, shutil, sys, zipfile
zpath, prefix, dest = sys.argv[1:4]
n = 0
with zipfile.ZipFile(zpath) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        parts = name[len(prefix):].split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in name:
            sys.exit("refusing zip entry %r" % name)
        target = os.path.join(dest, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        mode = (info.external_attr >> 16) & 0o777
        os.chmod(target, mode if mode else 0o644)
        n += 1
print("extracted %d file(s)" % n)
"#;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Writes `content` to `path` with `mode`, carried as base64 so nothing in it is interpreted.
fn write_file(out: &mut String, path: &str, mode: &str, content: &str) {
    out.push_str(&format!(
        "printf %s '{}' | base64 -d > {path}\nchmod {mode} {path}\n",
        b64(content)
    ));
}

/// Renders the whole user data script.
pub fn render(input: &UserDataInput) -> String {
    let q = shell_quote;
    let i = input.instance;
    let mut env = system_environment(input);
    env.extend(input.environment.iter().cloned());
    let mut s = String::with_capacity(8 * 1024);
    s.push_str(&format!(
        "#!/bin/bash\n# stackdrop bootstrap: {app}/{stack}/{i}, deployment {d}\n\
set -euo pipefail\numask 022\nexec > >(tee -a /var/log/stackdrop-bootstrap.log) 2>&1\n",
        app = input.app,
        stack = input.stack,
        d = input.deployment
    ));
    s.push_str(&format!(
        "SD_INSTANCE={}\nSD_DEPLOYMENT={}\nSD_REGION={}\nSD_LOG_GROUP={}\nSD_BUCKET={}\nSD_KEY={}\nSD_VERSION={}\nSD_PREFIX={}\nSD_USER={}\n",
        q(i),
        q(input.deployment),
        q(input.region),
        q(input.log_group),
        q(input.bucket),
        q(input.key),
        q(input.version_id.unwrap_or("")),
        q(input.zip_prefix),
        q(input.user),
    ));
    s.push_str(
        r#"export AWS_DEFAULT_REGION="$SD_REGION" AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=8
sd_step() { echo "stackdrop: $(date -u +%FT%TZ) $*"; }
sd_imds() {
  local t
  t=$(curl -sf -X PUT http://169.254.169.254/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || return 1
  curl -sf -H "X-aws-ec2-metadata-token: $t" "http://169.254.169.254/latest/meta-data/$1"
}
sd_report() {
  set +e
  local id msg="stackdrop bootstrap $1: $2"
  echo "$msg"; echo "$msg" > /dev/console 2>/dev/null
  id=$(sd_imds instance-id)
  [ -n "$id" ] || return 0
  aws ec2 create-tags --resources "$id" --tags "Key=stackdrop:bootstrap,Value=$1" >/dev/null
  aws logs create-log-stream --log-group-name "$SD_LOG_GROUP" --log-stream-name "$id/bootstrap" 2>/dev/null
  python3 -c 'import json,sys,time; print(json.dumps([{"timestamp": int(time.time()*1000), "message": sys.argv[1]}]))' "$msg" > /tmp/stackdrop-event.json &&
    aws logs put-log-events --log-group-name "$SD_LOG_GROUP" --log-stream-name "$id/bootstrap" --log-events file:///tmp/stackdrop-event.json >/dev/null
}
trap 'sd_report failed "line $LINENO: $BASH_COMMAND exited $?"' ERR
for tool in aws python3 curl base64 systemctl; do
  command -v "$tool" >/dev/null || { sd_report failed "$tool is not installed on this image"; exit 1; }
done
sd_step "user $SD_USER"
id -u "$SD_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash -- "$SD_USER"
SD_HOME=$(getent passwd "$SD_USER" | cut -d: -f6)
SD_DIR="$SD_HOME/$SD_INSTANCE"
install -d -m 0755 /etc/stackdrop /usr/local/lib/stackdrop "/usr/local/lib/stackdrop/$SD_INSTANCE" /var/log/stackdrop
SD_WORK=$(mktemp -d)
sd_step "download s3://$SD_BUCKET/$SD_KEY (version ${SD_VERSION:-none})"
sd_get=(s3api get-object --bucket "$SD_BUCKET" --key "$SD_KEY")
[ -z "$SD_VERSION" ] || sd_get+=(--version-id "$SD_VERSION")
for attempt in 1 2 3 4 5; do
  aws "${sd_get[@]}" "$SD_WORK/bundle.zip" >/dev/null && break
  [ "$attempt" -lt 5 ] || false
  sleep $((attempt * 3))
done
"#,
    );
    write_file(
        &mut s,
        "/usr/local/lib/stackdrop/extract.py",
        "0644",
        EXTRACT_PY,
    );
    s.push_str(
        r#"sd_step "extract ${SD_PREFIX:-the bundle} into $SD_DIR"
rm -rf -- "$SD_DIR.new"
mkdir -p -- "$SD_DIR.new"
python3 /usr/local/lib/stackdrop/extract.py "$SD_WORK/bundle.zip" "$SD_PREFIX" "$SD_DIR.new"
rm -rf -- "$SD_DIR" "$SD_WORK"
mv -- "$SD_DIR.new" "$SD_DIR"
chown -R -- "$SD_USER:" "$SD_DIR"
sd_step "environment"
"#,
    );
    let env_path = format!("/etc/stackdrop/{i}.env");
    write_file(&mut s, &env_path, "0640", &render_env_file(&env));
    s.push_str(&format!(
        "chgrp -- \"$(id -gn -- \"$SD_USER\")\" {env_path}\n"
    ));
    write_file(&mut s, "/usr/local/lib/stackdrop/ship.py", "0644", SHIP_PY);
    write_file(
        &mut s,
        &format!("/etc/systemd/system/stackdrop-{i}-logs.service"),
        "0644",
        &ship_unit(input),
    );
    let mut units = format!("stackdrop-{i}-logs.service");
    if let Some(command) = input.command {
        s.push_str("sd_step \"service\"\n");
        write_file(
            &mut s,
            &format!("/usr/local/lib/stackdrop/{i}/run"),
            "0755",
            &render_run_script(i, command),
        );
        write_file(
            &mut s,
            &format!("/etc/systemd/system/stackdrop-{i}.service"),
            "0644",
            &unit(input),
        );
        units = format!("stackdrop-{i}.service {units}");
    }
    s.push_str(&format!(
        "touch /var/log/stackdrop/{i}.log\nsystemctl daemon-reload\nsystemctl enable --now {units}\n\
sd_report ok \"{}\"\n",
        if input.command.is_some() { "service started" } else { "code in place (no command)" }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

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
            user: "ec2-user",
            command,
            environment: env,
        }
    }

    /// Runs `script` in real bash and returns stdout; fails the test on a non-zero exit.
    fn bash(script: &str, dir: &std::path::Path) -> Vec<u8> {
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
    fn read_back(vars: &[(String, String)], dir: &std::path::Path) -> Vec<Vec<u8>> {
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
    fn rendered_user_data_is_valid_bash() {
        let env = vec![("NODE_ENV".to_string(), "production".to_string())];
        let ud = render(&sample(&env, Some("npm install && npm start")));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ud.sh"), &ud).unwrap();
        bash("bash -n ud.sh", dir.path());
        assert!(ud.starts_with("#!/bin/bash\n"));
        assert!(ud.contains("set -euo pipefail"));
    }

    #[test]
    fn embedded_files_decode_to_what_was_rendered() {
        // Replays every `printf %s '<b64>' | base64 -d > PATH` line into a temp root and compares.
        let env = vec![("GREETING".to_string(), "it's $(not) run".to_string())];
        let input = sample(&env, Some("echo \"$GREETING\" && sleep 1"));
        let ud = render(&input);
        let dir = tempfile::tempdir().unwrap();
        let mut writes = 0;
        for line in ud.lines().filter(|l| l.starts_with("printf %s '")) {
            let path = line.rsplit("> ").next().unwrap();
            let local = dir
                .path()
                .join(path.trim_start_matches('/').replace('/', "_"));
            let cmd = line.replace(&format!("> {path}"), &format!("> '{}'", local.display()));
            bash(&cmd, dir.path());
            let got = std::fs::read_to_string(&local).unwrap();
            if path.ends_with(".env") {
                let mut all = system_environment(&input);
                all.extend(env.iter().cloned());
                assert_eq!(got, render_env_file(&all));
            } else if path.ends_with("/run") {
                assert_eq!(
                    got,
                    render_run_script("worker", "echo \"$GREETING\" && sleep 1")
                );
            } else if path.ends_with("stackdrop-worker.service") {
                assert!(
                    got.contains("\nUser=ec2-user\n") && got.contains("\nRestart=on-failure\n"),
                    "{got}"
                );
            }
            writes += 1;
        }
        assert_eq!(writes, 6, "extract.py, env, ship.py, log unit, run, unit");
    }

    #[test]
    fn run_script_runs_the_command_as_written_in_the_code_folder() {
        // The service's own script, in real bash: sources the env, cds into $HOME/worker, execs.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("worker")).unwrap();
        let env_file = render_env_file(&[("GREETING".into(), "it's `fine` $(x)".into())]);
        let script = render_run_script(
            "worker",
            "printf '%s|%s' \"$GREETING\" \"$(basename \"$PWD\")\"",
        )
        .replace(
            "/etc/stackdrop/worker.env",
            &dir.path().join("env").display().to_string(),
        );
        std::fs::write(dir.path().join("env"), env_file).unwrap();
        std::fs::write(dir.path().join("run"), script).unwrap();
        let out = Command::new("bash")
            .arg("run")
            .env_clear()
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's `fine` $(x)|worker"
        );
    }

    #[test]
    fn hostile_bucket_key_and_user_never_reach_the_shell_unquoted() {
        let env = vec![];
        let mut input = sample(&env, Some("true"));
        input.key = "x'; touch pwned; echo '$(touch pwned)`touch pwned`";
        let ud = render(&input);
        // Execute only the variable block of the script and read the key back.
        let vars: String = ud
            .lines()
            .filter(|l| l.starts_with("SD_"))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let out = bash(&format!("{vars}printf %s \"$SD_KEY\""), dir.path());
        assert_eq!(String::from_utf8(out).unwrap(), input.key);
        assert!(!dir.path().join("pwned").exists());
    }

    #[test]
    fn no_command_means_no_service_unit() {
        let ud = render(&sample(&[], None));
        assert!(!ud.contains("/etc/systemd/system/stackdrop-worker.service"));
        assert!(ud.contains("stackdrop-worker-logs.service"));
    }

    #[test]
    fn extract_script_takes_only_the_code_folder_and_refuses_escapes() {
        if Command::new("python3").arg("--version").output().is_err() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let zpath = dir.path().join("b.zip");
        {
            use std::io::Write;
            let mut z = zip::ZipWriter::new(std::fs::File::create(&zpath).unwrap());
            let o = zip::write::SimpleFileOptions::default();
            for (name, body) in [
                ("root/app.json", "{}"),
                ("root/src/worker/main.sh", "echo hi"),
                ("root/src/other/x", "no"),
            ] {
                z.start_file(name, o).unwrap();
                z.write_all(body.as_bytes()).unwrap();
            }
            z.finish().unwrap();
        }
        std::fs::write(dir.path().join("extract.py"), EXTRACT_PY).unwrap();
        let out = bash(
            "python3 extract.py b.zip root/src/worker/ out && find out -type f | sort",
            dir.path(),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "extracted 1 file(s)\nout/main.sh\n"
        );
    }
}
