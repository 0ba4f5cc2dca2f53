"""Offline checks of template.yaml (run by `make template-check`, part of `make test`).

(a) cfn-lint with the serverless-rules plugin: no error, no warning.
(b) The rule's event pattern, rendered from template.yaml, evaluated by a real EventBridge pattern engine
    (LocalStack's event_rule_engine, a Python port of aws/event-ruler's semantics) against events/.
(c) The function role grants every AWS operation the Rust code calls (found by scanning src/), plus
    ecs:TagResource, and nothing else (except what AWS itself uses the role for, see IMPLICIT_GRANTS); never
    iam:PassRole on a wildcard. A small IAM evaluator checks the scoping (clusters, Region, roles, queues).
(d) Observability: the alarms (metric, dimensions, threshold, action) and the dashboard, whose body must be valid
    JSON once its ${...} placeholders are substituted and may only name metrics, dimension values and log fields the
    Rust code emits (read from src/); docs/observability.md covers every alarm, metric and log line of src/ (with
    its level and fields).
(e) The delay queue (issue 12): queue, dead-letter queue, event source, its concurrency within the reservation,
    retention against the longest schedule the code allows (read from src/).
(f) Tasks that never started (issue 13, RerunStoppedTasks): nothing with "off"; the launch store table (key and TTL
    attribute read from src/aws/dynamodb.rs), its grant, the two extra rules' patterns against events/, and their
    cluster filter (Clusters), the same as the failed-RunTask rule's.
The parameters that reach ECS_RERUN_* variables are checked against the ranges and defaults of src/config.rs and
src/core/plan/mod.rs; BaseDelayMs / MaxDelayMs are empty by default, so every failure class keeps its own schedule.

template.yaml uses CloudFormation intrinsics (!Ref, !Sub, !If, ...). It is parsed with cfn-lint's own loader
(tags become {"Fn::Sub": ...} dicts) and the few intrinsics the checked parts use are evaluated below for a
given set of parameter values.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cfnlint.decode import decode

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
EVENTS = REPO / "events"

ACCOUNT = "111122223333"
REGION = "us-east-1"
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Region": REGION,
    "AWS::Partition": "aws",
    "AWS::StackName": "ecs-rerun",
    "AWS::URLSuffix": "amazonaws.com",
}
PASS_ROLES = [
    f"arn:aws:iam::{ACCOUNT}:role/ecsTaskExecutionRole",
    f"arn:aws:iam::{ACCOUNT}:role/thumbnailer-task-role",
]

# facts §8.1 "Recommended rule" (shared/aws-facts.md), verbatim.
RECOMMENDED_PATTERN = {
    "source": ["aws.ecs"],
    "detail-type": ["AWS API Call via CloudTrail"],
    "detail": {
        "eventSource": ["ecs.amazonaws.com"],
        "eventName": ["RunTask"],
        "$or": [
            {"responseElements": {"failures": {"reason": [{"exists": True}]}}},
            {"errorCode": [{"exists": True}]},
        ],
    },
}

FAILURE_EVENTS = [f"{n:02d}-" for n in range(1, 9)] + ["18-", "19-"]  # must reach the function (08: it ignores it itself)
# successful RunTask records (09, 14), another call (10), task state changes (15-17): not for FailedRunTaskRule
OTHER_EVENTS = ["09-", "10-", "14-", "15-", "16-", "17-"]


# --------------------------------------------------------------------------------------------------------------
# template loading and a small evaluator for the intrinsics used
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def template() -> dict:
    tpl, matches = decode(str(TEMPLATE))
    assert not matches, [str(m) for m in matches]
    return json.loads(json.dumps(tpl))  # plain dicts/str, no cfn-lint node types


class NoValue:
    """AWS::NoValue: the property/list item disappears."""


def params_for(template: dict, **overrides) -> dict:
    values = {}
    for name, spec in template["Parameters"].items():
        if name in overrides:
            value = overrides[name]
        elif "Default" in spec:
            value = spec["Default"]
        elif name == "PassRoleArns":
            value = ",".join(PASS_ROLES)
        else:
            raise AssertionError(f"parameter {name} has no default; give it in the test")
        if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
            value = value.split(",")
        values[name] = value if isinstance(value, list) else str(value)
    return values


class Cfn:
    def __init__(self, template: dict, params: dict):
        self.t = template
        self.params = params

    def condition(self, name: str) -> bool:
        return bool(self.eval(self.t["Conditions"][name]))

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NoValue
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params:
            return self.params[name]
        if name in self.t["Resources"]:
            res = self.t["Resources"][name]
            cond = res.get("Condition")
            assert cond is None or self.condition(cond), f"Ref to {name}, which is not created"
            return f"<ref:{name}>"
        raise KeyError(name)

    def getatt(self, name: str, attr: str) -> str:
        assert name in self.t["Resources"], name
        typ = self.t["Resources"][name]["Type"]
        if attr == "Arn":
            return {
                "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
                "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
                "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
                "AWS::Events::Rule": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{name}",
                "AWS::Events::EventBus": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{name}",
                "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{name}",
                "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
                "AWS::S3::Bucket": f"arn:aws:s3:::{name.lower()}",
                "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
                "AWS::CloudWatch::Alarm": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}",
            }[typ]
        return f"<{name}.{attr}>"

    def sub(self, text: str, variables: dict) -> str:
        def repl(m: re.Match) -> str:
            var = m.group(1)
            if var.startswith("!"):
                return "${" + var[1:] + "}"
            if var in variables:
                return str(variables[var])
            if "." in var:
                return self.getatt(*var.split(".", 1))
            value = self.ref(var)
            assert isinstance(value, str), f"${{{var}}} in Fn::Sub is not a string"
            return value

        return re.sub(r"\$\{([^}]+)\}", repl, text)

    def eval(self, node):
        if isinstance(node, list):
            out = [self.eval(x) for x in node]
            return [x for x in out if x is not NoValue]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.getatt(name, attr)
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                text, variables = arg
                return self.sub(text, {k: self.eval(v) for k, v in variables.items()})
            if key == "Fn::Join":
                delim, items = arg
                return delim.join(str(x) for x in self.eval(items))
            if key == "Fn::Split":
                delim, text = arg
                return self.eval(text).split(delim)
            if key == "Fn::If":
                cond, yes, no = arg
                return self.eval(yes if self.condition(cond) else no)
            if key == "Fn::Equals":
                a, b = self.eval(arg)
                return a == b
            if key == "Fn::Not":
                return not self.eval(arg[0])
            if key == "Fn::And":
                return all(self.eval(x) for x in arg)
            if key == "Fn::Or":
                return any(self.eval(x) for x in arg)
            if key == "Condition":
                return self.condition(arg)
            assert not key.startswith("Fn::"), f"intrinsic {key} not handled by the test evaluator"
        out = {k: self.eval(v) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not NoValue}


def rendered_pattern(template: dict, rule_name: str = "FailedRunTaskRule", **params) -> dict:
    cfn = Cfn(template, params_for(template, **params))
    cond = template["Resources"][rule_name].get("Condition")
    assert cond is None or cfn.condition(cond), f"{rule_name} is not created with {params}"
    rule = template["Resources"][rule_name]["Properties"]
    pattern = cfn.eval(rule["EventPattern"])
    return json.loads(pattern) if isinstance(pattern, str) else pattern


# --------------------------------------------------------------------------------------------------------------
# (a) cfn-lint + serverless rules
# --------------------------------------------------------------------------------------------------------------
def test_cfn_lint_with_serverless_rules_is_clean():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    proc = subprocess.run(
        [str(cfn_lint), "--format", "parseable", "-a", "cfn_lint_serverless.rules", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    # cfn-lint exit code is a bit mask: 2 = error, 4 = warning, 8 = informational, 0 = clean.
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_serverless_rules_plugin_is_loaded(tmp_path):
    """A typo in the -a argument must not silently skip the plugin: an unconfigured function trips ES1005."""
    from cfn_lint_serverless.rules import lambda_  # noqa: F401  (import path used by -a)

    bad = tmp_path / "plugin-probe.yaml"
    bad.write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  F:\n    Type: AWS::Serverless::Function\n"
        "    Properties: {CodeUri: ., Handler: bootstrap, Runtime: provided.al2023}\n"
    )
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("cfn-lint")), "-a", "cfn_lint_serverless.rules", "--", str(bad)],
        capture_output=True,
        text=True,
    )
    assert "ES1005" in proc.stdout, proc.stdout + proc.stderr


def test_function_settings(template):
    fn = template["Resources"]["EcsRerunFunction"]
    props = fn["Properties"]
    assert fn["Metadata"] == {"BuildMethod": "rust-cargolambda", "BuildProperties": {"Binary": "ecs-rerun"}}
    assert props["Runtime"] == "provided.al2023" and props["Handler"] == "bootstrap"
    assert props["Architectures"] == ["arm64"] and props["MemorySize"] == 128
    # one attempt per invocation: the backoff waits are spent in the delay queue, not in the function
    assert props["Timeout"] == 60
    env = props["Environment"]["Variables"]
    assert set(env) == {
        "ECS_RERUN_TOPIC_ARN", "ECS_RERUN_MAX_ATTEMPTS", "ECS_RERUN_BASE_DELAY_MS", "ECS_RERUN_MAX_DELAY_MS",
        "ECS_RERUN_MAX_RECORD_AGE_S", "ECS_RERUN_RULES", "ECS_RERUN_REPLAY_REDACTED_ENV",
        "ECS_RERUN_NOTIFY_ON_RECOVERY", "ECS_RERUN_ALLOWED_ACCOUNTS", "ECS_RERUN_DRY_RUN", "ECS_RERUN_DELAY_QUEUE_URL",
        "ECS_RERUN_NOTIFICATION_FORMAT",
        # only with RerunStoppedTasks on (test_rerun_stopped_tasks_off_creates_nothing)
        "ECS_RERUN_STORE_TABLE", "ECS_RERUN_STORE_TTL_HOURS",
        # only with SelfCheckSchedule set (test_self_check_variable_names_the_rules)
        "ECS_RERUN_SELF_CHECK_RULES",
        # only with MemberRoleName set (tests/template/test_org.py)
        "ECS_RERUN_MEMBER_ROLE",
    }
    # every variable the template sets is one the code reads (a typo would be silently ignored)
    config_rs = (REPO / "src" / "config.rs").read_text()
    for var in env:
        assert f'"{var}"' in config_rs, f"src/config.rs does not read {var}"
    # ECS_RERUN_HOP_AFTER_MS (waits above it go to the queue) and ECS_RERUN_DEADLINE_RESERVE_MS keep their code
    # defaults (5 s, 25 s), which the 60 s Timeout is sized for
    assert "ECS_RERUN_HOP_AFTER_MS" not in env and "ECS_RERUN_DEADLINE_RESERVE_MS" not in env
    assert env["ECS_RERUN_DRY_RUN"] == {"Ref": "DryRun"}
    assert env["ECS_RERUN_DELAY_QUEUE_URL"] == {"Ref": "DelayQueue"}  # Ref of a queue = its URL
    assert template["Parameters"]["DryRun"]["Default"] == "false"


def function_props(template: dict, **params) -> dict:
    return Cfn(template, params_for(template, **params)).eval(template["Resources"]["EcsRerunFunction"]["Properties"])


def test_reserved_concurrency_zero_means_no_reservation(template):
    """0 leaves ReservedConcurrentExecutions out: a reservation of 0 would stop the function (issue 10, item 10)."""
    spec = template["Parameters"]["ReservedConcurrency"]
    assert spec["MinValue"] == 0 and spec["Default"] == 5
    assert "0 = no reservation" in " ".join(spec["Description"].split())
    assert "ReservedConcurrentExecutions" not in function_props(template, ReservedConcurrency="0")
    for n in ["2", "5", "100"]:
        assert function_props(template, ReservedConcurrency=n)["ReservedConcurrentExecutions"] == n
    assert function_props(template)["ReservedConcurrentExecutions"] == "5"


def test_reserved_concurrency_of_one_is_refused(template):
    """The delay queue's event source needs MaximumConcurrency >= 2 within the reservation: 1 cannot work."""
    (rule,) = template["Rules"].values()
    for n, ok in [("0", True), ("1", False), ("2", True), ("5", True), ("100", True)]:
        cfn = Cfn(template, params_for(template, ReservedConcurrency=n))
        assert all(cfn.eval(a["Assert"]) for a in rule["Assertions"]) is ok, n


def test_every_parameter_is_in_one_parameter_group(template):
    """sam deploy --guided and the console ask in this order; a parameter outside every group comes last, unlabeled."""
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    listed = [p for g in groups for p in g["Parameters"]]
    assert sorted(listed) == sorted(template["Parameters"]), "each parameter in exactly one group"


