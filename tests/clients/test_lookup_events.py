"""CloudTrail LookupEvents on the admin listener, read with boto3's cloudtrail client and the
AWS CLI (`aws cloudtrail lookup-events --endpoint-url http://<admin_listen>`).

One proxy (module-scoped: the trail is made once) takes ~30 varied calls from boto3 (chime,
chime-sdk-messaging, chime-sdk-identity; reverse and forward mode; two client access keys),
slack_sdk (two tokens, both ways in), one call rejected by validation and one denied by a
guardrail. `audit query --format json` and `audit export --format cloudtrail` are the ground
truth every LookupEvents answer is compared with: the same events, newest first, each
attribute selecting exactly what CloudTrail says it selects.

The module fixture ends the proxy as conftest.py's fixtures do: SIGTERM with exit code 0,
`audit verify` accepts the chain, no secret at rest, and the fake vendor saw no bad signature.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from fake_vendor import FakeVendor
from harness import (
    ACCOUNT, APP_INSTANCE, BEARER, CHANNEL, CLIENT_AK, CLIENT_SK, EVENT_WAIT_S, FINAL_OUTCOMES,
    PROXY_AK, PROXY_SK, SENT_AUTHORIZATIONS, SLACK_CHANNEL, SLACK_FORM_TOKEN, SLACK_TOKEN, USER,
    Ctx, ProxyProcess, Spy, assert_not_in_store, clean_env, http_request, secrets_of_test,
    signature_of, toml_str,
)

# A second client key pair. Reverse mode re-signs with the proxy's key, so the vendor never
# needs this secret; the proxy records the key id the client claimed.
OTHER_AK = "AKIAOTHERCLIENT00001"
OTHER_SK = "0therCl13ntS3cr3tK3yF0rL00kupEv3nts/EXAMPLE"
CHANNEL_2 = APP_INSTANCE + "/channel/ch-0002"
SLACK_CHANNEL_2 = "C0987654321"
ADMIN_TOKEN = "admin-token-" + uuid.uuid4().hex

GUARDRAIL = """
[[guardrails]]
id = "app-retention-min-30"
targets = ["chime_sdk.app_instance_retention"]
min_days = 30
"""

LOOKUP_TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
# What the Smithy-generated SDKs (JavaScript v3, Go v2, Rust, ...) send for the same operation.
SMITHY_TARGET = "CloudTrail_20131101.LookupEvents"


# --------------------------------------------------------------------------- helpers


def cloudtrail(proxy: ProxyProcess, **kwargs):
    """boto3's cloudtrail client pointed at the admin listener, with dummy keys."""
    config = kwargs.pop("config", None) or Config(retries={"total_max_attempts": 1},
                                                  connect_timeout=5, read_timeout=20)
    return boto3.client(
        "cloudtrail", endpoint_url=proxy.admin_url, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="y", config=config, **kwargs,
    )


def with_target(client, target: str, sent=None) -> list:
    """Makes `client` send `target` as its X-Amz-Target, as another SDK would; returns the list
    (`sent`, or a new one) the X-Amz-Target of each request actually sent is appended to."""
    sent = [] if sent is None else sent

    def rewrite(request, **_):
        del request.headers["X-Amz-Target"]
        request.headers["X-Amz-Target"] = target

    def record(request, **_):
        value = request.headers.get("X-Amz-Target")
        sent.append(value.decode() if isinstance(value, bytes) else value)

    client.meta.events.register("before-sign.cloudtrail.LookupEvents", rewrite)
    client.meta.events.register("before-send.cloudtrail.LookupEvents", record)
    return sent


def raw_lookup(proxy: ProxyProcess, target, body: bytes = b"{}", token=None):
    """One LookupEvents as raw JSON 1.1: (status, error code or None, parsed body)."""
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    if target is not None:
        headers["X-Amz-Target"] = target
    if token is not None:
        headers["X-Amz-Security-Token"] = token
    status, resp_headers, raw = http_request("POST", proxy.admin_url + "/", body, headers)
    doc = json.loads(raw)
    code = None
    if status != 200:
        code = doc.get("__type", "").split("#")[-1]
        error_type = {k.lower(): v for k, v in resp_headers.items()}.get("x-amzn-errortype")
        assert code and error_type == code, (status, resp_headers, doc)
        assert doc.get("message"), doc
    return status, code, doc


def ids(events) -> list:
    return [e["EventId"] if "EventId" in e else e["eventID"] for e in events]


