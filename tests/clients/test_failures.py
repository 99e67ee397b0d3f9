"""When things go wrong: vendor errors, retries, an unreachable vendor, a locked audit store.

Each test runs in both ways in (reverse and forward).
"""

import signal
import sqlite3
import threading
import time

import pytest
from botocore.exceptions import ClientError
from slack_sdk.errors import SlackApiError

import scenarios
from harness import ACCOUNT, BEARER, CHANNEL, SLACK_CHANNEL, Ctx
from scenarios import CHANNEL_EXP, assert_changes


@pytest.fixture(params=["reverse", "forward"])
def ctx(request, proxy, fake_vendor):
    return Ctx(proxy, fake_vendor, request.param)


def test_vendor_error_is_forwarded_and_recorded(ctx):
    """A vendor 404 reaches the client as the vendor's exception and is recorded with its code."""
    client, spy = ctx.aws("chime-sdk-messaging")
    mark = ctx.vendor.mark()
    with pytest.raises(client.exceptions.NotFoundException):
        client.describe_channel(ChannelArn=CHANNEL, ChimeBearer=BEARER)
    rec = ctx.one_request(mark, "chime_messaging")
    ctx.check_aws_transport(rec, spy.last)
    assert rec.status == 404
    ev = ctx.event_for_record(rec)
    ctx.check_aws_event(ev, name="DescribeChannel", family="chime_messaging", read_only=True,
                        rec=rec, sent=spy.last, resources=(CHANNEL,))
    assert ev.get("errorCode") == "NotFoundException", f"errorCode {ev.get('errorCode')!r}"


def test_failed_change_does_not_become_previous(ctx):
    """`previous` comes from successful changes only (SPEC 3)."""
    scenarios._change(ctx, scenarios._channel_put(30))
    ctx.vendor.fail_next("chime_messaging", 500, "ServiceFailureException")
    client, spy = ctx.aws("chime-sdk-messaging")
    mark = ctx.vendor.mark()
    with pytest.raises(ClientError) as ei:
        client.put_channel_expiration_settings(
            ChannelArn=CHANNEL, ChimeBearer=BEARER,
            ExpirationSettings={"ExpirationDays": 60, "ExpirationCriterion": "CREATED_TIMESTAMP"})
    assert ei.value.response["Error"]["Code"] == "ServiceFailureException"
    rec = ctx.one_request(mark, "chime_messaging")
    ev = ctx.event_for_record(rec)
    assert ev["httpStatus"] == 500 and ev.get("errorCode") == "ServiceFailureException", ev
    ev3 = scenarios._change(ctx, scenarios._channel_put(90))
    assert_changes(ev3, [(CHANNEL_EXP, CHANNEL, 30, 90)])


def test_sdk_retry_attempts_recorded(ctx):
    """A retried call: one event per attempt, same invocationId, attempt 1 then 2."""
    ctx.vendor.fail_next("chime", 503, "ServiceUnavailableException")
    client, spy = ctx.aws("chime", retries={"total_max_attempts": 2, "mode": "standard"})
    mark = ctx.vendor.mark()
    client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
        "RoomRetentionSettings": {"RetentionDays": 365},
        "ConversationRetentionSettings": {"RetentionDays": 180}})
    recs = ctx.vendor.since(mark)
    assert [r.status for r in recs] == [503, 200]
    inv = spy.last.header("amz-sdk-invocation-id")
    assert [s.header("amz-sdk-invocation-id") for s in spy.sent] == [inv, inv]
    for rec, sent in zip(recs, spy.sent):
        ctx.check_aws_transport(rec, sent)
    deadline = time.monotonic() + 10
    while True:
        evs = [e for e in ctx.proxy.query() if e.get("invocationId") == inv]
        if len(evs) == 2 and all(e.get("outcome") in ("forwarded", "upstream_error") for e in evs):
            break
        assert time.monotonic() < deadline, f"want two events for invocation {inv}: {evs}"
        time.sleep(0.05)
    assert [e["attempt"] for e in evs] == [1, 2]
    assert [e["httpStatus"] for e in evs] == [503, 200]
    assert [e["requestID"] for e in evs] == [r.request_id for r in recs]


def test_unreachable_vendor_is_upstream_error(ctx):
    """Vendor down: the client gets a 5xx in its vendor's shape; the event says upstream_error."""
    ctx.vendor.close("chime")
    client, spy = ctx.aws("chime")
    with pytest.raises(ClientError) as ei:
        client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 365}})
    status = ei.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status in (502, 504), f"status {status}"
    assert ei.value.response["Error"]["Code"] not in ("", str(status)), (
        f"not an AWS error shape: {ei.value.response}"
    )
    ev = ctx.event_for_invocation(spy.last.header("amz-sdk-invocation-id"))
    assert ev["outcome"] == "upstream_error", ev
    assert ev["httpStatus"] == status


