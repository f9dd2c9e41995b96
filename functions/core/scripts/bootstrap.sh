# The body of the stackdrop bootstrap (EC2 user data). functions/core/src/userdata.rs embeds it
# at build time: the user data sets the per-instance values, each a shell-quoted SD_* variable
# (see render()), then writes this file, the helpers' variables before it, to
# /usr/local/lib/stackdrop/bootstrap.sh and sources it.
#
# Every step that fails reports `failed` with the step's name and its error (the instance tag
# stackdrop:bootstrap, the serial console, the log stream {instance-id}/bootstrap) and the script
# exits non-zero. `ok` is reported once, last, after the service stayed active SD_SETTLE seconds.
# SD_ROOT is "" on an instance; the unit tests point it at a scratch folder.
set -Eeuo pipefail
shopt -s inherit_errexit
umask 022

SD_PID=$BASHPID
# Lines above this file's first in the sourced payload: errors name this file's lines.
SD_LINES=$((LINENO - 16))
SD_STEP=begin
SD_ERR=
SD_REPORTED=
SD_STATE=$SD_ROOT/var/lib/stackdrop/$SD_INSTANCE
SD_LIB=$SD_ROOT/usr/local/lib/stackdrop
SD_ETC=$SD_ROOT/etc/stackdrop
SD_UNITS=$SD_ROOT/etc/systemd/system
SD_UNIT=stackdrop-$SD_INSTANCE.service
SD_LOG_UNIT=stackdrop-$SD_INSTANCE-logs.service
mkdir -p -- "$SD_ROOT/var/log"
exec > >(tee -a "$SD_ROOT/var/log/stackdrop-bootstrap.log") 2>&1
export AWS_DEFAULT_REGION="$SD_REGION" AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=8

sd_step() {
  SD_STEP=$1
  SD_ERR=
  echo "stackdrop: $(date -u +%FT%TZ) $*"
}

