"""Runs the built retention-proxy binary against the fake vendor and drives real clients.

Shared by conftest.py and the test modules: constants, the proxy process, client factories
(boto3, the AWS CLI, slack_sdk) for the two ways in (reverse = the client's endpoint is the
proxy; forward = absolute-form HTTP through the proxy to the real vendor host, which the
proxy resolves to the fake), and the checks on what the vendor received and on audit events.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from slack_sdk import WebClient

from fake_vendor import FakeVendor, Record

REPO_ROOT = Path(__file__).resolve().parents[2]

# The client's credentials (AWS documentation example key) and the proxy's own, different pair.
CLIENT_AK = "AKIAIOSFODNN7EXAMPLE"
CLIENT_SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PROXY_AK = "AKIAPROXYEXAMPLE0001"
PROXY_SK = "pRoXy/S3cr3tK3yF0rT3sts/EXAMPLEKEY00001"
PROXY_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE/SessionTokenForTheProxy+0000000000000000/AAAA=="

# Reverse-mode client keys (SPEC 13, `[reverse] clients_file`): a listed key, a listed key with
# a session token, a key the proxy does not know, and a wrong secret for the listed key.
AUTH_CLIENT_NAME = "retention-admin-tool"
AUTH_CLIENT_AK = "RPCLIENTEXAMPLE0001"
AUTH_CLIENT_SK = "cL1ent/S3cr3tOfTheAdminT00l/EXAMPLEKEY0001"
AUTH_TOKEN_CLIENT_NAME = "retention-batch-job"
AUTH_TOKEN_CLIENT_AK = "RPCLIENTEXAMPLE0002"
AUTH_TOKEN_CLIENT_SK = "cL1ent/S3cr3tOfTheBatchJ0b/EXAMPLEKEY0002"
AUTH_CLIENT_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE/ListedClientSessionToken+000000000/CCCC=="
UNLISTED_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE/UnlistedClientSessionToken+0000000/DDDD=="
UNKNOWN_CLIENT_AK = "RPUNKNOWNEXAMPLE0009"
UNKNOWN_CLIENT_SK = "uNkn0wn/S3cr3tNobodyListed/EXAMPLEKEY0009"
WRONG_CLIENT_SK = "wR0ng/S3cr3tForTheAdminT00l/EXAMPLEKEY0001"

SLACK_TOKEN = "xoxp-0000000000-0000000000-0000000000-dummydummydummydummydummydummy0"
SLACK_FORM_TOKEN = "xoxp-1111111111-1111111111-1111111111-formtokenformtokenformtoken01"

ACCOUNT = "12a3456b-7c89-012d-3456-78901e23fg45"
APP_INSTANCE = "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321"
CHANNEL = APP_INSTANCE + "/channel/ch-0001"
BEARER = APP_INSTANCE + "/user/admin-user-1"
USER = APP_INSTANCE + "/user/admin-user-1"
SLACK_CHANNEL = "C0123456789"

REAL_HOSTS = {
    "chime": "chime.us-east-1.amazonaws.com",
    "chime_messaging": "messaging-chime.us-east-1.amazonaws.com",
    "chime_identity": "identity-chime.us-east-1.amazonaws.com",
    "slack": "slack.com",
}
SERVICE_FAMILY = {
    "chime": "chime",
    "chime-sdk-messaging": "chime_messaging",
    "chime-sdk-identity": "chime_identity",
}
EVENT_SOURCE = {
    "chime": "chime.amazonaws.com",
    "chime_messaging": "messaging-chime.amazonaws.com",
    "chime_identity": "identity-chime.amazonaws.com",
    "slack": "slack.com",
}

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EVENT_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FINAL_OUTCOMES = {"forwarded", "denied", "rejected", "upstream_error"}

PROXY_ENV_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

EVENT_WAIT_S = 10.0
READY_WAIT_S = 20.0


def proxy_binary() -> Path:
    p = Path(os.environ.get("RETENTION_PROXY_BIN", "target/release/retention-proxy"))
    return p if p.is_absolute() else REPO_ROOT / p


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: Optional[dict] = None) -> dict:
    """The current environment without proxy settings or AWS settings, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.upper().startswith("AWS_") and k.upper() not in PROXY_ENV_VARS
    }
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra or {})
    return env


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


@dataclass(frozen=True)
class ClientKey:
    """The AWS key a client signs with; `name` is set for a key listed in `clients_file`."""
    access_key_id: str
    secret_access_key: str
    session_token: Optional[str] = None
    name: Optional[str] = None


