"""Guardrails (SPEC 4) as real clients see them: a refusal in each client's own shape.

Both ways in. A refused call never reaches the vendor; boto3 raises ForbiddenException with
`x-amzn-RequestId` = the eventID, slack_sdk raises SlackApiError `restricted_action`.
"""

import pytest
from slack_sdk.errors import SlackApiError

import scenarios
from harness import ACCOUNT, CLIENT_AK, SLACK_CHANNEL, Ctx
from scenarios import CONVERSATION, ROOM, SLACK_RETENTION, assert_changes

GUARDRAIL = """
[[guardrails]]
id = "legal-hold-1y"
min_days = 365
max_days = 2555
mode = "{mode}"
exempt = [{exempt}]
"""


@pytest.fixture(params=["reverse", "forward"])
def way(request):
    return request.param


def make_ctx(proxy_factory, fake_vendor, way, mode="enforce", exempt=""):
    proxy = proxy_factory(extra_config=GUARDRAIL.format(mode=mode, exempt=exempt))
    return Ctx(proxy, fake_vendor, way)


def test_denied_aws_call(proxy_factory, fake_vendor, way):
    ctx = make_ctx(proxy_factory, fake_vendor, way)
    client, spy = ctx.aws("chime")
    mark = ctx.vendor.mark()
    with pytest.raises(client.exceptions.ForbiddenException) as ei:
        client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 30},
            "ConversationRetentionSettings": {"RetentionDays": 400}})
    assert ctx.vendor.since(mark) == [], "a denied call reached the vendor"
    err = ei.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "legal-hold-1y" in err["Error"]["Message"], err
    ev = ctx.event_for_invocation(spy.last.header("amz-sdk-invocation-id"))
    ctx.check_aws_event(ev, name="PutRetentionSettings", family="chime", read_only=False,
                        rec=None, sent=spy.last, resources=(ACCOUNT,), outcome="denied")
    assert err["ResponseMetadata"]["RequestId"] == ev["eventID"], (
        "x-amzn-RequestId of a refusal must be the eventID"
    )
    assert ev["httpStatus"] == 403
    assert ev["guardrail"]["decision"] == "deny", ev["guardrail"]
    assert ev["guardrail"]["ruleIds"] == ["legal-hold-1y"], ev["guardrail"]
    assert_changes(ev, [(ROOM, ACCOUNT, None, 30), (CONVERSATION, ACCOUNT, None, 400)])


def test_allowed_aws_call(proxy_factory, fake_vendor, way):
    ctx = make_ctx(proxy_factory, fake_vendor, way)
    _, rec, _, ev = scenarios.aws_call(
        ctx, "chime", "put_retention_settings", AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 365},
            "ConversationRetentionSettings": {"RetentionDays": 2555}})
    assert ev["outcome"] == "forwarded" and ev["guardrail"]["decision"] == "allow", ev["guardrail"]


def test_turning_retention_off_fails_max_days(proxy_factory, fake_vendor, way):
    ctx = make_ctx(proxy_factory, fake_vendor, way)
    client, spy = ctx.aws("chime-sdk-identity")
    mark = ctx.vendor.mark()
    with pytest.raises(client.exceptions.ForbiddenException):
        client.put_app_instance_retention_settings(
            AppInstanceArn=scenarios.APP_INSTANCE,
            AppInstanceRetentionSettings={"ChannelRetentionSettings": {}})
    assert ctx.vendor.since(mark) == []
    ev = ctx.event_for_invocation(spy.last.header("amz-sdk-invocation-id"))
    assert ev["outcome"] == "denied"
    assert_changes(ev, [(scenarios.APP_RETENTION, scenarios.APP_INSTANCE, None, "off")])


