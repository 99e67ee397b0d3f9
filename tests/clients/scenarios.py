"""The calls of SPEC section 1 made by real clients, with every check, for either way in.

Each function takes a Ctx (fake vendor + running proxy + mode) and asserts three things: what
the client got back, what the vendor received (body, headers, signature), and the audit event.
test_reverse.py and test_forward.py run them in the two modes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from urllib.parse import parse_qsl, quote

import pytest
from slack_sdk.errors import SlackApiError

from harness import (
    ACCOUNT, APP_INSTANCE, BEARER, CHANNEL, REAL_HOSTS, SLACK_CHANNEL, SLACK_TOKEN, USER,
    Ctx, assert_changes, assert_resource, check_event_envelope, find_key,
)

ROOM = "chime.room_retention"
CONVERSATION = "chime.conversation_retention"
APP_RETENTION = "chime_sdk.app_instance_retention"
CHANNEL_EXP = "chime_sdk.channel_expiration"
USER_EXP = "chime_sdk.user_expiration"
SLACK_RETENTION = "slack.channel_retention"

ACCOUNT_PATH = f"/accounts/{ACCOUNT}/retention-settings"
CHANNEL_ENC = quote(CHANNEL, safe="")
APP_INSTANCE_ENC = quote(APP_INSTANCE, safe="")
USER_ENC = quote(USER, safe="")


def strip_meta(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "ResponseMetadata"}


def aws_call(ctx: Ctx, service: str, op: str, **params):
    """Make one boto3 call through the proxy; returns (result, vendor record, sent, event)."""
    client, spy = ctx.aws(service)
    family = {"chime": "chime", "chime-sdk-messaging": "chime_messaging",
              "chime-sdk-identity": "chime_identity"}[service]
    mark = ctx.vendor.mark()
    result = getattr(client, op)(**params)
    rec = ctx.one_request(mark, family)
    sent = spy.last
    ctx.check_aws_transport(rec, sent)
    ev = ctx.event_for_record(rec)
    return result, rec, sent, ev


def assert_request_parameters_name(ev: dict, *values: str):
    text = json.dumps(ev.get("requestParameters"))
    for v in values:
        assert v in text, f"requestParameters {text[:800]} do not name {v!r}"


# =========================================================================== chime


def put_retention_settings(ctx: Ctx, settings: dict, expected: list, *, status=200):
    result, rec, sent, ev = aws_call(
        ctx, "chime", "put_retention_settings", AccountId=ACCOUNT, RetentionSettings=settings,
    )
    assert rec.method == "PUT" and rec.path == ACCOUNT_PATH, (rec.method, rec.path)
    assert rec.json() == {"RetentionSettings": settings}
    assert rec.status == status
    if status == 204:
        assert strip_meta(result) == {}
    elif settings:
        assert strip_meta(result)["RetentionSettings"] == settings
    ctx.check_aws_event(ev, name="PutRetentionSettings", family="chime", read_only=False,
                        rec=rec, sent=sent, resources=(ACCOUNT,))
    assert find_key(ev["requestParameters"], "RetentionSettings") == settings, (
        f"requestParameters {ev['requestParameters']!r}"
    )
    assert_request_parameters_name(ev, ACCOUNT)
    if expected is not None:
        assert_changes(ev, expected)
    return ev


def put_retention_settings_both(ctx: Ctx):
    settings = {"RoomRetentionSettings": {"RetentionDays": 365},
                "ConversationRetentionSettings": {"RetentionDays": 180}}
    put_retention_settings(ctx, settings, [(ROOM, ACCOUNT, None, 365),
                                           (CONVERSATION, ACCOUNT, None, 180)])
    assert ctx.vendor.accounts[ACCOUNT] == {"room": 365, "conversation": 180}


def put_retention_settings_room_only(ctx: Ctx):
    """Room retention only. SPEC 1 does not say whether the absent conversation settings are
    left alone or turned off (PUT replaces the whole object); either record is accepted, but
    a conversation change can only be "off", never a number of days."""
    settings = {"RoomRetentionSettings": {"RetentionDays": 30}}
    ev = put_retention_settings(ctx, settings, None)
    changes = ev.get("changes") or []
    conv = [c for c in changes if c.get("target") == CONVERSATION]
    expected = [(ROOM, ACCOUNT, None, 30)] + [(CONVERSATION, ACCOUNT, None, "off")] * len(conv)
    assert_changes(ev, expected)


def put_retention_settings_turn_off_conversation(ctx: Ctx):
    settings = {"RoomRetentionSettings": {"RetentionDays": 365},
                "ConversationRetentionSettings": {}}
    put_retention_settings(ctx, settings, [(ROOM, ACCOUNT, None, 365),
                                           (CONVERSATION, ACCOUNT, None, "off")])


def put_retention_settings_turn_off_all(ctx: Ctx):
    # `RetentionSettings: {}`: no settings object carries RetentionDays -> both retentions off
    # (the wire capture of this call is labelled "both off").
    put_retention_settings(ctx, {}, [(ROOM, ACCOUNT, None, "off"),
                                     (CONVERSATION, ACCOUNT, None, "off")])
    assert ctx.vendor.accounts[ACCOUNT] == {"room": None, "conversation": None}


def put_retention_settings_status_204(ctx: Ctx):
    ctx.vendor.chime_put_status = 204
    settings = {"RoomRetentionSettings": {"RetentionDays": 365},
                "ConversationRetentionSettings": {"RetentionDays": 180}}
    put_retention_settings(ctx, settings, [(ROOM, ACCOUNT, None, 365),
                                           (CONVERSATION, ACCOUNT, None, 180)], status=204)


def get_retention_settings(ctx: Ctx):
    ctx.vendor.seed_account(ACCOUNT, 365, 180)
    result, rec, sent, ev = aws_call(ctx, "chime", "get_retention_settings", AccountId=ACCOUNT)
    assert rec.method == "GET" and rec.path == ACCOUNT_PATH and rec.body == b""
    assert result["RetentionSettings"] == {
        "RoomRetentionSettings": {"RetentionDays": 365},
        "ConversationRetentionSettings": {"RetentionDays": 180},
    }
    assert isinstance(result["InitiateDeletionTimestamp"], datetime.datetime)
    ctx.check_aws_event(ev, name="GetRetentionSettings", family="chime", read_only=True,
                        rec=rec, sent=sent, resources=(ACCOUNT,))
    assert not ev.get("changes"), f"a read has no changes: {ev.get('changes')}"


# =========================================================================== chime sdk messaging


def put_channel_expiration_settings(ctx: Ctx):
    es = {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-messaging", "put_channel_expiration_settings",
        ChannelArn=CHANNEL, ChimeBearer=BEARER, ExpirationSettings=es,
    )
    assert rec.method == "PUT" and rec.path == f"/channels/{CHANNEL_ENC}/expiration-settings", (
        f"vendor got path {rec.path!r}: ARNs must stay percent-encoded"
    )
    assert rec.json() == {"ExpirationSettings": es}
    assert rec.header("x-amz-chime-bearer") == BEARER
    assert strip_meta(result) == {"ChannelArn": CHANNEL, "ExpirationSettings": es}
    ctx.check_aws_event(ev, name="PutChannelExpirationSettings", family="chime_messaging",
                        read_only=False, rec=rec, sent=sent, resources=(CHANNEL,))
    assert find_key(ev["requestParameters"], "ExpirationSettings") == es
    assert_request_parameters_name(ev, CHANNEL)
    assert_changes(ev, [(CHANNEL_EXP, CHANNEL, None, 30)])
    assert ctx.vendor.channels[CHANNEL]["ExpirationSettings"] == es


def put_channel_expiration_settings_removal(ctx: Ctx):
    # No ExpirationSettings (and no ChimeBearer): removes the channel's expiry.
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-messaging", "put_channel_expiration_settings", ChannelArn=CHANNEL,
    )
    assert rec.path == f"/channels/{CHANNEL_ENC}/expiration-settings"
    assert rec.body == b"{}"
    assert rec.header("x-amz-chime-bearer") is None
    assert strip_meta(result) == {"ChannelArn": CHANNEL}
    ctx.check_aws_event(ev, name="PutChannelExpirationSettings", family="chime_messaging",
                        read_only=False, rec=rec, sent=sent, resources=(CHANNEL,))
    assert_changes(ev, [(CHANNEL_EXP, CHANNEL, None, "off")])
    assert ctx.vendor.channels[CHANNEL]["ExpirationSettings"] is None


def create_channel(ctx: Ctx):
    es = {"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-messaging", "create_channel",
        AppInstanceArn=APP_INSTANCE, Name="retention-test", Mode="RESTRICTED", Privacy="PRIVATE",
        ClientRequestToken="tok-0001", ChimeBearer=BEARER, ExpirationSettings=es,
        Tags=[{"Key": "team", "Value": "legal"}],
    )
    assert rec.method == "POST" and rec.path == "/channels"
    assert rec.status == 201
    body = rec.json()
    assert body["ExpirationSettings"] == es and body["AppInstanceArn"] == APP_INSTANCE
    arn = result["ChannelArn"]
    assert arn.startswith(APP_INSTANCE + "/channel/")
    ctx.check_aws_event(ev, name="CreateChannel", family="chime_messaging", read_only=False,
                        rec=rec, sent=sent)
    ids = [str(r.get("id")) for r in ev.get("resources") or []]
    assert any(arn in i or APP_INSTANCE in i for i in ids), f"resources {ev.get('resources')}"
    assert find_key(ev["requestParameters"], "ExpirationSettings") == es
    # The channel ARN is known only from the response; the event must name it (SPEC 3:
    # changes[].resource is the resource whose retention changes).
    assert_changes(ev, [(CHANNEL_EXP, arn, None, 7)])
    assert [e["eventID"] for e in ctx.proxy.query("--resource", arn)] == [ev["eventID"]], (
        f"audit query --resource {arn} does not find the CreateChannel event"
    )
    assert ctx.vendor.channels[arn]["ExpirationSettings"] == es


def describe_channel(ctx: Ctx):
    es = {"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}
    ctx.vendor.seed_channel(CHANNEL, es)
    result, rec, sent, ev = aws_call(ctx, "chime-sdk-messaging", "describe_channel",
                                     ChannelArn=CHANNEL, ChimeBearer=BEARER)
    assert rec.method == "GET" and rec.path == f"/channels/{CHANNEL_ENC}"
    assert result["Channel"]["ChannelArn"] == CHANNEL
    assert result["Channel"]["ExpirationSettings"] == es
    ctx.check_aws_event(ev, name="DescribeChannel", family="chime_messaging", read_only=True,
                        rec=rec, sent=sent, resources=(CHANNEL,))
    assert not ev.get("changes"), f"a read has no changes: {ev.get('changes')}"


# =========================================================================== chime sdk identity


def put_app_instance_retention_settings(ctx: Ctx, days=90):
    ais = {"ChannelRetentionSettings": {"RetentionDays": days}}
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-identity", "put_app_instance_retention_settings",
        AppInstanceArn=APP_INSTANCE, AppInstanceRetentionSettings=ais,
    )
    assert rec.method == "PUT" and rec.path == f"/app-instances/{APP_INSTANCE_ENC}/retention-settings"
    assert rec.json() == {"AppInstanceRetentionSettings": ais}
    assert result["AppInstanceRetentionSettings"] == ais
    assert isinstance(result["InitiateDeletionTimestamp"], datetime.datetime)
    ctx.check_aws_event(ev, name="PutAppInstanceRetentionSettings", family="chime_identity",
                        read_only=False, rec=rec, sent=sent, resources=(APP_INSTANCE,))
    assert find_key(ev["requestParameters"], "AppInstanceRetentionSettings") == ais
    assert_request_parameters_name(ev, APP_INSTANCE)
    assert_changes(ev, [(APP_RETENTION, APP_INSTANCE, None, days)])
    assert ctx.vendor.app_instances[APP_INSTANCE] == days


def put_app_instance_retention_settings_off(ctx: Ctx):
    ais = {"ChannelRetentionSettings": {}}
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-identity", "put_app_instance_retention_settings",
        AppInstanceArn=APP_INSTANCE, AppInstanceRetentionSettings=ais,
    )
    assert rec.body == b'{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {}}}'
    assert result["AppInstanceRetentionSettings"] == ais
    ctx.check_aws_event(ev, name="PutAppInstanceRetentionSettings", family="chime_identity",
                        read_only=False, rec=rec, sent=sent, resources=(APP_INSTANCE,))
    assert_changes(ev, [(APP_RETENTION, APP_INSTANCE, None, "off")])
    assert ctx.vendor.app_instances[APP_INSTANCE] is None


def get_app_instance_retention_settings(ctx: Ctx):
    ctx.vendor.seed_app_instance(APP_INSTANCE, 90)
    result, rec, sent, ev = aws_call(ctx, "chime-sdk-identity",
                                     "get_app_instance_retention_settings",
                                     AppInstanceArn=APP_INSTANCE)
    assert rec.method == "GET" and rec.path == f"/app-instances/{APP_INSTANCE_ENC}/retention-settings"
    assert result["AppInstanceRetentionSettings"] == {"ChannelRetentionSettings": {"RetentionDays": 90}}
    ctx.check_aws_event(ev, name="GetAppInstanceRetentionSettings", family="chime_identity",
                        read_only=True, rec=rec, sent=sent, resources=(APP_INSTANCE,))
    assert not ev.get("changes"), f"a read has no changes: {ev.get('changes')}"


def put_app_instance_user_expiration_settings(ctx: Ctx):
    es = {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-identity", "put_app_instance_user_expiration_settings",
        AppInstanceUserArn=USER, ExpirationSettings=es,
    )
    assert rec.method == "PUT" and rec.path == f"/app-instance-users/{USER_ENC}/expiration-settings"
    assert rec.json() == {"ExpirationSettings": es}
    assert strip_meta(result) == {"AppInstanceUserArn": USER, "ExpirationSettings": es}
    ctx.check_aws_event(ev, name="PutAppInstanceUserExpirationSettings", family="chime_identity",
                        read_only=False, rec=rec, sent=sent, resources=(USER,))
    assert find_key(ev["requestParameters"], "ExpirationSettings") == es
    assert_request_parameters_name(ev, USER)
    assert_changes(ev, [(USER_EXP, USER, None, 365)])


def create_app_instance_user(ctx: Ctx):
    es = {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    arn = APP_INSTANCE + "/user/user-2"
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-identity", "create_app_instance_user",
        AppInstanceArn=APP_INSTANCE, AppInstanceUserId="user-2", Name="User Two",
        ClientRequestToken="tok-0002", ExpirationSettings=es,
    )
    assert rec.method == "POST" and rec.path == "/app-instance-users" and rec.status == 201
    assert rec.json()["ExpirationSettings"] == es
    assert result["AppInstanceUserArn"] == arn
    ctx.check_aws_event(ev, name="CreateAppInstanceUser", family="chime_identity",
                        read_only=False, rec=rec, sent=sent)
    ids = [str(r.get("id")) for r in ev.get("resources") or []]
    assert any(arn in i or APP_INSTANCE in i for i in ids), f"resources {ev.get('resources')}"
    assert_changes(ev, [(USER_EXP, arn, None, 365)])
    assert ctx.vendor.users[arn]["ExpirationSettings"] == es


def describe_app_instance_user(ctx: Ctx):
    es = {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    ctx.vendor.seed_user(USER, es)
    result, rec, sent, ev = aws_call(ctx, "chime-sdk-identity", "describe_app_instance_user",
                                     AppInstanceUserArn=USER)
    assert rec.method == "GET" and rec.path == f"/app-instance-users/{USER_ENC}"
    assert result["AppInstanceUser"]["AppInstanceUserArn"] == USER
    assert result["AppInstanceUser"]["ExpirationSettings"] == es
    ctx.check_aws_event(ev, name="DescribeAppInstanceUser", family="chime_identity",
                        read_only=True, rec=rec, sent=sent, resources=(USER,))
    assert not ev.get("changes"), f"a read has no changes: {ev.get('changes')}"


# =========================================================================== slack

SLACK_METHODS = {
    "set": "admin.conversations.setCustomRetention",
    "get": "admin.conversations.getCustomRetention",
    "remove": "admin.conversations.removeCustomRetention",
}


def slack_call(ctx: Ctx, op: str, body: str, params: dict):
    """One slack_sdk call; body "form" uses the typed method, "json" uses api_call(json=)."""
    method = SLACK_METHODS[op]
    client = ctx.slack()
    mark = ctx.vendor.mark()
    if body == "form":
        resp = getattr(client, "admin_conversations_" + method.split(".")[-1])(**params)
    else:
        resp = client.api_call(method, json=params)
    rec = ctx.one_request(mark, "slack")
    check_slack_transport(ctx, rec, method, body, params)
    ev = ctx.event_for_record(rec)
    check_slack_event(ctx, ev, rec, method, read_only=(op == "get"))
    return resp, rec, ev


def check_slack_transport(ctx: Ctx, rec, method: str, body: str, params: dict, token=SLACK_TOKEN):
    assert rec.method == "POST" and rec.target == "/api/" + method, (rec.method, rec.target)
    assert rec.header("authorization") == "Bearer " + token, (
        f"bearer token must pass unchanged, vendor got {rec.header('authorization')!r}"
    )
    if ctx.mode != "reverse":
        assert rec.header("host") == REAL_HOSTS["slack"], rec.header("host")
    if body == "form":
        assert rec.header("content-type").startswith("application/x-www-form-urlencoded")
        assert dict(parse_qsl(rec.body.decode())) == {k: str(v) for k, v in params.items()}
    else:
        assert rec.header("content-type").startswith("application/json")
        assert json.loads(rec.body) == params


def check_slack_event(ctx: Ctx, ev: dict, rec, method: str, read_only: bool,
                      outcome="forwarded", token=SLACK_TOKEN, user_agent="Python/"):
    check_event_envelope(ev)
    assert ev["eventName"] == method, ev["eventName"]
    assert ev["eventSource"] == "slack.com", ev["eventSource"]
    assert ev["eventType"] == "SlackApiCall", ev["eventType"]
    assert ev["readOnly"] is read_only, f"readOnly {ev['readOnly']!r}"
    assert ev["outcome"] == outcome, f"outcome {ev['outcome']!r}, want {outcome}: {ev}"
    fp = ev["userIdentity"].get("tokenFingerprint")
    assert isinstance(fp, str) and fp.startswith("hmac-sha256:"), f"tokenFingerprint {fp!r}"
    hexpart = fp[len("hmac-sha256:"):]
    assert len(hexpart) >= 16 and all(c in "0123456789abcdef" for c in hexpart), fp
    assert hexpart != hashlib.sha256(token.encode()).hexdigest(), (
        "tokenFingerprint is a plain SHA-256 of the token, not a keyed HMAC"
    )
    assert token not in json.dumps(ev), "the Slack token appears in the audit event"
    assert ev["userIdentity"].get("tokenType") == "xoxp", ev["userIdentity"]
    assert ev.get("sourceIPAddress") == "127.0.0.1", ev.get("sourceIPAddress")
    assert str(ev.get("userAgent", "")).startswith(user_agent), ev.get("userAgent")
    with pytest.raises(KeyError):
        find_key(ev.get("requestParameters") or {}, "token")
    assert find_key(ev["requestParameters"], "channel_id") == SLACK_CHANNEL
    assert_resource(ev, SLACK_CHANNEL)
    if rec is not None:
        assert ev["requestID"] == rec.request_id, (
            f"requestID {ev['requestID']!r} != vendor's x-slack-req-id {rec.request_id!r}"
        )
        assert ev["httpStatus"] == rec.status == 200


def slack_set(ctx: Ctx, body: str):
    params = {"channel_id": SLACK_CHANNEL, "duration_days": 365}
    resp, rec, ev = slack_call(ctx, "set", body, params)
    assert resp.data == {"ok": True}
    assert str(find_key(ev["requestParameters"], "duration_days")) == "365"
    assert_changes(ev, [(SLACK_RETENTION, SLACK_CHANNEL, None, 365)])
    assert ctx.vendor.slack_channels[SLACK_CHANNEL] == 365


def slack_get(ctx: Ctx, body: str):
    ctx.vendor.seed_slack_channel(SLACK_CHANNEL, 365)
    resp, rec, ev = slack_call(ctx, "get", body, {"channel_id": SLACK_CHANNEL})
    assert resp.data == {"ok": True, "is_policy_enabled": True, "duration_days": 365}
    assert not ev.get("changes"), f"a read has no changes: {ev.get('changes')}"
    assert (ev.get("responseElements") or {}).get("duration_days") == 365, (
        f"responseElements {ev.get('responseElements')!r}"
    )


def slack_remove(ctx: Ctx, body: str):
    ctx.vendor.seed_slack_channel(SLACK_CHANNEL, 365)
    resp, rec, ev = slack_call(ctx, "remove", body, {"channel_id": SLACK_CHANNEL})
    assert resp.data == {"ok": True}
    assert_changes(ev, [(SLACK_RETENTION, SLACK_CHANNEL, None, "default")])
    assert ctx.vendor.slack_channels[SLACK_CHANNEL] is None


# =========================================================================== previous values

def _chime_put(days_room, days_conv):
    return ("chime", "put_retention_settings", dict(
        AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": days_room},
            "ConversationRetentionSettings": {"RetentionDays": days_conv}}))


def _channel_put(days):
    return ("chime-sdk-messaging", "put_channel_expiration_settings", dict(
        ChannelArn=CHANNEL, ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": days, "ExpirationCriterion": "CREATED_TIMESTAMP"}))


def _app_put(days):
    return ("chime-sdk-identity", "put_app_instance_retention_settings", dict(
        AppInstanceArn=APP_INSTANCE,
        AppInstanceRetentionSettings={"ChannelRetentionSettings": {"RetentionDays": days}}))


def _user_put(days):
    return ("chime-sdk-identity", "put_app_instance_user_expiration_settings", dict(
        AppInstanceUserArn=USER,
        ExpirationSettings={"ExpirationDays": days, "ExpirationCriterion": "CREATED_TIMESTAMP"}))


PREVIOUS_FAMILIES = ("chime", "channel", "app_instance", "user", "slack")


def _change(ctx: Ctx, call) -> dict:
    service, op, params = call
    return aws_call(ctx, service, op, **params)[3]


def previous_on_second_change(ctx: Ctx, family: str):
    """The second change of the same resource records the first one's value as previous."""
    if family == "slack":
        _, _, ev1 = slack_call(ctx, "set", "form", {"channel_id": SLACK_CHANNEL, "duration_days": 365})
        assert_changes(ev1, [(SLACK_RETENTION, SLACK_CHANNEL, None, 365)])
        _, _, ev2 = slack_call(ctx, "set", "json", {"channel_id": SLACK_CHANNEL, "duration_days": 400})
        assert_changes(ev2, [(SLACK_RETENTION, SLACK_CHANNEL, 365, 400)])
        _, _, ev3 = slack_call(ctx, "remove", "form", {"channel_id": SLACK_CHANNEL})
        assert_changes(ev3, [(SLACK_RETENTION, SLACK_CHANNEL, 400, "default")])
        return
    if family == "chime":
        calls = [_chime_put(365, 180), _chime_put(400, 200)]
        exp1 = [(ROOM, ACCOUNT, None, 365), (CONVERSATION, ACCOUNT, None, 180)]
        exp2 = [(ROOM, ACCOUNT, 365, 400), (CONVERSATION, ACCOUNT, 180, 200)]
    elif family == "channel":
        calls = [_channel_put(30), _channel_put(60)]
        exp1, exp2 = [(CHANNEL_EXP, CHANNEL, None, 30)], [(CHANNEL_EXP, CHANNEL, 30, 60)]
    elif family == "app_instance":
        calls = [_app_put(90), _app_put(120)]
        exp1, exp2 = [(APP_RETENTION, APP_INSTANCE, None, 90)], [(APP_RETENTION, APP_INSTANCE, 90, 120)]
    else:
        calls = [_user_put(365), _user_put(730)]
        exp1, exp2 = [(USER_EXP, USER, None, 365)], [(USER_EXP, USER, 365, 730)]
    evs = [_change(ctx, call) for call in calls]
    assert_changes(evs[0], exp1)
    assert_changes(evs[1], exp2)


