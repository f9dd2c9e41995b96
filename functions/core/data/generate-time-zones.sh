#!/bin/sh
# Writes time-zones.txt, the IANA time zone names stackdrop-core embeds (src/schedule.rs), from
# tzdata's compact source `tzdata.zi` (Debian's and Ubuntu's tzdata package install it as
# /usr/share/zoneinfo/tzdata.zi). Run by `make time-zones`:
#
#     sh generate-time-zones.sh TZDATA_ZI OUT_FILE
#
# One name a line, sorted bytewise: every Zone and every Link of the database (Links are the
# older names kept for compatibility, such as Europe/Kiev and US/Eastern), except "Factory",
# which is no place. The first line names the tzdata version.
set -eu
in=${1:?usage: generate-time-zones.sh TZDATA_ZI OUT_FILE}
out=${2:?usage: generate-time-zones.sh TZDATA_ZI OUT_FILE}

version=$(sed -n 's/^# version //p' "$in" | head -n 1)
if [ -z "$version" ]; then
  echo "$in: no '# version' line: is this tzdata.zi?" >&2
  exit 1
fi
tmp="$out.tmp"
{
  echo "# IANA time zone names from tzdata $version (functions/core/data/generate-time-zones.sh)"
  awk '$1 == "Z" { print $2 } $1 == "L" { print $3 }' "$in" | grep -v -x 'Factory' | LC_ALL=C sort -u
} >"$tmp"

# The Rust reader relies on these shapes: fail here rather than embed something it misreads.
if sed 1d "$tmp" | grep -v -x -E '[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*' >&2; then
  echo "$in: unexpected zone names (above)" >&2
  rm -f "$tmp"
  exit 1
fi
for name in UTC Europe/Amsterdam America/Argentina/Buenos_Aires; do
  if ! grep -q -x "$name" "$tmp"; then
    echo "$in: $name is missing" >&2
    rm -f "$tmp"
    exit 1
  fi
done
mv "$tmp" "$out"
echo "$out: $(($(wc -l <"$out") - 1)) zones, tzdata $version"