def test_delay_parameters_default_to_the_per_class_schedules(template):
    """Issue 12: empty = every failure class keeps its schedule; a value replaces all of them (tests, trials)."""
    config_rs = (REPO / "src" / "config.rs").read_text()
    # the code treats an empty variable as unset, and overrides the schedules only when one of the two is set
    assert ".filter(|v| !v.trim().is_empty())" in config_rs
    assert re.search(r'if get\("ECS_RERUN_BASE_DELAY_MS"\)\.is_some\(\)\s*\|\|\s*get\("ECS_RERUN_MAX_DELAY_MS"\)'
                     r"\.is_some\(\)", config_rs), "src/config.rs: the override applies only when a variable is set"
    (millis_hi,) = re.findall(r"fn millis\(.*?(\d[\d_]*)\.\.=(\d[\d_]*)", config_rs, re.S)
    millis_max = int(millis_hi[1].replace("_", ""))
    for name, var in [("BaseDelayMs", "ECS_RERUN_BASE_DELAY_MS"), ("MaxDelayMs", "ECS_RERUN_MAX_DELAY_MS")]:
        spec = template["Parameters"][name]
        assert spec["Type"] == "String" and spec["Default"] == ""
        description = " ".join(spec["Description"].split())
        assert "Empty (default)" in description and ("per-class" in description or "own schedule" in description)
        pattern = re.compile(spec["AllowedPattern"])
        for ok in ["", "0", "200", "20000", "120000", str(millis_max)]:
            assert pattern.match(ok), (name, ok)
        for bad in [str(millis_max + 1), "1000000", "-1", "1e3", " 5", "5 ", "abc", "20s"]:
            assert not pattern.match(bad), (name, bad)
        # set to empty by default (the code's per-class schedules), passed through when given
        assert function_props(template)["Environment"]["Variables"][var] == ""
        given = function_props(template, BaseDelayMs="200", MaxDelayMs="1000")["Environment"]["Variables"]
        assert given[var] == {"BaseDelayMs": "200", "MaxDelayMs": "1000"}[name]
    assert "RESOURCE:*" in template["Parameters"]["BaseDelayMs"]["Description"]


def test_max_attempts_parameter_spans_what_the_code_accepts(template):
    spec = template["Parameters"]["MaxAttempts"]
    assert (spec["MinValue"], spec["MaxValue"]) == config_range("ECS_RERUN_MAX_ATTEMPTS")
    assert spec["Default"] == src_number("core/plan/mod.rs", r"max_attempts: (\d+),") == 3
    assert function_props(template)["Environment"]["Variables"]["ECS_RERUN_MAX_ATTEMPTS"] == "3"


def test_notification_format_parameter(template):
    """NotificationFormat offers exactly the formats NotificationFormat::named accepts, text by default (today's
    message); the function gets it as ECS_RERUN_NOTIFICATION_FORMAT."""
    spec = template["Parameters"]["NotificationFormat"]
    named = re.search(r"pub fn named\(.*?\n    \}", (SRC / "core" / "message.rs").read_text(), re.S).group(0)
    assert sorted(spec["AllowedValues"]) == sorted(re.findall(r'"(\w+)" => Some', named)) == ["chat", "text"]
    assert spec["Default"] == "text"
    env = function_props(template)["Environment"]["Variables"]
    assert env["ECS_RERUN_NOTIFICATION_FORMAT"] == "text"
    assert function_props(template, NotificationFormat="chat")["Environment"]["Variables"][
        "ECS_RERUN_NOTIFICATION_FORMAT"] == "chat"
    assert "ECS_RERUN_NOTIFICATION_FORMAT" in spec["Description"]


def test_max_record_age_parameter(template):
    spec = template["Parameters"]["MaxRecordAgeSeconds"]
    assert spec["Type"] == "Number"
    assert (spec["MinValue"], spec["MaxValue"]) == config_range("ECS_RERUN_MAX_RECORD_AGE_S") == (60, 82800)
    assert spec["Default"] == src_number("core/plan/mod.rs", r"max_record_age: Duration::from_secs\((\d+)\)") == 3600
    assert template["Resources"]["EcsRerunFunction"]["Properties"]["Environment"]["Variables"][
        "ECS_RERUN_MAX_RECORD_AGE_S"] == {"Ref": "MaxRecordAgeSeconds"}
    assert function_props(template, MaxRecordAgeSeconds="7200")["Environment"]["Variables"][
        "ECS_RERUN_MAX_RECORD_AGE_S"] == "7200"
    assert "ECS_RERUN_MAX_RECORD_AGE_S" in spec["Description"]


# --------------------------------------------------------------------------------------------------------------
# (b) the rule's pattern against the sample events, with a real EventBridge pattern engine
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def engine():
    from localstack.services.events.event_rule_engine import EventPatternCompiler, EventRuleEngine

    compiler, rules = EventPatternCompiler(), EventRuleEngine()

    def matches(pattern: dict, event: dict) -> bool:
        # compile_event_pattern validates like PutRule does (raises on an invalid pattern)
        return rules.evaluate_pattern_on_event(compiler.compile_event_pattern(json.dumps(pattern)), event)

    return matches


def load_event(prefix: str) -> dict:
    (path,) = EVENTS.glob(prefix + "*.json")
    return json.loads(path.read_text())


def test_engine_flattens_arrays_of_objects_like_eventbridge(engine):
    """Guard against swapping in a matcher that cannot see failures[].reason (moto's EventPattern cannot)."""
    assert engine({"a": {"b": [{"exists": True}]}}, {"a": [{"b": "x"}, {"c": 1}]})
    assert not engine({"a": {"b": [{"exists": True}]}}, {"a": []})
    assert not engine({"s": [{"anything-but": "x"}]}, {"t": 1})  # anything-but needs the field


def test_default_pattern_is_the_recommended_rule(template):
    assert rendered_pattern(template) == RECOMMENDED_PATTERN


@pytest.mark.parametrize("prefix", FAILURE_EVENTS)
def test_failure_events_match(template, engine, prefix):
    assert engine(rendered_pattern(template), load_event(prefix))


@pytest.mark.parametrize("prefix", OTHER_EVENTS)
def test_other_events_do_not_match(template, engine, prefix):
    assert not engine(rendered_pattern(template), load_event(prefix))


def test_event_without_started_by_still_matches(template, engine):
    for prefix in ["01-", "04-"]:
        event = load_event(prefix)
        event["detail"]["requestParameters"].pop("startedBy", None)
        assert "startedBy" not in event["detail"]["requestParameters"]
        assert engine(rendered_pattern(template), event), prefix


def test_runtask_with_empty_failures_does_not_match(template, engine):
    event = load_event("01-")
    event["detail"]["responseElements"]["failures"] = []
    assert not engine(rendered_pattern(template), event)
    event["detail"]["responseElements"] = {"tasks": [], "failures": [{"arn": "arn:x"}]}  # entry without reason
    assert not engine(rendered_pattern(template), event)


def test_cluster_filter_matches_names_and_arns(template, engine):
    pattern = rendered_pattern(template, Clusters="batch,reports")
    assert pattern["detail"]["requestParameters"]["cluster"] == [
        "batch", "reports", {"suffix": ":cluster/batch"}, {"suffix": ":cluster/reports"},
    ]
    expected = {
        "01-": True,  # cluster given as ARN .../cluster/batch
        "02-": True,  # cluster given as name "batch"
        "03-": False,  # web
        "04-": True,
        "05-": False,  # web
        "06-": True,
        "07-": True,
        "08-": True,
        "09-": False,
        "10-": False,
    }
    for prefix, want in expected.items():
        assert engine(pattern, load_event(prefix)) is want, prefix
    # a cluster whose name merely ends with a listed name is not matched
    event = load_event("01-")
    event["detail"]["requestParameters"]["cluster"] = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/mybatch"
    assert not engine(pattern, event)
    event["detail"]["requestParameters"]["cluster"] = "mybatch"
    assert not engine(pattern, event)


CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{{}}"


@pytest.mark.parametrize(
    "clusters, cluster, want",
    [
        ("batch,reports", "reports", True),  # by name
        ("batch,reports", CLUSTER_ARN.format("reports"), True),  # by ARN
        ("batch,reports", "web", False),
        ("batch,reports", CLUSTER_ARN.format("web"), False),
        ("batch,reports", None, False),  # no cluster named: the call ran on "default", which is not listed
        ("batch,reports", "default", False),
        ("batch,default", None, True),  # ... here it is listed
        ("batch,default", "default", True),
        ("batch,default", CLUSTER_ARN.format("default"), True),
        ("batch,default", "batch", True),
        ("batch,default", CLUSTER_ARN.format("batch"), True),
        ("batch,default", "web", False),
        ("batch,default", CLUSTER_ARN.format("web"), False),
        ("batch,default", CLUSTER_ARN.format("mydefault"), False),
        ("default", None, True),
        ("default", "web", False),
        ("", None, True),  # no filter: every cluster
        ("", "web", True),
    ],
)
def test_cluster_filter_by_name_by_arn_or_absent(template, engine, clusters, cluster, want):
    pattern = rendered_pattern(template, Clusters=clusters)
    for prefix in ["02-", "04-"]:  # a placement failure (HTTP 200) and an API error (errorCode)
        event = load_event(prefix)
        if cluster is None:
            del event["detail"]["requestParameters"]["cluster"]
        else:
            event["detail"]["requestParameters"]["cluster"] = cluster
        assert engine(pattern, event) is want, (prefix, clusters, cluster)


def test_cluster_filter_with_default_accepts_an_absent_cluster_only_then(template):
    names = ["batch", "default"]
    with_default = rendered_pattern(template, Clusters=",".join(names))["detail"]["requestParameters"]
    listed = names + [{"suffix": f":cluster/{n}"} for n in names]
    assert with_default == {"$or": [{"cluster": listed}, {"cluster": [{"exists": False}]}]}
    without = rendered_pattern(template, Clusters="batch,defaults")["detail"]["requestParameters"]
    assert without == {"cluster": ["batch", "defaults", {"suffix": ":cluster/batch"}, {"suffix": ":cluster/defaults"}]}


def test_rule_target_has_dlq_and_invoke_config_has_destination(template):
    cfn = Cfn(template, params_for(template))
    res = template["Resources"]
    (target,) = cfn.eval(res["FailedRunTaskRule"]["Properties"]["Targets"])
    assert target["DeadLetterConfig"]["Arn"].endswith(":RuleDeadLetterQueue")
    eic = cfn.eval(res["EcsRerunEventInvokeConfig"]["Properties"])
    assert eic["MaximumRetryAttempts"] == 1 and eic["FunctionName"] == "<ref:EcsRerunFunction>"
    assert eic["DestinationConfig"]["OnFailure"]["Destination"].endswith(":OnFailureQueue")
    for q in ["OnFailureQueue", "RuleDeadLetterQueue"]:
        assert res[q]["Properties"]["SqsManagedSseEnabled"] is True
        assert res[q]["Properties"]["MessageRetentionPeriod"] == 1209600
    (stmt,) = cfn.eval(res["RuleDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"])
    assert stmt["Principal"] == {"Service": "events.amazonaws.com"} and stmt["Action"] == "sqs:SendMessage"
    # both queues are alarmed (the alarm set as a whole is checked in (d))
    queue_alarms = [
        cfn.eval(a["Properties"]["Dimensions"])
        for a in res.values()
        if a["Type"] == "AWS::CloudWatch::Alarm" and a["Properties"].get("Namespace") == "AWS/SQS"
    ]
    assert sorted(d[0]["Value"] for d in queue_alarms) == [
        "<DelayDeadLetterQueue.QueueName>", "<DelayQueue.QueueName>",
        "<OnFailureQueue.QueueName>", "<RuleDeadLetterQueue.QueueName>",
    ]


# --------------------------------------------------------------------------------------------------------------
# (c) IAM: every SDK operation the code calls is granted; no wildcard PassRole
# --------------------------------------------------------------------------------------------------------------
SDK_CRATES = {"aws_sdk_ecs": "ecs", "aws_sdk_sns": "sns", "aws_sdk_sqs": "sqs", "aws_sdk_dynamodb": "dynamodb",
              "aws_sdk_cloudtrail": "cloudtrail", "aws_sdk_eventbridge": "events"}
# The launch store's operations (issue 13): granted on the table, only with RerunStoppedTasks on.
STORE_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}
# The self-check's describe calls (issue 19.4, src/aws/hearing.rs): granted only with SelfCheckSchedule set.
SELF_CHECK_ACTIONS = {"cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus", "cloudtrail:GetEventSelectors",
                      "events:DescribeRule"}