def newest_first(events: list) -> list:
    """Audit-query events (oldest first) in the order CloudTrail lists them."""
    return list(reversed(events))


def event_ms(ev: dict) -> int:
    t = datetime.datetime.strptime(ev["eventTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return round(t.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def ms_datetime(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def lookup_all(client, **params) -> list:
    """Every page of one lookup, following NextToken by hand."""
    out, seen_tokens = [], set()
    while True:
        resp = client.lookup_events(**params)
        out += resp["Events"]
        token = resp.get("NextToken")
        if not token:
            return out
        assert token not in seen_tokens, f"NextToken {token!r} repeated: endless paging"
        seen_tokens.add(token)
        params["NextToken"] = token


def wait_for_trail(proxy: ProxyProcess, count: int) -> list:
    """Poll `audit query` until `count` events exist, each with a final outcome."""
    deadline = time.monotonic() + EVENT_WAIT_S
    while True:
        events = proxy.query()
        if len(events) == count and all(e.get("outcome") in FINAL_OUTCOMES for e in events):
            return events
        assert len(events) <= count, f"{len(events)} events, want {count}: " + ", ".join(
            e.get("eventName", "?") for e in events)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"want {count} events with a final outcome within {EVENT_WAIT_S}s, have "
                + json.dumps([(e.get("eventName"), e.get("outcome")) for e in events])
            )
        time.sleep(0.05)


def make_trail(proxy: ProxyProcess, vendor: FakeVendor) -> int:
    """~30 varied calls through the proxy; returns how many events they must leave."""
    rev, fwd = Ctx(proxy, vendor, "reverse"), Ctx(proxy, vendor, "forward")
    n = 0

    def aws(ctx, service, op, **params):
        nonlocal n
        client, _ = ctx.aws(service)
        getattr(client, op)(**params)
        n += 1

    def chime_put(ctx, room, conv=None):
        rs = {"RoomRetentionSettings": {"RetentionDays": room}}
        if conv is not None:
            rs["ConversationRetentionSettings"] = {"RetentionDays": conv}
        aws(ctx, "chime", "put_retention_settings", AccountId=ACCOUNT, RetentionSettings=rs)

    def channel_put(ctx, arn, days, bearer=BEARER):
        aws(ctx, "chime-sdk-messaging", "put_channel_expiration_settings", ChannelArn=arn,
            ChimeBearer=bearer,
            ExpirationSettings={"ExpirationDays": days, "ExpirationCriterion": "CREATED_TIMESTAMP"})

    def app_put(ctx, days):
        aws(ctx, "chime-sdk-identity", "put_app_instance_retention_settings",
            AppInstanceArn=APP_INSTANCE,
            AppInstanceRetentionSettings={"ChannelRetentionSettings": {"RetentionDays": days}})

    # boto3, reverse mode, the usual client key
    chime_put(rev, 365, 180)
    aws(rev, "chime", "get_retention_settings", AccountId=ACCOUNT)
    chime_put(rev, 400)
    channel_put(rev, CHANNEL, 30)
    aws(rev, "chime-sdk-messaging", "describe_channel", ChannelArn=CHANNEL, ChimeBearer=BEARER)
    aws(rev, "chime-sdk-messaging", "create_channel", AppInstanceArn=APP_INSTANCE,
        Name="lookup-test", ClientRequestToken="tok-lookup-1", ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"})
    app_put(rev, 90)
    aws(rev, "chime-sdk-identity", "get_app_instance_retention_settings",
        AppInstanceArn=APP_INSTANCE)
    aws(rev, "chime-sdk-identity", "put_app_instance_user_expiration_settings",
        AppInstanceUserArn=USER,
        ExpirationSettings={"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"})
    aws(rev, "chime-sdk-identity", "describe_app_instance_user", AppInstanceUserArn=USER)
    aws(rev, "chime-sdk-identity", "create_app_instance_user", AppInstanceArn=APP_INSTANCE,
        AppInstanceUserId="user-lookup", Name="Lookup User", ClientRequestToken="tok-lookup-2")
    # boto3, forward mode (the client's own signature reaches the vendor)
    chime_put(fwd, 500, 200)
    aws(fwd, "chime", "get_retention_settings", AccountId=ACCOUNT)
    channel_put(fwd, CHANNEL, 60)
    app_put(fwd, 120)
    aws(fwd, "chime-sdk-identity", "get_app_instance_retention_settings",
        AppInstanceArn=APP_INSTANCE)
    # boto3, reverse mode, another client key
    other = boto3.session.Session(aws_access_key_id=OTHER_AK, aws_secret_access_key=OTHER_SK,
                                  region_name="us-east-1")
    for service, op, params in (
        ("chime", "put_retention_settings", dict(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 730}})),
        ("chime", "get_retention_settings", dict(AccountId=ACCOUNT)),
        ("chime-sdk-messaging", "put_channel_expiration_settings", dict(
            ChannelArn=CHANNEL_2, ChimeBearer=BEARER, ExpirationSettings={
                "ExpirationDays": 14, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"})),
    ):
        client = other.client(service, endpoint_url=proxy.url,
                               config=Config(retries={"total_max_attempts": 1}))
        client.meta.events.register("before-send", Spy())  # its signatures: never at rest
        getattr(client, op)(**params)
        n += 1
    # slack_sdk: two tokens, both ways in
    for ctx, token, method, params in (
        (rev, SLACK_TOKEN, "setCustomRetention", dict(channel_id=SLACK_CHANNEL, duration_days=365)),
        (rev, SLACK_TOKEN, "getCustomRetention", dict(channel_id=SLACK_CHANNEL)),
        (rev, SLACK_TOKEN, "removeCustomRetention", dict(channel_id=SLACK_CHANNEL)),
        (rev, SLACK_TOKEN, "setCustomRetention", dict(channel_id=SLACK_CHANNEL_2, duration_days=400)),
        (fwd, SLACK_FORM_TOKEN, "setCustomRetention", dict(channel_id=SLACK_CHANNEL, duration_days=500)),
        (fwd, SLACK_FORM_TOKEN, "getCustomRetention", dict(channel_id=SLACK_CHANNEL)),
    ):
        resp = getattr(ctx.slack(token), "admin_conversations_" + method)(**params)
        assert resp["ok"] is True, resp.data
        n += 1
    # refused by the proxy: validation (both vendors) and a guardrail
    client, _ = rev.aws("chime")
    with pytest.raises(client.exceptions.BadRequestException):
        client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 99999}})
    n += 1
    client, _ = fwd.aws("chime-sdk-identity")
    with pytest.raises(client.exceptions.ForbiddenException):
        client.put_app_instance_retention_settings(
            AppInstanceArn=APP_INSTANCE,
            AppInstanceRetentionSettings={"ChannelRetentionSettings": {"RetentionDays": 7}})
    n += 1
    with pytest.raises(SlackApiError):
        rev.slack().admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL,
                                                           duration_days=40000)
    n += 1
    # a few more reads, so that reads and writes interleave
    aws(rev, "chime", "get_retention_settings", AccountId=ACCOUNT)
    aws(fwd, "chime-sdk-messaging", "describe_channel", ChannelArn=CHANNEL, ChimeBearer=BEARER)
    chime_put(rev, 1000, 1000)
    return n


