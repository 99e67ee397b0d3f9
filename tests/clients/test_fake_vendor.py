"""Self-checks of the fake vendor; they need no proxy binary.

The signature verifier is checked against requests captured from real clients (boto3, the AWS
CLI, the AWS JS SDK v3, boto3 through an HTTP forward proxy), signed with the AWS documentation
example secret, and against live boto3 / slack_sdk calls sent straight to the fake.
"""

import pytest
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from slack_sdk import WebClient

from fake_vendor import FakeVendor, verify_sigv4
from harness import (
    ACCOUNT, APP_INSTANCE, BEARER, CHANNEL, CLIENT_AK, CLIENT_SK, SLACK_CHANNEL, SLACK_FORM_TOKEN,
    SLACK_TOKEN, USER,
)

# Request line, headers (wire order) and body of captured requests, signed with CLIENT_SK.
CAPTURES = {
    "describe_channel": (
        """GET /channels/arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321%2Fchannel%2Fch-0001 HTTP/1.1
Host: 127.0.0.1:18080
Accept-Encoding: identity
x-amz-chime-bearer: arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/admin-user-1
User-Agent: Boto3/1.44.5 md/Botocore#1.44.5 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/N,E,b,Z cfg/retry-mode#standard Botocore/1.44.5
X-Amz-Date: 20261122T043147Z
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=host;x-amz-chime-bearer;x-amz-date, Signature=80ce336223e71d9309054c4e3d37b8033868a3707dcc8eaf4b40e612a15cf62f
amz-sdk-invocation-id: 3c9938f9-5b88-4d14-be87-058e6956d9c0
amz-sdk-request: attempt=1; max=3""",
        '',
    ),
    "js_sdk_put_channel_expiration": (
        """PUT /channels/arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321%2Fchannel%2Fch-0001/expiration-settings HTTP/1.1
x-amz-chime-bearer: arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/u1
content-type: application/json
content-length: 91
x-amz-user-agent: aws-sdk-js/3.1141.0
user-agent: aws-sdk-js/3.1141.0 ua/2.1 os/linux#6.18.44-fc-v669 lang/js md/nodejs#20.20.2 api/chime-sdk-messaging#3.1141.0 m/N,E,e
host: 127.0.0.1:18080
amz-sdk-invocation-id: b867ad29-287e-4930-8edb-605b3e95952a
amz-sdk-request: attempt=1; max=3
x-amz-date: 20261122T043621Z
x-amz-content-sha256: 557a457bded3cfa4bf560b9148740de18198e464c06fd732558da3d03cc889c9
authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;x-amz-chime-bearer;x-amz-content-sha256;x-amz-date;x-amz-user-agent, Signature=b77be2bed5650bd431ff32078246f5c6849d4ecb6f992a3e441ab87f6f37b87e
Connection: keep-alive""",
        '{"ExpirationSettings":{"ExpirationDays":30,"ExpirationCriterion":"LAST_MESSAGE_TIMESTAMP"}}',
    ),
    "forward_proxy_put_retention": (
        """PUT http://chime.us-east-1.amazonaws.com/accounts/12a3456b-7c89-012d-3456-78901e23fg45/retention-settings HTTP/1.1
Host: chime.us-east-1.amazonaws.com
Accept-Encoding: identity
Content-Type: application/json
User-Agent: Boto3/1.44.5 md/Botocore#1.44.5 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/E,b,N,g,Z cfg/retry-mode#standard Botocore/1.44.5
X-Amz-Date: 20261122T043658Z
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=4be6aad3114db362a26d8e3d7760573dcc71431e2740d4ac7b7e7a5c4cd61ef7
amz-sdk-invocation-id: ebebf5ff-147d-44e0-a456-c88b15ae3104
amz-sdk-request: attempt=1; max=3
Content-Length: 72""",
        '{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}',
    ),
    "awscli_put_retention": (
        """PUT /accounts/12a3456b-7c89-012d-3456-78901e23fg45/retention-settings HTTP/1.1
Host: 127.0.0.1:18080
Accept-Encoding: identity
Content-Type: application/json
User-Agent: aws-cli/1.46.3 md/Botocore#1.43.62 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/Z,b,N,g,D cfg/retry-mode#legacy botocore/1.43.62
X-Amz-Date: 20261122T043159Z
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=7aac2f3ad7cb3220477d15c08bb57ac88b11eb39af5d5e21ac3a56dcc057d7a2
amz-sdk-invocation-id: 868ef7cb-c647-428c-966e-dd64f2aa0bbd
amz-sdk-request: attempt=1
Content-Length: 129""",
        '{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}',
    ),
}