def test_fail_closed_when_audit_store_locked(ctx):
    """The event cannot be committed (store locked): refused, nothing forwarded (SPEC 3)."""
    holder = sqlite3.connect(ctx.proxy.db, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        client, _ = ctx.aws("chime", read_timeout=30)
        mark = ctx.vendor.mark()
        with pytest.raises(ClientError) as ei:
            client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
                "RoomRetentionSettings": {"RetentionDays": 365}})
        assert ei.value.response["Error"]["Code"] == "ServiceUnavailableException", ei.value.response
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        slack = ctx.slack()
        with pytest.raises(SlackApiError) as si:
            slack.admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL, duration_days=365)
        assert si.value.response["ok"] is False
        assert ctx.vendor.since(mark) == [], "a call was forwarded without its audit event"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # and it recovers once the store is writable again
    scenarios.put_retention_settings_both(ctx)


def test_sigterm_drains_in_flight_call(ctx):
    """SIGTERM while a change is at the vendor: the client gets its answer, the event its outcome."""
    arrived, release = ctx.vendor.hold_next("chime")
    client, spy = ctx.aws("chime")
    result = {}

    def call():
        try:
            result["ok"] = client.get_retention_settings(AccountId=ACCOUNT)
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=call)
    t.start()
    assert arrived.wait(10), "the call did not reach the vendor"
    ctx.proxy.proc.send_signal(signal.SIGTERM)
    release.set()
    t.join(20)
    assert "ok" in result, f"in-flight call failed on SIGTERM: {result.get('error')!r}"
    assert ctx.proxy.stop() == 0, ctx.proxy.logs()
    inv = spy.last.header("amz-sdk-invocation-id")
    evs = [e for e in ctx.proxy.query() if e.get("invocationId") == inv]
    assert len(evs) == 1 and evs[0]["outcome"] == "forwarded", evs


def test_crash_mid_call_leaves_unknown_event(ctx):
    """kill -9 while the vendor holds a change: the event exists with outcome "unknown"."""
    arrived, release = ctx.vendor.hold_next("chime")
    client, spy = ctx.aws("chime", read_timeout=15)
    errors = []

    def call():
        try:
            client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
                "RoomRetentionSettings": {"RetentionDays": 365}})
        except Exception as e:
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    try:
        assert arrived.wait(10), "the call did not reach the vendor"
        ctx.proxy.kill()
    finally:
        release.set()
        t.join(20)
    assert errors, "the client got an answer from a killed proxy"
    inv = spy.last.header("amz-sdk-invocation-id")
    evs = [e for e in ctx.proxy.query() if e.get("invocationId") == inv]
    assert len(evs) == 1, f"the change the vendor received has no event: {evs}"
    assert evs[0]["outcome"] == "unknown", evs[0]
    r = ctx.proxy.verify()
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_previous_survives_restart(ctx):
    """The remembered retention (SPEC 3 `previous`) outlives a restart on the same store."""
    scenarios._change(ctx, scenarios._channel_put(30))
    ctx.proxy.restart()
    ev = scenarios._change(ctx, scenarios._channel_put(60))
    assert_changes(ev, [(CHANNEL_EXP, CHANNEL, 30, 60)])


def test_concurrent_clients(ctx):
    """Parallel boto3 and slack_sdk clients: every call has exactly one event, chain intact."""
    def worker(i, out):
        try:
            msg, _ = ctx.aws("chime-sdk-messaging")
            ident, _ = ctx.aws("chime-sdk-identity")
            chime, _ = ctx.aws("chime")
            slack = ctx.slack()
            for j in range(4):
                days = 30 + i * 10 + j
                msg.put_channel_expiration_settings(
                    ChannelArn=f"{scenarios.APP_INSTANCE}/channel/c{i}", ChimeBearer=BEARER,
                    ExpirationSettings={"ExpirationDays": days, "ExpirationCriterion": "CREATED_TIMESTAMP"})
                ident.get_app_instance_retention_settings(AppInstanceArn=scenarios.APP_INSTANCE)
                chime.get_retention_settings(AccountId=ACCOUNT)
                slack.admin_conversations_setCustomRetention(channel_id=f"C{i:010d}", duration_days=days)
        except Exception as e:
            out.append(e)

    errors = []
    threads = [threading.Thread(target=worker, args=(i, errors)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    recs = ctx.vendor.all()
    assert len(recs) == 6 * 4 * 4
    deadline = time.monotonic() + 10
    while True:
        events = ctx.proxy.query()
        done = [e for e in events if e.get("outcome") == "forwarded"]
        if len(done) == len(recs):
            break
        assert time.monotonic() < deadline, f"{len(done)} final events for {len(recs)} calls"
        time.sleep(0.1)
    assert len(events) == len(recs)
    assert sorted(e["requestID"] for e in events) == sorted(r.request_id for r in recs)
    assert len({e["seq"] for e in events}) == len(events)
    for i in range(6):
        chans = [e for e in events if e["eventName"] == "PutChannelExpirationSettings"
                 and e["changes"][0]["resource"].endswith(f"/channel/c{i}")]
        prevs = sorted((c["changes"][0]["new"], c["changes"][0]["previous"]) for c in chans)
        assert prevs == [(30 + i * 10 + j, None if j == 0 else 30 + i * 10 + j - 1) for j in range(4)], prevs
    r = ctx.proxy.verify()
    assert r.returncode == 0, (r.stdout + r.stderr).decode()