DEFAULT_CLIENT_KEY = ClientKey(CLIENT_AK, CLIENT_SK)


# --------------------------------------------------------------------------- the proxy


class ProxyProcess:
    def __init__(self, binary: Path, workdir: Path, vendor: FakeVendor,
                 extra_env: Optional[dict] = None, extra_config: str = ""):
        self.binary = binary
        self.workdir = workdir
        self.vendor = vendor
        self.port = free_port()
        self.admin_port = free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        self.db = workdir / "audit.db"
        self.config_path = workdir / "retention-proxy.toml"
        self.stdout_path = workdir / "proxy.stdout"
        self.stderr_path = workdir / "proxy.stderr"
        self.extra_env = extra_env or {}
        self.extra_config = extra_config
        self.ca_cert: Optional[Path] = None  # set by with_ca()
        self.ca_key: Optional[Path] = None
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self.killed = False  # stopped with SIGKILL on purpose
        self.listen_host = "127.0.0.1"  # "0.0.0.0": a listener others can reach (SPEC 13)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def config_text(self) -> str:
        v = self.vendor
        lines = [
            "[server]",
            f"listen = {toml_str(f'{self.listen_host}:{self.port}')}",
            f"admin_listen = {toml_str(f'127.0.0.1:{self.admin_port}')}",
            "",
            "[audit]",
            f"path = {toml_str(str(self.db))}",
            "",
            "[upstreams]",
        ]
        for family in ("chime", "chime_messaging", "chime_identity", "slack"):
            lines.append(f"{family} = {toml_str(v.url(family))}")
        lines += [
            "",
            "[forward]",
            "allow_hosts = [" + ", ".join(toml_str(h) for h in REAL_HOSTS.values()) + "]",
        ]
        if self.ca_cert is not None:
            lines += [f"ca_cert = {toml_str(str(self.ca_cert))}",
                      f"ca_key = {toml_str(str(self.ca_key))}"]
        lines += [
            "",
            "[forward.resolve]",
        ]
        for family, host in REAL_HOSTS.items():
            lines.append(f"{toml_str(host)} = {toml_str(v.url(family))}")
        return "\n".join(lines) + "\n" + self.extra_config

    def with_ca(self) -> "ProxyProcess":
        """Create an interception CA with `ca init` and enable CONNECT interception."""
        out = self.workdir / "ca"
        r = self.cli("ca", "init", "--out", str(out))
        assert r.returncode == 0, f"ca init failed: {(r.stdout + r.stderr).decode(errors='replace')}"
        certs = sorted(out.glob("*.pem")) + sorted(out.glob("*.crt"))
        keys = sorted(out.glob("*.key"))
        assert certs and keys, f"ca init made {sorted(p.name for p in out.iterdir())}"
        self.ca_cert, self.ca_key = certs[0], keys[0]
        return self

    def start(self) -> "ProxyProcess":
        self.config_path.write_text(self.config_text())
        env = clean_env({
            "AWS_ACCESS_KEY_ID": PROXY_AK,
            "AWS_SECRET_ACCESS_KEY": PROXY_SK,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        })
        env.update(self.extra_env)
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config_path)],
            cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=self._out, stderr=self._err,
        )
        self.wait_ready()
        return self

    def logs(self) -> str:
        out = []
        for p in (self.stdout_path, self.stderr_path):
            if p.exists():
                text = p.read_text(errors="replace")
                out.append(f"--- {p.name} (last 3000 chars) ---\n{text[-3000:]}")
        return "\n".join(out)

    def wait_ready(self):
        deadline = time.monotonic() + READY_WAIT_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"retention-proxy exited with {self.proc.returncode} during start-up\n"
                    f"config:\n{self.config_text()}\n{self.logs()}"
                )
            try:
                with urllib.request.urlopen(self.admin_url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
                    last = f"status {r.status}"
            except (urllib.error.URLError, OSError) as e:
                last = repr(e)
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"/healthz not 200 within {READY_WAIT_S}s ({last})\n{self.logs()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for the exit, return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                self.returncode = -9
                self._close()
                raise AssertionError(f"retention-proxy did not exit {timeout}s after SIGTERM\n"
                                     + self.logs())
        self.returncode = self.proc.returncode
        self._close()
        return self.returncode

    def kill(self):
        """SIGKILL (a crash): nothing is drained or flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.killed = True
        self._close()

    def restart(self) -> "ProxyProcess":
        """Stop (SIGTERM, exit code must be 0) and start again on the same config and store."""
        code = self.stop()
        assert code == 0, f"exit code {code} after SIGTERM\n{self.logs()}"
        self.proc = None
        return self.start()

    def _close(self):
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f is not None and not f.closed:
                f.close()

    # ----------------------------------------------------------------- CLI

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.binary), *args], cwd=self.workdir, env=clean_env(),
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
        )

    def query(self, *filters: str) -> list:
        limit = () if "--limit" in filters else ("--limit", "10000")
        order = () if "--order" in filters else ("--order", "oldest")
        r = self.cli("audit", "query", "--db", str(self.db), "--format", "json",
                     *limit, *order, *filters)
        assert r.returncode == 0, (
            f"audit query {' '.join(filters)} exited {r.returncode}: "
            f"{r.stderr.decode(errors='replace')}"
        )
        out = r.stdout.decode("utf-8")
        try:
            events = json.loads(out)
        except ValueError as e:
            raise AssertionError(f"audit query --format json printed no JSON array: {out[:500]!r}") from e
        assert isinstance(events, list), f"audit query --format json: not an array: {out[:300]}"
        return events

    def wait_event(self, pred: Callable[[dict], bool], what: str,
                   timeout: float = EVENT_WAIT_S) -> dict:
        """Poll `audit query` until exactly one event matches `pred` and has a final outcome."""
        deadline = time.monotonic() + timeout
        events: list = []
        while True:
            events = self.query()
            hits = [e for e in events if pred(e)]
            if len(hits) > 1:
                raise AssertionError(f"{len(hits)} events match {what} (expected one merged "
                                     f"event per call): {json.dumps(hits, indent=1)[:4000]}")
            if hits and hits[0].get("outcome") in FINAL_OUTCOMES:
                return hits[0]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no event with a final outcome for {what} within {timeout}s; "
                    f"matching: {json.dumps(hits)[:2000]}; all events: "
                    f"{json.dumps(events, indent=1)[:6000]}"
                )
            time.sleep(0.05)

    def verify(self) -> subprocess.CompletedProcess:
        return self.cli("audit", "verify", "--db", str(self.db))


# --------------------------------------------------------------------------- clients


@dataclass
class Sent:
    method: str
    url: str
    headers: dict  # str -> str
    body: bytes

    def header(self, name, default=None):
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return default


# Every Authorization header value a client sent in the current test (see conftest.py, which
# checks after each test that none of their signatures is stored at rest).
SENT_AUTHORIZATIONS: list = []


class Spy:
    """Records what a boto3 client put on the wire (after signing)."""

    def __init__(self):
        self.sent: list[Sent] = []

    def __call__(self, request, **kwargs):
        headers = {}
        for k, v in request.headers.items():
            headers[k] = v.decode("utf-8") if isinstance(v, bytes) else str(v)
        body = request.body
        if body is None:
            body = b""
        elif isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, (bytes, bytearray)):
            body = body.read() if hasattr(body, "read") else bytes(body)
        sent = Sent(request.method, request.url, headers, bytes(body))
        self.sent.append(sent)
        SENT_AUTHORIZATIONS.append(sent.header("authorization"))
        return None

    @property
    def last(self) -> Sent:
        assert self.sent, "the client sent nothing"
        return self.sent[-1]


_SESSION_LOCK = threading.Lock()
_SESSIONS: dict = {}


def _client_session(key: ClientKey = DEFAULT_CLIENT_KEY):
    """One boto3 session per client key (creating one costs ~0.2 s)."""
    if key not in _SESSIONS:
        _SESSIONS[key] = boto3.session.Session(
            aws_access_key_id=key.access_key_id, aws_secret_access_key=key.secret_access_key,
            aws_session_token=key.session_token, region_name="us-east-1",
        )
    return _SESSIONS[key]


def signature_of(authorization: Optional[str]) -> Optional[str]:
    if not authorization:
        return None
    m = re.search(r"Signature=([0-9a-f]{64})", authorization)
    return m.group(1) if m else None


class Ctx:
    """One test's world: the fake vendor, the running proxy and the way in (mode)."""

    def __init__(self, proxy: ProxyProcess, vendor: FakeVendor, mode: str,
                 key: ClientKey = DEFAULT_CLIENT_KEY):
        assert mode in ("reverse", "forward", "connect")
        self.proxy = proxy
        self.vendor = vendor
        self.mode = mode
        self.key = key  # the AWS key the clients sign with
        self.spies: list[Spy] = []
        self.slack_tokens_used: set[str] = {SLACK_TOKEN}

    # ----------------------------------------------------------------- factories

    def aws(self, service: str, **config):
        family = SERVICE_FAMILY[service]
        cfg = dict(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=20)
        cfg.update(config)
        verify = None
        if self.mode == "reverse":
            endpoint = self.proxy.url
        elif self.mode == "forward":
            endpoint = "http://" + REAL_HOSTS[family]
            cfg["proxies"] = {"http": self.proxy.url}
        else:  # CONNECT through the egress gateway, TLS intercepted with the proxy's CA
            endpoint = "https://" + REAL_HOSTS[family]
            cfg["proxies"] = {"https": self.proxy.url}
            verify = str(self.proxy.ca_cert)
        with _SESSION_LOCK:  # sessions are not thread-safe; the clients they make are
            client = _client_session(self.key).client(service, endpoint_url=endpoint,
                                                      verify=verify, config=Config(**cfg))
        spy = Spy()
        client.meta.events.register("before-send", spy)
        self.spies.append(spy)
        return client, spy

    def slack(self, token: Optional[str] = SLACK_TOKEN) -> WebClient:
        if token:
            self.slack_tokens_used.add(token)
        if self.mode == "reverse":
            return WebClient(token=token, base_url=self.proxy.url + "/api/", timeout=20)
        if self.mode == "forward":
            return WebClient(token=token, base_url="http://slack.com/api/",
                             proxy=self.proxy.url, timeout=20)
        return WebClient(token=token, base_url="https://slack.com/api/", proxy=self.proxy.url,
                         ssl=ssl.create_default_context(cafile=str(self.proxy.ca_cert)),
                         timeout=20)

    def aws_cli(self, service: str, *args: str) -> subprocess.CompletedProcess:
        family = SERVICE_FAMILY[service]
        env = clean_env({
            "AWS_ACCESS_KEY_ID": self.key.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.key.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",
        })
        if self.key.session_token:
            env["AWS_SESSION_TOKEN"] = self.key.session_token
        if self.mode == "reverse":
            endpoint = self.proxy.url
        elif self.mode == "forward":
            endpoint = "http://" + REAL_HOSTS[family]
            env["HTTP_PROXY"] = self.proxy.url
        else:
            endpoint = "https://" + REAL_HOSTS[family]
            env["HTTPS_PROXY"] = self.proxy.url
            env["AWS_CA_BUNDLE"] = str(self.proxy.ca_cert)
        cmd = [sys.executable, "-m", "awscli", "--endpoint-url", endpoint,
               "--output", "json", service, *args]
        return subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=60)

    # ----------------------------------------------------------------- vendor side

    def one_request(self, mark: int, family: str) -> Record:
        recs = self.vendor.since(mark)
        assert len(recs) == 1, (
            f"expected the vendor to receive exactly one request, got {len(recs)}: "
            + "; ".join(f"{r.family} {r.method} {r.target}" for r in recs)
        )
        rec = recs[0]
        assert rec.family == family, f"request reached the {rec.family} upstream, not {family}"
        return rec

    def check_aws_transport(self, rec: Record, sent: Optional[Sent]):
        """What the vendor received is what the client sent, correctly (re-)signed."""
        assert rec.target.startswith("/"), f"vendor got a non-origin-form target {rec.target!r}"
        assert rec.sig is not None and rec.sig.ok, (
            f"SigV4 did not verify at the vendor: {rec.sig and rec.sig.reason}\n"
            f"headers: {rec.headers}\ncanonical request (vendor side):\n"
            f"{rec.sig and rec.sig.canonical_request}"
        )
        assert rec.sig.service == "chime", f"signing name {rec.sig.service!r}, want 'chime'"
        assert rec.sig.region == "us-east-1", f"signing region {rec.sig.region!r}"
        if self.mode != "reverse":
            assert rec.header("host") == REAL_HOSTS[rec.family], (
                f"forward mode must keep the signed Host, vendor got {rec.header('host')!r}"
            )
            assert rec.sig.access_key == self.key.access_key_id
            if sent is not None:
                assert rec.header("authorization") == sent.header("authorization"), (
                    "forward mode must pass the client's Authorization unchanged"
                )
                assert rec.header("x-amz-date") == sent.header("x-amz-date")
        else:
            assert rec.sig.access_key == PROXY_AK, (
                f"reverse mode must re-sign with the proxy's key, vendor saw {rec.sig.access_key}"
            )
        if sent is not None:
            sent_url = urlsplit(sent.url)
            assert rec.path == sent_url.path and rec.query == sent_url.query, (
                f"request target changed on the way: client sent {sent_url.path}?{sent_url.query}"
                f", vendor got {rec.target}"
            )
            assert rec.body == sent.body, (
                f"body changed on the way: client sent {sent.body!r}, vendor got {rec.body!r}"
            )
            for h in ("x-amz-chime-bearer", "amz-sdk-invocation-id", "amz-sdk-request",
                      "content-type"):
                assert rec.header(h) == sent.header(h), (
                    f"header {h}: client sent {sent.header(h)!r}, vendor got {rec.header(h)!r}"
                )

    # ----------------------------------------------------------------- audit side

    def event_for_record(self, rec: Record) -> dict:
        assert rec.request_id
        return self.proxy.wait_event(lambda e: e.get("requestID") == rec.request_id,
                                     f"requestID {rec.request_id}")

    def event_for_invocation(self, invocation_id: str) -> dict:
        return self.proxy.wait_event(lambda e: e.get("invocationId") == invocation_id,
                                     f"invocationId {invocation_id}")

    def check_aws_event(self, ev: dict, *, name: str, family: str, read_only: bool,
                        rec: Optional[Record], sent: Optional[Sent],
                        resources: tuple = (), outcome: str = "forwarded"):
        check_event_envelope(ev)
        assert ev["eventName"] == name, f"eventName {ev['eventName']!r}, want {name!r}"
        assert ev["eventSource"] == EVENT_SOURCE[family], ev["eventSource"]
        assert ev["eventType"] == "AwsApiCall", ev["eventType"]
        assert ev["readOnly"] is read_only, f"readOnly {ev['readOnly']!r}, want {read_only}"
        assert ev.get("awsRegion") == "us-east-1", f"awsRegion {ev.get('awsRegion')!r}"
        assert ev["outcome"] == outcome, f"outcome {ev['outcome']!r}, want {outcome!r}: {ev}"
        assert ev.get("sourceIPAddress") == "127.0.0.1", ev.get("sourceIPAddress")
        ui = ev["userIdentity"]
        assert ui["accessKeyId"] == self.key.access_key_id, (
            f"userIdentity.accessKeyId {ui['accessKeyId']!r}, want {self.key.access_key_id!r}"
        )
        assert "Signature" not in json.dumps(ev)
        assert self.key.secret_access_key not in json.dumps(ev)
        if self.mode == "reverse":
            if self.key.name is None:
                assert ui["verified"] is False, f"reverse mode: verified must be false, got {ui}"
                assert ui.get("principal") is None, f"no client key, yet a principal: {ui}"
            else:  # a key listed in [reverse] clients_file, checked by the proxy (SPEC 13)
                assert ui["verified"] is True, f"a listed client key: verified must be true, {ui}"
                assert ui.get("principal") == self.key.name, (
                    f"userIdentity.principal {ui.get('principal')!r}, want {self.key.name!r}"
                )
        if sent is not None:
            assert ev.get("userAgent") == sent.header("user-agent"), (
                f"userAgent {ev.get('userAgent')!r} != {sent.header('user-agent')!r}"
            )
            if sent.header("x-amz-chime-bearer"):
                assert ui.get("chimeBearer") == sent.header("x-amz-chime-bearer"), ui
            assert ev["invocationId"] == sent.header("amz-sdk-invocation-id"), (
                f"invocationId {ev['invocationId']!r} != {sent.header('amz-sdk-invocation-id')!r}"
            )
            assert ev["attempt"] == 1, f"attempt {ev['attempt']!r}"
        if rec is not None:
            assert ev["requestID"] == rec.request_id, (
                f"requestID {ev['requestID']!r} != vendor's x-amzn-RequestId {rec.request_id!r}"
            )
            assert ev["httpStatus"] == rec.status, f"httpStatus {ev['httpStatus']!r} != {rec.status}"
            resp = rec.response_json()
            if resp:
                re_ = ev.get("responseElements")
                assert isinstance(re_, dict) and set(resp) <= set(re_), (
                    f"responseElements {re_!r} lacks the vendor's response keys {sorted(resp)}"
                )
        for rid in resources:
            assert_resource(ev, rid)


