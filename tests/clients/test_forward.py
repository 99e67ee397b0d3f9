"""Forward proxy, plain HTTP absolute-form (SPEC 2.1).

boto3 / the AWS CLI / slack_sdk talk to the real vendor hosts over http:// through the proxy
(`Config(proxies=...)`, `HTTP_PROXY`, `WebClient(proxy=...)`); the proxy resolves those hosts to
the fake vendor (`[forward.resolve]`). The client's own signature must arrive intact: the fake
vendor verifies it with the client's secret.
"""

import json
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config

import scenarios
from harness import ACCOUNT, CLIENT_AK, CLIENT_SK, REAL_HOSTS, assert_not_in_store


def test_put_retention_settings_both(forward):
    """PutRetentionSettings with room and conversation retention."""
    scenarios.put_retention_settings_both(forward)


def test_put_retention_settings_room_only(forward):
    """PutRetentionSettings with room retention only."""
    scenarios.put_retention_settings_room_only(forward)


def test_put_retention_settings_turn_off_conversation(forward):
    """PutRetentionSettings turning conversation retention off."""
    scenarios.put_retention_settings_turn_off_conversation(forward)


def test_put_retention_settings_turn_off_all(forward):
    """PutRetentionSettings with `RetentionSettings: {}`."""
    scenarios.put_retention_settings_turn_off_all(forward)


def test_put_retention_settings_status_204(forward):
    """PutRetentionSettings answered 204 with no body (modelled responseCode)."""
    scenarios.put_retention_settings_status_204(forward)


def test_get_retention_settings(forward):
    """GetRetentionSettings (read)."""
    scenarios.get_retention_settings(forward)


def test_put_channel_expiration_settings(forward):
    """PutChannelExpirationSettings with a bearer."""
    scenarios.put_channel_expiration_settings(forward)


def test_put_channel_expiration_settings_removal(forward):
    """PutChannelExpirationSettings without ExpirationSettings removes expiry."""
    scenarios.put_channel_expiration_settings_removal(forward)


def test_create_channel(forward):
    """CreateChannel with initial ExpirationSettings."""
    scenarios.create_channel(forward)


def test_describe_channel(forward):
    """DescribeChannel (read)."""
    scenarios.describe_channel(forward)


def test_put_app_instance_retention_settings(forward):
    """PutAppInstanceRetentionSettings 90 days."""
    scenarios.put_app_instance_retention_settings(forward)


def test_put_app_instance_retention_settings_off(forward):
    """PutAppInstanceRetentionSettings with an empty settings object (off)."""
    scenarios.put_app_instance_retention_settings_off(forward)


def test_get_app_instance_retention_settings(forward):
    """GetAppInstanceRetentionSettings (read)."""
    scenarios.get_app_instance_retention_settings(forward)


def test_put_app_instance_user_expiration_settings(forward):
    """PutAppInstanceUserExpirationSettings."""
    scenarios.put_app_instance_user_expiration_settings(forward)


def test_create_app_instance_user(forward):
    """CreateAppInstanceUser with initial ExpirationSettings."""
    scenarios.create_app_instance_user(forward)


def test_describe_app_instance_user(forward):
    """DescribeAppInstanceUser (read)."""
    scenarios.describe_app_instance_user(forward)


@pytest.mark.parametrize("body", ["form", "json"])
def test_slack_set_custom_retention(forward, body):
    scenarios.slack_set(forward, body)


@pytest.mark.parametrize("body", ["form", "json"])
def test_slack_get_custom_retention(forward, body):
    scenarios.slack_get(forward, body)


@pytest.mark.parametrize("body", ["form", "json"])
def test_slack_remove_custom_retention(forward, body):
    scenarios.slack_remove(forward, body)


@pytest.mark.parametrize("family", scenarios.PREVIOUS_FAMILIES)
def test_previous_on_second_change(forward, family):
    scenarios.previous_on_second_change(forward, family)


@pytest.mark.parametrize("family", scenarios.PREVIOUS_FAMILIES)
def test_previous_learned_from_read(forward, family):
    scenarios.previous_from_read(forward, family)


@pytest.mark.parametrize("case", sorted(scenarios.AWS_INVALID))
def test_aws_validation_rejected(forward, case):
    scenarios.aws_rejected(forward, case)


@pytest.mark.parametrize("case", sorted(scenarios.SLACK_INVALID))
def test_slack_validation_rejected(forward, case):
    scenarios.slack_rejected(forward, case)


def test_cli_put_retention_settings(forward):
    scenarios.cli_put_retention_settings(forward)


def test_cli_put_channel_expiration_settings(forward):
    scenarios.cli_put_channel_expiration_settings(forward)


def test_passthrough_not_audited(forward):
    scenarios.passthrough_not_audited(forward)


def test_odd_arn_characters(forward):
    scenarios.odd_arn_characters(forward)


def test_boundaries_accepted(forward):
    scenarios.boundaries_accepted(forward)


# ---------------------------------------------------------------- forward-only behaviour


def test_client_session_token_passes_unchanged_not_stored(forward):
    """Forward mode keeps the client's X-Amz-Security-Token (it is signed) but never stores it."""
    client_token = "FwoGZXIvYXdzClientSessionTokenEXAMPLE+2222222222222222/CCCC=="
    forward.vendor.secrets[CLIENT_AK] = (CLIENT_SK, client_token)
    _, spy = forward.aws("chime")
    client = boto3.session.Session(
        aws_access_key_id=CLIENT_AK, aws_secret_access_key=CLIENT_SK,
        aws_session_token=client_token, region_name="us-east-1",
    ).client("chime", endpoint_url="http://" + REAL_HOSTS["chime"],
             config=Config(retries={"total_max_attempts": 1}, proxies={"http": forward.proxy.url}))
    client.meta.events.register("before-send", spy)
    mark = forward.vendor.mark()
    client.put_retention_settings(AccountId=ACCOUNT, RetentionSettings={
        "RoomRetentionSettings": {"RetentionDays": 400}})
    rec = forward.one_request(mark, "chime")
    forward.check_aws_transport(rec, spy.last)
    assert rec.header("x-amz-security-token") == client_token
    ev = forward.event_for_record(rec)
    assert client_token not in json.dumps(ev)
    assert_not_in_store(forward.proxy, [client_token])


def test_host_outside_allow_hosts_is_refused(forward):
    """An absolute-form request for a host not in allow_hosts is refused, never connected."""
    # The host resolves to loopback, so even a proxy that wrongly connects stays on this machine.
    target = f"http://localhost:{forward.vendor.port('chime')}/accounts/{ACCOUNT}/retention-settings"
    mark = forward.vendor.mark()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": forward.proxy.url}))
    try:
        with opener.open(target, timeout=10) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    assert 400 <= status < 500, f"status {status} for a host outside allow_hosts"
    assert forward.vendor.since(mark) == [], "the proxy connected to a host outside allow_hosts"