# Granted actions no src/ call needs, because AWS itself uses the role for them (by statement Sid).
IMPLICIT_GRANTS = {
    "TagOnRunTask": {"ecs:TagResource"},  # tag-on-create, authorized inside RunTask
    "PassTaskRoles": {"iam:PassRole"},  # authorized inside RunTask
    "PassEbsInfrastructureRoles": {"iam:PassRole"},  # authorized inside RunTask (managed EBS volumes)
    "EncryptNotifications": {"kms:GenerateDataKey", "kms:Decrypt"},  # SNS encrypting for the Publish caller
    "OnFailureDestination": {"sqs:SendMessage"},  # Lambda's on-failure destination, sent with the role
    "DelayQueueEventSource": {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},  # the poller
    "WriteOwnLogs": {"logs:CreateLogStream", "logs:PutLogEvents"},  # the Lambda runtime
}

def sdk_operations(service: str) -> dict[str, str]:
    """snake_case fluent method -> IAM action, from the botocore service model (same model the SDKs use)."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    return {xform_name(op): f"{service}:{op}" for op in model.operation_names}


def called_actions() -> set[str]:
    ops = {crate: sdk_operations(svc) for crate, svc in SDK_CRATES.items()}
    found: set[str] = set()
    for path in sorted((REPO / "src").rglob("*.rs")):
        code = re.sub(r"//[^\n]*", "", path.read_text())
        crates = [c for c in SDK_CRATES if c in code]
        # a fluent operation call takes no argument: client.run_task() / self.client.publish()
        for method in re.findall(r"\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)", code):
            for crate in crates:
                if method in ops[crate]:
                    found.add(ops[crate][method])
    return found


def role_statements(template: dict, **params) -> list[dict]:
    cfn = Cfn(template, params_for(template, **params))
    res = template["Resources"]
    docs = [p["PolicyDocument"] for p in res["EcsRerunRole"]["Properties"]["Policies"]]
    docs += [
        r["Properties"]["PolicyDocument"]
        for r in res.values()
        if r["Type"] in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy")
    ]
    out = []
    for doc in docs:
        out += cfn.eval(doc)["Statement"]
    return out


def as_list(x) -> list:
    return x if isinstance(x, list) else [x]


def allowed_actions(statements: list[dict]) -> set[str]:
    return {a for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}


def test_sdk_mapping_knows_the_operations_of_issues_10_and_12():
    assert sdk_operations("ecs")["list_tasks"] == "ecs:ListTasks"
    assert sdk_operations("ecs")["describe_tasks"] == "ecs:DescribeTasks"
    assert sdk_operations("sns")["get_topic_attributes"] == "sns:GetTopicAttributes"
    assert sdk_operations("sqs")["send_message"] == "sqs:SendMessage"
    assert SDK_CRATES["aws_sdk_sqs"] == "sqs"


def test_scan_finds_the_sdk_calls():
    actions = called_actions()
    assert any(a.startswith("ecs:") for a in actions), f"no ECS client call found in src/: {actions}"
    assert any(a.startswith("sns:") for a in actions), f"no SNS client call found in src/: {actions}"
    assert "ecs:RunTask" in actions and "sns:Publish" in actions
    # issue 10: the look-up and the topic's size limit; issue 12: the next hop, sent to the delay queue
    assert {"ecs:ListTasks", "ecs:DescribeTasks", "sns:GetTopicAttributes", "sqs:SendMessage"} <= actions, actions
    # issue 13: the launch store (src/aws/dynamodb.rs), by key only
    assert {a for a in actions if a.startswith("dynamodb:")} == STORE_ACTIONS, actions
    # issue 19.4: the self-check's describe calls, and nothing else of CloudTrail or EventBridge
    assert {a for a in actions if a.split(":")[0] in ("cloudtrail", "events")} == SELF_CHECK_ACTIONS, actions


ALL_PARAM_SETS = [
    {},
    {"Clusters": "batch,web", "TaskFamilies": "nightly-report,thumbnailer"},
    {"Clusters": "batch,default"},
    {"ExistingTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:ops", "ReservedConcurrency": "0"},
    {"RerunStoppedTasks": "failed-to-start"},
    {"RerunStoppedTasks": "failed-to-start-and-spot", "Clusters": "batch,web"},
    {"SelfCheckSchedule": ""},
]
ALL_PARAM_IDS = ["defaults", "narrowed", "with-default-cluster", "existing-topic-no-reservation",
                 "rerun-stopped", "rerun-stopped-and-spot", "no-self-check"]


@pytest.mark.parametrize("params", ALL_PARAM_SETS, ids=ALL_PARAM_IDS)
def test_every_called_operation_is_granted(template, params):
    statements = role_statements(template, **params)
    granted = allowed_actions(statements)
    needed = called_actions() | {"ecs:TagResource"}
    if params.get("RerunStoppedTasks", "off") == "off":
        needed -= STORE_ACTIONS  # no table, no ECS_RERUN_STORE_TABLE: the code makes no DynamoDB call
    if params.get("SelfCheckSchedule") == "":
        needed -= SELF_CHECK_ACTIONS  # no schedule: no self-check event, no describe call
        assert not granted & SELF_CHECK_ACTIONS, sorted(granted & SELF_CHECK_ACTIONS)
    missing = needed - granted
    assert not missing, f"role lacks {sorted(missing)}"
    assert not any("*" in a for a in granted), sorted(granted)


@pytest.mark.parametrize("params", ALL_PARAM_SETS, ids=ALL_PARAM_IDS)
def test_every_granted_action_is_used(template, params):
    """Strict the other way round: an action the role grants is called by src/ or used by AWS on its behalf."""
    called = called_actions()
    unused = []
    for s in role_statements(template, **params):
        if s["Effect"] != "Allow":
            continue
        assert "Sid" in s, s
        for action in as_list(s["Action"]):
            if action in called or action in IMPLICIT_GRANTS.get(s["Sid"], set()):
                continue
            unused.append(f"{s['Sid']}: {action}")
    assert not unused, f"granted but neither called in src/ nor used by AWS: {unused}"


@pytest.mark.parametrize("params", [{}, {"Clusters": "jobs", "TaskFamilies": "spot-report"}])
def test_a_capacity_fallback_needs_no_more_than_run_task(template, params):
    """A fallback attempt (issue 21) is RunTask with another capacity provider, launch type or subnets: the
    RunTask grant must not pin the provider (ecs:capacity-provider) and the role needs no EC2 action."""
    statements = role_statements(template, **params)
    for s in statements:
        if "ecs:RunTask" in as_list(s["Action"]):
            assert "ecs:capacity-provider" not in json.dumps(s.get("Condition", {})), s
    assert not [a for a in allowed_actions(statements) if a.startswith("ec2:")]


def test_tag_resource_only_on_create(template):
    (stmt,) = [s for s in role_statements(template) if "ecs:TagResource" in as_list(s["Action"])]
    assert stmt["Condition"] == {"StringEquals": {"ecs:CreateAction": "RunTask"}}


def test_pass_role_is_never_wildcard(template):
    spec = template["Parameters"]["PassRoleArns"]
    assert "Default" not in spec, "PassRoleArns must be required"
    pattern = re.compile(spec["AllowedPattern"])
    assert all(pattern.match(arn) for arn in PASS_ROLES)
    for bad in ["*", f"arn:aws:iam::{ACCOUNT}:role/*", f"arn:aws:iam::{ACCOUNT}:role/ecs-*", "arn:aws:iam::*:role/x"]:
        assert not pattern.match(bad), bad
    pass_statements = [
        s for s in role_statements(template)
        if s["Effect"] == "Allow" and {"iam:PassRole", "iam:*", "*"} & set(as_list(s["Action"]))
    ]
    assert pass_statements
    services = []
    for s in pass_statements:
        assert as_list(s["Action"]) == ["iam:PassRole"] or s["Action"] == "iam:PassRole"
        assert sorted(as_list(s["Resource"])) == sorted(PASS_ROLES)
        assert not any("*" in r for r in as_list(s["Resource"]))
        assert list(s["Condition"]) == ["StringEquals"] and list(s["Condition"]["StringEquals"]) == [
            "iam:PassedToService"
        ]
        services.append(s["Condition"]["StringEquals"]["iam:PassedToService"])
    # task and execution roles go to the tasks; the EBS infrastructure role (volumeConfigurations) to ECS itself
    assert sorted(services) == ["ecs-tasks.amazonaws.com", "ecs.amazonaws.com"]


# A small IAM policy evaluator for the role's own statements: Allow matches and no Deny matches. Enough for the
# operators the template uses; an unknown operator fails the test rather than being guessed.
def _condition_holds(cond: dict, context: dict) -> bool:
    for op, pairs in cond.items():
        for key, values in pairs.items():
            values = as_list(values)
            present = key in context
            base = op.removesuffix("IfExists")
            if op.endswith("IfExists") and not present:
                continue
            if base == "Null":
                if (not present) != (values == ["true"]):
                    return False
            elif not present:
                return False
            elif base in ("StringEquals", "ArnEquals"):
                if context[key] not in values:
                    return False
            elif base in ("StringLike", "ArnLike"):
                if not any(fnmatch.fnmatchcase(context[key], v) for v in values):
                    return False
            else:
                raise AssertionError(f"condition operator {op} not handled by the test evaluator")
    return True


def _statement_applies(s: dict, action: str, resource: str, context: dict) -> bool:
    if not any(fnmatch.fnmatchcase(action, a) for a in as_list(s["Action"])):
        return False
    if "Resource" in s and not any(fnmatch.fnmatchcase(resource, r) for r in as_list(s["Resource"])):
        return False
    if "NotResource" in s and any(fnmatch.fnmatchcase(resource, r) for r in as_list(s["NotResource"])):
        return False
    return _condition_holds(s.get("Condition", {}), context)


def iam_allows(statements: list[dict], action: str, resource: str, context: dict) -> bool:
    applying = [s for s in statements if _statement_applies(s, action, resource, context)]
    return any(s["Effect"] == "Allow" for s in applying) and not any(s["Effect"] == "Deny" for s in applying)


TASK_DEF = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/nightly-report:7"
IN_REGION = {"aws:RequestedRegion": REGION}


def test_iam_evaluator_sanity():
    allow = {"Effect": "Allow", "Action": "ecs:RunTask", "Resource": "arn:*:ecs:*:*:task-definition/*"}
    assert iam_allows([allow], "ecs:RunTask", TASK_DEF, {})
    assert not iam_allows([allow], "ecs:ListTasks", TASK_DEF, {})
    assert not iam_allows([allow, {**allow, "Effect": "Deny"}], "ecs:RunTask", TASK_DEF, {})
    cond = {**allow, "Condition": {"ArnLike": {"ecs:cluster": ["arn:*:ecs:*:*:cluster/a"]}}}
    assert not iam_allows([cond], "ecs:RunTask", TASK_DEF, {})  # a missing key never matches ArnLike
    assert iam_allows([cond], "ecs:RunTask", TASK_DEF, {"ecs:cluster": CLUSTER_ARN.format("a")})
    if_exists = {**allow, "Condition": {"ArnLikeIfExists": {"ecs:cluster": ["arn:*:ecs:*:*:cluster/a"]}}}
    assert iam_allows([if_exists], "ecs:RunTask", TASK_DEF, {})
    assert not iam_allows([if_exists], "ecs:RunTask", TASK_DEF, {"ecs:cluster": CLUSTER_ARN.format("b")})


# (Clusters parameter, cluster of the call or None when it names none, allowed?)
CLUSTER_CASES = [
    ("", "web", True),
    ("", None, True),
    ("batch,web", "batch", True),
    ("batch,web", "reports", False),
    ("batch,web", "default", False),
    ("batch,web", None, False),  # no cluster named = "default", not listed
    ("batch,default", "batch", True),
    ("batch,default", "default", True),
    ("batch,default", None, True),  # no cluster named = "default", listed
    ("batch,default", "web", False),
    ("batch,default", "mydefault", False),
]


def _cluster_context(cluster):
    return {**IN_REGION, **({} if cluster is None else {"ecs:cluster": CLUSTER_ARN.format(cluster)})}


@pytest.mark.parametrize("clusters, cluster, want", CLUSTER_CASES)
def test_run_task_cluster_scoping(template, clusters, cluster, want):
    stmts = role_statements(template, Clusters=clusters)
    assert iam_allows(stmts, "ecs:RunTask", TASK_DEF, _cluster_context(cluster)) is want
    # never another account's or Region's task definition
    for other in [TASK_DEF.replace(ACCOUNT, "444455556666"), TASK_DEF.replace(REGION, "eu-west-1")]:
        assert not iam_allows(stmts, "ecs:RunTask", other, _cluster_context(cluster))


@pytest.mark.parametrize("clusters, cluster, want", CLUSTER_CASES)
def test_list_tasks_scoped_like_run_task(template, clusters, cluster, want):
    stmts = role_statements(template, Clusters=clusters)
    # ListTasks has no resource-level permission: ECS authorizes it on "*", with the ecs:cluster condition key
    assert iam_allows(stmts, "ecs:ListTasks", "*", _cluster_context(cluster)) is want
    other_region = {**_cluster_context(cluster), "aws:RequestedRegion": "eu-west-1"}
    assert not iam_allows(stmts, "ecs:ListTasks", "*", other_region)


@pytest.mark.parametrize("clusters, cluster, want", [c for c in CLUSTER_CASES if c[1] is not None])
def test_describe_tasks_only_in_the_watched_clusters(template, clusters, cluster, want):
    stmts = role_statements(template, Clusters=clusters)
    task = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/0123456789abcdef0123456789abcdef"
    assert iam_allows(stmts, "ecs:DescribeTasks", task, IN_REGION) is want
    assert not iam_allows(stmts, "ecs:DescribeTasks", task.replace(REGION, "eu-west-1"),
                          {"aws:RequestedRegion": "eu-west-1"})
    if not clusters:
        (stmt,) = [s for s in stmts if "ecs:DescribeTasks" in as_list(s["Action"])]
        assert stmt["Resource"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/*"
    # read-only: no other ecs action than these four, and nothing that stops or changes a task
    ecs_actions = {a for s in stmts if s["Effect"] == "Allow" for a in as_list(s["Action"]) if a.startswith("ecs:")}
    assert ecs_actions == {"ecs:RunTask", "ecs:TagResource", "ecs:ListTasks", "ecs:DescribeTasks"}


@pytest.mark.parametrize("service, want", [
    ("ecs-tasks.amazonaws.com", True), ("ecs.amazonaws.com", True),
    ("lambda.amazonaws.com", False), ("ec2.amazonaws.com", False),
])
def test_pass_role_towards_ecs_and_its_tasks_only(template, service, want):
    stmts = role_statements(template)
    for role in PASS_ROLES:
        assert iam_allows(stmts, "iam:PassRole", role, {"iam:PassedToService": service}) is want, role
    other = f"arn:aws:iam::{ACCOUNT}:role/admin"
    assert not iam_allows(stmts, "iam:PassRole", other, {"iam:PassedToService": service})


def test_run_task_scoping(template):
    def run_task(stmts):
        return [s for s in stmts if "ecs:RunTask" in as_list(s["Action"])]

    (allow,) = run_task(role_statements(template))
    assert allow["Resource"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/*" and "Condition" not in allow

    allow, deny = sorted(
        run_task(role_statements(template, Clusters="batch,web", TaskFamilies="nightly-report,thumbnailer")),
        key=lambda s: s["Effect"],
    )
    assert allow["Condition"] == {
        "ArnLike": {"ecs:cluster": ["arn:*:ecs:*:*:cluster/batch", "arn:*:ecs:*:*:cluster/web"]}
    }
    assert deny["Effect"] == "Deny" and deny["NotResource"] == [
        "arn:*:ecs:*:*:task-definition/nightly-report:*",
        "arn:*:ecs:*:*:task-definition/thumbnailer:*",
    ]


def test_sns_publish_only_on_the_topic(template):
    for params, topic in [({}, "<ref:NotificationTopic>"),
                          ({"ExistingTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:ops"},
                           f"arn:aws:sns:{REGION}:{ACCOUNT}:ops")]:
        stmts = [s for s in role_statements(template, **params) if "sns:Publish" in as_list(s["Action"])]
        assert [s["Resource"] for s in stmts] == [topic]


def test_sns_get_topic_attributes_only_on_the_topic(template):
    """The function reads the topic's MaximumMessageSize at start (issue 10, item 7)."""
    for params, topic in TOPIC_PARAMS:
        stmts = [s for s in role_statements(template, **params) if s["Effect"] == "Allow"
                 and any(a.startswith("sns:") for a in as_list(s["Action"]))]
        assert [s["Resource"] for s in stmts] == [topic]
        assert sorted(as_list(stmts[0]["Action"])) == ["sns:GetTopicAttributes", "sns:Publish"]


