"""The template's EventBridge rules (rules.py) decide what each S3 event of the bucket starts."""

import copy
import os
import sys

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rules  # noqa: E402
import template as tpl  # noqa: E402


def s3_event(detail_type, bucket="stackdrop-bundles", **detail):
    """An S3 event as EventBridge delivers it (S3 user guide, "EventBridge event message
    structure")."""
    return {
        "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": detail_type,
        "source": "aws.s3", "account": "123456789012", "time": "2026-12-03T10:00:00Z",
        "region": "us-east-1", "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket},
                   "object": {"key": "jobs.zip", "version-id": "v1"}, **detail},
    }


CREATED = s3_event("Object Created", reason="PutObject")
MARKER = s3_event("Object Deleted", reason="DeleteObject", **{"deletion-type": "Delete Marker Created"})
PERMANENT = s3_event("Object Deleted", reason="DeleteObject", **{"deletion-type": "Permanently Deleted"})
LIFECYCLE = s3_event("Object Deleted", reason="Lifecycle Expiration",
                     **{"deletion-type": "Permanently Deleted"})


@pytest.fixture(scope="module")
def template_rules():
    return rules.from_template()


def test_an_upload_starts_the_deploy_and_nothing_else(template_rules):
    assert rules.machines_for(template_rules, CREATED) == [("stackdrop-deploy-on-upload", "stackdrop-deploy")]


def test_aws_s3_rm_and_a_permanent_delete_start_the_teardown(template_rules):
    for event in (MARKER, PERMANENT):
        assert rules.machines_for(template_rules, event) == [("stackdrop-teardown-on-delete", "stackdrop-teardown")]


def test_the_buckets_own_housekeeping_and_other_buckets_start_nothing(template_rules):
    other = copy.deepcopy(CREATED)
    other["detail"]["bucket"]["name"] = "someone-elses"
    restored = s3_event("Object Restore Completed")
    no_type = copy.deepcopy(MARKER)
    del no_type["detail"]["deletion-type"]
    for event in (LIFECYCLE, other, restored, no_type):
        assert rules.machines_for(template_rules, event) == [], event


def test_the_bucket_is_the_local_one_and_a_disabled_rule_matches_nothing(tmp_path):
    doc = tpl.load_template()
    doc["Resources"]["DeployOnUploadRule"]["Properties"]["State"] = "DISABLED"
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(doc))  # the CFN tags load as {"Ref": ...}: plain YAML
    mine = copy.deepcopy(CREATED)
    mine["detail"]["bucket"]["name"] = "my-bundles"
    got = rules.from_template(str(path), bucket="my-bundles")
    assert rules.machines_for(got, mine) == []
    assert rules.machines_for(rules.from_template(bucket="my-bundles"), mine) == [
        ("stackdrop-deploy-on-upload", "stackdrop-deploy")]


def test_a_template_without_rules_is_refused(tmp_path):
    doc = tpl.load_template()
    doc["Resources"] = {k: v for k, v in doc["Resources"].items() if v["Type"] != "AWS::Events::Rule"}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="no AWS::Events::Rule"):
        rules.from_template(str(path))