# --------------------------------------------------------------------------- the trail


@pytest.fixture(scope="module")
def trail(proxy_bin, tmp_path_factory):
    vendor = FakeVendor(secrets={CLIENT_AK: CLIENT_SK, PROXY_AK: PROXY_SK},
                        slack_tokens={SLACK_TOKEN, SLACK_FORM_TOKEN}).start()
    SENT_AUTHORIZATIONS.clear()
    proxy = ProxyProcess(proxy_bin, tmp_path_factory.mktemp("lookup-proxy"), vendor,
                         extra_config=GUARDRAIL)
    signatures = []  # what the clients signed (SENT_AUTHORIZATIONS is per test function)
    try:
        proxy.start()
        count = make_trail(proxy, vendor)
        signatures = [signature_of(a) for a in SENT_AUTHORIZATIONS]
        events = wait_for_trail(proxy, count)
        r = proxy.cli("audit", "export", "--db", str(proxy.db), "--format", "cloudtrail")
        assert r.returncode == 0, r.stderr.decode(errors="replace")
        records = {rec["eventID"]: rec for rec in json.loads(r.stdout)["Records"]}
        assert set(records) == set(ids(events)), "audit export and audit query disagree"
        yield SimpleNamespace(proxy=proxy, vendor=vendor, events=events, records=records)
    finally:
        failures = []
        secrets = secrets_of_test(vendor) + [OTHER_SK] + [s for s in signatures if s]
        try:
            assert_not_in_store(proxy, secrets)
            code = proxy.stop()
            if code != 0:
                failures.append(f"retention-proxy exited {code} after SIGTERM\n{proxy.logs()}")
            assert_not_in_store(proxy, secrets)
            if proxy.db.exists():
                r = proxy.verify()
                if r.returncode != 0:
                    failures.append(f"audit verify exited {r.returncode}: "
                                    f"{(r.stdout + r.stderr).decode(errors='replace')}")
        except AssertionError as e:
            failures.append(str(e))
        failures += vendor.problems()
        vendor.stop()
        if failures:
            pytest.fail("after the LookupEvents tests:\n" + "\n".join(failures), pytrace=False)