def test_sqs_send_message_only_on_the_two_queues(template):
    """SendMessage: the delay queue (the function's next attempt) and the on-failure queue (Lambda), each alone."""
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{{}}"
    for params in ALL_PARAM_SETS:
        stmts = role_statements(template, **params)
        sqs = {s["Sid"]: s["Resource"] for s in stmts if "sqs:SendMessage" in as_list(s["Action"])}
        assert sqs == {"OnFailureDestination": queue.format("OnFailureQueue"),
                       "DelayQueueSend": queue.format("DelayQueue")}
        for name, want in [("DelayQueue", True), ("OnFailureQueue", True), ("DelayDeadLetterQueue", False),
                           ("RuleDeadLetterQueue", False), ("someone-elses-queue", False)]:
            assert iam_allows(stmts, "sqs:SendMessage", queue.format(name), {}) is want, name
        # the event source mapping's actions, on the delay queue only
        for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]:
            assert iam_allows(stmts, action, queue.format("DelayQueue"), {}), action
            assert not iam_allows(stmts, action, queue.format("OnFailureQueue"), {}), action


def test_template_copy_is_not_mutated(template):
    snapshot = copy.deepcopy(template)
    rendered_pattern(template, Clusters="a")
    role_statements(template, Clusters="a", TaskFamilies="b")
    assert template == snapshot


# --------------------------------------------------------------------------------------------------------------
# (d) observability: alarms, dashboard, docs
# --------------------------------------------------------------------------------------------------------------
SRC = REPO / "src"
OBSERVABILITY_DOC = REPO / "docs" / "observability.md"
TOPIC_PARAMS = [({}, "<ref:NotificationTopic>"),
                ({"ExistingTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:ops"}, f"arn:aws:sns:{REGION}:{ACCOUNT}:ops")]


def emitted() -> dict:
    """What the Rust code emits, read from src/ so that a rename there fails here."""
    metrics_rs = (SRC / "metrics.rs").read_text()
    (namespace,) = re.findall(r'pub const NAMESPACE: &str = "([^"]+)";', metrics_rs)
    names = set(re.findall(r'"Name":\s*"([A-Za-z]+)"', metrics_rs))
    # a name chosen per outcome: "Name": seen, with `let seen = match ... { ... => "A", _ => "B" };`
    for var in set(re.findall(r'"Name":\s*([a-z_]+)\b', metrics_rs)):
        (arms,) = re.findall(rf"let {var} = match [^{{]*\{{(.*?)\}};", metrics_rs, re.S)
        chosen = re.findall(r'=>\s*"([A-Za-z]+)"', arms)
        assert chosen, f"metric name variable {var}: no names found"
        names |= set(chosen)
    # the failures' line first, then the self-check's own line (issue 19.4)
    failure_dims, self_check_dims = re.findall(r'"Dimensions":\s*(\[\[.*?\]\])', metrics_rs)

    def as_str_map(path: Path, enum_start: str) -> dict[str, str]:
        """Variant -> the string its as_str() returns."""
        code = path.read_text()
        block = code[code.index(enum_start):]
        block = block[: block.index("\n    }\n")]
        return dict(re.findall(r'Self::(\w+)\s*=>\s*"([a-z_]+)"', block))

    all_outcomes = as_str_map(SRC / "core/outcome.rs", "pub fn as_str")
    # the outcomes emf_line() returns None for (ignored events; an episode waiting in the delay queue)
    guard = re.search(r"if matches!\(\s*report\.outcome,\s*([^)]*)\)\s*\{\s*return None;", metrics_rs)
    assert guard, "emf_line's early return for outcomes without a metric line"
    silent = {all_outcomes[v] for v in re.findall(r"Outcome::(\w+)", guard.group(1))}
    # the self-check's outcomes have a line of their own, without the Outcome dimension
    own = re.search(r"if matches!\(\s*report\.outcome,\s*([^)]*)\)\s*\{\s*return Some\(self_check_line", metrics_rs)
    assert own, "emf_line's early return for the self-check's line"
    self_check = {all_outcomes[v] for v in re.findall(r"Outcome::(\w+)", own.group(1))}
    outcomes = set(all_outcomes.values()) - silent - self_check
    classes = set(as_str_map(SRC / "core/classify.rs", "pub fn as_str").values())
    # the handler is a module of several files (src/handler/): read them as one text
    handler = "\n".join(f.read_text() for f in sorted((SRC / "handler").glob("*.rs")))
    span_fields = set(re.findall(r"(\w+) = %", re.search(r'info_span!\(\s*"episode"[^;]*;', handler).group(0)))
    return {
        "namespace": namespace,
        "metrics": names,
        "dimension_sets": json.loads(failure_dims) + json.loads(self_check_dims),
        "dimensions": {"Outcome": outcomes, "ReasonClass": classes,
                       "Check": set(re.findall(r'"Check":\s*"(\w+)"', metrics_rs))},
        "outcomes_without_metric": silent,
        "self_check_outcomes": self_check,
        "span_fields": span_fields,
        "handler": handler,
    }


def test_emitted_is_read_from_the_code():
    e = emitted()
    assert e["namespace"] == "EcsRerun"
    # LaunchesGuarded: on a guarded launch's line instead of FailuresSeen (a launch is not a failure)
    assert e["metrics"] == {"FailuresSeen", "LaunchesGuarded", "RetriesIssued", "Recoveries", "Notifications",
                            "TimeToRecovery", "SelfCheckFailed"}
    assert e["dimension_sets"] == [["Outcome"], ["Outcome", "ReasonClass"], ["Outcome", "Caller"], ["Check"]]
    # issue 19.4: a self-check is no failure; its line has its own metric and dimension
    assert e["self_check_outcomes"] == {"self_check_ok", "self_check_failed"}
    assert e["dimensions"]["Check"] == {"hearing"}
    assert e["dimensions"]["Outcome"] == {
        "recovered", "already_started", "gave_up", "not_retryable", "stale", "would_retry", "left",
        "guarded", "unguarded",  # issue 13: a started launch stored (or, for Batch / ecs-rerun's own, not)
        "recovered_on_fallback", "gave_up_after_fallback",  # issue 21: a rule's capacity fallback
    }
    assert e["dimensions"]["ReasonClass"] == {"transient", "permanent", "unknown", "not_replayable", "caller"}
    # an ignored event is no failure; a waiting episode is counted once, when it ends (issue 12)
    assert e["outcomes_without_metric"] == {"ignored", "waiting"}
    assert e["span_fields"] == {"event_id", "account", "region", "caller", "cluster", "task_family"}


def alarms(template: dict, **params) -> dict[str, dict]:
    cfn = Cfn(template, params_for(template, **params))
    return {
        name: cfn.eval(r["Properties"])
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def watched(a: dict) -> list[dict]:
    """The metrics an alarm evaluates, each as {Namespace, MetricName, Dimensions, Period, Stat}: the alarm's own
    metric, or every MetricStat of a metric-math alarm (whose top level then has no metric, period or statistic)."""
    if "Metrics" not in a:
        return [{"Namespace": a["Namespace"], "MetricName": a["MetricName"], "Dimensions": a["Dimensions"],
                 "Period": a["Period"], "Stat": a["Statistic"]}]
    assert not {"Namespace", "MetricName", "Dimensions", "Period", "Statistic"} & set(a), a
    return [{**q["MetricStat"]["Metric"], "Period": q["MetricStat"]["Period"], "Stat": q["MetricStat"]["Stat"]}
            for q in a["Metrics"] if "MetricStat" in q]


def math_sum_of_all(a: dict) -> bool:
    """A metric-math alarm evaluates exactly one expression, the sum of all its metrics with missing periods as 0
    (so that any one of them alone can breach), and returns no other series."""
    stats = [q for q in a["Metrics"] if "MetricStat" in q]
    (expr,) = [q for q in a["Metrics"] if "Expression" in q]
    terms = sorted(re.sub(r"\s", "", term) for term in expr["Expression"].split("+"))
    return (expr.get("ReturnData", True) is True and all(q["ReturnData"] is False for q in stats)
            and terms == sorted(f"FILL({q['Id']},0)" for q in stats) and len(a["Metrics"]) == len(stats) + 1)


def test_every_alarm_fires_on_the_first_occurrence_and_notifies(template):
    for params, topic in TOPIC_PARAMS:
        found = alarms(template, **params)
        assert set(found) == {
            "OnFailureQueueAlarm", "RuleDeadLetterQueueAlarm", "FunctionErrorsAlarm", "FunctionThrottlesAlarm",
            "GaveUpAlarm", "NotRetryableAlarm", "DelayDeadLetterQueueAlarm", "DelayQueueAgeAlarm",
            "SelfCheckAlarm",
        }
        for name, a in found.items():
            assert a["EvaluationPeriods"] == 1 and all(m["Period"] == 300 for m in watched(a)), name
            if "Metrics" in a:
                assert math_sum_of_all(a), name
            if name == "DelayQueueAgeAlarm":  # an age in seconds, not a count (test_delay_queue_alarms)
                continue
            assert a["Threshold"] == 1 and a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", name
            # the self-check reports once per schedule period: between checks its state holds (test_self_check_alarm)
            assert a["TreatMissingData"] == ("ignore" if name == "SelfCheckAlarm" else "notBreaching"), name
            assert a["AlarmActions"] == [topic], name
            # says what it means and what to do, within CloudWatch's 1024-character limit
            assert "What to do:" in a["AlarmDescription"] and len(a["AlarmDescription"]) <= 1024, name


def test_aws_metric_alarms(template):
    found = {
        (m["Namespace"], m["MetricName"], m["Stat"], json.dumps(m["Dimensions"]))
        for a in alarms(template).values()
        for m in watched(a)
        if m["Namespace"] != "EcsRerun"
    }
    fn = [{"Name": "FunctionName", "Value": "<ref:EcsRerunFunction>"}]
    assert found == {
        ("AWS/Lambda", "Errors", "Sum", json.dumps(fn)),
        ("AWS/Lambda", "Throttles", "Sum", json.dumps(fn)),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum",
         json.dumps([{"Name": "QueueName", "Value": "<OnFailureQueue.QueueName>"}])),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum",
         json.dumps([{"Name": "QueueName", "Value": "<RuleDeadLetterQueue.QueueName>"}])),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum",
         json.dumps([{"Name": "QueueName", "Value": "<DelayDeadLetterQueue.QueueName>"}])),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum",
         json.dumps([{"Name": "QueueName", "Value": "<DelayQueue.QueueName>"}])),
    }


