"""samconfig.toml.example (what `make deploy` reads once copied) against template.yaml, and the record of the
smoke's RunTask (scripts/smoke.py) against the rule the example's parameters deploy.

The overrides are read the way the SAM CLI reads a list of "Key=Value" strings (a value in double quotes has
them removed); every key must be a parameter of template.yaml and every value one it allows.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import tomllib
from pathlib import Path

import pytest

from test_template import engine, rendered_pattern, template  # noqa: F401  (fixtures and the pattern renderer)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "samconfig.toml.example"
sys.path.insert(0, str(REPO / "scripts"))

import smoke  # noqa: E402

# IAM resources whose own name property makes CloudFormation ask for CAPABILITY_NAMED_IAM.
NAMED_IAM = {"AWS::IAM::Role": "RoleName", "AWS::IAM::User": "UserName", "AWS::IAM::Group": "GroupName",
             "AWS::IAM::ManagedPolicy": "ManagedPolicyName", "AWS::IAM::InstanceProfile": "InstanceProfileName"}


@pytest.fixture(scope="module")
def config() -> dict:
    with open(EXAMPLE, "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def overrides(config) -> dict[str, str]:
    items = config["default"]["deploy"]["parameters"]["parameter_overrides"]
    assert isinstance(items, list) and items, "parameter_overrides: a list of \"Key=Value\" strings"
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z0-9]+", key), f"not Key=Value: {item!r}"
        assert key not in out, f"{key} given twice"
        out[key] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return out


def test_example_names_the_stack_and_deploys_without_questions(config):
    deploy = config["default"]["deploy"]["parameters"]
    assert config["default"]["global"]["parameters"]["stack_name"] == "ecs-rerun"
    assert deploy["resolve_s3"] is True
    assert deploy["confirm_changeset"] is False
    assert re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", deploy["region"]), deploy["region"]
    assert config["default"]["build"]["parameters"]["beta_features"] is True


def test_capabilities_are_what_the_template_needs(config, template):  # noqa: F811
    named = [name for name, res in template["Resources"].items()
             if NAMED_IAM.get(res["Type"]) in (res.get("Properties") or {})]
    caps = config["default"]["deploy"]["parameters"]["capabilities"].split()
    assert caps == (["CAPABILITY_NAMED_IAM"] if named else ["CAPABILITY_IAM"]), named


def allowed(spec: dict, value: str) -> bool:
    items = value.split(",") if spec["Type"] == "CommaDelimitedList" else [value]
    for item in items:
        if "AllowedValues" in spec and item not in [str(v) for v in spec["AllowedValues"]]:
            return False
        if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], item):
            return False
        if spec["Type"] == "Number":
            if not re.fullmatch(r"-?\d+(\.\d+)?", item):
                return False
            if not float(spec.get("MinValue", "-inf")) <= float(item) <= float(spec.get("MaxValue", "inf")):
                return False
    return True


def test_every_override_is_a_template_parameter_with_an_allowed_value(overrides, template):  # noqa: F811
    params = template["Parameters"]
    for key, value in overrides.items():
        assert key in params, f"{key} is not a parameter of template.yaml"
        assert allowed(params[key], value), f"{key}={value!r} is not allowed by template.yaml"
    required = {name for name, spec in params.items() if "Default" not in spec}
    assert required <= overrides.keys(), f"parameters without a default missing: {required - overrides.keys()}"
    for must in ("PassRoleArns", "TaskFamilies", "Clusters"):
        assert must in overrides
    assert overrides["DryRun"] == "true", "the example rolls out in dry run"


def test_allowed_rejects_what_the_template_refuses(template):  # noqa: F811
    params = template["Parameters"]
    assert not allowed(params["DryRun"], "yes")
    assert not allowed(params["PassRoleArns"], "arn:aws:iam::123456789012:role/a,*")
    assert not allowed(params["Clusters"], "arn:aws:ecs:us-east-1:123456789012:cluster/batch")
    assert not allowed(params["MaxAttempts"], "11")
    assert allowed(params["MaxAttempts"], "10")


def smoke_record(cluster: str, family: str, **answer) -> dict:
    target = smoke.Target(stack="ecs-rerun", function_name="f", log_group="/aws/lambda/f", cluster=cluster,
                          family=family)
    provoked = smoke.Provoked(smoke.impossible_request(target, "0123456789abcdef"),
                              dt.datetime.now(dt.timezone.utc), "req-1", **answer)
    identity = {"Account": "111122223333", "UserId": "AIDAEXAMPLE", "Arn": "arn:aws:iam::111122223333:user/ops"}
    return smoke.cloudtrail_event(provoked, identity, "us-east-1")


@pytest.mark.parametrize("answer", [
    {"response": {"tasks": [], "failures": [{"arn": "arn:aws:ecs:us-east-1:111122223333:container-instance/b/1",
                                             "reason": "MemberOf placement constraint unsatisfied."}]}},
    {"error_code": "InvalidParameterException", "error_message": "No Container Instances were found in your cluster."},
], ids=["placement-failure", "api-error"])
def test_the_smokes_record_matches_the_deployed_rule(overrides, template, engine, answer):  # noqa: F811
    clusters, families = overrides["Clusters"], overrides["TaskFamilies"]
    pattern = rendered_pattern(template, Clusters=clusters, TaskFamilies=families)
    cluster, family = clusters.split(",")[0], families.split(",")[0]
    assert engine(pattern, smoke_record(cluster, family, **answer))
    # ... and not one on a cluster the stack does not watch (the smoke refuses CLUSTER= outside Clusters).
    assert not engine(pattern, smoke_record("not-watched", family, **answer))