def test_trail_is_varied(trail):
    """The fixture's premise: enough events of every kind for the lookups to mean something."""
    evs = trail.events
    assert len(evs) >= 28, len(evs)
    assert {e["eventSource"] for e in evs} == {
        "chime.amazonaws.com", "messaging-chime.amazonaws.com", "identity-chime.amazonaws.com",
        "slack.com"}
    assert {e["outcome"] for e in evs} == {"forwarded", "rejected", "denied"}
    assert {e["readOnly"] for e in evs} == {True, False}
    assert {e["userIdentity"].get("accessKeyId") for e in evs} == {CLIENT_AK, OTHER_AK, None}


# --------------------------------------------------------------------------- listing


def test_lookup_without_attributes_lists_every_event_newest_first(trail):
    resp = cloudtrail(trail.proxy).lookup_events()
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(trail.events) < 50  # CloudTrail's default page size
    assert ids(resp["Events"]) == ids(newest_first(trail.events))
    assert "NextToken" not in resp, f"NextToken {resp.get('NextToken')!r} after the last event"


def test_each_event_matches_the_audit_log(trail):
    resp = cloudtrail(trail.proxy).lookup_events(MaxResults=50)
    by_id = {e["eventID"]: e for e in trail.events}
    assert len(resp["Events"]) == len(by_id)
    for le in resp["Events"]:
        ev = by_id[le["EventId"]]
        what = f"{ev['eventName']} {ev['eventID']}"
        assert le["EventName"] == ev["eventName"], what
        assert le["EventSource"] == ev["eventSource"], what
        assert le["ReadOnly"] == ("true" if ev["readOnly"] else "false"), (what, le["ReadOnly"])
        assert le.get("AccessKeyId") == ev["userIdentity"].get("accessKeyId"), what
        assert isinstance(le["EventTime"], datetime.datetime), le["EventTime"]
        assert round(le["EventTime"].timestamp() * 1000) == event_ms(ev), (
            f"{what}: EventTime {le['EventTime'].isoformat()} != eventTime {ev['eventTime']}")
        ct = json.loads(le["CloudTrailEvent"])
        assert ct["eventID"] == ev["eventID"], what
        assert ct["eventName"] == ev["eventName"], what
        assert ct["eventSource"] == ev["eventSource"], what
        assert ct["userIdentity"].get("accessKeyId") == ev["userIdentity"].get("accessKeyId"), (
            f"{what}: CloudTrailEvent userIdentity {ct['userIdentity']}")
        assert ct == trail.records[ev["eventID"]], (
            f"{what}: CloudTrailEvent differs from the `audit export --format cloudtrail` record")
        assert le.get("Username") == ct["userIdentity"].get("userName"), (
            f"{what}: Username {le.get('Username')!r}, CloudTrailEvent userName "
            f"{ct['userIdentity'].get('userName')!r}")
        assert le.get("Username"), f"{what}: no Username"
        listed = {r.get("ResourceName") for r in le.get("Resources") or []}
        for r in ev.get("resources") or []:
            assert r["id"] in listed, f"{what}: Resources {le.get('Resources')} lack {r['id']}"
        for r in le.get("Resources") or []:
            assert r.get("ResourceType") and r.get("ResourceName"), f"{what}: {r}"
        for secret in (SLACK_TOKEN, SLACK_FORM_TOKEN, CLIENT_SK, OTHER_SK, "Signature="):
            assert secret not in le["CloudTrailEvent"], f"{what}: a secret in CloudTrailEvent"


# --------------------------------------------------------------------------- attributes


def _slack_fingerprint(trail, token_index: int) -> str:
    fps = []
    for e in trail.events:
        fp = e["userIdentity"].get("tokenFingerprint")
        if fp and fp not in fps:
            fps.append(fp)
    assert len(fps) == 2, f"want two Slack token fingerprints, got {fps}"
    return fps[token_index]


def _first_id(trail, name):
    return next(e["eventID"] for e in trail.events if e["eventName"] == name)