def parse_capture(name):
    head, body = CAPTURES[name]
    lines = head.split("\n")
    method, target, _ = lines[0].split(" ")
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    return method, target, headers, body.encode()


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_captured_requests_verify(name):
    method, target, headers, body = parse_capture(name)
    check = verify_sigv4(method, target, headers, body, {CLIENT_AK: CLIENT_SK})
    assert check.ok, check.reason


@pytest.mark.parametrize("mutation", ["wrong_secret", "decoded_path", "body", "bearer", "date"])
def test_tampered_capture_fails(mutation):
    method, target, headers, body = parse_capture("describe_channel")
    secrets = {CLIENT_AK: CLIENT_SK}
    if mutation == "wrong_secret":
        secrets = {CLIENT_AK: CLIENT_SK[:-1] + "X"}
    elif mutation == "decoded_path":
        target = target.replace("%2F", "/")
    elif mutation == "body":
        body = b"{}"
    elif mutation == "bearer":
        headers = [(k, v + "x" if k.lower() == "x-amz-chime-bearer" else v) for k, v in headers]
    elif mutation == "date":
        headers = [(k, "20261122T043148Z" if k.lower() == "x-amz-date" else v) for k, v in headers]
    assert not verify_sigv4(method, target, headers, body, secrets).ok


@pytest.fixture
def vendor():
    v = FakeVendor({CLIENT_AK: CLIENT_SK}, slack_tokens={SLACK_TOKEN, SLACK_FORM_TOKEN}).start()
    yield v
    v.stop()


def direct(vendor, service, family, secret=CLIENT_SK):
    return boto3.session.Session(
        aws_access_key_id=CLIENT_AK, aws_secret_access_key=secret, region_name="us-east-1",
    ).client(service, endpoint_url=vendor.url(family),
             config=Config(retries={"total_max_attempts": 1}))


