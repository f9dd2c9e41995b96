#!/bin/bash
# User data of the real guest tests (test_real_guests.py): every effect is checked from the guest
# or through the EC2 API.
set -euo pipefail
mkdir -p /var/lib/ud-test
echo "$(id -u) $(date +%s%N)" >> /var/lib/ud-test/runs          # once per instance, as root
useradd --create-home appuser
cat > /etc/systemd/system/ud-test.service <<'UNIT'
[Unit]
Description=A unit the test user data creates and enables

[Service]
User=appuser
ExecStartPre=+/bin/sh -c 'cat /proc/sys/kernel/random/boot_id >> /var/lib/ud-test/unit-starts'
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now ud-test.service
# The AWS CLI finds no keys but IMDSv2 role credentials, and local AWS through AWS_ENDPOINT_URL.
aws sts get-caller-identity --output text --query Arn > /var/lib/ud-test/caller
token=$(curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
    http://169.254.169.254/latest/api/token)
iid=$(curl -sf -H "X-aws-ec2-metadata-token: $token" \
    http://169.254.169.254/latest/meta-data/instance-id)
aws ec2 create-tags --resources "$iid" --tags Key=user-data,Value=ran