# (attribute, value or a function of the trail, predicate on an audit event or "query")
ATTRIBUTE_CASES = {
    "EventName-put": ("EventName", "PutRetentionSettings",
                      lambda t, e, v: e["eventName"] == v),
    "EventName-slack": ("EventName", "admin.conversations.setCustomRetention",
                        lambda t, e, v: e["eventName"] == v),
    "EventName-none": ("EventName", "DeleteChannel", lambda t, e, v: False),
    "EventSource-messaging": ("EventSource", "messaging-chime.amazonaws.com",
                              lambda t, e, v: e["eventSource"] == v),
    "EventSource-slack": ("EventSource", "slack.com", lambda t, e, v: e["eventSource"] == v),
    "ReadOnly-true": ("ReadOnly", "true", lambda t, e, v: e["readOnly"] is True),
    "ReadOnly-false": ("ReadOnly", "false", lambda t, e, v: e["readOnly"] is False),
    "AccessKeyId-client": ("AccessKeyId", CLIENT_AK,
                           lambda t, e, v: e["userIdentity"].get("accessKeyId") == v),
    "AccessKeyId-other": ("AccessKeyId", OTHER_AK,
                          lambda t, e, v: e["userIdentity"].get("accessKeyId") == v),
    # Username is the userName of the CloudTrail record (as `audit export` writes it).
    "Username-access-key": ("Username", OTHER_AK,
                            lambda t, e, v: t.records[e["eventID"]]["userIdentity"].get("userName") == v),
    "Username-bearer": ("Username", BEARER,
                        lambda t, e, v: t.records[e["eventID"]]["userIdentity"].get("userName") == v),
    "Username-slack-token": ("Username", lambda t: _slack_fingerprint(t, 1),
                             lambda t, e, v: t.records[e["eventID"]]["userIdentity"].get("userName") == v),
    # ResourceName selects what `audit query --resource` selects.
    "ResourceName-account": ("ResourceName", ACCOUNT, "query"),
    "ResourceName-channel": ("ResourceName", CHANNEL, "query"),
    "ResourceName-channel-2": ("ResourceName", CHANNEL_2, "query"),
    "ResourceName-slack": ("ResourceName", SLACK_CHANNEL, "query"),
    "EventId": ("EventId", lambda t: _first_id(t, "DescribeChannel"),
                lambda t, e, v: e["eventID"] == v),
    "EventId-unknown": ("EventId", str(uuid.UUID(int=1)), lambda t, e, v: False),
}


@pytest.mark.parametrize("case", list(ATTRIBUTE_CASES))
def test_lookup_attribute(trail, case):
    key, value, select = ATTRIBUTE_CASES[case]
    if callable(value):
        value = value(trail)
    if select == "query":
        expected = newest_first(trail.proxy.query("--resource", value))
        assert expected, f"audit query --resource {value} finds nothing"
    else:
        expected = [e for e in newest_first(trail.events) if select(trail, e, value)]
    if not case.endswith(("-none", "-unknown")):
        assert expected, f"the trail has no event for {key}={value}"
    resp = cloudtrail(trail.proxy).lookup_events(
        LookupAttributes=[{"AttributeKey": key, "AttributeValue": value}], MaxResults=50)
    got = resp["Events"]
    assert ids(got) == ids(expected), (
        f"{key}={value}: got {[(e['EventName'], e['EventId']) for e in got]}, want "
        f"{[(e['eventName'], e['eventID']) for e in expected]}")
    if key == "ResourceName":
        for le in got:
            names = [r.get("ResourceName") for r in le.get("Resources") or []]
            assert value in names, f"{le['EventName']}: Resources {names} do not name {value}"


# --------------------------------------------------------------------------- time and paging


def test_start_and_end_time(trail):
    evs = trail.events
    client = cloudtrail(trail.proxy)
    lo, hi = event_ms(evs[8]), event_ms(evs[20])
    assert lo < hi, "the trail's events do not span time"

    def expect(pred):
        return ids([e for e in newest_first(evs) if pred(event_ms(e))])

    resp = client.lookup_events(StartTime=ms_datetime(lo), EndTime=ms_datetime(hi), MaxResults=50)
    assert ids(resp["Events"]) == expect(lambda t: lo <= t <= hi), (
        "StartTime and EndTime are inclusive bounds, to the millisecond")
    resp = client.lookup_events(StartTime=ms_datetime(lo), MaxResults=50)
    assert ids(resp["Events"]) == expect(lambda t: t >= lo)
    resp = client.lookup_events(EndTime=ms_datetime(hi), MaxResults=50)
    assert ids(resp["Events"]) == expect(lambda t: t <= hi)
    # one millisecond after the newest / before the oldest event: nothing
    first, last = event_ms(evs[0]), event_ms(evs[-1])
    assert client.lookup_events(StartTime=ms_datetime(last + 1))["Events"] == []
    assert client.lookup_events(EndTime=ms_datetime(first - 1))["Events"] == []
    # a time zone other than UTC means the same instant
    tz = datetime.timezone(datetime.timedelta(hours=-5))
    resp = client.lookup_events(StartTime=ms_datetime(lo).astimezone(tz),
                                EndTime=ms_datetime(hi).astimezone(tz), MaxResults=50)
    assert ids(resp["Events"]) == expect(lambda t: lo <= t <= hi)