# A unit (app.service, logs.service) with the instance's values for its @NAME@s (quoted: the
# replacement is literal).
sd_fill_unit() {
  local t=$1
  t=${t//@APP@/"$SD_APP"}
  t=${t//@STACK@/"$SD_STACK"}
  t=${t//@INSTANCE@/"$SD_INSTANCE"}
  t=${t//@USER@/"$SD_USER"}
  t=${t//@REGION@/"$SD_REGION"}
  t=${t//@LOG_GROUP@/"$SD_LOG_GROUP"}
  printf '%s' "$t"
}

# A failed step: the error, then exit (the EXIT trap reports it).
sd_die() {
  SD_ERR=$1
  exit 1
}

# Runs a command, its stderr kept for the report when it fails.
sd_try() {
  local rc=0
  "$@" 2>"$SD_STATE/stderr" || rc=$?
  cat -- "$SD_STATE/stderr" >&2
  if [ "$rc" -ne 0 ]; then
    SD_ERR="$1 exited $rc: $(tail -n 5 -- "$SD_STATE/stderr")"
  fi
  return "$rc"
}

sd_imds() {
  local token
  token=$(curl -sf --connect-timeout 2 --max-time 5 --retry 3 -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300') || return 1
  curl -sf --connect-timeout 2 --max-time 5 --retry 3 -H "X-aws-ec2-metadata-token: $token" \
    "http://169.254.169.254/latest/meta-data/$1"
}

# A JSON string of valid UTF-8 text (control characters but tab and newline dropped).
sd_json() {
  local s
  s=$(printf '%s' "$1" | LC_ALL=C tr -d '\000-\010\013-\037\177')
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$s"
}

# gzip -dc, or Python's where the image has no gzip.
sd_gunzip() {
  if command -v gzip >/dev/null; then
    gzip -dc
  else
    python3 -c 'import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))'
  fi
}

# Any bytes as UTF-8 text (a command's log may hold anything).
sd_text() {
  python3 -c 'import sys; sys.stdout.write(sys.stdin.buffer.read().decode("utf-8", "replace"))'
}

# sd_report ok|failed MESSAGE: the console and the log stream first, then the tag (what the
# deployer polls: by then the reason it reads from the log stream is there). Fails when the tag
# could not be written.
sd_report() {
  local msg="stackdrop bootstrap $1: $2" id rc=0
  SD_REPORTED=$1
  echo "$msg"
  { echo "$msg" >"$SD_ROOT/dev/console"; } 2>/dev/null || true
  if ! id=$(sd_imds instance-id) || [ -z "$id" ]; then
    echo "stackdrop: no instance id from IMDS: the report reaches the console only"
    SD_ERR="no instance id from IMDS"
    return 1
  fi
  aws logs create-log-stream --log-group-name "$SD_LOG_GROUP" --log-stream-name "$id/bootstrap" 2>/dev/null || true
  printf '[{"timestamp": %s, "message": %s}]\n' "$(date +%s%3N)" "$(sd_json "$msg")" >"$SD_STATE/event.json" &&
    aws logs put-log-events --log-group-name "$SD_LOG_GROUP" --log-stream-name "$id/bootstrap" \
      --log-events "file://$SD_STATE/event.json" >/dev/null ||
    echo "stackdrop: the report did not reach the log stream $id/bootstrap"
  aws ec2 create-tags --resources "$id" --tags "Key=stackdrop:bootstrap,Value=$1" >/dev/null ||
    { rc=1; SD_ERR="the tag stackdrop:bootstrap=$1 could not be written"; }
  return "$rc"
}

sd_on_err() {
  [ -n "$SD_ERR" ] || SD_ERR="bootstrap.sh line $(($2 - SD_LINES)): $3 exited $1"
}

sd_on_exit() {
  local rc=$?
  [ "$BASHPID" = "$SD_PID" ] || return "$rc"
  trap - ERR EXIT
  set +e
  rm -f -- "$SD_STATE/bundle.zip"
  if [ "$rc" -ne 0 ] && [ "$SD_REPORTED" != failed ]; then
    sd_report failed "step $SD_STEP: ${SD_ERR:-exited $rc}"
  fi
  exit "$rc"
}

trap 'sd_on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR
trap sd_on_exit EXIT
install -d -m 0700 -- "$SD_STATE"

sd_step tools "(deployment $SD_DEPLOYMENT)"
for tool in aws python3 curl base64 systemctl; do
  command -v "$tool" >/dev/null || sd_die "$tool is not installed on this image"
done

sd_step user "$SD_USER"
if ! getent passwd "$SD_USER" >/dev/null; then
  sd_try useradd --create-home --shell /bin/bash -- "$SD_USER"
fi
SD_HOME=$(getent passwd "$SD_USER" | cut -d: -f6)
SD_UID=$(getent passwd "$SD_USER" | cut -d: -f3)
[ "$SD_UID" != 0 ] || sd_die "user $SD_USER is root (uid 0) on this image; stackdrop never runs the command as root"
SD_GID=$(getent passwd "$SD_USER" | cut -d: -f4)
case $SD_HOME in
  /?*) ;;
  *) sd_die "user $SD_USER has no absolute home folder (${SD_HOME:-none})" ;;
esac
SD_DIR=${SD_HOME%/}/$SD_INSTANCE
install -d -m 0755 -- "$SD_ETC" "$SD_LIB" "$SD_LIB/$SD_INSTANCE" "$SD_UNITS"

# On disk, not in /tmp (a tmpfs of half the RAM on Amazon Linux 2023); removed once extracted.
sd_step download "s3://$SD_BUCKET/$SD_KEY (version ${SD_VERSION:-none}) to $SD_STATE"
sd_get=(s3api get-object --bucket "$SD_BUCKET" --key "$SD_KEY")
[ -z "$SD_VERSION" ] || sd_get+=(--version-id "$SD_VERSION")
for attempt in 1 2 3 4 5; do
  if sd_try aws "${sd_get[@]}" "$SD_STATE/bundle.zip" >/dev/null; then
    break
  fi
  [ "$attempt" -lt 5 ] || exit 1
  sleep $((attempt * 3))
done

sd_step extract "${SD_PREFIX:-the whole bundle} into $SD_DIR (at most $SD_MAX_BYTES bytes)"
printf '%s' "$SD_EXTRACT_PY" >"$SD_LIB/extract.py"
rm -rf -- "$SD_DIR.new"
mkdir -p -- "$SD_DIR.new"
sd_try python3 "$SD_LIB/extract.py" "$SD_STATE/bundle.zip" "$SD_PREFIX" "$SD_DIR.new" "$SD_MAX_BYTES"
rm -f -- "$SD_STATE/bundle.zip"
rm -rf -- "$SD_DIR"
mv -- "$SD_DIR.new" "$SD_DIR"
sd_try chown -R -- "$SD_USER:" "$SD_DIR"

sd_step environment
printf '%s' "$SD_ENV_GZ" | base64 -d | sd_gunzip >"$SD_ETC/$SD_INSTANCE.env"
chmod 0640 -- "$SD_ETC/$SD_INSTANCE.env"
sd_try chgrp -- "$SD_GID" "$SD_ETC/$SD_INSTANCE.env"

# The values are read here, by the instance's own role, and written only to this root-owned
# file (group of the user, 0640) that the service's script sources: never to the user data, the
# log or the console (secrets.py prints names only). Refused calls are retried (a new role's
# policy may take seconds to apply); a missing parameter fails at once, named.
if [ -n "$SD_SECRETS" ]; then
  sd_step secrets "from SSM Parameter Store to $SD_ETC/$SD_INSTANCE.secrets.env"
  printf '%s' "$SD_SECRETS_PY_GZ" | base64 -d | sd_gunzip >"$SD_LIB/secrets.py"
  for attempt in 1 2 3 4 5; do
    sd_rc=0
    sd_try python3 "$SD_LIB/secrets.py" "$SD_ETC/$SD_INSTANCE.secrets.env" "$SD_SECRETS" || sd_rc=$?
    if [ "$sd_rc" -eq 0 ]; then
      break
    fi
    if [ "$sd_rc" -ne 3 ] || [ "$attempt" -eq 5 ]; then
      exit 1
    fi
    sleep $((attempt * 3))
  done
  sd_try chgrp -- "$SD_GID" "$SD_ETC/$SD_INSTANCE.secrets.env"
fi

# The command's output stays in the journal, on disk (reboots, stop/start), bounded.
sd_step logs
install -d -m 0755 -- "$SD_ROOT/etc/systemd/journald.conf.d"
printf '%s\n' '[Journal]' Storage=persistent SystemMaxUse=1G SystemMaxFileSize=64M \
  >"$SD_ROOT/etc/systemd/journald.conf.d/stackdrop.conf"
sd_try systemctl restart systemd-journald
sd_units=()

if [ "$SD_HAS_COMMAND" = 1 ]; then
  sd_step service
  # The service's script: the environment, then the absolute code folder (or fail), then the
  # command as written. Every value is quoted by printf %q: none of it runs but the command.
  {
    printf '#!/bin/bash\n'
    printf '. %q || exit 1\n' "$SD_ETC/$SD_INSTANCE.env"
    [ -z "$SD_SECRETS" ] || printf '. %q || exit 1\n' "$SD_ETC/$SD_INSTANCE.secrets.env"
    printf 'cd -- %q || { echo %q >&2; exit 1; }\n' "$SD_DIR" "stackdrop: the code folder $SD_DIR is missing"
    printf 'exec /bin/bash -c %q\n' "$SD_COMMAND"
  } >"$SD_LIB/$SD_INSTANCE/run"
  chmod 0755 -- "$SD_LIB/$SD_INSTANCE/run"
  sd_fill_unit "$SD_APP_UNIT_TEMPLATE" >"$SD_UNITS/$SD_UNIT"
  printf '%s' "$SD_SHIP_PY" >"$SD_LIB/ship.py"
  sd_fill_unit "$SD_SHIP_UNIT_TEMPLATE" >"$SD_UNITS/$SD_LOG_UNIT"
  sd_units=("$SD_UNIT" "$SD_LOG_UNIT")
fi

sd_step start "${sd_units[*]:-nothing}"
sd_try systemctl daemon-reload
[ "${#sd_units[@]}" = 0 ] || sd_try systemctl enable --now "${sd_units[@]}"

if [ "$SD_HAS_COMMAND" = 1 ]; then
  sd_step settle "$SD_UNIT must stay active ${SD_SETTLE}s"
  for ((i = 0; i < SD_SETTLE; i++)); do
    sleep 1
    sd_state=$(systemctl is-active -- "$SD_UNIT") || true
    sd_restarts=$(systemctl show --property=NRestarts --value -- "$SD_UNIT") || true
    if [ "$sd_state" != active ] || [ "${sd_restarts:-0}" != 0 ]; then
      sd_status=$(systemctl show --property=ExecMainStatus --value -- "$SD_UNIT") || true
      sd_die "the command stopped within ${SD_SETTLE}s (exit status ${sd_status:-unknown}, now ${sd_state:-unknown}, ${sd_restarts:-0} restarts); its last lines:
$(journalctl -u "$SD_UNIT" -n 20 --no-pager -o cat | sd_text)"
    fi
  done
  sd_step report
  sd_report ok "service $SD_UNIT is up"
else
  sd_step report
  sd_report ok "code in place (no command)"
fi
