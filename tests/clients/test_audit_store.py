"""The audit store as an auditor finds it after a mixed workload through both ways in.

One proxy takes boto3, AWS CLI and slack_sdk calls in reverse and forward mode (Slack token in
the Authorization header and in a form body, one call rejected); then: one event per call,
`audit verify` exits 0, the query filters select what they say, the database is mode 0600, and
its bytes (with -wal) hold neither Slack tokens, nor AWS signatures, nor secret keys.
"""

import hashlib
import shutil
import sqlite3
import stat
from urllib.parse import parse_qsl

import pytest
from slack_sdk import WebClient

import scenarios
from harness import (
    ACCOUNT, APP_INSTANCE, BEARER, CHANNEL, CLIENT_SK, PROXY_SK, SLACK_CHANNEL, SLACK_FORM_TOKEN,
    SLACK_TOKEN, USER, Ctx, assert_not_in_store, http_request, signature_of, store_files,
)


def mixed_workload(proxy, vendor):
    rev = Ctx(proxy, vendor, "reverse")
    fwd = Ctx(proxy, vendor, "forward")
    evs = {}
    evs["chime_rev"] = scenarios.aws_call(
        rev, "chime", "put_retention_settings", AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 365},
            "ConversationRetentionSettings": {"RetentionDays": 180}})[3]
    evs["chime_fwd"] = scenarios.aws_call(
        fwd, "chime", "put_retention_settings", AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 400},
            "ConversationRetentionSettings": {"RetentionDays": 200}})[3]
    evs["channel_rev"] = scenarios.aws_call(
        rev, "chime-sdk-messaging", "put_channel_expiration_settings", ChannelArn=CHANNEL,
        ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"})[3]
    evs["create_channel_fwd"] = scenarios.aws_call(
        fwd, "chime-sdk-messaging", "create_channel", AppInstanceArn=APP_INSTANCE,
        Name="audit", ClientRequestToken="tok-0009", ChimeBearer=BEARER,
        ExpirationSettings={"ExpirationDays": 7, "ExpirationCriterion": "CREATED_TIMESTAMP"})[3]
    evs["app_rev"] = scenarios.aws_call(
        rev, "chime-sdk-identity", "put_app_instance_retention_settings",
        AppInstanceArn=APP_INSTANCE,
        AppInstanceRetentionSettings={"ChannelRetentionSettings": {"RetentionDays": 90}})[3]
    evs["user_fwd"] = scenarios.aws_call(
        fwd, "chime-sdk-identity", "put_app_instance_user_expiration_settings",
        AppInstanceUserArn=USER,
        ExpirationSettings={"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"})[3]
    evs["slack_rev_form"] = scenarios.slack_call(
        rev, "set", "form", {"channel_id": SLACK_CHANNEL, "duration_days": 365})[2]
    evs["slack_fwd_json"] = scenarios.slack_call(
        fwd, "set", "json", {"channel_id": SLACK_CHANNEL, "duration_days": 400})[2]

    # A form body carrying the token itself (no Authorization header).
    mark = vendor.mark()
    resp = WebClient(token=None, base_url=proxy.url + "/api/", timeout=20).api_call(
        scenarios.SLACK_METHODS["set"],
        data={"token": SLACK_FORM_TOKEN, "channel_id": SLACK_CHANNEL, "duration_days": 500})
    assert resp["ok"] is True
    rec = rev.one_request(mark, "slack")
    assert rec.header("authorization") is None
    assert dict(parse_qsl(rec.body.decode()))["token"] == SLACK_FORM_TOKEN, (
        "the token field of a form body must reach Slack unchanged"
    )
    evs["slack_rev_form_token"] = rev.event_for_record(rec)
    scenarios.check_slack_event(rev, evs["slack_rev_form_token"], rec,
                                scenarios.SLACK_METHODS["set"], read_only=False,
                                token=SLACK_FORM_TOKEN)

    scenarios.aws_rejected(rev, "room_days_99999")
    out, rec, ev = scenarios._cli_call(
        rev, "chime", "chime", "put-retention-settings", "--account-id", ACCOUNT,
        "--retention-settings",
        '{"RoomRetentionSettings":{"RetentionDays":730},"ConversationRetentionSettings":{"RetentionDays":730}}')
    evs["cli_rev"] = ev

    secrets = [CLIENT_SK, PROXY_SK, SLACK_TOKEN, SLACK_FORM_TOKEN]
    for r in vendor.all():
        secrets.append(signature_of(r.header("authorization")))
    for ctx in (rev, fwd):
        for spy in ctx.spies:
            for sent in spy.sent:
                secrets.append(signature_of(sent.header("authorization")))
    return evs, [s for s in secrets if s]


def assert_mode_0600(proxy):
    """The database, its side files and the fingerprint key beside it are private."""
    files = [p for p in proxy.db.parent.iterdir() if p.name.startswith(proxy.db.name)]
    assert proxy.db in files
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path.name} has mode {oct(mode)}, want 0o600"


