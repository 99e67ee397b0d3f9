"""Egress gateway (SPEC 2.2): unmodified clients with HTTPS_PROXY and the proxy's CA.

`retention-proxy ca init` makes the CA; the clients talk https to the real vendor hosts through
CONNECT; the proxy intercepts the tunnel with a leaf certificate from that CA, audits the inner
requests and forwards them to the vendor (here resolved to the fake with `[forward.resolve]`).
The client's own signature must arrive intact.
"""

import socket

import pytest

import scenarios


def test_put_retention_settings_both(connect):
    scenarios.put_retention_settings_both(connect)


def test_get_retention_settings(connect):
    scenarios.get_retention_settings(connect)


def test_put_channel_expiration_settings(connect):
    scenarios.put_channel_expiration_settings(connect)


def test_create_channel(connect):
    scenarios.create_channel(connect)


def test_put_app_instance_retention_settings(connect):
    scenarios.put_app_instance_retention_settings(connect)


def test_create_app_instance_user(connect):
    scenarios.create_app_instance_user(connect)


@pytest.mark.parametrize("body", ["form", "json"])
def test_slack_set_custom_retention(connect, body):
    scenarios.slack_set(connect, body)


def test_slack_remove_custom_retention(connect):
    scenarios.slack_remove(connect, "form")


def test_previous_on_second_change(connect):
    scenarios.previous_on_second_change(connect, "chime")


def test_aws_validation_rejected(connect):
    scenarios.aws_rejected(connect, "room_days_99999")


def test_slack_validation_rejected(connect):
    scenarios.slack_rejected(connect, "duration_40000_json")


def test_cli_put_retention_settings(connect):
    scenarios.cli_put_retention_settings(connect)


def test_cli_put_channel_expiration_settings(connect):
    scenarios.cli_put_channel_expiration_settings(connect)


def test_passthrough_not_audited(connect):
    scenarios.passthrough_not_audited(connect)


def test_connect_to_host_outside_allow_hosts_is_403(connect):
    """CONNECT to a host not allowed gets 403 and no connection (SPEC 2.2)."""
    # localhost resolves to loopback: even a proxy that wrongly connects stays on this machine
    port = connect.vendor.port("chime")
    mark = connect.vendor.mark()
    with socket.create_connection(("127.0.0.1", connect.proxy.port), timeout=10) as s:
        s.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
        status_line = s.makefile("rb").readline().decode(errors="replace")
        if status_line.split(" ")[1:2] == ["200"]:  # tunnel open: prove it by using it
            s.sendall(b"GET /accounts/x/retention-settings HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_line.startswith("HTTP/1.1 403"), status_line
    assert connect.vendor.since(mark) == []