def test_end_time_between_milliseconds(trail):
    """botocore sends microseconds: an EndTime 0.4 ms before an event's millisecond is before
    the event (which happened at or after that millisecond), so the event is not returned."""
    evs = trail.events
    # an event whose predecessor is at least 2 ms older, so no event is ambiguous
    i = next((i for i in range(5, len(evs)) if event_ms(evs[i]) - event_ms(evs[i - 1]) >= 2),
             None)
    assert i is not None, "no event 2 ms after its predecessor"
    t = event_ms(evs[i])
    end = ms_datetime(t) - datetime.timedelta(microseconds=400)
    resp = cloudtrail(trail.proxy).lookup_events(EndTime=end, MaxResults=50)
    assert ids(resp["Events"]) == ids(newest_first(evs[:i])), (
        f"EndTime {end.isoformat()} returned events of {evs[i]['eventTime']} and later: "
        f"{[(e['EventName'], e['EventTime'].isoformat()) for e in resp['Events'][:3]]}")


def test_event_category_insight(trail):
    """The audit log holds management events only: asking for Insights events (CloudTrail's
    EventCategory=insight) must not return them as if they were Insights events."""
    client = cloudtrail(trail.proxy)
    try:
        resp = client.lookup_events(EventCategory="insight", MaxResults=50)
    except ClientError as e:
        assert e.response["Error"]["Code"] in (
            "InvalidEventCategoryException", "InvalidParameterException"), e.response
    else:
        assert resp["Events"] == [], (
            f"EventCategory=insight returned {len(resp['Events'])} management events")


def test_max_results_and_next_token(trail):
    client = cloudtrail(trail.proxy)
    want = ids(newest_first(trail.events))
    resp = client.lookup_events(MaxResults=7)
    assert ids(resp["Events"]) == want[:7]
    assert resp.get("NextToken"), "MaxResults below the number of events must give a NextToken"
    resp2 = client.lookup_events(MaxResults=7, NextToken=resp["NextToken"])
    assert ids(resp2["Events"]) == want[7:14]
    assert ids(lookup_all(client, MaxResults=7)) == want
    assert ids(lookup_all(client, MaxResults=1)) == want


def test_paginator_over_all_events(trail):
    client = cloudtrail(trail.proxy)
    want = ids(newest_first(trail.proxy.query()))
    pages = list(client.get_paginator("lookup_events").paginate(PaginationConfig={"PageSize": 4}))
    assert len(pages) >= len(want) // 4
    got = [e for page in pages for e in page["Events"]]
    assert len(set(ids(got))) == len(got), "the paginator returned an event twice"
    assert len(got) == len(want), f"{len(got)} events paginated, audit query has {len(want)}"
    assert ids(got) == want, "paginated events are not the audit log, newest first"
    times = [e["EventTime"] for e in got]
    assert times == sorted(times, reverse=True), "events not newest first"
    # with an attribute and the paginator's own MaxItems/StartingToken
    slack = [e["eventID"] for e in newest_first(trail.events) if e["eventSource"] == "slack.com"]
    paginator = client.get_paginator("lookup_events")
    attrs = [{"AttributeKey": "EventSource", "AttributeValue": "slack.com"}]
    first = paginator.paginate(LookupAttributes=attrs,
                               PaginationConfig={"PageSize": 2, "MaxItems": 3}).build_full_result()
    assert ids(first["Events"]) == slack[:3] and first.get("NextToken")
    rest = paginator.paginate(LookupAttributes=attrs, PaginationConfig={
        "PageSize": 2, "StartingToken": first["NextToken"]}).build_full_result()
    assert ids(rest["Events"]) == slack[3:]


# --------------------------------------------------------------------------- X-Amz-Target forms