def test_audit_store_after_mixed_workload(proxy, fake_vendor):
    evs, secrets = mixed_workload(proxy, fake_vendor)
    events = proxy.query()

    # one merged event per call, in chain order, unique ids
    assert len(events) == 11, f"{len(events)} events for 11 calls: {[e.get('eventName') for e in events]}"
    seqs = [e["seq"] for e in events]
    assert len(set(seqs)) == len(seqs)
    assert len({e["eventID"] for e in events}) == len(events)

    # the same token is recognisable across events and ways in; another token is not
    fp = lambda k: evs[k]["userIdentity"]["tokenFingerprint"]  # noqa: E731
    assert fp("slack_rev_form") == fp("slack_fwd_json")
    assert fp("slack_rev_form_token") != fp("slack_rev_form")
    assert fp("slack_rev_form") != "hmac-sha256:" + hashlib.sha256(SLACK_TOKEN.encode()).hexdigest()

    # previous values across ways in: the forward change saw the reverse one
    scenarios.assert_changes(evs["chime_fwd"], [(scenarios.ROOM, ACCOUNT, 365, 400),
                                                (scenarios.CONVERSATION, ACCOUNT, 180, 200)])
    scenarios.assert_changes(evs["slack_fwd_json"],
                             [(scenarios.SLACK_RETENTION, SLACK_CHANNEL, 365, 400)])

    r = proxy.verify()
    assert r.returncode == 0, f"audit verify: {(r.stdout + r.stderr).decode(errors='replace')}"

    # filters
    names = {e["eventName"] for e in proxy.query("--event-name", "PutRetentionSettings")}
    assert names == {"PutRetentionSettings"}
    assert len(proxy.query("--event-name", "PutRetentionSettings")) == 4
    slack = proxy.query("--source", "slack.com")
    assert len(slack) == 3 and {e["eventSource"] for e in slack} == {"slack.com"}
    by_channel = proxy.query("--resource", CHANNEL)
    assert [e["eventName"] for e in by_channel] == ["PutChannelExpirationSettings"], by_channel
    assert len(proxy.query("--limit", "2")) == 2

    # at rest, while running (WAL not yet checkpointed)
    assert_mode_0600(proxy)
    assert_not_in_store(proxy, secrets)

    # and after a clean shutdown
    assert proxy.stop() == 0, proxy.logs()
    assert_mode_0600(proxy)
    assert_not_in_store(proxy, secrets)
    r = proxy.verify()
    assert r.returncode == 0, f"audit verify after shutdown: {(r.stdout + r.stderr).decode(errors='replace')}"
    assert len(proxy.query()) == 11


def test_verify_names_first_broken_seq(proxy, fake_vendor, tmp_path):
    """Changing one stored byte of a linked record makes `audit verify` exit 1 naming a seq."""
    rev = Ctx(proxy, fake_vendor, "reverse")
    scenarios.put_retention_settings_both(rev)
    scenarios.put_channel_expiration_settings(rev)
    assert proxy.stop() == 0, proxy.logs()
    copy = tmp_path / "tampered.db"
    for src in store_files(proxy):
        shutil.copy(src, str(copy) + src.name[len(proxy.db.name):])
    db = sqlite3.connect(copy)
    tampered = False
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        cols = [c[1] for c in db.execute(f'PRAGMA table_info("{table}")')]
        for row in db.execute(f'SELECT rowid, * FROM "{table}"').fetchall():
            for col, val in zip(cols, row[1:]):
                if isinstance(val, str) and '"RetentionDays":365' in val.replace(" ", ""):
                    new = val.replace("365", "366", 1)
                    db.execute(f'UPDATE "{table}" SET "{col}" = ? WHERE rowid = ?', (new, row[0]))
                    tampered = True
                    break
            if tampered:
                break
        if tampered:
            break
    db.commit()
    db.close()
    if not tampered:
        pytest.skip("no stored JSON text with RetentionDays 365 found to tamper with")
    r = proxy.cli("audit", "verify", "--db", str(copy))
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 1, f"audit verify of a tampered store exited {r.returncode}: {out}"
    assert any(ch.isdigit() for ch in out), f"audit verify did not name the broken seq: {out}"


def test_admin_health_endpoints(proxy):
    for path in ("/healthz", "/readyz"):
        status, _, body = http_request("GET", proxy.admin_url + path)
        assert status == 200, f"{path}: {status} {body[:200]!r}"
