"""Reverse proxy / sidecar (SPEC 2.3): the clients' endpoint URL is the proxy itself.

The proxy picks the upstream from the path and re-signs AWS calls with its own credentials
(the fake vendor verifies them with the proxy's secret); Slack bearer tokens pass unchanged.
"""

import json

import boto3
import pytest
from botocore.config import Config

import scenarios
from harness import (
    ACCOUNT, CLIENT_AK, CLIENT_SK, PROXY_AK, PROXY_SESSION_TOKEN, PROXY_SK, SLACK_CHANNEL, SLACK_TOKEN,
    Ctx, assert_not_in_store, http_request,
)


def test_put_retention_settings_both(reverse):
    """PutRetentionSettings with room and conversation retention."""
    scenarios.put_retention_settings_both(reverse)


def test_put_retention_settings_room_only(reverse):
    """PutRetentionSettings with room retention only."""
    scenarios.put_retention_settings_room_only(reverse)


def test_put_retention_settings_turn_off_conversation(reverse):
    """PutRetentionSettings turning conversation retention off."""
    scenarios.put_retention_settings_turn_off_conversation(reverse)


def test_put_retention_settings_turn_off_all(reverse):
    """PutRetentionSettings with `RetentionSettings: {}`."""
    scenarios.put_retention_settings_turn_off_all(reverse)


def test_put_retention_settings_status_204(reverse):
    """PutRetentionSettings answered 204 with no body (modelled responseCode)."""
    scenarios.put_retention_settings_status_204(reverse)


def test_get_retention_settings(reverse):
    """GetRetentionSettings (read)."""
    scenarios.get_retention_settings(reverse)


def test_put_channel_expiration_settings(reverse):
    """PutChannelExpirationSettings with a bearer."""
    scenarios.put_channel_expiration_settings(reverse)


def test_put_channel_expiration_settings_removal(reverse):
    """PutChannelExpirationSettings without ExpirationSettings removes expiry."""
    scenarios.put_channel_expiration_settings_removal(reverse)


def test_create_channel(reverse):
    """CreateChannel with initial ExpirationSettings."""
    scenarios.create_channel(reverse)


def test_describe_channel(reverse):
    """DescribeChannel (read)."""
    scenarios.describe_channel(reverse)


def test_put_app_instance_retention_settings(reverse):
    """PutAppInstanceRetentionSettings 90 days."""
    scenarios.put_app_instance_retention_settings(reverse)


def test_put_app_instance_retention_settings_off(reverse):
    """PutAppInstanceRetentionSettings with an empty settings object (off)."""
    scenarios.put_app_instance_retention_settings_off(reverse)


def test_get_app_instance_retention_settings(reverse):
    """GetAppInstanceRetentionSettings (read)."""
    scenarios.get_app_instance_retention_settings(reverse)


def test_put_app_instance_user_expiration_settings(reverse):
    """PutAppInstanceUserExpirationSettings."""
    scenarios.put_app_instance_user_expiration_settings(reverse)


def test_create_app_instance_user(reverse):
    """CreateAppInstanceUser with initial ExpirationSettings."""
    scenarios.create_app_instance_user(reverse)


def test_describe_app_instance_user(reverse):
    """DescribeAppInstanceUser (read)."""
    scenarios.describe_app_instance_user(reverse)


@pytest.mark.parametrize("body", ["form", "json"])
def test_slack_set_custom_retention(reverse, body):
    scenarios.slack_set(reverse, body)


@pytest.mark.parametrize("body", ["form", "json"])
def test_slack_get_custom_retention(reverse, body):
    scenarios.slack_get(reverse, body)


@pytest.mark.parametrize("body", ["form", "json"])
def test_slack_remove_custom_retention(reverse, body):
    scenarios.slack_remove(reverse, body)


@pytest.mark.parametrize("family", scenarios.PREVIOUS_FAMILIES)
def test_previous_on_second_change(reverse, family):
    scenarios.previous_on_second_change(reverse, family)


@pytest.mark.parametrize("family", scenarios.PREVIOUS_FAMILIES)
def test_previous_learned_from_read(reverse, family):
    scenarios.previous_from_read(reverse, family)


@pytest.mark.parametrize("case", sorted(scenarios.AWS_INVALID))
def test_aws_validation_rejected(reverse, case):
    scenarios.aws_rejected(reverse, case)


