"""Egress gateway (SPEC 2.2) end to end over TLS on both legs, with unmodified clients.

The fake vendor speaks TLS with a certificate from its own test CA (tls_vendor.py); the proxy
trusts that CA through `[upstreams] ca_file` and reaches the vendor through
`[forward.resolve] "<vendor host>" = "https://127.0.0.1:PORT"`. The clients are configured only
as a user configures them for a corporate gateway: `HTTPS_PROXY` and the interception CA made
by `retention-proxy ca init` (boto3 and the AWS CLI: `AWS_CA_BUNDLE`; slack_sdk: `proxy=` and an
SSL context; curl: `--proxy` and `--cacert`), default endpoints, region us-east-1. The vendor
checks every SigV4 signature it receives: the client's own signature must survive.

Every audited call here carries `tlsDetails` (CloudTrail's record of the client's TLS
session): `tlsVersion`, `cipherSuite`, `clientProvidedHostHeader`.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import urllib.error

import boto3
import pytest
from botocore.exceptions import ClientError, ProxyConnectionError, SSLError
from slack_sdk import WebClient

import scenarios
from harness import (
    ACCOUNT, APP_INSTANCE, CHANNEL, CLIENT_AK, CLIENT_SK, PROXY_AK, PROXY_SK, REAL_HOSTS,
    SLACK_CHANNEL, SLACK_FORM_TOKEN, SLACK_TOKEN, Ctx, Spy, assert_changes, assert_not_in_store,
    clean_env, toml_str,
)
from scenarios import APP_RETENTION, CHANNEL_EXP, CONVERSATION, ROOM, SLACK_RETENTION
from tls_vendor import TlsFakeVendor, make_upstream_pki

PROXY_USER = "alice"
PROXY_PASSWORD = "correct-horse-battery-staple"
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def upstream_pki(tmp_path_factory):
    return make_upstream_pki(tmp_path_factory.mktemp("upstream-pki"))


@pytest.fixture
def fake_vendor(upstream_pki):
    """conftest.py's fake vendor, served over TLS (conftest's proxy_factory picks it up)."""
    vendor = TlsFakeVendor(
        secrets={CLIENT_AK: CLIENT_SK, PROXY_AK: PROXY_SK},
        slack_tokens={SLACK_TOKEN, SLACK_FORM_TOKEN}, pki=upstream_pki,
    ).start()
    yield vendor
    vendor.stop()


@pytest.fixture
def gateway_factory(proxy_factory, upstream_pki):
    def make(extra_config: str = "", upstream_ca: bool = True):
        p = proxy_factory(start=False, ca=True, extra_config=extra_config)
        if upstream_ca:
            # The harness writes [upstreams] itself; ca_file belongs in that table.
            base = p.config_text
            p.config_text = lambda: base().replace(
                "[upstreams]\n", f"[upstreams]\nca_file = {toml_str(str(upstream_pki.ca_cert))}\n",
                1)
        return p.start()
    return make


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory()


@pytest.fixture
def ctx(gateway, fake_vendor):
    return Ctx(gateway, fake_vendor, "connect")


def proxy_url(proxy, user: str | None = None, password: str | None = None) -> str:
    auth = f"{user}:{password}@" if user else ""
    return f"http://{auth}127.0.0.1:{proxy.port}"


def client_env(proxy, *, trust_ca: bool = True, proxy_auth=None) -> dict:
    """What a user exports to send an unmodified AWS client through the gateway."""
    env = {
        "HTTPS_PROXY": proxy_url(proxy, *(proxy_auth or (None, None))),
        "AWS_ACCESS_KEY_ID": CLIENT_AK,
        "AWS_SECRET_ACCESS_KEY": CLIENT_SK,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    if trust_ca:
        env["AWS_CA_BUNDLE"] = str(proxy.ca_cert)
    return env


def boto3_client(monkeypatch, proxy, service: str, **env_kwargs):
    """A boto3 client made from the environment alone (no endpoint, proxy or verify argument).

    botocore reads HTTPS_PROXY and AWS_CA_BUNDLE when the client is made; monkeypatch puts the
    environment back after the test.
    """
    for k, v in client_env(proxy, **env_kwargs).items():
        monkeypatch.setenv(k, v)
    client = boto3.session.Session().client(service)
    family = {"chime": "chime", "chime-sdk-messaging": "chime_messaging",
              "chime-sdk-identity": "chime_identity"}[service]
    assert client.meta.endpoint_url == "https://" + REAL_HOSTS[family], client.meta.endpoint_url
    spy = Spy()  # only watches what goes on the wire
    client.meta.events.register("before-send", spy)
    return client, spy


def check_tls_details(ev: dict, host: str):
    td = ev.get("tlsDetails")
    assert isinstance(td, dict), f"an intercepted call's event lacks tlsDetails: {json.dumps(ev)[:1500]}"
    assert td.get("tlsVersion") in TLS_VERSIONS, f"tlsDetails.tlsVersion {td.get('tlsVersion')!r}"
    assert isinstance(td.get("cipherSuite"), str) and td["cipherSuite"], td
    assert td.get("clientProvidedHostHeader") == host, (
        f"tlsDetails.clientProvidedHostHeader {td.get('clientProvidedHostHeader')!r}, want {host!r}")


def check_upstream_tls(vendor, family: str):
    versions = [v for f, v in vendor.tls_versions if f == family]
    assert versions and all(v in TLS_VERSIONS for v in versions), (
        f"the proxy's connections to the {family} vendor: {vendor.tls_versions}")


def aws_via_gateway(ctx: Ctx, monkeypatch, service: str, op: str, **params):
    """One boto3 call through the gateway; checks transport and event; returns them."""
    family = {"chime": "chime", "chime-sdk-messaging": "chime_messaging",
              "chime-sdk-identity": "chime_identity"}[service]
    client, spy = boto3_client(monkeypatch, ctx.proxy, service)
    mark = ctx.vendor.mark()
    result = getattr(client, op)(**params)
    rec = ctx.one_request(mark, family)
    ctx.check_aws_transport(rec, spy.last)  # signature verified, Authorization unchanged
    ev = ctx.event_for_record(rec)
    ctx.check_aws_event(ev, name=rec.operation, family=family, read_only=False, rec=rec,
                        sent=spy.last)
    assert ev["userIdentity"]["verified"] is True, ev["userIdentity"]
    check_tls_details(ev, REAL_HOSTS[family])
    check_upstream_tls(ctx.vendor, family)
    return result, rec, ev


# --------------------------------------------------------------------------- boto3


def test_boto3_chime_put_retention_settings(ctx, monkeypatch):
    settings = {"RoomRetentionSettings": {"RetentionDays": 365},
                "ConversationRetentionSettings": {"RetentionDays": 180}}
    result, rec, ev = aws_via_gateway(ctx, monkeypatch, "chime", "put_retention_settings",
                                      AccountId=ACCOUNT, RetentionSettings=settings)
    assert rec.operation == "PutRetentionSettings"
    assert result["RetentionSettings"] == settings
    assert_changes(ev, [(ROOM, ACCOUNT, None, 365), (CONVERSATION, ACCOUNT, None, 180)])
    assert ctx.vendor.accounts[ACCOUNT] == {"room": 365, "conversation": 180}


def test_boto3_second_call_in_the_same_tunnel(ctx, monkeypatch):
    """boto3 keeps its connection: the second call runs inside the tunnel the first opened,
    and is audited (with tlsDetails) as well."""
    client, spy = boto3_client(monkeypatch, ctx.proxy, "chime")
    events = []
    for op, params in (
        ("put_retention_settings", dict(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 365}})),
        ("get_retention_settings", dict(AccountId=ACCOUNT)),
    ):
        mark = ctx.vendor.mark()
        getattr(client, op)(**params)
        rec = ctx.one_request(mark, "chime")
        ctx.check_aws_transport(rec, spy.last)
        ev = ctx.event_for_record(rec)
        ctx.check_aws_event(ev, name=rec.operation, family="chime",
                            read_only=op.startswith("get"), rec=rec, sent=spy.last,
                            resources=(ACCOUNT,))
        check_tls_details(ev, REAL_HOSTS["chime"])
        events.append(ev)
    assert [e["eventName"] for e in events] == ["PutRetentionSettings", "GetRetentionSettings"]


def test_boto3_messaging_put_channel_expiration_settings(ctx, monkeypatch):
    es = {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    result, rec, ev = aws_via_gateway(
        ctx, monkeypatch, "chime-sdk-messaging", "put_channel_expiration_settings",
        ChannelArn=CHANNEL, ChimeBearer=scenarios.BEARER, ExpirationSettings=es)
    assert rec.operation == "PutChannelExpirationSettings"
    assert rec.path == f"/channels/{scenarios.CHANNEL_ENC}/expiration-settings"
    assert result["ExpirationSettings"] == es
    assert_changes(ev, [(CHANNEL_EXP, CHANNEL, None, 30)])


def test_boto3_identity_put_app_instance_retention_settings(ctx, monkeypatch):
    ais = {"ChannelRetentionSettings": {"RetentionDays": 90}}
    result, rec, ev = aws_via_gateway(
        ctx, monkeypatch, "chime-sdk-identity", "put_app_instance_retention_settings",
        AppInstanceArn=APP_INSTANCE, AppInstanceRetentionSettings=ais)
    assert rec.operation == "PutAppInstanceRetentionSettings"
    assert result["AppInstanceRetentionSettings"] == ais
    assert_changes(ev, [(APP_RETENTION, APP_INSTANCE, None, 90)])


# --------------------------------------------------------------------------- AWS CLI


def test_aws_cli_put_retention_settings(ctx):
    settings = {"RoomRetentionSettings": {"RetentionDays": 400},
                "ConversationRetentionSettings": {"RetentionDays": 200}}
    mark = ctx.vendor.mark()
    r = subprocess.run(
        [sys.executable, "-m", "awscli", "--output", "json", "chime", "put-retention-settings",
         "--account-id", ACCOUNT, "--retention-settings", json.dumps(settings)],
        env=clean_env(client_env(ctx.proxy)), stdin=subprocess.DEVNULL, capture_output=True,
        timeout=60)
    assert r.returncode == 0, f"aws chime put-retention-settings: {r.stderr.decode()[-3000:]}"
    assert json.loads(r.stdout)["RetentionSettings"] == settings
    rec = ctx.one_request(mark, "chime")
    ctx.check_aws_transport(rec, None)
    assert rec.json() == {"RetentionSettings": settings}
    assert rec.header("user-agent", "").startswith("aws-cli/"), rec.header("user-agent")
    ev = ctx.event_for_record(rec)
    ctx.check_aws_event(ev, name="PutRetentionSettings", family="chime", read_only=False,
                        rec=rec, sent=None, resources=(ACCOUNT,))
    assert ev["invocationId"] == rec.header("amz-sdk-invocation-id")
    check_tls_details(ev, REAL_HOSTS["chime"])
    check_upstream_tls(ctx.vendor, "chime")
    assert_changes(ev, [(ROOM, ACCOUNT, None, 400), (CONVERSATION, ACCOUNT, None, 200)])


# --------------------------------------------------------------------------- slack_sdk, curl


def test_slack_sdk_set_custom_retention(ctx):
    client = WebClient(token=SLACK_TOKEN, proxy=ctx.proxy.url, timeout=20,
                       ssl=ssl.create_default_context(cafile=str(ctx.proxy.ca_cert)))
    params = {"channel_id": SLACK_CHANNEL, "duration_days": 365}
    mark = ctx.vendor.mark()
    resp = client.admin_conversations_setCustomRetention(**params)
    assert resp.data == {"ok": True}
    rec = ctx.one_request(mark, "slack")
    method = "admin.conversations.setCustomRetention"
    scenarios.check_slack_transport(ctx, rec, method, "form", params)
    ev = ctx.event_for_record(rec)
    scenarios.check_slack_event(ctx, ev, rec, method, read_only=False)
    check_tls_details(ev, "slack.com")
    check_upstream_tls(ctx.vendor, "slack")
    assert_changes(ev, [(SLACK_RETENTION, SLACK_CHANNEL, None, 365)])


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-q", "-sS", "--max-time", "20", *args], env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def test_curl_set_custom_retention(ctx):
    mark = ctx.vendor.mark()
    r = curl("-v", "--proxy", ctx.proxy.url, "--cacert", str(ctx.proxy.ca_cert),
             "-H", "Authorization: Bearer " + SLACK_TOKEN,
             "-d", f"channel_id={SLACK_CHANNEL}&duration_days=400",
             "https://slack.com/api/admin.conversations.setCustomRetention")
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-3000:]
    assert json.loads(r.stdout) == {"ok": True}
    rec = ctx.one_request(mark, "slack")
    method = "admin.conversations.setCustomRetention"
    scenarios.check_slack_transport(ctx, rec, method, "form",
                                    {"channel_id": SLACK_CHANNEL, "duration_days": 400})
    ev = ctx.event_for_record(rec)
    scenarios.check_slack_event(ctx, ev, rec, method, read_only=False, user_agent="curl/")
    check_tls_details(ev, "slack.com")
    check_upstream_tls(ctx.vendor, "slack")
    # curl -v names the TLS version it negotiated with the proxy
    m = re.search(r"SSL connection using (TLSv1\.[23]) / (\S+)", r.stderr.decode(errors="replace"))
    assert m, r.stderr.decode(errors="replace")[-2000:]
    assert ev["tlsDetails"]["tlsVersion"] == m.group(1), (ev["tlsDetails"], m.group(0))


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_tls_details_name_the_negotiated_session(ctx, version):
    """tlsDetails says what the client negotiated, spelled as CloudTrail spells it (OpenSSL's
    names: `TLS_AES_128_GCM_SHA256` for TLS 1.3, `ECDHE-RSA-AES128-GCM-SHA256` for TLS 1.2),
    which is what the client's own TLS library reports. The client is Python's http.client
    through CONNECT (set_tunnel)."""
    context = ssl.create_default_context(cafile=str(ctx.proxy.ca_cert))
    context.minimum_version = context.maximum_version = {
        "TLSv1.3": ssl.TLSVersion.TLSv1_3, "TLSv1.2": ssl.TLSVersion.TLSv1_2}[version]
    conn = http.client.HTTPSConnection("127.0.0.1", ctx.proxy.port, context=context, timeout=20)
    conn.set_tunnel("slack.com", 443)
    mark = ctx.vendor.mark()
    try:
        conn.request("POST", "/api/admin.conversations.getCustomRetention",
                     body=f"channel_id={SLACK_CHANNEL}",
                     headers={"Authorization": "Bearer " + SLACK_TOKEN,
                              "Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        body = resp.read()
        cipher, negotiated, _ = conn.sock.cipher()
    finally:
        conn.close()
    assert resp.status == 200 and json.loads(body)["ok"] is True, body[:300]
    assert negotiated == version
    rec = ctx.one_request(mark, "slack")
    ev = ctx.event_for_record(rec)
    check_tls_details(ev, "slack.com")
    td = ev["tlsDetails"]
    assert td["tlsVersion"] == version, td
    assert td["cipherSuite"] == cipher, (
        f"tlsDetails.cipherSuite {td['cipherSuite']!r}; the client negotiated {cipher!r}")


# --------------------------------------------------------------------------- refusals


def test_client_without_the_ca_fails_and_nothing_is_forwarded(ctx, monkeypatch):
    client, _ = boto3_client(monkeypatch, ctx.proxy, "chime", trust_ca=False)
    mark = ctx.vendor.mark()
    with pytest.raises(SSLError) as ei:
        client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 30}})
    assert "certificate verify failed" in str(ei.value), ei.value
    slack = WebClient(token=SLACK_TOKEN, proxy=ctx.proxy.url, timeout=20)  # default trust store
    with pytest.raises(urllib.error.URLError) as ei:
        slack.admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL, duration_days=1)
    assert isinstance(ei.value.reason, ssl.SSLCertVerificationError), ei.value
    assert ctx.vendor.since(mark) == [], "a call from a client that refused the TLS reached the vendor"
    assert ctx.vendor.tls_versions == [], "the proxy connected to the vendor anyway"
    assert ctx.proxy.query() == [], "no call was made, yet there are events"


def test_untrusted_upstream_certificate_is_refused(gateway_factory, fake_vendor, monkeypatch):
    """Without `[upstreams] ca_file` the vendor's certificate is not trusted: nothing reaches
    the vendor, the client gets an error, the event records the upstream failure."""
    proxy = gateway_factory(upstream_ca=False)
    ctx = Ctx(proxy, fake_vendor, "connect")
    client, spy = boto3_client(monkeypatch, proxy, "chime")
    mark = fake_vendor.mark()
    with pytest.raises(ClientError) as ei:
        client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 365}})
    err = ei.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] in (502, 503, 504), err
    assert err["ResponseMetadata"]["HTTPHeaders"].get("x-amzn-errortype"), (
        f"not the vendor's error shape: {err}")
    assert fake_vendor.since(mark) == [], "a request reached a vendor whose certificate failed"
    assert fake_vendor.wait_tls_failure(), "the proxy never tried the vendor"
    ev = ctx.event_for_invocation(spy.last.header("amz-sdk-invocation-id"))
    assert ev["outcome"] == "upstream_error", ev
    check_tls_details(ev, REAL_HOSTS["chime"])
    with fake_vendor.lock:  # expected here; any other failed handshake is a problem
        fake_vendor.tls_failures.clear()


# --------------------------------------------------------------------------- proxy users


@pytest.fixture
def auth_gateway(gateway_factory, proxy_bin):
    r = subprocess.run([str(proxy_bin), "hash-password"], input=(PROXY_PASSWORD + "\n").encode(),
                       capture_output=True, timeout=30, env=clean_env())
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    digest = r.stdout.decode().strip()
    assert digest.startswith("$argon2") and PROXY_PASSWORD not in digest, digest
    proxy = gateway_factory(extra_config=f"\n[forward.users]\n{PROXY_USER} = {toml_str(digest)}\n")
    yield proxy
    basic = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    assert_not_in_store(proxy, [PROXY_PASSWORD, basic])


def test_proxy_user_is_recorded(auth_gateway, fake_vendor, monkeypatch):
    ctx = Ctx(auth_gateway, fake_vendor, "connect")
    client, spy = boto3_client(monkeypatch, auth_gateway, "chime",
                               proxy_auth=(PROXY_USER, PROXY_PASSWORD))
    mark = fake_vendor.mark()
    client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
        "RoomRetentionSettings": {"RetentionDays": 365}})
    rec = ctx.one_request(mark, "chime")
    ctx.check_aws_transport(rec, spy.last)
    assert rec.header("proxy-authorization") is None, "Proxy-Authorization went to the vendor"
    ev = ctx.event_for_record(rec)
    ctx.check_aws_event(ev, name="PutRetentionSettings", family="chime", read_only=False,
                        rec=rec, sent=spy.last, resources=(ACCOUNT,))
    assert ev["userIdentity"].get("proxyUser") == PROXY_USER, ev["userIdentity"]
    check_tls_details(ev, REAL_HOSTS["chime"])
    # slack_sdk with the user in its proxy URL
    slack = WebClient(token=SLACK_TOKEN, proxy=proxy_url(auth_gateway, PROXY_USER, PROXY_PASSWORD),
                      ssl=ssl.create_default_context(cafile=str(auth_gateway.ca_cert)), timeout=20)
    mark = fake_vendor.mark()
    assert slack.admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL,
                                                        duration_days=365)["ok"] is True
    rec = ctx.one_request(mark, "slack")
    assert rec.header("proxy-authorization") is None, "Proxy-Authorization went to the vendor"
    ev = ctx.event_for_record(rec)
    assert ev["userIdentity"].get("proxyUser") == PROXY_USER, ev["userIdentity"]


def test_wrong_proxy_password_is_refused(auth_gateway, fake_vendor, monkeypatch):
    client, _ = boto3_client(monkeypatch, auth_gateway, "chime",
                             proxy_auth=(PROXY_USER, "not-" + PROXY_PASSWORD))
    mark = fake_vendor.mark()
    with pytest.raises(ProxyConnectionError) as ei:
        client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
            "RoomRetentionSettings": {"RetentionDays": 365}})
    assert "407" in str(ei.value.kwargs.get("error")), ei.value.kwargs
    # no credentials at all: 407 with a Basic challenge, as a client needs to ask for them
    with socket.create_connection(("127.0.0.1", auth_gateway.port), timeout=10) as s:
        s.sendall(b"CONNECT chime.us-east-1.amazonaws.com:443 HTTP/1.1\r\n"
                  b"Host: chime.us-east-1.amazonaws.com:443\r\n\r\n")
        f, lines = s.makefile("rb"), []
        while (line := f.readline(8192)) not in (b"\r\n", b"\n", b""):
            lines.append(line.decode(errors="replace"))
        head = "".join(lines)
    assert head.startswith("HTTP/1.1 407"), head
    assert re.search(r"(?im)^proxy-authenticate:\s*basic\b", head), head
    # curl with the wrong password
    r = curl("--proxy", proxy_url(auth_gateway, PROXY_USER, "wrong"), "--cacert",
             str(auth_gateway.ca_cert), "-H", "Authorization: Bearer " + SLACK_TOKEN,
             "-d", f"channel_id={SLACK_CHANNEL}&duration_days=400",
             "https://slack.com/api/admin.conversations.setCustomRetention")
    assert r.returncode != 0 and "407" in r.stderr.decode(errors="replace"), (
        r.returncode, r.stderr.decode(errors="replace"))
    assert fake_vendor.since(mark) == [], "an unauthenticated call reached the vendor"
    assert auth_gateway.query() == [], "an unauthenticated call left an event"