def test_boto3_direct_calls_verify_and_are_stateful(vendor):
    chime = direct(vendor, "chime", "chime")
    settings = {"RoomRetentionSettings": {"RetentionDays": 365},
                "ConversationRetentionSettings": {"RetentionDays": 180}}
    chime.put_retention_settings(AccountId=ACCOUNT, RetentionSettings=settings)
    assert chime.get_retention_settings(AccountId=ACCOUNT)["RetentionSettings"] == settings
    chime.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={})
    assert chime.get_retention_settings(AccountId=ACCOUNT)["RetentionSettings"] == {
        "RoomRetentionSettings": {}, "ConversationRetentionSettings": {}}

    msg = direct(vendor, "chime-sdk-messaging", "chime_messaging")
    es = {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    msg.put_channel_expiration_settings(ChannelArn=CHANNEL, ChimeBearer=BEARER, ExpirationSettings=es)
    assert msg.describe_channel(ChannelArn=CHANNEL, ChimeBearer=BEARER)["Channel"]["ExpirationSettings"] == es
    msg.put_channel_expiration_settings(ChannelArn=CHANNEL)
    assert "ExpirationSettings" not in msg.describe_channel(ChannelArn=CHANNEL, ChimeBearer=BEARER)["Channel"]
    arn = msg.create_channel(AppInstanceArn=APP_INSTANCE, Name="n", ClientRequestToken="tok-1",
                             ChimeBearer=BEARER, ExpirationSettings=es)["ChannelArn"]
    assert msg.describe_channel(ChannelArn=arn, ChimeBearer=BEARER)["Channel"]["ExpirationSettings"] == es
    assert {c["ChannelArn"] for c in msg.list_channels(AppInstanceArn=APP_INSTANCE, ChimeBearer=BEARER)["Channels"]} == {CHANNEL, arn}

    ident = direct(vendor, "chime-sdk-identity", "chime_identity")
    ident.put_app_instance_retention_settings(
        AppInstanceArn=APP_INSTANCE,
        AppInstanceRetentionSettings={"ChannelRetentionSettings": {"RetentionDays": 90}})
    assert ident.get_app_instance_retention_settings(AppInstanceArn=APP_INSTANCE)[
        "AppInstanceRetentionSettings"] == {"ChannelRetentionSettings": {"RetentionDays": 90}}
    ues = {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    ident.put_app_instance_user_expiration_settings(AppInstanceUserArn=USER, ExpirationSettings=ues)
    assert ident.describe_app_instance_user(AppInstanceUserArn=USER)["AppInstanceUser"]["ExpirationSettings"] == ues
    uarn = ident.create_app_instance_user(AppInstanceArn=APP_INSTANCE, AppInstanceUserId="u-9",
                                          Name="U", ClientRequestToken="tok-2",
                                          ExpirationSettings=ues)["AppInstanceUserArn"]
    assert uarn == APP_INSTANCE + "/user/u-9"

    assert vendor.problems() == []
    recs = vendor.all()
    assert len(recs) == 16 and all(r.sig.ok and r.sig.access_key == CLIENT_AK for r in recs)
    assert all(r.request_id for r in recs)


def test_wrong_secret_is_refused(vendor):
    chime = direct(vendor, "chime", "chime", secret=CLIENT_SK[:-1] + "X")
    with pytest.raises(ClientError) as ei:
        chime.get_retention_settings(AccountId=ACCOUNT)
    assert ei.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert len(vendor.sig_failures) == 1 and vendor.sig_failures[0].sig.reason == "signature mismatch"


def test_misrouted_call_is_an_anomaly(vendor):
    # a chime call sent to the messaging upstream
    chime = boto3.session.Session(
        aws_access_key_id=CLIENT_AK, aws_secret_access_key=CLIENT_SK, region_name="us-east-1",
    ).client("chime", endpoint_url=vendor.url("chime_messaging"),
             config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError):
        chime.get_retention_settings(AccountId=ACCOUNT)
    assert vendor.problems() and "misrouted" in vendor.problems()[0]


def test_slack_direct(vendor):
    client = WebClient(token=SLACK_TOKEN, base_url=vendor.url("slack") + "/api/")
    assert client.admin_conversations_setCustomRetention(channel_id=SLACK_CHANNEL, duration_days=365)["ok"]
    assert client.api_call("admin.conversations.getCustomRetention",
                           json={"channel_id": SLACK_CHANNEL}).data == {
        "ok": True, "is_policy_enabled": True, "duration_days": 365}
    assert client.admin_conversations_removeCustomRetention(channel_id=SLACK_CHANNEL)["ok"]
    assert client.admin_conversations_getCustomRetention(channel_id=SLACK_CHANNEL)["is_policy_enabled"] is False
    form = WebClient(token=None, base_url=vendor.url("slack") + "/api/").api_call(
        "admin.conversations.setCustomRetention",
        data={"token": SLACK_FORM_TOKEN, "channel_id": SLACK_CHANNEL, "duration_days": 30})
    assert form["ok"] and vendor.slack_channels[SLACK_CHANNEL] == 30
    recs = vendor.all("slack")
    assert all(r.request_id and r.response_headers["x-slack-req-id"] == r.request_id for r in recs)
    assert recs[-1].header("authorization") is None and b"token=" in recs[-1].body
    assert vendor.problems() == []