def check_event_envelope(ev: dict):
    for f in ("eventID", "eventTime", "eventSource", "eventName", "eventType", "readOnly",
              "userIdentity", "requestParameters", "outcome", "seq", "hash"):
        assert f in ev, f"event lacks {f!r}: {json.dumps(ev)[:1500]}"
    assert UUID_RE.match(str(ev["eventID"])), f"eventID not a UUID: {ev['eventID']!r}"
    assert EVENT_TIME_RE.match(str(ev["eventTime"])), f"eventTime not RFC 3339 UTC ms: {ev['eventTime']!r}"
    assert isinstance(ev["seq"], int), f"seq not an integer: {ev['seq']!r}"
    assert isinstance(ev["hash"], str) and ev["hash"], f"hash empty: {ev['hash']!r}"


def assert_resource(ev: dict, rid: str):
    ids = [str(r.get("id")) for r in (ev.get("resources") or [])]
    assert any(rid == i or rid in i for i in ids), (
        f"resources {ev.get('resources')!r} do not name {rid!r}"
    )
    for r in ev.get("resources") or []:
        assert r.get("type"), f"resource without type: {r!r}"


ANY = object()


def assert_changes(ev: dict, expected: list):
    """expected: [(target, resource_or_tuple_of_alternatives, previous, new)]; order-free.

    A resource matches when it equals or contains one alternative; previous=ANY skips it.
    """
    changes = ev.get("changes") or []
    assert len(changes) == len(expected), (
        f"changes {json.dumps(changes)} do not match expected {expected!r}"
    )
    for target, resource, previous, new in expected:
        hits = [c for c in changes if c.get("target") == target]
        assert len(hits) == 1, f"want one change of {target}, got {json.dumps(changes)}"
        c = hits[0]
        alts = resource if isinstance(resource, tuple) else (resource,)
        assert any(a == c.get("resource") or a in str(c.get("resource")) for a in alts), (
            f"{target}: resource {c.get('resource')!r}, want one of {alts}"
        )
        assert c.get("new") == new and type(c.get("new")) is type(new), (
            f"{target}: new {c.get('new')!r}, want {new!r}"
        )
        if previous is not ANY:
            assert c.get("previous") == previous and type(c.get("previous")) is type(previous), (
                f"{target}: previous {c.get('previous')!r}, want {previous!r}"
            )