# The outcomes an alarm watches. An episode that gave up after a rule's capacity fallback (issue 21) is a give-up
# too: GaveUpAlarm sums both.
OUTCOME_ALARMS = {"GaveUpAlarm": {"gave_up", "gave_up_after_fallback"}, "NotRetryableAlarm": {"not_retryable"}}
# Every other outcome, and why no alarm watches it: the tasks ran, nothing was asked of ecs-rerun, or it is a
# per-episode notification only (stale: the record came too late, the notification says whether to start it).
OUTCOMES_WITHOUT_ALARM = {"recovered", "recovered_on_fallback", "already_started", "left", "would_retry",
                          "guarded", "unguarded", "stale"}


@pytest.mark.parametrize("name, outcomes", sorted(OUTCOME_ALARMS.items()))
def test_outcome_alarms_use_an_emitted_metric(template, name, outcomes):
    e = emitted()
    a = alarms(template)[name]
    metrics = watched(a)
    for m in metrics:
        assert m["Namespace"] == e["namespace"]
        assert m["MetricName"] == "FailuresSeen" and m["MetricName"] in e["metrics"]
        assert m["Stat"] == "Sum"
        # exactly one of the emitted dimension sets, or the alarm would watch a metric that never gets data
        assert [d["Name"] for d in m["Dimensions"]] == ["Outcome"] and ["Outcome"] in e["dimension_sets"]
    # one metric per outcome, each an outcome the code emits
    assert sorted(m["Dimensions"][0]["Value"] for m in metrics) == sorted(outcomes)
    assert outcomes <= e["dimensions"]["Outcome"]
    # several outcomes: one series, their sum, so any one alone reaches the threshold of 1
    assert (len(outcomes) > 1) == ("Metrics" in a) and ("Metrics" not in a or math_sum_of_all(a))


def test_every_outcome_is_alarmed_or_deliberately_not():
    """A new outcome (as gave_up_after_fallback was) needs a decision: an alarm, or a reason not to."""
    alarmed = set().union(*OUTCOME_ALARMS.values())
    assert not alarmed & OUTCOMES_WITHOUT_ALARM
    assert alarmed | OUTCOMES_WITHOUT_ALARM == emitted()["dimensions"]["Outcome"]


def test_logs_keep_the_level_the_metrics_need(template):
    """EMF lines have no "level": Lambda files them as INFO, so application logs above INFO would drop the metrics."""
    logging = template["Resources"]["EcsRerunFunction"]["Properties"]["LoggingConfig"]
    assert logging == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO"}


@pytest.fixture(scope="session")
def dashboard(template) -> dict:
    cfn = Cfn(template, params_for(template))
    body = cfn.eval(template["Resources"]["Dashboard"]["Properties"]["DashboardBody"])
    assert isinstance(body, str) and "${" not in body
    return json.loads(body)


def metric_lines(dashboard: dict) -> list[tuple[str, str, dict, dict]]:
    """(namespace, metric, dimensions, options) of every metric of every metric widget."""
    out = []
    for w in dashboard["widgets"]:
        if w["type"] != "metric":
            continue
        for line in w["properties"]["metrics"]:
            opts = line[-1] if isinstance(line[-1], dict) else {}
            ident = line[:-1] if opts else line
            assert "." not in ident[:2], f"write the namespace and metric out, not '.': {line}"
            ns, metric, dims = ident[0], ident[1], ident[2:]
            assert len(dims) % 2 == 0, line
            out.append((ns, metric, dict(zip(dims[::2], dims[1::2])), {**w["properties"], **opts}))
    return out


def test_dashboard_layout_is_valid(dashboard, template):
    assert template["Resources"]["Dashboard"]["Properties"]["DashboardName"] == {
        "Fn::Sub": "${AWS::StackName}-${AWS::Region}"
    }
    cells = set()
    for w in dashboard["widgets"]:
        assert w["type"] in {"metric", "log", "alarm", "text"}
        assert 0 <= w["x"] and w["x"] + w["width"] <= 24 and w["height"] > 0, w
        for x in range(w["x"], w["x"] + w["width"]):
            for y in range(w["y"], w["y"] + w["height"]):
                assert (x, y) not in cells, f"widgets overlap at {(x, y)}"
                cells.add((x, y))
        if w["type"] in {"metric", "log"}:
            assert w["properties"]["region"] == REGION


DEAD_LETTER_QUEUES = {
    "<OnFailureQueue.QueueName>", "<RuleDeadLetterQueue.QueueName>", "<DelayDeadLetterQueue.QueueName>"
}
DELAY_QUEUE_METRICS = {
    "ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"
}


def test_dashboard_names_only_emitted_metrics(dashboard):
    e = emitted()
    for ns, metric, dims, _ in metric_lines(dashboard):
        if ns == e["namespace"]:
            assert metric in e["metrics"], metric
            assert sorted(dims) in [sorted(s) for s in e["dimension_sets"]], (metric, dims)
            for dim, value in dims.items():
                assert value in e["dimensions"][dim], (metric, dim, value)
        elif ns == "AWS/Lambda":
            assert dims == {"FunctionName": "<ref:EcsRerunFunction>"}, metric
        elif ns == "AWS/SQS":
            assert set(dims) == {"QueueName"}
            if dims["QueueName"] == "<DelayQueue.QueueName>":
                assert metric in DELAY_QUEUE_METRICS
            else:
                assert metric == "ApproximateNumberOfMessagesVisible" and dims["QueueName"] in DEAD_LETTER_QUEUES
        else:
            raise AssertionError(f"unexpected namespace {ns}")


def test_dashboard_shows_what_the_issue_asks_for(dashboard, template):
    e = emitted()
    lines = metric_lines(dashboard)
    shown = {(ns, m) for ns, m, _, _ in lines}
    assert {(e["namespace"], m) for m in e["metrics"]} <= shown
    # failures by outcome: every outcome; a guarded launch is no failure, it has its own metric (and line)
    assert {d["Outcome"] for ns, m, d, _ in lines if m == "FailuresSeen"} == e["dimensions"]["Outcome"] - {"guarded"}
    assert {d["Outcome"] for ns, m, d, _ in lines if m == "LaunchesGuarded"} == {"guarded"}
    # time to recovery: p50 and max
    assert {o["stat"] for ns, m, d, o in lines if m == "TimeToRecovery"} == {"p50", "Maximum"}
    assert {("AWS/Lambda", m) for m in ["Errors", "Throttles", "Duration"]} <= shown
    assert {d["QueueName"] for ns, m, d, _ in lines if ns == "AWS/SQS"} == DEAD_LETTER_QUEUES | {
        "<DelayQueue.QueueName>"
    }
    # the delay queue: waiting, due, and the age its alarm watches
    assert {m for ns, m, d, _ in lines if d.get("QueueName") == "<DelayQueue.QueueName>"} == DELAY_QUEUE_METRICS
    # the timeout line on the duration graph is the function's Timeout
    (duration,) = [w for w in dashboard["widgets"] if w["type"] == "metric"
                   and any(line[1] == "Duration" for line in w["properties"]["metrics"])]
    (timeout_line,) = duration["properties"]["annotations"]["horizontal"]
    assert timeout_line["value"] == template["Resources"]["EcsRerunFunction"]["Properties"]["Timeout"] * 1000
    # every alarm of the stack is on the alarm widget
    (alarm_widget,) = [w for w in dashboard["widgets"] if w["type"] == "alarm"]
    assert sorted(alarm_widget["properties"]["alarms"]) == sorted(
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}" for name in alarms(template)
    )


def test_dashboard_log_query_uses_the_fields_the_code_logs(dashboard):
    e = emitted()
    (log,) = [w for w in dashboard["widgets"] if w["type"] == "log"]
    query = log["properties"]["query"]
    assert query.startswith("SOURCE '<ref:EcsRerunLogGroup>' |"), query
    # the summary line's message, as logged by the handler
    (message,) = re.findall(r'`fields\.message` = "([^"]+)"', query)
    assert f'"{message}"' in e["handler"]
    episode_finished = re.search(r"tracing::info!\((?:(?!tracing::).)*?\"episode finished\"\s*\)", e["handler"], re.S)
    assert episode_finished, "the handler's episode-finished log line"
    logged = set(re.findall(r"(\w+) = ", episode_finished.group(0)))
    for field in re.findall(r"`fields\.(\w+)`", query):
        assert field == "message" or field in logged, f"fields.{field} is not logged with 'episode finished'"
    for field in re.findall(r"`span\.(\w+)`", query):
        assert field in e["span_fields"], f"span.{field} is not a field of the episode span"