def test_denied_slack_call(proxy_factory, fake_vendor, way):
    ctx = make_ctx(proxy_factory, fake_vendor, way)
    mark = ctx.vendor.mark()
    with pytest.raises(SlackApiError) as ei:
        ctx.slack().admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL,
                                                           duration_days=30)
    assert ctx.vendor.since(mark) == []
    assert ei.value.response.status_code == 200
    assert ei.value.response["error"] == "restricted_action", ei.value.response.data
    assert "legal-hold-1y" in ei.value.response.get("detail", ""), ei.value.response.data
    with pytest.raises(SlackApiError) as ei:
        ctx.slack().admin_conversations_removeCustomRetention(channel_id=SLACK_CHANNEL)
    assert ei.value.response["error"] == "restricted_action"  # "default" fails without allow_default
    assert ctx.vendor.since(mark) == []
    evs = [e for e in ctx.proxy.query("--source", "slack.com")]
    assert [e["outcome"] for e in evs] == ["denied", "denied"], evs
    assert_changes(evs[0], [(SLACK_RETENTION, SLACK_CHANNEL, None, 30)])
    assert_changes(evs[1], [(SLACK_RETENTION, SLACK_CHANNEL, None, "default")])
    assert {e["guardrail"]["decision"] for e in evs} == {"deny"}


def test_dry_run_forwards_and_records(proxy_factory, fake_vendor, way):
    ctx = make_ctx(proxy_factory, fake_vendor, way, mode="dry_run")
    _, rec, _, ev = scenarios.aws_call(
        ctx, "chime", "put_retention_settings", AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 30},
            "ConversationRetentionSettings": {"RetentionDays": 400}})
    assert ev["outcome"] == "forwarded"
    assert ev["guardrail"]["decision"] == "dry_run_deny", ev["guardrail"]
    assert ev["guardrail"]["ruleIds"] == ["legal-hold-1y"]


def test_exempt_access_key(proxy_factory, fake_vendor, way):
    ctx = make_ctx(proxy_factory, fake_vendor, way, exempt=f'"{CLIENT_AK}"')
    _, rec, _, ev = scenarios.aws_call(
        ctx, "chime", "put_retention_settings", AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 30},
            "ConversationRetentionSettings": {"RetentionDays": 400}})
    assert ev["outcome"] == "forwarded"
    assert ev["guardrail"]["decision"] == "exempt", ev["guardrail"]


SCOPED = """
[[guardrails]]
id = "scoped-hold"
min_days = 365
[guardrails.scope]
accounts = ["{account}"]
slack_channels = ["{channel_prefix}*"]
"""


def test_scope_limits_where_a_rule_applies(proxy_factory, fake_vendor, way):
    proxy = proxy_factory(extra_config=SCOPED.format(account=ACCOUNT, channel_prefix=SLACK_CHANNEL[:3]))
    ctx = Ctx(proxy, fake_vendor, way)
    # In scope: refused.
    mark = ctx.vendor.mark()
    with pytest.raises(SlackApiError) as ei:
        ctx.slack().admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL, duration_days=30)
    assert ei.value.response["error"] == "restricted_action"
    assert "scoped-hold" in ei.value.response.get("detail", "")
    assert ctx.vendor.since(mark) == []
    client, _ = ctx.aws("chime")
    with pytest.raises(client.exceptions.ForbiddenException):
        client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 30},
            "ConversationRetentionSettings": {"RetentionDays": 400}})
    assert ctx.vendor.since(mark) == []
    # Out of scope (another channel, another account): forwarded and recorded as allowed.
    other_channel = "Z" + SLACK_CHANNEL[1:]
    resp = ctx.slack().admin_conversations_setCustomRetention(channel_id=other_channel, duration_days=30)
    assert resp["ok"] is True
    client.put_retention_settings(AccountId="other-account-1", RetentionSettings={
        "RoomRetentionSettings": {"RetentionDays": 30},
        "ConversationRetentionSettings": {"RetentionDays": 400}})
    assert len(ctx.vendor.since(mark)) == 2
    allowed = ctx.proxy.query("--decision", "allow")
    assert {r["id"] for e in allowed for r in e["resources"]} >= {other_channel, "other-account-1"}
    denied = ctx.proxy.query("--decision", "deny")
    assert len(denied) == 2 and all(e["guardrail"]["ruleIds"] == ["scoped-hold"] for e in denied)