def find_key(obj: Any, key: str):
    """Depth-first search of a JSON value for a key; returns its value or raises KeyError."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            try:
                return find_key(v, key)
            except KeyError:
                pass
    elif isinstance(obj, list):
        for v in obj:
            try:
                return find_key(v, key)
            except KeyError:
                pass
    raise KeyError(key)


def http_request(method: str, url: str, body: bytes = b"", headers: Optional[dict] = None,
                 timeout: float = 10.0):
    """A plain urllib request; returns (status, headers, body) also for error statuses."""
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def store_files(proxy: ProxyProcess) -> list:
    """The database file and its SQLite side files that exist now."""
    return [p for p in (proxy.db, Path(str(proxy.db) + "-wal"), Path(str(proxy.db) + "-shm"),
                        Path(str(proxy.db) + "-journal")) if p.exists()]


def assert_not_in_store(proxy: ProxyProcess, secrets) -> None:
    """None of `secrets` (strings) occurs in the bytes of the database or its side files."""
    found = []
    for path in store_files(proxy):
        data = path.read_bytes()
        for s in secrets:
            if s and s.encode("utf-8") in data:
                found.append(f"{s[:12]}... in {path.name}")
    assert not found, "secrets stored at rest: " + ", ".join(found)


def secrets_of_test(vendor: FakeVendor) -> list:
    """Everything that must never be stored: keys, tokens, every signature seen in this test."""
    out = [CLIENT_SK, PROXY_SK, PROXY_SESSION_TOKEN, SLACK_TOKEN, SLACK_FORM_TOKEN,
           AUTH_CLIENT_SK, AUTH_TOKEN_CLIENT_SK, AUTH_CLIENT_SESSION_TOKEN,
           UNLISTED_SESSION_TOKEN, UNKNOWN_CLIENT_SK, WRONG_CLIENT_SK]
    out += [signature_of(a) for a in SENT_AUTHORIZATIONS]
    out += [signature_of(r.header("authorization")) for r in vendor.all()]
    return [s for s in out if s]