def test_smithy_target_form(trail):
    """boto3 sending the short X-Amz-Target of the Smithy SDKs reads the same events, pages
    and filters included."""
    client = cloudtrail(trail.proxy)
    sent = with_target(client, SMITHY_TARGET)
    assert ids(lookup_all(client, MaxResults=7)) == ids(newest_first(trail.events))
    slack = [e["eventID"] for e in newest_first(trail.events) if e["eventSource"] == "slack.com"]
    got = client.lookup_events(LookupAttributes=[
        {"AttributeKey": "EventSource", "AttributeValue": "slack.com"}])
    assert ids(got["Events"]) == slack
    assert len(sent) >= 2 and set(sent) == {SMITHY_TARGET}, sent
    with pytest.raises(ClientError) as ei:
        client.lookup_events(MaxResults=51)
    assert ei.value.response["Error"]["Code"] == "InvalidMaxResultsException"


def test_both_target_forms_raw(trail):
    want = ids(newest_first(trail.events))
    for target in (LOOKUP_TARGET, SMITHY_TARGET):
        for body in (b"{}", b""):
            status, code, doc = raw_lookup(trail.proxy, target, body)
            assert status == 200, (target, body, code, doc)
            assert ids(doc["Events"]) == want, (target, body)


@pytest.mark.parametrize("target", [
    "CloudTrail_20131101.DescribeTrails",
    "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.DescribeTrails",
    "LookupEvents",
    "Other_20131101.LookupEvents",
    None,
])
def test_unknown_operation(trail, target):
    status, code, doc = raw_lookup(trail.proxy, target)
    assert (status, code) == (400, "UnknownOperationException"), (target, doc)
    assert "Events" not in doc


# --------------------------------------------------------------------------- errors


