"""The Python suite's fake vendor (../fake_vendor.py), driven over stdin/stdout for the
JavaScript suite, so both suites check what arrives with the same code (SigV4 recomputed with
botocore's canonicalisation, routes, Slack tokens).

Prints one JSON line when its servers listen: {"urls": {family: url}, "constants": {...}}.
Then answers one JSON line per command line read from stdin:

    {"cmd": "mark"}                   -> {"mark": n}
    {"cmd": "since", "mark": n}       -> {"records": [...]}  (what arrived since the mark)
    {"cmd": "problems"}               -> {"problems": [...]} (bad signatures, misroutes)
    {"cmd": "seed_account", "account": id, "room": days|null, "conversation": days|null}

and stops its servers at end of input. Needs the client suite's Python packages (botocore).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402  (constants shared with the Python suite)
from fake_vendor import FakeVendor, Record  # noqa: E402

CONSTANTS = {
    name: getattr(harness, name)
    for name in (
        "CLIENT_AK", "CLIENT_SK", "PROXY_AK", "PROXY_SK", "SLACK_TOKEN", "SLACK_FORM_TOKEN",
        "ACCOUNT", "SLACK_CHANNEL", "REAL_HOSTS", "EVENT_SOURCE",
    )
}


def record_json(rec: Record) -> dict:
    sig = None
    if rec.sig is not None:
        sig = {"ok": rec.sig.ok, "reason": rec.sig.reason, "accessKey": rec.sig.access_key,
               "service": rec.sig.service, "region": rec.sig.region}
    return {
        "family": rec.family, "method": rec.method, "target": rec.target, "path": rec.path,
        "query": rec.query, "headers": [[k, v] for k, v in rec.headers],
        "body": rec.body.decode("utf-8", errors="replace"), "sig": sig, "status": rec.status,
        "requestId": rec.request_id, "operation": rec.operation,
        "responseBody": rec.response_body.decode("utf-8", errors="replace"),
    }


def main() -> int:
    vendor = FakeVendor(
        secrets={harness.CLIENT_AK: harness.CLIENT_SK, harness.PROXY_AK: harness.PROXY_SK},
        slack_tokens={harness.SLACK_TOKEN, harness.SLACK_FORM_TOKEN},
    ).start()
    try:
        print(json.dumps({"urls": {f: vendor.url(f) for f in ("chime", "chime_messaging",
                                                                "chime_identity", "slack")},
                          "constants": CONSTANTS}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "mark":
                out = {"mark": vendor.mark()}
            elif cmd == "since":
                out = {"records": [record_json(r) for r in vendor.since(int(req["mark"]))]}
            elif cmd == "problems":
                out = {"problems": vendor.problems()}
            elif cmd == "seed_account":
                vendor.seed_account(req["account"], req.get("room"), req.get("conversation"))
                out = {"ok": True}
            else:
                out = {"error": f"unknown command {cmd!r}"}
            print(json.dumps(out), flush=True)
    finally:
        vendor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
