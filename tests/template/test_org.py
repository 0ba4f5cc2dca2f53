"""Organization mode (issue 20): template.yaml's OrganizationId / MemberRoleName, and member.yaml.

- Both parameters empty: nothing of the organization is rendered (the single-account stack, which the rest of
  tests/template pins down, resource for resource).
- OrganizationId set: the organization bus and its policy, the same rules on it with the same patterns.
- MemberRoleName set: sts:AssumeRole on exactly that role name, scoped to the organization; the variable.
- member.yaml: plain CloudFormation, cfn-lint clean; its default-bus rules have exactly the central stack's patterns
  and target the central bus with a role; the member role trusts only the central function's role in the
  organization and has the single-account role's ECS permissions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import decode

from test_template import REPO, Cfn, params_for, rendered_pattern, role_statements, template  # noqa: F401 (fixture)

MEMBER = REPO / "member.yaml"
ORG = {"OrganizationId": "o-abcdef1234", "MemberRoleName": "ecs-rerun-member"}
CENTRAL_ROLE = "arn:aws:iam::111122223333:role/ecs-rerun-EcsRerunRole-1"


@pytest.fixture(scope="module")
def member() -> dict:
    tpl, matches = decode(str(MEMBER))
    assert not matches, [str(m) for m in matches]
    return json.loads(json.dumps(tpl))


def member_params(member: dict, **overrides) -> dict:
    base = {
        "CentralAccountId": "111122223333",
        "CentralEventBusArn": "arn:aws:events:us-east-1:111122223333:event-bus/ecs-rerun-org",
        "CentralFunctionRoleArn": CENTRAL_ROLE,
        "CentralFunctionName": "ecs-rerun-fn",
        "OrganizationId": ORG["OrganizationId"],
    }
    return params_for(member, **{**base, **overrides})


def rendered(template: dict, **params) -> dict:
    """Every resource the stack creates with these parameters, intrinsics evaluated."""
    cfn = Cfn(template, params_for(template, **params))
    return {
        name: cfn.eval(res)
        for name, res in template["Resources"].items()
        if "Condition" not in res or cfn.condition(res["Condition"])
    }


def test_both_empty_renders_nothing_of_the_organization(template):
    res = rendered(template)
    assert not [n for n in res if n.startswith("Org")]
    text = json.dumps(res)
    for trace in ["OrgEventBus", "sts:AssumeRole\", \"Resource", "ECS_RERUN_MEMBER_ROLE", "aws:ResourceOrgID",
                  "aws:PrincipalOrgID"]:
        assert trace not in text, trace
    env = res["EcsRerunFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ECS_RERUN_ALLOWED_ACCOUNTS"] == ""
    # The organization's parameters change nothing else: with them set, the single-account resources render the
    # same but for the role's extra statement, the variables and the dead-letter policy's extra sources.
    org = rendered(template, **ORG, RerunStoppedTasks="failed-to-start")
    plain = rendered(template, RerunStoppedTasks="failed-to-start")
    changed = sorted(n for n in plain if org[n] != plain[n])
    assert changed == ["EcsRerunFunction", "EcsRerunRole", "RuleDeadLetterQueuePolicy"], changed


def test_the_organization_bus_takes_ecs_events_from_the_organization_only(template):
    res = rendered(template, **ORG)
    policy = res["OrgEventBusPolicy"]["Properties"]
    assert policy["EventBusName"] == "<ref:OrgEventBus>"
    assert policy["Statement"] == {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "events:PutEvents",
        "Resource": "arn:aws:events:us-east-1:111122223333:event-bus/OrgEventBus",
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORG["OrganizationId"], "events:source": "aws.ecs"}},
    }


@pytest.mark.parametrize("clusters", ["", "batch,web", "batch,default"])
@pytest.mark.parametrize("rule", ["FailedRunTaskRule", "StartedRunTaskRule", "StoppedTaskRule"])
def test_the_organization_bus_has_the_same_rules(template, rule, clusters):
    params = {**ORG, "Clusters": clusters, "RerunStoppedTasks": "failed-to-start-and-spot"}
    assert rendered_pattern(template, f"Org{rule}", **params) == rendered_pattern(template, rule, **params)
    res = rendered(template, **params)
    org, plain = res[f"Org{rule}"]["Properties"], res[rule]["Properties"]
    assert org["EventBusName"] == "<ref:OrgEventBus>" and plain["EventBusName"] == "default"
    assert org["Targets"] == plain["Targets"]
    perm = res[f"Org{rule}Permission"]["Properties"]
    assert perm["SourceArn"] == f"arn:aws:events:us-east-1:111122223333:rule/Org{rule}"
    sources = res["RuleDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Condition"]
    assert perm["SourceArn"] in sources["ArnEquals"]["aws:SourceArn"]


def test_the_function_may_assume_exactly_the_member_role_in_the_organization(template):
    assert not [s for s in role_statements(template) if "sts:AssumeRole" in json.dumps(s)]
    (grant,) = [s for s in role_statements(template, **ORG) if s.get("Action") == "sts:AssumeRole"]
    assert grant["Resource"] == "arn:aws:iam::*:role/ecs-rerun-member"
    assert grant["Condition"] == {"StringEquals": {"aws:ResourceOrgID": ORG["OrganizationId"]}}
    env = rendered(template, **ORG)["EcsRerunFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ECS_RERUN_MEMBER_ROLE"] == "ecs-rerun-member"
    assert env["ECS_RERUN_ALLOWED_ACCOUNTS"] == "*"
    listed = rendered(template, **ORG, AllowedAccounts="444455556666")
    assert listed["EcsRerunFunction"]["Properties"]["Environment"]["Variables"]["ECS_RERUN_ALLOWED_ACCOUNTS"] == (
        "444455556666")


def test_member_template_is_plain_cloudformation_and_lint_clean(member):
    assert "Transform" not in member
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    run = subprocess.run([str(cfn_lint), str(MEMBER)], capture_output=True, text=True)
    # a bit mask: 2 = error, 4 = warning, 8 = informational, 0 = clean
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("clusters", ["", "batch,web", "batch,default"])
@pytest.mark.parametrize("stopped", ["failed-to-start", "failed-to-start-and-spot"])
@pytest.mark.parametrize("rule", ["FailedRunTaskRule", "StartedRunTaskRule", "StoppedTaskRule"])
def test_member_rules_have_the_central_patterns(template, member, rule, clusters, stopped):
    central = rendered_pattern(template, rule, Clusters=clusters, RerunStoppedTasks=stopped, **ORG)
    cfn = Cfn(member, member_params(member, Clusters=clusters, RerunStoppedTasks=stopped))
    props = cfn.eval(member["Resources"][rule]["Properties"])
    mine = json.loads(props["EventPattern"])
    if rule == "StartedRunTaskRule":
        # The one difference: the function's own launches here are made in its session under the member role.
        own = mine["detail"]["userIdentity"]["$or"][1]["arn"][0]
        assert own == {"anything-but": "arn:aws:sts::111122223333:assumed-role/ecs-rerun-member/ecs-rerun-fn"}
        mine["detail"]["userIdentity"]["$or"][1] = central["detail"]["userIdentity"]["$or"][1]
    assert mine == central
    assert props["EventBusName"] == "default"
    (target,) = props["Targets"]
    assert target["Arn"] == "arn:aws:events:us-east-1:111122223333:event-bus/ecs-rerun-org"
    assert target["RoleArn"] == "arn:aws:iam::111122223333:role/ForwardRole"


def test_member_rules_for_stopped_tasks_only_with_rerun_stopped_tasks(member):
    cfn = Cfn(member, member_params(member))
    assert not cfn.condition("RerunStopped")
    assert member["Resources"]["StartedRunTaskRule"]["Condition"] == "RerunStopped"
    assert member["Resources"]["StoppedTaskRule"]["Condition"] == "RerunStopped"


def test_the_forward_role_may_only_put_events_on_the_central_bus(member):
    cfn = Cfn(member, member_params(member))
    role = cfn.eval(member["Resources"]["ForwardRole"]["Properties"])
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    (policy,) = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": "events:PutEvents",
         "Resource": "arn:aws:events:us-east-1:111122223333:event-bus/ecs-rerun-org"}
    ]


def test_the_member_role_trusts_only_the_central_function_in_the_organization(member):
    assert member["Resources"]["MemberRole"]["Condition"] == "CreateMemberRole"
    assert not Cfn(member, member_params(member, CreateRole="false")).condition("CreateMemberRole")
    cfn = Cfn(member, member_params(member))
    role = cfn.eval(member["Resources"]["MemberRole"]["Properties"])
    assert role["RoleName"] == "ecs-rerun-member" and role["MaxSessionDuration"] == 3600
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    assert trust["Condition"] == {
        "ArnEquals": {"aws:PrincipalArn": CENTRAL_ROLE},
        "StringEquals": {"aws:PrincipalOrgID": ORG["OrganizationId"]},
    }


@pytest.mark.parametrize("clusters", ["", "batch,default"])
@pytest.mark.parametrize("families", ["*", "nightly,report"])
def test_the_member_role_has_the_function_roles_ecs_permissions(template, member, clusters, families):
    """The same ECS statements as the single-account role, but in every Region of the member's own account."""
    central = [s for s in role_statements(template, Clusters=clusters, TaskFamilies=families)
               if any(a.startswith(("ecs:", "iam:")) for a in (s["Action"] if isinstance(s["Action"], list)
                                                               else [s["Action"]]))]
    cfn = Cfn(member, member_params(member, Clusters=clusters, TaskFamilies=families))
    (policy,) = cfn.eval(member["Resources"]["MemberRole"]["Properties"])["Policies"]
    mine = policy["PolicyDocument"]["Statement"]
    # the member's ARNs: its account (the test's account id) in any Region; no aws:RequestedRegion pin
    text = json.dumps(central).replace(":us-east-1:", ":*:")
    expected = json.loads(text)
    for s in expected:
        cond = s.get("Condition", {})
        cond.get("StringEquals", {}).pop("aws:RequestedRegion", None)
        if cond.get("StringEquals") == {}:
            del cond["StringEquals"]
        if "Condition" in s and not s["Condition"]:
            del s["Condition"]
    # Without a cluster filter the member's ListTasks keeps an empty Condition (the Region pin is gone): the same
    # grant as none.
    for s in mine:
        if s.get("Condition") == {}:
            del s["Condition"]
    assert mine == expected
    assert {s["Sid"] for s in mine} >= {"RunTask", "ListTasksOfWatchedClusters", "DescribeTasksOfWatchedClusters",
                                        "TagOnRunTask", "PassTaskRoles", "PassEbsInfrastructureRoles"}