ERROR_CASES = {
    "two-attributes": (dict(LookupAttributes=[
        {"AttributeKey": "EventName", "AttributeValue": "PutRetentionSettings"},
        {"AttributeKey": "ReadOnly", "AttributeValue": "false"}]),
        "InvalidLookupAttributesException"),
    "unknown-attribute": (dict(LookupAttributes=[
        {"AttributeKey": "Bogus", "AttributeValue": "x"}]), "InvalidLookupAttributesException"),
    "read-only-not-boolean": (dict(LookupAttributes=[
        {"AttributeKey": "ReadOnly", "AttributeValue": "maybe"}]),
        "InvalidLookupAttributesException"),
    "start-after-end": (dict(StartTime=datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc),
                             EndTime=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)),
                        "InvalidTimeRangeException"),
    "max-results-51": (dict(MaxResults=51), "InvalidMaxResultsException"),
    "next-token-foreign": (dict(NextToken="not-a-token-this-endpoint-gave"),
                           "InvalidNextTokenException"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_lookup_error(trail, case):
    params, code = ERROR_CASES[case]
    with pytest.raises(ClientError) as ei:
        cloudtrail(trail.proxy).lookup_events(**params)
    err = ei.value.response
    assert err["Error"]["Code"] == code, err
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400, err
    assert err["Error"].get("Message"), err


def test_max_results_zero(trail):
    """botocore refuses MaxResults=0 itself; the endpoint refuses it too when sent anyway."""
    with pytest.raises(ParamValidationError):
        cloudtrail(trail.proxy).lookup_events(MaxResults=0)
    lax = cloudtrail(trail.proxy, config=Config(parameter_validation=False,
                                                retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as ei:
        lax.lookup_events(MaxResults=0)
    assert ei.value.response["Error"]["Code"] == "InvalidMaxResultsException", ei.value.response
    # the same as a raw JSON 1.1 request
    status, headers, body = http_request(
        "POST", trail.proxy.admin_url + "/", b'{"MaxResults": 0}',
        {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": LOOKUP_TARGET})
    assert status == 400, (status, body[:300])
    doc = json.loads(body)
    code = doc.get("__type", "").split("#")[-1] or headers.get("x-amzn-ErrorType", "")
    assert code == "InvalidMaxResultsException", (headers, doc)


# --------------------------------------------------------------------------- AWS CLI


def aws_cloudtrail(proxy: ProxyProcess, *args: str, env_extra=None) -> dict:
    env = clean_env({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                     "AWS_MAX_ATTEMPTS": "1", **(env_extra or {})})
    cmd = [sys.executable, "-m", "awscli", "cloudtrail", "lookup-events",
           "--endpoint-url", proxy.admin_url, "--region", "us-east-1", "--output", "json", *args]
    r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert r.returncode == 0, (
        f"aws cloudtrail lookup-events {' '.join(args)} exited {r.returncode}\n"
        f"stdout: {r.stdout.decode()[-2000:]}\nstderr: {r.stderr.decode()[-3000:]}")
    return json.loads(r.stdout)


def test_aws_cli_lookup_events(trail):
    out = aws_cloudtrail(trail.proxy, "--lookup-attributes",
                         "AttributeKey=EventName,AttributeValue=PutRetentionSettings")
    want = [e for e in newest_first(trail.events) if e["eventName"] == "PutRetentionSettings"]
    assert len(want) >= 5
    assert ids(out["Events"]) == ids(want)
    for le, ev in zip(out["Events"], want):
        ct = json.loads(le["CloudTrailEvent"])
        assert ct["eventID"] == ev["eventID"] and ct["eventName"] == "PutRetentionSettings"
        assert ct["userIdentity"].get("accessKeyId") == ev["userIdentity"].get("accessKeyId")


def test_aws_cli_max_items_pagination(trail):
    want = ids(newest_first(trail.events))
    out = aws_cloudtrail(trail.proxy, "--max-items", "12", "--page-size", "5")
    assert ids(out["Events"]) == want[:12]
    assert out.get("NextToken"), f"--max-items 12 of {len(want)} events gave no NextToken"
    out2 = aws_cloudtrail(trail.proxy, "--starting-token", out["NextToken"], "--page-size", "5")
    assert ids(out2["Events"]) == want[12:]
    assert not out2.get("NextToken")


# --------------------------------------------------------------------------- admin_token


def with_admin_token(proxy: ProxyProcess, token: str) -> ProxyProcess:
    """The harness writes `[server]` itself; add `admin_token` to that table."""
    base = proxy.config_text
    proxy.config_text = lambda: base().replace(
        "[server]\n", f"[server]\nadmin_token = {toml_str(token)}\n", 1)
    return proxy


def test_admin_token_as_session_token(proxy_factory, fake_vendor):
    proxy = with_admin_token(proxy_factory(start=False), ADMIN_TOKEN).start()
    client = WebClient(token=SLACK_TOKEN, base_url=proxy.url + "/api/", timeout=20)
    client.admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL, duration_days=365)
    [ev] = wait_for_trail(proxy, 1)

    resp = cloudtrail(proxy, aws_session_token=ADMIN_TOKEN).lookup_events()
    assert ids(resp["Events"]) == [ev["eventID"]]
    for kwargs in ({}, {"aws_session_token": "not-" + ADMIN_TOKEN}):
        with pytest.raises(ClientError) as ei:
            cloudtrail(proxy, **kwargs).lookup_events()
        err = ei.value.response
        assert err["Error"]["Code"] == "AccessDeniedException", err
        assert ADMIN_TOKEN not in json.dumps(err, default=str)
    # the AWS CLI with the token as AWS_SESSION_TOKEN
    out = aws_cloudtrail(proxy, env_extra={"AWS_SESSION_TOKEN": ADMIN_TOKEN})
    assert ids(out["Events"]) == [ev["eventID"]]
    # the short target form of the Smithy SDKs, with and without the token
    client = cloudtrail(proxy, aws_session_token=ADMIN_TOKEN)
    sent = with_target(client, SMITHY_TARGET)
    assert ids(client.lookup_events()["Events"]) == [ev["eventID"]]
    for kwargs in ({}, {"aws_session_token": "not-" + ADMIN_TOKEN}):
        client = cloudtrail(proxy, **kwargs)
        with_target(client, SMITHY_TARGET, sent)
        with pytest.raises(ClientError) as ei:
            client.lookup_events()
        assert ei.value.response["Error"]["Code"] == "AccessDeniedException", ei.value.response
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert set(sent) == {SMITHY_TARGET}, sent
    # the token is checked before the operation: without it, any target is 403, not 400
    for token in (None, "not-" + ADMIN_TOKEN):
        for target in (LOOKUP_TARGET, SMITHY_TARGET, "CloudTrail_20131101.DescribeTrails", None):
            status, code, doc = raw_lookup(proxy, target, token=token)
            assert (status, code) == (403, "AccessDeniedException"), (target, token, doc)
            assert ADMIN_TOKEN not in json.dumps(doc)
    status, code, _ = raw_lookup(proxy, "CloudTrail_20131101.DescribeTrails", token=ADMIN_TOKEN)
    assert (status, code) == (400, "UnknownOperationException")
    assert_not_in_store(proxy, [ADMIN_TOKEN])