@pytest.mark.parametrize("case", sorted(scenarios.SLACK_INVALID))
def test_slack_validation_rejected(reverse, case):
    scenarios.slack_rejected(reverse, case)


def test_cli_put_retention_settings(reverse):
    scenarios.cli_put_retention_settings(reverse)


def test_cli_put_channel_expiration_settings(reverse):
    scenarios.cli_put_channel_expiration_settings(reverse)


def test_passthrough_not_audited(reverse):
    scenarios.passthrough_not_audited(reverse)


def test_odd_arn_characters(reverse):
    scenarios.odd_arn_characters(reverse)


def test_boundaries_accepted(reverse):
    scenarios.boundaries_accepted(reverse)


# ---------------------------------------------------------------- reverse-only behaviour


def test_unknown_path_404_names_prefixes(reverse):
    """Any path outside the known prefixes gets 404 with a message naming them (SPEC 2.3)."""
    mark = reverse.vendor.mark()
    status, _, body = http_request("GET", reverse.proxy.url + "/no-such-api/x")
    assert status == 404, status
    text = body.decode(errors="replace")
    for prefix in ("/api/", "/accounts/", "/channels", "/app-instances"):
        assert prefix in text, f"404 body does not name {prefix!r}: {text[:500]}"
    assert reverse.vendor.since(mark) == []


def test_proxy_session_token_is_signed_and_not_stored(proxy_factory, fake_vendor):
    """Proxy credentials with AWS_SESSION_TOKEN: X-Amz-Security-Token is sent and signed."""
    fake_vendor.secrets[PROXY_AK] = (PROXY_SK, PROXY_SESSION_TOKEN)
    proxy = proxy_factory(extra_env={"AWS_SESSION_TOKEN": PROXY_SESSION_TOKEN})
    ctx = Ctx(proxy, fake_vendor, "reverse")
    scenarios.put_retention_settings_both(ctx)
    rec = fake_vendor.all("chime")[-1]
    assert rec.header("x-amz-security-token") == PROXY_SESSION_TOKEN
    assert "x-amz-security-token" in rec.sig.signed_headers
    assert_not_in_store(proxy, [PROXY_SESSION_TOKEN])


def test_client_session_token_not_forwarded_nor_stored(reverse):
    """The client's own session token is for the proxy's host only: dropped on re-signing."""
    client_token = "FwoGZXIvYXdzClientSessionTokenEXAMPLE+1111111111111111/BBBB=="
    client, spy = reverse.aws("chime")
    client = boto3.session.Session(
        aws_access_key_id=CLIENT_AK, aws_secret_access_key=CLIENT_SK,
        aws_session_token=client_token, region_name="us-east-1",
    ).client("chime", endpoint_url=reverse.proxy.url,
             config=Config(retries={"total_max_attempts": 1}))
    client.meta.events.register("before-send", spy)
    mark = reverse.vendor.mark()
    client.get_retention_settings(AccountId=ACCOUNT)
    assert spy.last.header("x-amz-security-token") == client_token
    rec = reverse.one_request(mark, "chime")
    reverse.check_aws_transport(rec, spy.last)
    assert rec.header("x-amz-security-token") is None
    ev = reverse.event_for_record(rec)
    assert client_token not in json.dumps(ev)
    assert_not_in_store(reverse.proxy, [client_token])


def test_slack_get_custom_retention_via_http_get(reverse):
    """Slack also accepts GET with a query string for getCustomRetention (SPEC 1)."""
    reverse.vendor.seed_slack_channel(SLACK_CHANNEL, 180)
    mark = reverse.vendor.mark()
    status, headers, body = http_request(
        "GET", reverse.proxy.url + "/api/admin.conversations.getCustomRetention?channel_id="
        + SLACK_CHANNEL, headers={"Authorization": "Bearer " + SLACK_TOKEN})
    assert status == 200 and json.loads(body)["duration_days"] == 180, body
    rec = reverse.one_request(mark, "slack")
    assert rec.method == "GET" and rec.query == "channel_id=" + SLACK_CHANNEL
    ev = reverse.event_for_record(rec)
    scenarios.check_slack_event(reverse, ev, rec, "admin.conversations.getCustomRetention",
                                read_only=True, user_agent="Python-urllib/")