def previous_from_read(ctx: Ctx, family: str):
    """A read through the proxy teaches it the current value, used as the next change's previous."""
    if family == "slack":
        ctx.vendor.seed_slack_channel(SLACK_CHANNEL, 90)
        slack_call(ctx, "get", "form", {"channel_id": SLACK_CHANNEL})
        _, _, ev = slack_call(ctx, "set", "form", {"channel_id": SLACK_CHANNEL, "duration_days": 365})
        assert_changes(ev, [(SLACK_RETENTION, SLACK_CHANNEL, 90, 365)])
        return
    if family == "chime":
        ctx.vendor.seed_account(ACCOUNT, 90, 30)
        aws_call(ctx, "chime", "get_retention_settings", AccountId=ACCOUNT)
        ev = _change(ctx, _chime_put(365, 180))
        assert_changes(ev, [(ROOM, ACCOUNT, 90, 365), (CONVERSATION, ACCOUNT, 30, 180)])
    elif family == "channel":
        ctx.vendor.seed_channel(CHANNEL, {"ExpirationDays": 14, "ExpirationCriterion": "CREATED_TIMESTAMP"})
        aws_call(ctx, "chime-sdk-messaging", "describe_channel", ChannelArn=CHANNEL, ChimeBearer=BEARER)
        ev = _change(ctx, _channel_put(30))
        assert_changes(ev, [(CHANNEL_EXP, CHANNEL, 14, 30)])
    elif family == "app_instance":
        ctx.vendor.seed_app_instance(APP_INSTANCE, 60)
        aws_call(ctx, "chime-sdk-identity", "get_app_instance_retention_settings",
                 AppInstanceArn=APP_INSTANCE)
        ev = _change(ctx, _app_put(90))
        assert_changes(ev, [(APP_RETENTION, APP_INSTANCE, 60, 90)])
    else:
        ctx.vendor.seed_user(USER, {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"})
        aws_call(ctx, "chime-sdk-identity", "describe_app_instance_user", AppInstanceUserArn=USER)
        ev = _change(ctx, _user_put(365))
        assert_changes(ev, [(USER_EXP, USER, 30, 365)])


# =========================================================================== validation

# Out-of-range values the clients do not check (botocore checks no maximum, enum or pattern).
AWS_INVALID = {
    "room_days_99999": ("chime", "put_retention_settings", "PutRetentionSettings", dict(
        AccountId=ACCOUNT, RetentionSettings={"RoomRetentionSettings": {"RetentionDays": 99999}})),
    "conversation_days_5476": ("chime", "put_retention_settings", "PutRetentionSettings", dict(
        AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 365},
            "ConversationRetentionSettings": {"RetentionDays": 5476}})),
    "channel_days_5476": ("chime-sdk-messaging", "put_channel_expiration_settings",
                          "PutChannelExpirationSettings", dict(
        ChannelArn=CHANNEL, ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": 5476, "ExpirationCriterion": "CREATED_TIMESTAMP"})),
    "channel_criterion_bogus": ("chime-sdk-messaging", "put_channel_expiration_settings",
                                "PutChannelExpirationSettings", dict(
        ChannelArn=CHANNEL, ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": 30, "ExpirationCriterion": "BOGUS"})),
    "create_channel_days_99999": ("chime-sdk-messaging", "create_channel", "CreateChannel", dict(
        AppInstanceArn=APP_INSTANCE, Name="retention-test", ClientRequestToken="tok-0003",
        ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": 99999, "ExpirationCriterion": "CREATED_TIMESTAMP"})),
    "app_instance_days_99999": ("chime-sdk-identity", "put_app_instance_retention_settings",
                                "PutAppInstanceRetentionSettings", dict(
        AppInstanceArn=APP_INSTANCE,
        AppInstanceRetentionSettings={"ChannelRetentionSettings": {"RetentionDays": 99999}})),
    "user_criterion_last_message": ("chime-sdk-identity", "put_app_instance_user_expiration_settings",
                                    "PutAppInstanceUserExpirationSettings", dict(
        AppInstanceUserArn=USER,
        ExpirationSettings={"ExpirationDays": 30, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"})),
    "create_user_days_5476": ("chime-sdk-identity", "create_app_instance_user",
                              "CreateAppInstanceUser", dict(
        AppInstanceArn=APP_INSTANCE, AppInstanceUserId="user-3", Name="User Three",
        ClientRequestToken="tok-0004",
        ExpirationSettings={"ExpirationDays": 5476, "ExpirationCriterion": "CREATED_TIMESTAMP"})),
    "account_id_blank": ("chime", "put_retention_settings", "PutRetentionSettings", dict(
        AccountId=" ", RetentionSettings={"RoomRetentionSettings": {"RetentionDays": 365}})),
    "channel_arn_pattern": ("chime-sdk-messaging", "put_channel_expiration_settings",
                            "PutChannelExpirationSettings", dict(
        ChannelArn="notanarn", ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"})),
}


def aws_rejected(ctx: Ctx, case: str):
    service, op, name, params = AWS_INVALID[case]
    family = {"chime": "chime", "chime-sdk-messaging": "chime_messaging",
              "chime-sdk-identity": "chime_identity"}[service]
    client, spy = ctx.aws(service)
    mark = ctx.vendor.mark()
    with pytest.raises(client.exceptions.BadRequestException) as ei:
        getattr(client, op)(**params)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ctx.vendor.since(mark) == [], "a rejected call reached the vendor"
    ev = ctx.event_for_invocation(spy.last.header("amz-sdk-invocation-id"))
    ctx.check_aws_event(ev, name=name, family=family, read_only=False, rec=None,
                        sent=spy.last, outcome="rejected")
    assert ev["httpStatus"] == 400, f"httpStatus {ev['httpStatus']!r}"
    assert ev.get("errorCode") == "BadRequestException", f"errorCode {ev.get('errorCode')!r}"


SLACK_INVALID = {
    "duration_36500_form": ("form", 36500),
    "duration_40000_form": ("form", 40000),
    "duration_40000_json": ("json", 40000),
    "duration_0_form": ("form", 0),
}


def slack_rejected(ctx: Ctx, case: str):
    body, days = SLACK_INVALID[case]
    client = ctx.slack()
    mark = ctx.vendor.mark()
    params = {"channel_id": SLACK_CHANNEL, "duration_days": days}
    with pytest.raises(SlackApiError) as ei:
        if body == "form":
            client.admin_conversations_setCustomRetention(**params)
        else:
            client.api_call(SLACK_METHODS["set"], json=params)
    assert ei.value.response["ok"] is False
    assert ei.value.response["error"] == "invalid_arguments", ei.value.response.data
    assert ctx.vendor.since(mark) == [], "a rejected call reached the vendor"
    ev = ctx.proxy.wait_event(
        lambda e: e.get("eventName") == SLACK_METHODS["set"] and e.get("outcome") == "rejected",
        "the rejected setCustomRetention")
    check_slack_event(ctx, ev, None, SLACK_METHODS["set"], read_only=False, outcome="rejected")
    assert ev.get("errorCode") == "invalid_arguments", f"errorCode {ev.get('errorCode')!r}"


# =========================================================================== AWS CLI


def _cli_call(ctx: Ctx, service: str, family: str, *args: str):
    mark = ctx.vendor.mark()
    r = ctx.aws_cli(service, *args)
    assert r.returncode == 0, (
        f"aws {service} {args[0]} exited {r.returncode}\nstdout: {r.stdout.decode()}\n"
        f"stderr: {r.stderr.decode()[-3000:]}"
    )
    rec = ctx.one_request(mark, family)
    ctx.check_aws_transport(rec, None)
    assert rec.header("user-agent", "").startswith("aws-cli/"), rec.header("user-agent")
    assert rec.header("amz-sdk-invocation-id"), "the CLI's amz-sdk-invocation-id did not arrive"
    ev = ctx.event_for_record(rec)
    assert ev["invocationId"] == rec.header("amz-sdk-invocation-id")
    assert str(ev.get("userAgent", "")).startswith("aws-cli/"), f"userAgent {ev.get('userAgent')!r}"
    out = json.loads(r.stdout) if r.stdout.strip() else {}
    return out, rec, ev


def cli_put_retention_settings(ctx: Ctx):
    settings = {"RoomRetentionSettings": {"RetentionDays": 365},
                "ConversationRetentionSettings": {"RetentionDays": 180}}
    out, rec, ev = _cli_call(ctx, "chime", "chime", "put-retention-settings",
                             "--account-id", ACCOUNT,
                             "--retention-settings", json.dumps(settings))
    assert rec.path == ACCOUNT_PATH and rec.json() == {"RetentionSettings": settings}
    assert out.get("RetentionSettings") == settings
    ctx.check_aws_event(ev, name="PutRetentionSettings", family="chime", read_only=False,
                        rec=rec, sent=None, resources=(ACCOUNT,))
    assert_changes(ev, [(ROOM, ACCOUNT, None, 365), (CONVERSATION, ACCOUNT, None, 180)])


def cli_put_channel_expiration_settings(ctx: Ctx):
    out, rec, ev = _cli_call(ctx, "chime-sdk-messaging", "chime_messaging",
                             "put-channel-expiration-settings", "--channel-arn", CHANNEL,
                             "--chime-bearer", BEARER, "--expiration-settings",
                             "ExpirationDays=30,ExpirationCriterion=CREATED_TIMESTAMP")
    assert rec.path == f"/channels/{CHANNEL_ENC}/expiration-settings"
    es = {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    assert rec.json() == {"ExpirationSettings": es}
    assert rec.header("x-amz-chime-bearer") == BEARER
    assert out.get("ExpirationSettings") == es
    ctx.check_aws_event(ev, name="PutChannelExpirationSettings", family="chime_messaging",
                        read_only=False, rec=rec, sent=None, resources=(CHANNEL,))
    assert ev["userIdentity"].get("chimeBearer") == BEARER
    assert_changes(ev, [(CHANNEL_EXP, CHANNEL, None, 30)])


# =========================================================================== pass-through


def passthrough_not_audited(ctx: Ctx):
    """Calls outside SPEC section 1 reach the vendor (validly signed) and leave no event."""
    ctx.vendor.seed_channel(CHANNEL, None)
    client, spy = ctx.aws("chime-sdk-messaging")
    mark = ctx.vendor.mark()
    result = client.list_channels(AppInstanceArn=APP_INSTANCE, ChimeBearer=BEARER, MaxResults=5)
    assert [c["ChannelArn"] for c in result["Channels"]] == [CHANNEL]
    rec = ctx.one_request(mark, "chime_messaging")
    ctx.check_aws_transport(rec, spy.last)
    assert rec.path == "/channels" and "app-instance-arn=" in rec.query, rec.target

    for service, family, op, path in (
        ("chime-sdk-messaging", "chime_messaging", "list_channel_flows", "/channel-flows"),
        ("chime-sdk-identity", "chime_identity", "list_app_instance_bots", "/app-instance-bots"),
    ):
        client, spy = ctx.aws(service)
        mark = ctx.vendor.mark()
        getattr(client, op)(AppInstanceArn=APP_INSTANCE)
        rec = ctx.one_request(mark, family)
        ctx.check_aws_transport(rec, spy.last)
        assert rec.path == path, rec.target

    mark = ctx.vendor.mark()
    resp = ctx.slack().auth_test()
    assert resp["ok"] is True and resp["team_id"] == "T0000000000"
    rec = ctx.one_request(mark, "slack")
    assert rec.target == "/api/auth.test"
    assert rec.header("authorization") == "Bearer " + SLACK_TOKEN

    # An audited call afterwards: once its event is there, no other event may exist.
    _, rec, _, ev = aws_call(ctx, "chime", "get_retention_settings", AccountId=ACCOUNT)
    events = ctx.proxy.query()
    assert [e["eventName"] for e in events] == ["GetRetentionSettings"], (
        f"pass-through calls were audited: {[e.get('eventName') for e in events]}"
    )


# =========================================================================== encoding and limits


ODD_CHANNEL = APP_INSTANCE + "/channel/ch.a@b:c_d-e"


def odd_arn_characters(ctx: Ctx):
    """A channel id with every character its pattern allows (. @ : _ -): path byte-identical."""
    es = {"ExpirationDays": 45, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}
    result, rec, sent, ev = aws_call(
        ctx, "chime-sdk-messaging", "put_channel_expiration_settings",
        ChannelArn=ODD_CHANNEL, ChimeBearer=BEARER, ExpirationSettings=es,
    )
    assert rec.path == "/channels/" + quote(ODD_CHANNEL, safe="") + "/expiration-settings", rec.path
    assert result["ChannelArn"] == ODD_CHANNEL
    ctx.check_aws_event(ev, name="PutChannelExpirationSettings", family="chime_messaging",
                        read_only=False, rec=rec, sent=sent, resources=(ODD_CHANNEL,))
    assert_changes(ev, [(CHANNEL_EXP, ODD_CHANNEL, None, 45)])
    assert [e["eventID"] for e in ctx.proxy.query("--resource", ODD_CHANNEL)] == [ev["eventID"]]


def boundaries_accepted(ctx: Ctx):
    """The largest values the vendors accept pass the proxy's validation."""
    ev = _change(ctx, _chime_put(5475, 1))
    assert_changes(ev, [(ROOM, ACCOUNT, None, 5475), (CONVERSATION, ACCOUNT, None, 1)])
    ev = _change(ctx, _channel_put(5475))
    assert_changes(ev, [(CHANNEL_EXP, CHANNEL, None, 5475)])
    _, _, ev = slack_call(ctx, "set", "form", {"channel_id": SLACK_CHANNEL, "duration_days": 36499})
    assert_changes(ev, [(SLACK_RETENTION, SLACK_CHANNEL, None, 36499)])
