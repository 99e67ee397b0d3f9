"""A stateful fake of the Amazon Chime / Chime SDK / Slack retention endpoints.

One HTTP server per vendor family (chime, chime_messaging, chime_identity, slack), each on
127.0.0.1:<ephemeral port> in its own thread, sharing one state. It serves every call of
SPEC section 1 with the response shapes of the wire captures, plus two pass-through calls
(ListChannels, Slack auth.test) that the proxy must forward without auditing.

Every AWS request has its SigV4 signature recomputed with botocore's own canonicalisation
(`SigV4Auth.canonical_request` / `string_to_sign` / `signature`) from a table access key ->
secret, with the request's own X-Amz-Date as the timestamp. A request that does not verify is
answered `403` with `x-amzn-ErrorType: InvalidSignatureException` and listed in
`sig_failures`. A request whose path does not belong to the family of the server it reached
(a misrouted call) or matches no route is answered `404` and listed in `anomalies`.

Every request is recorded (method, raw request target, headers in wire order, raw body, the
signature check, the answer with its request id) in `records`.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qsl, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

FAMILIES = ("chime", "chime_messaging", "chime_identity", "slack")

# Which first path segment belongs to which family (SPEC 2.3).
FAMILY_PREFIXES = {
    "chime": ("accounts",),
    "chime_messaging": ("channels", "channel-flows"),
    "chime_identity": ("app-instances", "app-instance-users", "app-instance-bots"),
    "slack": ("api",),
}

CHIME_DELETION_TS = "2026-11-22T10:00:00Z"
IDENTITY_DELETION_TS = 1795300000

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-f]{64})\s*$"
)


# --------------------------------------------------------------------------- SigV4


@dataclass
class SigV4Check:
    ok: bool
    reason: str = ""
    access_key: Optional[str] = None
    region: Optional[str] = None
    service: Optional[str] = None
    signed_headers: tuple = ()
    signature: Optional[str] = None
    expected: Optional[str] = None
    canonical_request: Optional[str] = None


class _ExactHeadersSigV4(SigV4Auth):
    """botocore's SigV4 with the header selection replaced by exactly the signed headers.

    botocore drops a few header names (user-agent, expect, ...) when *it* signs; another
    signer (the proxy's) may legitimately sign them, so the verifier takes the list from the
    Authorization header instead. Everything else (path double-encoding and dot-segment
    normalisation, query canonicalisation, header value trimming, payload hash, key
    derivation) is botocore's own code.
    """

    def __init__(self, credentials, service_name, region_name, signed):
        super().__init__(credentials, service_name, region_name)
        self._signed = signed

    def headers_to_sign(self, request):
        header_map = HTTPHeaders()
        for name, value in request.headers.items():
            if name.lower() in self._signed:
                header_map[name.lower()] = value
        return header_map


def header_values(headers, name):
    name = name.lower()
    return [v for (k, v) in headers if k.lower() == name]


def header_value(headers, name, default=None):
    values = header_values(headers, name)
    return values[0] if values else default


def verify_sigv4(method, target, headers, body, secrets):
    """Recompute the SigV4 signature of a received request.

    method: "PUT"; target: the request target as received (origin-form "/a/b?x=1" or
    absolute-form "http://host/a/b"); headers: [(name, value), ...] in wire order;
    body: bytes; secrets: {access_key: secret or (secret, session_token)}.
    """
    auth = header_value(headers, "authorization")
    if auth is None:
        return SigV4Check(False, "no Authorization header")
    m = _AUTH_RE.match(auth.strip())
    if not m:
        return SigV4Check(False, f"malformed Authorization header: {auth!r}")
    cred = m.group("cred").split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        return SigV4Check(False, f"malformed credential scope: {m.group('cred')!r}")
    access_key, scope_date, region, service, _ = cred
    signed = tuple(m.group("signed").split(";"))
    check = SigV4Check(
        False, access_key=access_key, region=region, service=service,
        signed_headers=signed, signature=m.group("sig"),
    )
    if access_key not in secrets:
        check.reason = f"unknown access key {access_key}"
        return check
    secret = secrets[access_key]
    token = None
    if isinstance(secret, tuple):
        secret, token = secret
    if list(signed) != sorted(set(signed)) or "host" not in signed:
        check.reason = f"SignedHeaders not sorted/unique or without host: {signed}"
        return check
    amz_date = header_value(headers, "x-amz-date")
    if amz_date is None or not re.fullmatch(r"\d{8}T\d{6}Z", amz_date):
        check.reason = f"missing or malformed X-Amz-Date: {amz_date!r}"
        return check
    if amz_date[:8] != scope_date:
        check.reason = f"X-Amz-Date {amz_date} does not match scope date {scope_date}"
        return check
    sent_token = header_value(headers, "x-amz-security-token")
    if token is not None:
        if sent_token != token:
            check.reason = "session token missing or different"
            return check
        if "x-amz-security-token" not in signed:
            check.reason = "X-Amz-Security-Token present but not signed"
            return check
    elif sent_token is not None:
        check.reason = "unexpected X-Amz-Security-Token for a key without a session token"
        return check

    request_headers = HTTPHeaders()
    for name in signed:
        values = header_values(headers, name)
        if not values:
            check.reason = f"signed header {name!r} not present in the request"
            return check
        for v in values:
            request_headers[name] = v
    if target.startswith("/"):
        url = "http://" + header_value(headers, "host", "") + target
    else:
        url = target
    request = AWSRequest(method=method, url=url, headers=request_headers, data=body)
    request.context["timestamp"] = amz_date
    signer = _ExactHeadersSigV4(
        Credentials(access_key, secret, token), service, region, set(signed)
    )
    canonical = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical)
    expected = signer.signature(string_to_sign, request)
    check.expected = expected
    check.canonical_request = canonical
    if expected != check.signature:
        check.reason = "signature mismatch"
        return check
    check.ok = True
    return check


# --------------------------------------------------------------------------- records


@dataclass
class Record:
    family: str
    method: str
    target: str  # request target exactly as received
    path: str  # origin-form path (raw, still percent-encoded)
    query: str
    headers: list  # [(name, value)] in wire order
    body: bytes
    sig: Optional[SigV4Check] = None
    status: int = 0
    response_headers: dict = field(default_factory=dict)
    response_body: bytes = b""
    request_id: Optional[str] = None
    operation: Optional[str] = None

    def header(self, name, default=None):
        return header_value(self.headers, name, default)

    def json(self):
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def response_json(self):
        return json.loads(self.response_body.decode("utf-8")) if self.response_body else None


class _Reply(Exception):
    def __init__(self, status, body=None, headers=None, operation=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.operation = operation


def _aws_error(status, code, message):
    return _Reply(status, {"Code": code, "Message": message}, {"x-amzn-ErrorType": code})


# --------------------------------------------------------------------------- the vendor


class FakeVendor:
    def __init__(self, secrets, slack_tokens=()):
        self.secrets = dict(secrets)
        self.slack_tokens = set(slack_tokens)
        self.lock = threading.Lock()
        self.records: list[Record] = []
        self.sig_failures: list[Record] = []
        self.anomalies: list[tuple[str, Record]] = []
        # state
        self.accounts: dict[str, dict] = {}  # id -> {"room": days|None, "conversation": days|None}
        self.channels: dict[str, dict] = {}  # arn -> {"Name", "Mode", "Privacy", "ExpirationSettings"}
        self.app_instances: dict[str, Optional[int]] = {}  # arn -> days|None
        self.users: dict[str, dict] = {}  # arn -> {"Name", "ExpirationSettings"}
        self.slack_channels: dict[str, Optional[int]] = {}  # id -> days|None (None: default)
        # knobs
        self.chime_put_status = 200  # 200 (echo body) or 204 (empty body)
        self._failures: dict[str, list] = {}  # family -> [(status, error type)] to answer next
        self._holds: dict[str, list] = {}  # family -> [(arrived, release)] for the next requests
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        self._closed: set[str] = set()

    # ----------------------------------------------------------------- lifecycle

    def start(self):
        for family in FAMILIES:
            handler = _make_handler(self, family)
            server = _QuietServer(("127.0.0.1", 0), handler)
            self._servers[family] = server
            t = threading.Thread(
                target=server.serve_forever, name=f"fake-{family}", daemon=True,
                kwargs={"poll_interval": 0.05},
            )
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for family in list(self._servers):
            self.close(family)
        for t in self._threads:
            t.join(timeout=5)

    def close(self, family):
        """Stop one family's server: its port then refuses connections."""
        server = self._servers.get(family)
        if server is not None and family not in self._closed:
            self._closed.add(family)
            server.shutdown()
            server.server_close()

    def port(self, family):
        return self._servers[family].server_address[1]

    def url(self, family):
        return f"http://127.0.0.1:{self.port(family)}"

    # ----------------------------------------------------------------- inspection

    def mark(self):
        with self.lock:
            return len(self.records)

    def since(self, mark, family=None):
        with self.lock:
            recs = self.records[mark:]
        return [r for r in recs if family is None or r.family == family]

    def all(self, family=None):
        return self.since(0, family)

    def problems(self):
        """Human-readable list of signature failures and anomalies (empty when clean)."""
        out = []
        with self.lock:
            for r in self.sig_failures:
                out.append(
                    f"signature failure on {r.family} {r.method} {r.target}: {r.sig.reason}"
                )
            for what, r in self.anomalies:
                out.append(f"{what}: {r.family} {r.method} {r.target}")
        return out

    def fail_next(self, family, status, error_type, count=1):
        """Answer the next `count` validly signed AWS requests of `family` with an error."""
        with self.lock:
            self._failures.setdefault(family, []).extend([(status, error_type)] * count)

    def hold_next(self, family):
        """Hold the next request of `family` before answering it.

        Returns (arrived, release): `arrived` is set when the request has been read, the
        answer is sent once the test sets `release` (or after 30 s).
        """
        arrived, release = threading.Event(), threading.Event()
        with self.lock:
            self._holds.setdefault(family, []).append((arrived, release))
        return arrived, release

    def _hold_point(self, family):
        with self.lock:
            pending = self._holds.get(family)
            hold = pending.pop(0) if pending else None
        if hold is not None:
            hold[0].set()
            hold[1].wait(30)

    # ----------------------------------------------------------------- seeding

    def seed_account(self, account_id, room, conversation):
        with self.lock:
            self.accounts[account_id] = {"room": room, "conversation": conversation}

    def seed_channel(self, arn, expiration_settings, name="retention-test"):
        with self.lock:
            self.channels[arn] = {
                "Name": name, "Mode": "RESTRICTED", "Privacy": "PRIVATE",
                "ExpirationSettings": expiration_settings,
            }

    def seed_app_instance(self, arn, days):
        with self.lock:
            self.app_instances[arn] = days

    def seed_user(self, arn, expiration_settings, name="User One"):
        with self.lock:
            self.users[arn] = {"Name": name, "ExpirationSettings": expiration_settings}

    def seed_slack_channel(self, channel_id, days):
        with self.lock:
            self.slack_channels[channel_id] = days

    # ----------------------------------------------------------------- dispatch

    def handle(self, family, rec: Record):
        """Returns (status, headers, body_bytes)."""
        segments = [unquote(s) for s in rec.path.split("/")[1:]]
        if not segments or segments[0] not in FAMILY_PREFIXES[family]:
            owner = next(
                (f for f, p in FAMILY_PREFIXES.items() if segments and segments[0] in p), None
            )
            what = f"misrouted (belongs to {owner})" if owner else "unknown path"
            with self.lock:
                self.anomalies.append((what, rec))
            if family == "slack":
                return self._json(404, {"ok": False, "error": "unknown_method"}, {})
            return self._json(404, {"Code": "NotFoundException", "Message": what},
                              {"x-amzn-ErrorType": "NotFoundException"})
        if family == "slack":
            return self._slack(rec, segments)
        rec.sig = verify_sigv4(rec.method, rec.target, rec.headers, rec.body, self.secrets)
        if not rec.sig.ok:
            with self.lock:
                self.sig_failures.append(rec)
            return self._aws(rec, _Reply(
                403,
                {"message": "The request signature we calculated does not match the signature "
                            "you provided. (" + rec.sig.reason + ")"},
                {"x-amzn-ErrorType": "InvalidSignatureException"},
            ))
        with self.lock:
            pending = self._failures.get(family)
            failure = pending.pop(0) if pending else None
        try:
            if failure is not None:
                raise _aws_error(failure[0], failure[1], "injected failure")
            reply = getattr(self, "_" + family)(rec, segments)
        except _Reply as r:
            reply = r
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            reply = _aws_error(400, "BadRequestException", f"fake vendor could not parse: {e}")
        return self._aws(rec, reply)

    def _aws(self, rec, reply):
        rec.request_id = str(uuid.uuid4())
        rec.operation = reply.operation
        headers = {"x-amzn-RequestId": rec.request_id}
        headers.update(reply.headers)
        return self._json(reply.status, reply.body, headers)

    @staticmethod
    def _json(status, body, headers, content_type="application/json"):
        if status == 204 or body is None:
            data = b""
        else:
            data = json.dumps(body).encode("utf-8")
        h = {"Content-Type": content_type}
        h.update(headers)
        return status, h, data

    # ----------------------------------------------------------------- chime

    def _chime(self, rec, seg):
        # /accounts/{accountId}/retention-settings
        if len(seg) != 3 or seg[2] != "retention-settings" or not seg[1].strip():
            with self.lock:
                self.anomalies.append(("unknown chime route", rec))
            raise _aws_error(404, "NotFoundException", "no such route")
        account = seg[1]
        if rec.method == "PUT":
            body = rec.json()
            rs = body["RetentionSettings"]
            with self.lock:
                st = self.accounts.setdefault(account, {"room": None, "conversation": None})
                if rs == {}:
                    st["room"] = st["conversation"] = None
                for key, name in (("RoomRetentionSettings", "room"),
                                  ("ConversationRetentionSettings", "conversation")):
                    if key in rs:
                        st[name] = rs[key].get("RetentionDays")
            if self.chime_put_status == 204:
                raise _Reply(204, None, operation="PutRetentionSettings")
            out = {"RetentionSettings": rs} if rs else {}
            if any("RetentionDays" in v for v in rs.values()):
                out["InitiateDeletionTimestamp"] = CHIME_DELETION_TS
            raise _Reply(200, out, operation="PutRetentionSettings")
        if rec.method == "GET":
            with self.lock:
                st = self.accounts.get(account)
            rs = {}
            if st is not None:
                for key, name in (("RoomRetentionSettings", "room"),
                                  ("ConversationRetentionSettings", "conversation")):
                    rs[key] = {} if st[name] is None else {"RetentionDays": st[name]}
            out = {"RetentionSettings": rs}
            if st is not None and any(v is not None for v in st.values()):
                out["InitiateDeletionTimestamp"] = CHIME_DELETION_TS
            raise _Reply(200, out, operation="GetRetentionSettings")
        raise _aws_error(405, "BadRequestException", "method not allowed")

    # ----------------------------------------------------------------- chime sdk messaging

    def _chime_messaging(self, rec, seg):
        if seg == ["channel-flows"] and rec.method == "GET":
            raise _Reply(200, {"ChannelFlows": []}, operation="ListChannelFlows")
        if seg[0] != "channels":
            with self.lock:
                self.anomalies.append(("unknown messaging route", rec))
            raise _aws_error(404, "NotFoundException", "no such route")
        if len(seg) == 1 and rec.method == "POST":
            body = rec.json()
            if not rec.header("x-amz-chime-bearer"):
                raise _aws_error(400, "BadRequestException", "ChimeBearer is required")
            channel_id = body.get("ChannelId") or "ch-" + uuid.uuid4().hex[:12]
            arn = body["AppInstanceArn"] + "/channel/" + channel_id
            with self.lock:
                self.channels[arn] = {
                    "Name": body["Name"], "Mode": body.get("Mode", "UNRESTRICTED"),
                    "Privacy": body.get("Privacy", "PUBLIC"),
                    "ExpirationSettings": body.get("ExpirationSettings"),
                }
            raise _Reply(201, {"ChannelArn": arn}, operation="CreateChannel")
        if len(seg) == 1 and rec.method == "GET":
            app_instance = dict(parse_qsl(rec.query)).get("app-instance-arn", "")
            with self.lock:
                chans = [
                    {"Name": c["Name"], "ChannelArn": arn, "Mode": c["Mode"],
                     "Privacy": c["Privacy"]}
                    for arn, c in self.channels.items() if arn.startswith(app_instance + "/")
                ]
            raise _Reply(200, {"Channels": chans}, operation="ListChannels")
        if len(seg) == 2 and rec.method == "GET":
            arn = seg[1]
            with self.lock:
                c = self.channels.get(arn)
            if c is None:
                raise _aws_error(404, "NotFoundException", f"channel {arn} not found")
            ch = {"Name": c["Name"], "ChannelArn": arn, "Mode": c["Mode"], "Privacy": c["Privacy"]}
            if c["ExpirationSettings"]:
                ch["ExpirationSettings"] = c["ExpirationSettings"]
            raise _Reply(200, {"Channel": ch}, operation="DescribeChannel")
        if len(seg) == 3 and seg[2] == "expiration-settings" and rec.method == "PUT":
            arn = seg[1]
            body = rec.json() or {}
            es = body.get("ExpirationSettings")
            with self.lock:
                c = self.channels.setdefault(arn, {
                    "Name": "retention-test", "Mode": "RESTRICTED", "Privacy": "PRIVATE",
                    "ExpirationSettings": None,
                })
                c["ExpirationSettings"] = es
            out = {"ChannelArn": arn}
            if es:
                out["ExpirationSettings"] = es
            raise _Reply(200, out, operation="PutChannelExpirationSettings")
        with self.lock:
            self.anomalies.append(("unknown messaging route", rec))
        raise _aws_error(404, "NotFoundException", "no such route")

    # ----------------------------------------------------------------- chime sdk identity

    def _chime_identity(self, rec, seg):
        if seg == ["app-instance-bots"] and rec.method == "GET":
            raise _Reply(200, {"AppInstanceBots": []}, operation="ListAppInstanceBots")
        if seg[0] == "app-instances" and len(seg) == 3 and seg[2] == "retention-settings":
            arn = seg[1]
            if rec.method == "PUT":
                ais = rec.json()["AppInstanceRetentionSettings"]
                days = (ais.get("ChannelRetentionSettings") or {}).get("RetentionDays")
                with self.lock:
                    self.app_instances[arn] = days
                out = {"AppInstanceRetentionSettings": ais}
                if days is not None:
                    out["InitiateDeletionTimestamp"] = IDENTITY_DELETION_TS
                raise _Reply(200, out, operation="PutAppInstanceRetentionSettings")
            if rec.method == "GET":
                with self.lock:
                    days = self.app_instances.get(arn)
                crs = {} if days is None else {"RetentionDays": days}
                out = {"AppInstanceRetentionSettings": {"ChannelRetentionSettings": crs}}
                if days is not None:
                    out["InitiateDeletionTimestamp"] = IDENTITY_DELETION_TS
                raise _Reply(200, out, operation="GetAppInstanceRetentionSettings")
        if seg[0] == "app-instance-users":
            if len(seg) == 1 and rec.method == "POST":
                body = rec.json()
                arn = body["AppInstanceArn"] + "/user/" + body["AppInstanceUserId"]
                with self.lock:
                    self.users[arn] = {
                        "Name": body["Name"], "ExpirationSettings": body.get("ExpirationSettings"),
                    }
                raise _Reply(201, {"AppInstanceUserArn": arn}, operation="CreateAppInstanceUser")
            if len(seg) == 2 and rec.method == "GET":
                arn = seg[1]
                with self.lock:
                    u = self.users.get(arn)
                if u is None:
                    raise _aws_error(404, "NotFoundException", f"user {arn} not found")
                user = {"AppInstanceUserArn": arn, "Name": u["Name"],
                        "CreatedTimestamp": IDENTITY_DELETION_TS}
                if u["ExpirationSettings"]:
                    user["ExpirationSettings"] = u["ExpirationSettings"]
                raise _Reply(200, {"AppInstanceUser": user}, operation="DescribeAppInstanceUser")
            if len(seg) == 3 and seg[2] == "expiration-settings" and rec.method == "PUT":
                arn = seg[1]
                es = (rec.json() or {}).get("ExpirationSettings")
                with self.lock:
                    u = self.users.setdefault(arn, {"Name": "User", "ExpirationSettings": None})
                    u["ExpirationSettings"] = es
                out = {"AppInstanceUserArn": arn}
                if es:
                    out["ExpirationSettings"] = es
                raise _Reply(200, out, operation="PutAppInstanceUserExpirationSettings")
        with self.lock:
            self.anomalies.append(("unknown identity route", rec))
        raise _aws_error(404, "NotFoundException", "no such route")

    # ----------------------------------------------------------------- slack

    @staticmethod
    def slack_params(rec):
        """The call's parameters from query string and body (form or JSON), as strings."""
        params = dict(parse_qsl(rec.query, keep_blank_values=True))
        ctype = (rec.header("content-type") or "").lower()
        if rec.body:
            if ctype.startswith("application/json"):
                params.update({k: v if isinstance(v, str) else json.dumps(v)
                               for k, v in json.loads(rec.body.decode("utf-8")).items()})
            else:
                params.update(parse_qsl(rec.body.decode("utf-8"), keep_blank_values=True))
        return params

    def _slack(self, rec, seg):
        rec.request_id = uuid.uuid4().hex
        headers = {"x-slack-req-id": rec.request_id}
        ctype = "application/json; charset=utf-8"

        def reply(body, operation=None):
            rec.operation = operation
            return self._json(200, body, headers, ctype)

        if len(seg) != 2:
            with self.lock:
                self.anomalies.append(("unknown slack route", rec))
            return reply({"ok": False, "error": "unknown_method"})
        method = seg[1]
        try:
            params = self.slack_params(rec)
        except (ValueError, UnicodeDecodeError):
            return reply({"ok": False, "error": "invalid_json"})
        auth = rec.header("authorization") or ""
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else params.get("token")
        if not token:
            return reply({"ok": False, "error": "not_authed"})
        if token not in self.slack_tokens:
            return reply({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return reply({"ok": True, "url": "https://example.slack.com/", "team": "Example",
                          "user": "admin", "team_id": "T0000000000", "user_id": "U0000000000"},
                         "auth.test")
        if method not in ("admin.conversations.setCustomRetention",
                          "admin.conversations.getCustomRetention",
                          "admin.conversations.removeCustomRetention"):
            with self.lock:
                self.anomalies.append(("unknown slack method", rec))
            return reply({"ok": False, "error": "unknown_method"})
        channel = params.get("channel_id")
        if not channel:
            return reply({"ok": False, "error": "invalid_arguments"}, method)
        if method.endswith("setCustomRetention"):
            try:
                days = int(params.get("duration_days", ""))
            except ValueError:
                return reply({"ok": False, "error": "invalid_arguments"}, method)
            with self.lock:
                self.slack_channels[channel] = days
            return reply({"ok": True}, method)
        if method.endswith("getCustomRetention"):
            with self.lock:
                days = self.slack_channels.get(channel)
            if days is None:
                return reply({"ok": True, "is_policy_enabled": False}, method)
            return reply({"ok": True, "is_policy_enabled": True, "duration_days": days}, method)
        with self.lock:
            self.slack_channels[channel] = None
        return reply({"ok": True}, method)


def _read_chunked(rfile):
    data = bytearray()
    while True:
        line = rfile.readline(65537)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass
            return bytes(data)
        data += rfile.read(size)
        rfile.readline(65537)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client (the proxy) that went away mid-answer is not the fake's problem


def _make_handler(vendor: FakeVendor, family: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-vendor"

        def log_message(self, fmt, *args):  # keep pytest output clean
            pass

        def _serve(self):
            headers = list(self.headers.items())
            if (header_value(headers, "transfer-encoding") or "").lower() == "chunked":
                body = _read_chunked(self.rfile)
            else:
                length = int(header_value(headers, "content-length", "0") or 0)
                body = self.rfile.read(length) if length else b""
            target = self.path
            parts = urlsplit(target)
            # keep the path exactly as sent (still percent-encoded)
            path = target.split("?", 1)[0] if target.startswith("/") else (parts.path or "/")
            rec = Record(
                family=family, method=self.command, target=target, path=path,
                query=parts.query, headers=headers, body=body,
            )
            if not target.startswith("/"):
                with vendor.lock:
                    vendor.anomalies.append(("absolute-form request target", rec))
            status, resp_headers, data = vendor.handle(family, rec)
            vendor._hold_point(family)
            rec.status = status
            rec.response_headers = resp_headers
            rec.response_body = data
            with vendor.lock:
                vendor.records.append(rec)
            self.send_response(status)
            for k, v in resp_headers.items():
                self.send_header(k, v)
            if status != 204:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    return Handler
