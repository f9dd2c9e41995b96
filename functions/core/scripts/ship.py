"""Ships a log file to CloudWatch Logs in batches (python3 and the AWS CLI are on Amazon Linux).

Usage: python3 ship.py LOG_FILE ENV_FILE STREAM_SUFFIX
"""
import json, os, subprocess, sys, tempfile, time, urllib.request
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