def test_observability_doc_covers_every_alarm_and_metric(template):
    doc = OBSERVABILITY_DOC.read_text()
    found = alarms(template)
    (table,) = [t for t in doc_tables(doc) if t[0][:2] == ["Alarm", "Fires when"]]
    rows = {row[0].strip("`"): row for row in table[1:]}
    assert set(rows) == set(found), "docs/observability.md's alarm table lists exactly the stack's alarms"
    for name, row in rows.items():
        assert len(row) == 4 and all(cell.strip() for cell in row), f"{name}: fires when, meaning, what to do"
    for metric in emitted()["metrics"]:
        assert f"`{metric}`" in doc, f"docs/observability.md does not describe {metric}"
    # the count in the prose follows the stack
    words = {6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
    assert f"{words[len(found)]} alarms" in doc and f"All {words[len(found)]} publish" in doc


def doc_tables(doc: str) -> list[list[list[str]]]:
    """Every Markdown table of the doc: rows of cells, header first, the |---| line dropped."""
    tables, current = [], []
    for line in doc.splitlines() + [""]:
        if line.startswith("|"):
            # split on | outside backticks (a cell may show `a | b`)
            cells, cell, code = [], "", False
            for ch in line.strip()[1:-1]:
                if ch == "`":
                    code = not code
                if ch == "|" and not code:
                    cells.append(cell.strip())
                    cell = ""
                else:
                    cell += ch
            cells.append(cell.strip())
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def logged_lines() -> list[dict]:
    """Every tracing::info!/warn!/error! of src/: its level, message and fields, read from the code."""
    out = []
    for path in sorted(SRC.rglob("*.rs")):
        code = path.read_text()
        for m in re.finditer(r"tracing::(info|warn|error)!\(", code):
            # the macro's arguments, up to the matching parenthesis (strings may hold parentheses)
            depth, i, in_str, args = 1, m.end(), False, []
            arg_start = i
            while depth:
                ch = code[i]
                if in_str:
                    if ch == "\\":
                        i += 1
                    elif ch == '"':
                        in_str = False
                elif ch == '"':
                    in_str = True
                elif ch in "([{":
                    depth += 1
                elif ch in ")]}":
                    depth -= 1
                elif ch == "," and depth == 1:
                    args.append(code[arg_start:i].strip())
                    arg_start = i + 1
                i += 1
            args.append(code[arg_start:i - 1].strip())
            args = [a for a in args if a]
            message = args[-1]
            assert message.startswith('"') and message.endswith('"'), f"{path.name}: message of {args}"
            # a string continued with a trailing backslash: the newline and the next line's indent vanish
            message = re.sub(r"\\\n\s*", "", message[1:-1])
            fields = set()
            for arg in args[:-1]:
                named = re.match(r"^(\w+)\s*=", arg) or re.match(r"^[%?]?(\w+)$", arg)
                assert named, f"{path.name}: cannot read the field {arg!r} of {message!r}"
                fields.add(named.group(1))
            out.append({"file": path.name, "level": m.group(1).upper(), "message": message, "fields": fields})
    return out


def test_log_line_reader_reads_the_code():
    lines = {line["message"]: line for line in logged_lines()}
    assert lines["episode finished"]["fields"] >= {"outcome", "reason_class", "attempts", "notified", "reason"}
    assert lines["waiting in the delay queue"]["fields"] == {"call", "wait_ms", "delay_s"}
    assert lines["delay-queue message failed; SQS will deliver it again"]["level"] == "ERROR"
    (unset,) = [m for m in lines if m.startswith("ECS_RERUN_DELAY_QUEUE_URL is not set: ")]
    assert "\\" not in unset and "  " not in unset, unset


def test_observability_doc_lists_every_log_line_the_code_writes():
    """Each message of src/ has its row (level and every field) in the doc's message table, and no row is stale."""
    doc = OBSERVABILITY_DOC.read_text()
    (table,) = [t for t in doc_tables(doc) if t[0][:2] == ["`fields.message`", "Level"]]
    rows = []
    for row in table[1:]:
        (message,) = re.findall(r"^`([^`]+)`$", row[0])
        # a long message may be cut: "cannot decode the event; ..." stands for every message it begins
        rows.append((message.removesuffix("..."), message.endswith("..."), row))
    code = logged_lines()
    for line in code:
        matching = [r for r in rows if (line["message"].startswith(r[0]) if r[1] else line["message"] == r[0])]
        assert len(matching) == 1, f"{line['file']}: {line['message']!r} has {len(matching)} rows in the doc"
        _, _, row = matching[0]
        assert row[1] == line["level"], (line["message"], row[1])
        documented = set(re.findall(r"`(\w+)`", row[2]))
        assert line["fields"] <= documented, f"{line['message']!r}: fields {line['fields'] - documented} not listed"
    for message, cut, _ in rows:
        assert any(
            line["message"].startswith(message) if cut else line["message"] == message for line in code
        ), f"the doc lists {message!r}, which src/ does not log"


# --------------------------------------------------------------------------------------------------------------
# (e) the delay queue (issue 12): waits between attempts live in SQS, one attempt per invocation
# --------------------------------------------------------------------------------------------------------------
def src_number(path: str, pattern: str) -> int:
    """One number of src/, found by a regex with one group (digits, Rust's _ separators allowed)."""
    (value,) = re.findall(pattern, (SRC / path).read_text())
    return int(float(value.replace("_", "")))


def config_range(var: str) -> tuple[int, int]:
    """The inclusive range src/config.rs accepts for an ECS_RERUN_* variable read with number()."""
    (lo, hi), = re.findall(rf'"{var}",[^;]*?(\d[\d_]*)\.\.=(\d[\d_]*)', (SRC / "config.rs").read_text())
    return int(lo.replace("_", "")), int(hi.replace("_", ""))


# The longest single wait: SQS's DelaySeconds limit, which the hop code caps a leg at (longer waits chain).
MAX_SINGLE_DELAY_S = src_number("core/hop.rs", r"pub const MAX_DELAY: Duration = Duration::from_secs\((\d+)\);")
# The longest schedule of an episode with the built-in schedules: every wait at the largest MaxDelaySeconds of any
# of them (capacity, 900 s), for the most attempts the code accepts (10): 2.5 hours.
LONGEST_BUILT_IN_WAIT_S = max(
    int(float(v)) for v in re.findall(r"max_delay_seconds: ([0-9.]+),", (SRC / "core" / "schedule.rs").read_text())
)
LONGEST_SCHEDULE_S = config_range("ECS_RERUN_MAX_ATTEMPTS")[1] * LONGEST_BUILT_IN_WAIT_S


def test_schedule_bounds_are_read_from_the_code():
    assert MAX_SINGLE_DELAY_S == 900
    assert LONGEST_BUILT_IN_WAIT_S == 900  # Schedule::MINUTES
    assert config_range("ECS_RERUN_MAX_ATTEMPTS") == (1, 10)
    assert LONGEST_SCHEDULE_S == 9000


def queue_props(template: dict, name: str, **params) -> dict:
    res = template["Resources"][name]
    assert res["Type"] == "AWS::SQS::Queue" and "Condition" not in res
    return Cfn(template, params_for(template, **params)).eval(res["Properties"])


def delay_hop(template: dict, **params) -> dict:
    events = function_props(template, **params)["Events"]
    assert list(events) == ["DelayHop"], "the function's only event source is the delay queue"
    assert events["DelayHop"]["Type"] == "SQS"
    return events["DelayHop"]["Properties"]


def test_delay_queues_are_encrypted_and_outlive_the_longest_schedule(template):
    source, dlq = queue_props(template, "DelayQueue"), queue_props(template, "DelayDeadLetterQueue")
    for q in (source, dlq):
        assert q["SqsManagedSseEnabled"] is True
        assert "FifoQueue" not in q  # a standard queue: per-message DelaySeconds, no message groups
    assert source["MessageRetentionPeriod"] == 4 * 86400 and dlq["MessageRetentionPeriod"] == 14 * 86400
    # a message carries one leg (<= 900 s, redelivered at most maxReceiveCount times); a whole episode is longer
    assert source["MessageRetentionPeriod"] > LONGEST_SCHEDULE_S
    redrive = source["RedrivePolicy"]["maxReceiveCount"]
    assert source["MessageRetentionPeriod"] > MAX_SINGLE_DELAY_S + redrive * source["VisibilityTimeout"]
    # a dead-lettered message keeps its first enqueue time: the DLQ must keep it longer than the source did
    assert dlq["MessageRetentionPeriod"] > source["MessageRetentionPeriod"]


def test_delay_queue_redrive_policy(template):
    redrive = queue_props(template, "DelayQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:DelayDeadLetterQueue"
    assert redrive["maxReceiveCount"] >= 5


def test_delay_queue_visibility_timeout_is_six_function_timeouts(template):
    hop = delay_hop(template)
    timeout = function_props(template)["Timeout"]
    window = hop.get("MaximumBatchingWindowInSeconds", 0)
    assert queue_props(template, "DelayQueue")["VisibilityTimeout"] >= 6 * timeout + window


def test_delay_hop_event_source(template):
    hop = delay_hop(template)
    assert hop["Queue"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:DelayQueue"
    assert hop["BatchSize"] == 1, "one hop per invocation: a batch could outlive the timeout and come back whole"
    assert hop["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert hop.get("Enabled", True) is True and "FilterCriteria" not in hop


@pytest.mark.parametrize("reserved", ["0", "2", "3", "5", "100"])
def test_delay_hop_concurrency_within_the_reservation(template, reserved):
    """The SQS poller ignores the reservation: above it, receives are throttled and messages dead-lettered."""
    maximum = int(delay_hop(template, ReservedConcurrency=reserved)["ScalingConfig"]["MaximumConcurrency"])
    assert 2 <= maximum <= 1000  # the limits of ScalingConfig.MaximumConcurrency
    if reserved == "0":  # no reservation: the parameter's default
        assert maximum == int(template["Parameters"]["DelayQueueMaxConcurrency"]["Default"]) == 5
    else:
        assert maximum <= int(reserved)
    spec = template["Parameters"]["DelayQueueMaxConcurrency"]
    assert spec["MinValue"] == 2 and spec["MaxValue"] == 1000


def test_delay_queue_alarms(template):
    for params, topic in TOPIC_PARAMS:
        found = alarms(template, **params)
        dlq, age = found["DelayDeadLetterQueueAlarm"], found["DelayQueueAgeAlarm"]
        assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible" and dlq["Statistic"] == "Maximum"
        assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": "<DelayDeadLetterQueue.QueueName>"}]
        assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")  # > 0
        assert age["MetricName"] == "ApproximateAgeOfOldestMessage" and age["Statistic"] == "Maximum"
        assert age["Dimensions"] == [{"Name": "QueueName", "Value": "<DelayQueue.QueueName>"}]
        assert age["ComparisonOperator"] == "GreaterThanThreshold"
        # longer than any single delay plus slack, shorter than the retention
        assert 2 * MAX_SINGLE_DELAY_S <= age["Threshold"] < LONGEST_SCHEDULE_S
        assert age["Threshold"] < queue_props(template, "DelayQueue")["MessageRetentionPeriod"]
        assert dlq["AlarmActions"] == age["AlarmActions"] == [topic]


def test_delay_queue_outputs(template):
    outputs = template["Outputs"]
    assert outputs["DelayQueueUrl"]["Value"] == {"Ref": "DelayQueue"}
    assert outputs["DelayDeadLetterQueueUrl"]["Value"] == {"Ref": "DelayDeadLetterQueue"}


# --------------------------------------------------------------------------------------------------------------
# (f) tasks that never started, and Spot (issue 13): RerunStoppedTasks, the launch store, two more rules
# --------------------------------------------------------------------------------------------------------------
STORE_VALUES = ["failed-to-start", "failed-to-start-and-spot"]
STORE_RESOURCES = {
    "LaunchStoreTable": "AWS::DynamoDB::Table",
    "StartedRunTaskRule": "AWS::Events::Rule",
    "StoppedTaskRule": "AWS::Events::Rule",
    "StartedRunTaskRulePermission": "AWS::Lambda::Permission",
    "StoppedTaskRulePermission": "AWS::Lambda::Permission",
}
STORE_ENV = {"ECS_RERUN_STORE_TABLE", "ECS_RERUN_STORE_TTL_HOURS"}
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/LaunchStoreTable"


def test_rerun_stopped_tasks_parameters(template):
    spec = template["Parameters"]["RerunStoppedTasks"]
    assert spec["Type"] == "String" and spec["Default"] == "off"
    assert spec["AllowedValues"] == ["off", *STORE_VALUES]
    ttl = template["Parameters"]["StoreTtlHours"]
    assert ttl["Type"] == "Number"
    assert (ttl["MinValue"], ttl["MaxValue"]) == config_range("ECS_RERUN_STORE_TTL_HOURS") == (1, 168)
    default_h = src_number("core/guard.rs", r"pub const DEFAULT_TTL: Duration = Duration::from_secs\((\d+) \* 3600\);")
    assert ttl["Default"] == default_h == 24
    assert "ECS_RERUN_STORE_TTL_HOURS" in ttl["Description"]


@pytest.mark.parametrize("value, on", [("off", False), *[(v, True) for v in STORE_VALUES]])
def test_rerun_stopped_tasks_off_creates_nothing(template, value, on):
    """With "off" (the default): no table, no rule, no permission, no variable, no grant, no output."""
    res = template["Resources"]
    cfn = Cfn(template, params_for(template, RerunStoppedTasks=value))
    for name, typ in STORE_RESOURCES.items():
        assert res[name]["Type"] == typ and res[name]["Condition"] == "RerunStopped", name
    assert template["Outputs"]["LaunchStoreTableName"]["Condition"] == "RerunStopped"
    assert cfn.condition("RerunStopped") is on
    assert cfn.condition("RerunSpot") is (value == "failed-to-start-and-spot")
    # nothing else refers to the conditional resources outside an Fn::If on the same condition
    refs = [n for n, r in res.items() if n not in STORE_RESOURCES
            and any(s in json.dumps(r) for s in STORE_RESOURCES)]
    # (the organization bus's copies of the rules exist only with RerunStopped too: OrgBusRerunStopped)
    assert sorted(refs) == ["EcsRerunFunction", "EcsRerunRole", "OrgStartedRunTaskRulePermission",
                            "OrgStoppedTaskRulePermission", "RuleDeadLetterQueuePolicy"], refs
    for name in ["OrgStartedRunTaskRule", "OrgStoppedTaskRule", "OrgStartedRunTaskRulePermission",
                 "OrgStoppedTaskRulePermission"]:
        assert res[name]["Condition"] == "OrgBusRerunStopped", name
    assert template["Conditions"]["OrgBusRerunStopped"] == {
        "Fn::And": [{"Condition": "OrgBus"}, {"Condition": "RerunStopped"}]}
    env = function_props(template, RerunStoppedTasks=value)["Environment"]["Variables"]
    assert (STORE_ENV <= set(env)) is on and (not STORE_ENV & set(env)) is (not on)
    statements = role_statements(template, RerunStoppedTasks=value)
    store_grants = [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]
    assert bool(store_grants) is on
    (dlq_stmt,) = cfn.eval(res["RuleDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"])
    rules = ["FailedRunTaskRule", "StartedRunTaskRule", "StoppedTaskRule"] if on else ["FailedRunTaskRule"]
    rules.append("SelfCheckScheduleRule")  # SelfCheckSchedule's default: on (test_self_check_schedule_...)
    assert dlq_stmt["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{r}" for r in rules
    ]


def test_store_environment(template):
    env = function_props(template, RerunStoppedTasks="failed-to-start", StoreTtlHours="72")["Environment"]["Variables"]
    assert env["ECS_RERUN_STORE_TABLE"] == "<ref:LaunchStoreTable>"  # Ref of a table = its name
    assert env["ECS_RERUN_STORE_TTL_HOURS"] == "72"
    config_rs = (SRC / "config.rs").read_text()
    for var in env:  # with the feature on, too: every variable set is one the code reads
        assert f'"{var}"' in config_rs, f"src/config.rs does not read {var}"


def store_layout() -> tuple[set[str], set[str]]:
    """(key attributes, TTL attributes) as src/aws/dynamodb.rs writes them: a rename there fails here."""
    code = (SRC / "aws" / "dynamodb.rs").read_text()
    keys = set(re.findall(r'\.key\("(\w+)"', code))
    # the attribute written with the expiry time (claimedAt, also epoch seconds, is when a notice was claimed)
    ttl = set(re.findall(r'\.item\("(\w+)",\s*n\(epoch\(expires\)\)', code))
    return keys, ttl


def test_store_table_matches_the_code(template):
    keys, ttl = store_layout()
    assert keys == {"pk"} and ttl == {"expiresAt"}, (keys, ttl)
    res = template["Resources"]["LaunchStoreTable"]
    assert res["DeletionPolicy"] == res["UpdateReplacePolicy"] == "Delete"  # a cache: items live StoreTtlHours
    table = Cfn(template, params_for(template, RerunStoppedTasks="failed-to-start")).eval(res["Properties"])
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": k, "KeyType": "HASH"} for k in keys]
    assert table["AttributeDefinitions"] == [{"AttributeName": k, "AttributeType": "S"} for k in keys]
    assert table["TimeToLiveSpecification"] == {"AttributeName": ttl.pop(), "Enabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    # every read is by key: no index to pay for, no stream nobody reads
    assert not {"GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"} & set(table)
    assert "PointInTimeRecoverySpecification" not in table  # see the template's comment: nothing worth restoring
    out = template["Outputs"]["LaunchStoreTableName"]
    assert out["Value"] == {"Ref": "LaunchStoreTable"}


@pytest.mark.parametrize("value", STORE_VALUES)
def test_store_grant_is_the_four_item_operations_on_the_table(template, value):
    statements = role_statements(template, RerunStoppedTasks=value)
    (stmt,) = [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]
    assert stmt["Effect"] == "Allow" and stmt["Sid"] == "LaunchStore" and "Condition" not in stmt
    assert set(as_list(stmt["Action"])) == STORE_ACTIONS and len(as_list(stmt["Action"])) == len(STORE_ACTIONS)
    assert stmt["Resource"] == TABLE_ARN
    for action in STORE_ACTIONS:
        assert iam_allows(statements, action, TABLE_ARN, {}), action
        for other in [TABLE_ARN + "-other", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/someone-elses",
                      TABLE_ARN + "/index/by-x", TABLE_ARN.replace(REGION, "eu-west-1")]:
            assert not iam_allows(statements, action, other, {}), (action, other)
    for action in ["dynamodb:Scan", "dynamodb:Query", "dynamodb:DeleteTable", "dynamodb:BatchGetItem",
                   "dynamodb:DescribeTable"]:
        assert not iam_allows(statements, action, TABLE_ARN, {}), action


def test_new_rules_target_the_function_like_the_failed_rule(template):
    cfn = Cfn(template, params_for(template, RerunStoppedTasks="failed-to-start"))
    res = template["Resources"]
    (failed_target,) = cfn.eval(res["FailedRunTaskRule"]["Properties"]["Targets"])
    for rule in ["StartedRunTaskRule", "StoppedTaskRule"]:
        props = cfn.eval(res[rule]["Properties"])
        assert props["State"] == "ENABLED" and props["EventBusName"] == "default"
        assert props["Targets"] == [failed_target], rule  # same function, retry policy and dead-letter queue
        assert res[rule]["DependsOn"] == res["FailedRunTaskRule"]["DependsOn"]
        perm = cfn.eval(res[f"{rule}Permission"]["Properties"])
        assert perm == {
            "FunctionName": "<ref:EcsRerunFunction>", "Action": "lambda:InvokeFunction",
            "Principal": "events.amazonaws.com", "SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}",
            "SourceAccount": ACCOUNT,
        }


def own_session_arn(template: dict) -> str:
    """The function's Lambda session: assumed-role/<role name>/<function name> (Ref of each = its name)."""
    cfn = Cfn(template, params_for(template, RerunStoppedTasks="failed-to-start"))
    return f"arn:aws:sts::{ACCOUNT}:assumed-role/{cfn.ref('EcsRerunRole')}/{cfn.ref('EcsRerunFunction')}"


def changed_event(prefix: str, *path: str, **fields) -> dict:
    """Sample event `prefix` with fields of its detail (or of detail[path...]) set; None removes a field."""
    event = load_event(prefix)
    target = event["detail"]
    for key in path:
        target = target[key]
    for key, value in fields.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return event


def started_event(**identity) -> dict:
    """Event 14 (a successful Fargate RunTask) with its userIdentity changed."""
    return changed_event("14-", "userIdentity", **identity)


@pytest.mark.parametrize("value", STORE_VALUES)
def test_started_rule_matches_successful_runtask_records(template, engine, value):
    pattern = rendered_pattern(template, "StartedRunTaskRule", RerunStoppedTasks=value)
    for prefix in ["09-", "14-"]:
        assert engine(pattern, load_event(prefix)), prefix
    # failed calls (API error, placement failure, partial failure) are FailedRunTaskRule's, not this rule's
    for prefix in [*FAILURE_EVENTS, "10-", "11-", "12-", "13-", "15-", "16-", "17-"]:
        assert not engine(pattern, load_event(prefix)), prefix
    # the same record as 14, but one task failed placement (02-like): only FailedRunTaskRule delivers it
    partial = load_event("14-")
    partial["detail"]["responseElements"]["failures"] = [
        {"arn": "arn:aws:ecs:us-east-1:111122223333:container-instance/x", "reason": "RESOURCE:MEMORY"}]
    assert not engine(pattern, partial)
    assert engine(rendered_pattern(template), partial)
    # no task started; an errorCode; no failures key at all (kept: nothing failed)
    none_started = load_event("14-")
    none_started["detail"]["responseElements"]["tasks"] = []
    assert not engine(pattern, none_started)
    errored = load_event("14-")
    errored["detail"]["errorCode"] = "ThrottlingException"
    assert not engine(pattern, errored)
    no_failures_key = load_event("14-")
    del no_failures_key["detail"]["responseElements"]["failures"]
    assert engine(pattern, no_failures_key)


@pytest.mark.parametrize("value", STORE_VALUES)
def test_started_rule_leaves_out_batch_and_the_function_itself(template, engine, value):
    pattern = rendered_pattern(template, "StartedRunTaskRule", RerunStoppedTasks=value)
    own = own_session_arn(template)
    (excluded,) = pattern["detail"]["userIdentity"]["$or"][1]["arn"]
    assert excluded == {"anything-but": own}, "exactly the function's own session ARN"
    # AWS Batch's successful placement: 14 with Batch's identity (event 11's), and with invokedBy alone
    batch_identity = load_event("11-")["detail"]["userIdentity"]
    assert batch_identity["invokedBy"] == "batch.amazonaws.com"
    assert not engine(pattern, started_event(**batch_identity))
    assert not engine(pattern, started_event(invokedBy="batch.amazonaws.com"))
    # the function's own RunTask (a rerun it stores itself)
    assert not engine(pattern, started_event(arn=own))
    # kept: another service invoking, another role with a session of the same name, no arn (AWSService identity)
    assert engine(pattern, started_event(invokedBy="scheduler.amazonaws.com"))
    assert engine(pattern, started_event(arn=own.replace("<ref:EcsRerunRole>", "etl-scheduler")))
    assert engine(pattern, started_event(arn=own + "-2"))
    assert engine(pattern, started_event(arn=None, type="AWSService", invokedBy="ecs.amazonaws.com"))


def stopped_event(prefix: str = "15-", **detail) -> dict:
    """A task state change (15: TaskFailedToStart, STOPPED) with fields of its detail changed."""
    return changed_event(prefix, **detail)


@pytest.mark.parametrize("value", STORE_VALUES)
def test_stopped_rule_matches_tasks_that_failed_to_start(template, engine, value):
    pattern = rendered_pattern(template, "StoppedTaskRule", RerunStoppedTasks=value)
    for prefix in ["15-", "16-"]:
        assert engine(pattern, load_event(prefix)), prefix
    # the Spot notice arrives while the task runs: never, whatever the value (two copies would run)
    assert load_event("17-")["detail"]["lastStatus"] == "RUNNING"
    assert not engine(pattern, load_event("17-"))
    for prefix in [*FAILURE_EVENTS, "09-", "10-", "11-", "12-", "13-", "14-"]:
        assert not engine(pattern, load_event(prefix)), prefix
    # service tasks are the service's to replace; a group of family:NAME or none at all is delivered
    assert not engine(pattern, stopped_event(group="service:web"))
    assert engine(pattern, stopped_event(group="family:etl-load"))
    assert engine(pattern, stopped_event(group=None))
    assert engine(pattern, stopped_event(group="etl-service:web"))
    # other stop codes, and a TaskFailedToStart not yet STOPPED
    for code in ["EssentialContainerExited", "UserInitiated", "ServiceSchedulerInitiated", "InfrastructureHealth"]:
        assert not engine(pattern, stopped_event(stopCode=code)), code
    assert not engine(pattern, stopped_event(lastStatus="DEPROVISIONING"))
    assert not engine(pattern, stopped_event(stopCode=None))


@pytest.mark.parametrize("value, spot", [("failed-to-start", False), ("failed-to-start-and-spot", True)])
def test_stopped_rule_takes_spot_only_when_asked(template, engine, value, spot):
    pattern = rendered_pattern(template, "StoppedTaskRule", RerunStoppedTasks=value)
    for code in ["SpotInterruption", "TerminationNotice"]:
        assert engine(pattern, stopped_event(stopCode=code)) is spot, code
        # 17 once the task has stopped
        assert engine(pattern, stopped_event("17-", lastStatus="STOPPED", stopCode=code)) is spot, code
        assert not engine(pattern, stopped_event("17-", stopCode=code)), code  # still RUNNING
        assert not engine(pattern, stopped_event(stopCode=code, group="service:web")), code


# Clusters also narrows the two extra rules: a launch in a cluster that is not watched is not stored, and a task
# there is not rerun (the role may not run it there: the rerun would be refused and notified).
STARTED_EVENTS = {"09-": "batch", "14-": "jobs"}  # requestParameters.cluster (an ARN in both samples)
STOPPED_EVENTS = {"15-": "jobs", "16-": "jobs"}  # detail.clusterArn


def in_cluster(prefix: str, cluster) -> dict:
    """Sample `prefix` moved to `cluster`: a name, an ARN or None (no cluster named) for a RunTask record; for a
    task state change, a name becomes the clusterArn ending in ":cluster/<name>" (always an ARN there).
    "keep" leaves the sample in its own cluster."""
    event = load_event(prefix)
    if cluster == "keep":
        pass
    elif "clusterArn" in event["detail"]:
        assert cluster is not None
        event["detail"]["clusterArn"] = cluster if cluster.startswith("arn:") else CLUSTER_ARN.format(cluster)
    elif cluster is None:
        del event["detail"]["requestParameters"]["cluster"]
    else:
        event["detail"]["requestParameters"]["cluster"] = cluster
    return event


def test_sample_events_clusters():
    """The premise of the cluster tests below: 09 runs in batch; 14, 15 and 16 in jobs, all named by ARN."""
    for prefix, name in STARTED_EVENTS.items():
        assert load_event(prefix)["detail"]["requestParameters"]["cluster"] == CLUSTER_ARN.format(name), prefix
    for prefix, name in STOPPED_EVENTS.items():
        assert load_event(prefix)["detail"]["clusterArn"] == CLUSTER_ARN.format(name), prefix


@pytest.mark.parametrize("value", STORE_VALUES)
@pytest.mark.parametrize("clusters", ["batch,jobs", "jobs,default", "default", "batch,defaults"])
def test_new_rules_cluster_filter_patterns(template, value, clusters):
    names = clusters.split(",")
    failed = rendered_pattern(template, Clusters=clusters)
    started = rendered_pattern(template, "StartedRunTaskRule", RerunStoppedTasks=value, Clusters=clusters)
    stopped = rendered_pattern(template, "StoppedTaskRule", RerunStoppedTasks=value, Clusters=clusters)
    # the RunTask record rule filters exactly like FailedRunTaskRule (names, ARN suffixes, absent with default)
    assert started["detail"]["requestParameters"] == failed["detail"]["requestParameters"]
    # the task state change: the ARN suffix only, "default" included like any other name
    assert stopped["detail"]["clusterArn"] == [{"suffix": f":cluster/{n}"} for n in names]
    # the rest of both patterns is what it is without Clusters
    for rule, pattern in [("StartedRunTaskRule", started), ("StoppedTaskRule", stopped)]:
        unfiltered = rendered_pattern(template, rule, RerunStoppedTasks=value)
        assert not {"requestParameters", "clusterArn"} & set(unfiltered["detail"]), rule
        rest = copy.deepcopy(pattern)
        rest["detail"].pop("requestParameters", None)
        rest["detail"].pop("clusterArn", None)
        assert rest == unfiltered, rule


STARTED_CLUSTER_CASES = [
    # (Clusters, cluster of the RunTask record, delivered)
    ("batch,jobs", "keep", True),  # 09 in batch, 14 in jobs, named by ARN
    ("batch,jobs", "batch", True),
    ("batch,jobs", "jobs", True),
    ("batch,jobs", CLUSTER_ARN.format("jobs"), True),
    ("batch,jobs", "web", False),
    ("batch,jobs", CLUSTER_ARN.format("web"), False),
    ("batch,jobs", CLUSTER_ARN.format("myjobs"), False),
    ("batch,jobs", "myjobs", False),
    ("batch,jobs", None, False),  # ran on "default", not listed
    ("batch,jobs", "default", False),
    ("jobs,default", None, True),  # ... here it is
    ("jobs,default", "default", True),
    ("jobs,default", CLUSTER_ARN.format("default"), True),
    ("jobs,default", CLUSTER_ARN.format("jobs"), True),
    ("jobs,default", CLUSTER_ARN.format("batch"), False),
    ("jobs,default", CLUSTER_ARN.format("mydefault"), False),
    ("default", "keep", False),  # batch / jobs are not watched
    ("default", None, True),
    ("default", CLUSTER_ARN.format("default"), True),
    ("", "keep", True),  # no filter: every cluster, named or not
    ("", "web", True),
    ("", CLUSTER_ARN.format("web"), True),
    ("", None, True),
]


STOPPED_CLUSTER_CASES = [
    # (Clusters, cluster of the stopped task (name -> its ARN), delivered)
    ("batch,jobs", "keep", True),  # 15 and 16 in jobs
    ("batch,jobs", "batch", True),
    ("batch,jobs", "web", False),
    ("batch,jobs", "myjobs", False),
    ("batch,jobs", "default", False),
    ("jobs,default", "default", True),
    ("jobs,default", "jobs", True),
    ("jobs,default", "batch", False),
    ("jobs,default", "mydefault", False),
    ("default", "keep", False),
    ("default", "default", True),
    ("", "keep", True),  # no filter: every cluster
    ("", "web", True),
    ("", "default", True),
]

# What a rule must still refuse in a watched cluster: the cluster filter adds to its other conditions.
SPOILERS = {
    "StartedRunTaskRule": [lambda d: d["userIdentity"].update(invokedBy="batch.amazonaws.com")],
    "StoppedTaskRule": [lambda d: d.update(group="service:web"), lambda d: d.update(lastStatus="RUNNING")],
}
RULE_SAMPLES = {"StartedRunTaskRule": STARTED_EVENTS, "StoppedTaskRule": STOPPED_EVENTS}


@pytest.mark.parametrize("value", STORE_VALUES)
@pytest.mark.parametrize("rule, clusters, cluster, want", [
    *[("StartedRunTaskRule", *case) for case in STARTED_CLUSTER_CASES],
    *[("StoppedTaskRule", *case) for case in STOPPED_CLUSTER_CASES],
])
def test_new_rules_honour_clusters(template, engine, value, rule, clusters, cluster, want):
    pattern = rendered_pattern(template, rule, RerunStoppedTasks=value, Clusters=clusters)
    for prefix in RULE_SAMPLES[rule]:
        event = in_cluster(prefix, cluster)
        assert engine(pattern, event) is want, (prefix, clusters, cluster)
        for spoil in SPOILERS[rule]:
            spoiled = copy.deepcopy(event)
            spoil(spoiled["detail"])
            assert not engine(pattern, spoiled), (prefix, clusters, cluster)


@pytest.mark.parametrize("value", STORE_VALUES)
@pytest.mark.parametrize("clusters, cluster, want", STOPPED_CLUSTER_CASES)
def test_spot_stops_only_in_watched_clusters(template, engine, value, clusters, cluster, want):
    """Spot stops: still only with failed-to-start-and-spot, and only in a watched cluster (17 is in jobs)."""
    pattern = rendered_pattern(template, "StoppedTaskRule", RerunStoppedTasks=value, Clusters=clusters)
    spot = in_cluster("17-", cluster)
    spot["detail"].update(lastStatus="STOPPED", stopCode="SpotInterruption")
    assert engine(pattern, spot) is (want and value == "failed-to-start-and-spot"), (clusters, cluster)


@pytest.mark.parametrize("clusters", ["", "batch,jobs", "jobs,default"])
def test_new_rules_with_clusters_still_leave_out_other_events(template, engine, clusters):
    """Whatever Clusters is, each new rule still takes only its own kind of event."""
    value = "failed-to-start-and-spot"
    started = rendered_pattern(template, "StartedRunTaskRule", RerunStoppedTasks=value, Clusters=clusters)
    stopped = rendered_pattern(template, "StoppedTaskRule", RerunStoppedTasks=value, Clusters=clusters)
    for prefix in [*FAILURE_EVENTS, "10-", "11-", "12-", "13-", "15-", "16-", "17-"]:
        assert not engine(started, load_event(prefix)), prefix
    for prefix in [*FAILURE_EVENTS, "09-", "10-", "11-", "12-", "13-", "14-", "17-"]:
        assert not engine(stopped, load_event(prefix)), prefix


# --------------------------------------------------------------------------------------------------------------
# (f) the self-check (issue 19, part 4): a schedule, the rules it checks by name, scoped describe grants, an alarm
# --------------------------------------------------------------------------------------------------------------
SELF_CHECK_RS = SRC / "core" / "self_check.rs"
SELF_CHECKED_RULES = {"off": ["FailedRunTaskRule"],
                      "failed-to-start": ["FailedRunTaskRule", "StartedRunTaskRule", "StoppedTaskRule"]}


def self_check_event_shape() -> tuple[str, str]:
    code = SELF_CHECK_RS.read_text()
    (source,) = re.findall(r'pub const SOURCE: &str = "([^"]+)";', code)
    (detail_type,) = re.findall(r'pub const DETAIL_TYPE: &str = "([^"]+)";', code)
    return source, detail_type


def test_self_check_parameter(template):
    p = template["Parameters"]["SelfCheckSchedule"]
    assert p["Default"] == "rate(1 hour)"
    for value, ok in [("", True), ("rate(1 hour)", True), ("rate(15 minutes)", True), ("cron(0 8 * * ? *)", True),
                      ("hourly", False), ("rate 1 hour", False)]:
        assert bool(re.fullmatch(p["AllowedPattern"], value)) == ok, value


def test_self_check_schedule_invokes_the_function_with_its_own_event(template):
    cfn = Cfn(template, params_for(template))
    res = template["Resources"]
    rule = cfn.eval(res["SelfCheckScheduleRule"]["Properties"])
    assert rule["ScheduleExpression"] == "rate(1 hour)" and rule["State"] == "ENABLED"
    assert "EventPattern" not in rule and "EventBusName" not in rule
    (target,) = rule["Targets"]
    assert target["Arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:EcsRerunFunction"
    assert target["DeadLetterConfig"] == {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:RuleDeadLetterQueue"}
    # a constant input whose shape is ours: the source and detail-type src/core/self_check.rs recognises
    event = json.loads(target["Input"])
    assert (event["source"], event["detail-type"]) == self_check_event_shape()
    assert event["source"] not in ("aws.ecs", "aws.events") and "eventSource" not in json.dumps(event)
    perm = cfn.eval(res["SelfCheckSchedulePermission"]["Properties"])
    assert perm["SourceArn"] == f"arn:aws:events:{REGION}:{ACCOUNT}:rule/SelfCheckScheduleRule"
    assert perm["Principal"] == "events.amazonaws.com" and perm["SourceAccount"] == ACCOUNT
    dlq = cfn.eval(res["RuleDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"])
    assert target["DeadLetterConfig"]["Arn"] and perm["SourceArn"] in dlq["Statement"][0]["Condition"]["ArnEquals"][
        "aws:SourceArn"]


@pytest.mark.parametrize("stopped", ["off", "failed-to-start"])
def test_self_check_variable_names_the_rules(template, stopped):
    """ECS_RERUN_SELF_CHECK_RULES holds exactly the Names of the rules that deliver events (no Ref: a cycle)."""
    cfn = Cfn(template, params_for(template, RerunStoppedTasks=stopped))
    res = template["Resources"]
    env = cfn.eval(res["EcsRerunFunction"]["Properties"]["Environment"]["Variables"])
    names = [cfn.eval(res[r]["Properties"])["Name"] for r in SELF_CHECKED_RULES[stopped]]
    assert env["ECS_RERUN_SELF_CHECK_RULES"].split(",") == names
    # EventBridge's limits: 64 characters of [.-_A-Za-z0-9]; the parameter's description promises 48 for the stack
    suffixes = [n.removeprefix(PSEUDO["AWS::StackName"]) for n in names]
    assert all(48 + len(suffix) <= 64 and re.fullmatch(r"[-.\w]+", suffix) for suffix in suffixes), suffixes
    assert "48 characters" in template["Parameters"]["SelfCheckSchedule"]["Description"]
    # no Ref/GetAtt of a rule in the function: each rule targets the function
    assert "Rule" not in json.dumps(res["EcsRerunFunction"]["Properties"]["Environment"]).replace("Rules", "")


@pytest.mark.parametrize("stopped", ["off", "failed-to-start"])
def test_self_check_grants_are_scoped(template, stopped):
    statements = role_statements(template, RerunStoppedTasks=stopped)
    cfn = Cfn(template, params_for(template, RerunStoppedTasks=stopped))
    res = template["Resources"]
    own = [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{cfn.eval(res[r]['Properties'])['Name']}"
           for r in SELF_CHECKED_RULES[stopped]]
    for arn in own:
        assert iam_allows(statements, "events:DescribeRule", arn, {}), arn
    for other in [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/someone-elses-rule",
                  f"arn:aws:events:eu-west-1:{ACCOUNT}:rule/ecs-rerun-failed-runtask",
                  f"arn:aws:events:{REGION}:{ACCOUNT}:rule/ecs-rerun-stopped-task" if stopped == "off" else "x"]:
        assert not iam_allows(statements, "events:DescribeRule", other, {}), other
    # DescribeTrails has no resource type; status and selectors per trail ARN, of any Region and account
    # (a multi-Region trail's home Region, an organization trail's management account)
    assert iam_allows(statements, "cloudtrail:DescribeTrails", "*", {})
    for action in ["cloudtrail:GetTrailStatus", "cloudtrail:GetEventSelectors"]:
        assert iam_allows(statements, action, "arn:aws:cloudtrail:eu-west-1:999988887777:trail/org", {})
        assert not iam_allows(statements, action, "*", {}), action
    for action in ["cloudtrail:StopLogging", "cloudtrail:PutEventSelectors", "events:DisableRule",
                   "events:ListRules", "events:PutRule"]:
        assert not iam_allows(statements, action, "*", {}) and not iam_allows(statements, action, own[0], {})


def test_self_check_off_creates_nothing(template):
    cfn = Cfn(template, params_for(template, SelfCheckSchedule="", RerunStoppedTasks="failed-to-start"))
    res = template["Resources"]
    for name in ["SelfCheckScheduleRule", "SelfCheckSchedulePermission", "SelfCheckAlarm"]:
        assert not cfn.condition(res[name]["Condition"]), name
    env = cfn.eval(res["EcsRerunFunction"]["Properties"]["Environment"]["Variables"])
    assert "ECS_RERUN_SELF_CHECK_RULES" not in env
    # the rules keep generated names, as before the self-check
    for rule in SELF_CHECKED_RULES["failed-to-start"]:
        assert "Name" not in cfn.eval(res[rule]["Properties"]), rule
    assert "alarm:SelfCheckAlarm" not in cfn.eval(res["Dashboard"]["Properties"]["DashboardBody"])
    (dlq_stmt,) = cfn.eval(res["RuleDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"])
    assert not any("SelfCheck" in arn for arn in dlq_stmt["Condition"]["ArnEquals"]["aws:SourceArn"])


def test_self_check_alarm(template):
    e = emitted()
    for params, topic in TOPIC_PARAMS:
        a = alarms(template, **params)["SelfCheckAlarm"]
        assert a["Namespace"] == e["namespace"] and a["MetricName"] == "SelfCheckFailed" in e["metrics"]
        assert a["Dimensions"] == [{"Name": "Check", "Value": "hearing"}]
        assert [d["Name"] for d in a["Dimensions"]] in e["dimension_sets"]
        assert a["Statistic"] == "Maximum" and a["Threshold"] == 1
        # ALARM from a failed check until one passes (0), whatever the schedule: missing data holds the state
        assert a["TreatMissingData"] == "ignore"
        assert a["AlarmActions"] == [topic]
