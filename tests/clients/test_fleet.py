"""The fleet (SPEC 9) with real clients: two proxies, a and b, ship their chains to one real
PostgreSQL (a private cluster, pg_cluster.py). A change made with boto3 through b is found by
boto3's `cloudtrail.lookup_events` on a's admin listener, which answers from the central store.

The proxies end as conftest.py's fixtures end them (SIGTERM with exit code 0, `audit verify`
accepts each local chain, no secret at rest); the cluster is removed after them.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest
from botocore.config import Config

from harness import ACCOUNT, Ctx, ProxyProcess, toml_str
from pg_cluster import PgCluster

SHIPPED_WAIT_S = 60.0


@pytest.fixture
def pg_cluster():
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def fleet_member(proxy_factory, name: str, url: str) -> ProxyProcess:
    """A proxy named `name` (`[audit] proxy_instance`) shipping to `url`."""
    central = f"\n[audit.central]\nurl = {toml_str(url)}\nmode = \"async\"\n"
    p = proxy_factory(start=False, extra_config=central)
    base = p.config_text
    p.config_text = lambda: base().replace(
        "[audit]\n", f"[audit]\nproxy_instance = {toml_str(name)}\n", 1)
    return p.start()


def cloudtrail(proxy: ProxyProcess):
    """boto3's cloudtrail client pointed at the admin listener, with dummy keys."""
    return boto3.client(
        "cloudtrail", endpoint_url=proxy.admin_url, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="y",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=20),
    )


def test_lookup_events_on_one_instance_finds_a_change_made_through_another(
        pg_cluster, proxy_factory, fake_vendor):
    a = fleet_member(proxy_factory, "a", pg_cluster.url)
    b = fleet_member(proxy_factory, "b", pg_cluster.url)

    # A change through b: Chime PutRetentionSettings, signed by boto3, reverse mode.
    ctx = Ctx(b, fake_vendor, "reverse")
    chime, spy = ctx.aws("chime")
    mark = len(fake_vendor.all())
    chime.put_retention_settings(
        AccountId=ACCOUNT,
        RetentionSettings={"RoomRetentionSettings": {"RetentionDays": 90},
                           "ConversationRetentionSettings": {"RetentionDays": 90}})
    rec = ctx.one_request(mark, "chime")
    ev = ctx.event_for_invocation(spy.last.header("amz-sdk-invocation-id"))
    assert ev["proxyInstance"] == "b", ev
    assert ev["outcome"] == "forwarded", ev
    assert ev["requestID"] == rec.request_id
    event_id = ev["eventID"]
    # a's own log knows nothing of it: only the central store can answer.
    assert all(e["eventID"] != event_id for e in a.query()), "b's event is in a's local log"

    # LookupEvents on a's admin listener, polled until b's records are shipped.
    client = cloudtrail(a)
    deadline = time.monotonic() + SHIPPED_WAIT_S
    while True:
        resp = client.lookup_events(LookupAttributes=[
            {"AttributeKey": "EventName", "AttributeValue": "PutRetentionSettings"}])
        found = [e for e in resp["Events"] if e["EventId"] == event_id]
        # Both halves of the call shipped: the merged event has its final outcome.
        if found and json.loads(found[0]["CloudTrailEvent"]).get(
                "additionalEventData", {}).get("outcome") == "forwarded":
            break
        others = [e for e in resp["Events"] if e["EventId"] != event_id]
        assert not others, f"LookupEvents returned other events: {others}"
        if time.monotonic() > deadline:
            raise AssertionError(f"b's event {event_id} did not reach a's LookupEvents within "
                                 f"{SHIPPED_WAIT_S}s (found: {found})\n--- a ---\n{a.logs()}\n--- b ---\n{b.logs()}")
        time.sleep(0.1)

    [le] = found
    assert [e["EventId"] for e in resp["Events"]] == [event_id], resp["Events"]
    assert le["EventName"] == "PutRetentionSettings"
    assert le["EventSource"] == "chime.amazonaws.com"
    ct = json.loads(le["CloudTrailEvent"])
    assert ct["eventID"] == event_id
    assert ct["requestID"] == rec.request_id
    assert ct["additionalEventData"]["proxyInstance"] == "b", ct
    assert ct["additionalEventData"]["outcome"] == "forwarded", ct
    assert ct["requestParameters"]["RetentionSettings"]["RoomRetentionSettings"] == {
        "RetentionDays": 90}, ct

    # The same answer by event id.
    by_id = client.lookup_events(LookupAttributes=[
        {"AttributeKey": "EventId", "AttributeValue": event_id}])
    assert [e["EventId"] for e in by_id["Events"]] == [event_id], by_id["Events"]

    # The central store holds both halves of b's call, and verifies.
    r = a.cli("audit", "verify", "--db", pg_cluster.url)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, out
    assert r.stdout.decode().splitlines() == ["instance b: audit chain intact: 2 records verified"], out
    assert pg_cluster.password not in out
