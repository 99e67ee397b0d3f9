"""The command line and admin API (SPEC 5, 6, 7) over an audit trail made by real clients."""

import csv
import io
import json

import scenarios
from harness import ACCOUNT, CLIENT_AK, SLACK_CHANNEL, Ctx, http_request


def trail(proxy, vendor):
    """Three audited calls: two AWS (reverse, forward), one Slack."""
    rev, fwd = Ctx(proxy, vendor, "reverse"), Ctx(proxy, vendor, "forward")
    scenarios.put_retention_settings_both(rev)
    scenarios.describe_channel(fwd)
    scenarios.slack_set(rev, "form")
    events = proxy.query()
    assert len(events) == 3
    return events


def test_check_config_accepts_generated_config(proxy):
    r = proxy.cli("check-config", "--config", str(proxy.config_path))
    assert r.returncode == 0, r.stderr.decode()


def test_check_config_unknown_key_exits_64(proxy, tmp_path):
    bad = tmp_path / "typo.toml"
    bad.write_text(proxy.config_text().replace("admin_listen =", "admin_lsten ="))
    r = proxy.cli("check-config", "--config", str(bad))
    assert r.returncode == 64, (r.returncode, r.stderr.decode())
    err = r.stderr.decode().strip()
    assert err and "admin_lsten" in err, f"stderr should name the unknown key: {err!r}"


def test_query_formats_and_filters(proxy, fake_vendor):
    events = trail(proxy, fake_vendor)
    ids = [e["eventID"] for e in events]

    r = proxy.cli("audit", "query", "--db", str(proxy.db), "--format", "jsonl")
    assert r.returncode == 0
    lines = [json.loads(line) for line in r.stdout.decode().splitlines() if line.strip()]
    assert [e["eventID"] for e in lines] == ids

    r = proxy.cli("audit", "query", "--db", str(proxy.db), "--format", "csv")
    assert r.returncode == 0
    rows = list(csv.reader(io.StringIO(r.stdout.decode())))
    assert len(rows) == 4 and any("eventID" == h for h in rows[0]), rows[:1]

    r = proxy.cli("audit", "query", "--db", str(proxy.db))
    assert r.returncode == 0 and all(i in r.stdout.decode() for i in ids), "table lacks eventIDs"

    assert [e["eventID"] for e in proxy.query("--actor", CLIENT_AK)] == ids[:2]
    fp = events[2]["userIdentity"]["tokenFingerprint"]
    assert [e["eventID"] for e in proxy.query("--actor", fp)] == ids[2:]
    assert [e["eventID"] for e in proxy.query("--resource", ACCOUNT)] == ids[:1]
    assert [e["eventID"] for e in proxy.query("--resource", SLACK_CHANNEL)] == ids[2:]
    assert [e["eventID"] for e in proxy.query("--since", "15m")] == ids
    assert proxy.query("--until", "2000-01-01T00:00:00Z") == []
    assert [e["eventID"] for e in proxy.query("--decision", "allow")] == ids


def test_audit_export_cloudtrail(proxy, fake_vendor, tmp_path):
    events = trail(proxy, fake_vendor)
    r = proxy.cli("audit", "export", "--db", str(proxy.db), "--format", "cloudtrail")
    assert r.returncode == 0, r.stderr.decode()
    doc = json.loads(r.stdout)
    assert [e["eventID"] for e in doc["Records"]] == [e["eventID"] for e in events]
    out = tmp_path / "export.jsonl"
    r = proxy.cli("audit", "export", "--db", str(proxy.db), "--format", "jsonl", "--out", str(out))
    assert r.returncode == 0, r.stderr.decode()
    assert len(out.read_text().splitlines()) == 3


def test_ca_init(proxy, tmp_path):
    out = tmp_path / "ca"
    r = proxy.cli("ca", "init", "--out", str(out))
    assert r.returncode == 0, r.stderr.decode()
    assert out.is_dir() and any(out.iterdir())


def test_admin_v1_events(proxy, fake_vendor):
    events = trail(proxy, fake_vendor)
    status, _, body = http_request(
        "GET", proxy.admin_url + "/v1/events?event_name=PutRetentionSettings&limit=10")
    assert status == 200, body[:300]
    doc = json.loads(body)
    assert [e["eventID"] for e in doc["events"]] == [events[0]["eventID"]]
    assert "next_cursor" in doc


def test_audit_reads_the_log_the_config_names(proxy, fake_vendor):
    events = trail(proxy, fake_vendor)
    ids = [e["eventID"] for e in events]
    cfg = str(proxy.config_path)

    r = proxy.cli("audit", "query", "--config", cfg, "--format", "json")
    assert r.returncode == 0, r.stderr.decode()
    assert [e["eventID"] for e in json.loads(r.stdout)] == ids

    r = proxy.cli("audit", "verify", "--config", cfg)
    assert r.returncode == 0, r.stderr.decode()
    assert "audit chain intact" in r.stdout.decode()

    bad = proxy.workdir / "broken.toml"
    bad.write_text("[audit]\npaht = 1\n")
    r = proxy.cli("audit", "query", "--config", str(bad))
    assert r.returncode == 64, (r.returncode, r.stderr.decode())
    err = r.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "audit.paht" in err, err


def test_query_order_dates_and_values(proxy, fake_vendor):
    events = trail(proxy, fake_vendor)
    ids = [e["eventID"] for e in events]
    db = str(proxy.db)

    def query(*args):
        r = proxy.cli("audit", "query", "--db", db, "--format", "json", *args)
        assert r.returncode == 0, (args, r.stderr.decode())
        return [e["eventID"] for e in json.loads(r.stdout)]

    # --limit keeps the newest unless --order oldest says otherwise.
    assert query("--limit", "2") == ids[::-1][:2]
    assert query("--limit", "2", "--order", "oldest") == ids[:2]
    assert query("--order", "newest") == ids[::-1]
    # A UTC date: --until includes the whole day.
    day = events[0]["eventTime"][:10]
    assert query("--since", day, "--until", events[-1]["eventTime"][:10]) == ids
    # Unknown values are errors that list the valid ones.
    r = proxy.cli("audit", "query", "--db", db, "--event-name", "PutRetentionSetting")
    err = r.stderr.decode()
    assert r.returncode != 0 and "PutRetentionSettings" in err and "DescribeChannel" in err, err
    status, _, body = http_request("GET", proxy.admin_url + "/v1/events?event_name=PutRetentionSetting")
    assert status == 400, body[:300]
    assert "admin.conversations.setCustomRetention" in json.loads(body)["error"]


def test_table_shortens_fingerprints(proxy, fake_vendor):
    events = trail(proxy, fake_vendor)
    fp = events[2]["userIdentity"]["tokenFingerprint"]
    r = proxy.cli("audit", "query", "--db", str(proxy.db))
    table = r.stdout.decode()
    assert r.returncode == 0 and fp[:len("hmac-sha256:") + 12] + "\u2026" in table, table
    assert fp not in table, table
    r = proxy.cli("audit", "query", "--db", str(proxy.db), "--format", "csv")
    assert fp in r.stdout.decode()
