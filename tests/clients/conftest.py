"""Fixtures: a fake vendor and the built retention-proxy binary in its own temp directory.

Every started proxy is stopped with SIGTERM at the end of the test; the test then asserts the
exit code is 0, that `audit verify` accepts the chain, that the store (with -wal) holds no key,
token or signature seen in the test (checked before and after shutdown), and that the fake
vendor saw no bad signature, misrouted call or unknown route.
"""

from __future__ import annotations

import os

import pytest

from fake_vendor import FakeVendor
from harness import (
    CLIENT_AK, CLIENT_SK, PROXY_AK, PROXY_ENV_VARS, PROXY_SK, SENT_AUTHORIZATIONS,
    SLACK_FORM_TOKEN, SLACK_TOKEN, Ctx, ProxyProcess, assert_not_in_store, proxy_binary,
    secrets_of_test,
)


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment():
    """No proxy variables or AWS profile of the machine may leak into the clients."""
    saved = dict(os.environ)
    for k in list(os.environ):
        if k.upper() in PROXY_ENV_VARS or k.upper().startswith("AWS_"):
            del os.environ[k]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def proxy_bin():
    p = proxy_binary()
    if not p.is_file() or not os.access(p, os.X_OK):
        pytest.fail(
            f"retention-proxy binary not found at {p}: build it with `cargo build --release` "
            "or point RETENTION_PROXY_BIN at it"
        )
    return p


@pytest.fixture
def fake_vendor():
    vendor = FakeVendor(
        secrets={CLIENT_AK: CLIENT_SK, PROXY_AK: PROXY_SK},
        slack_tokens={SLACK_TOKEN, SLACK_FORM_TOKEN},
    ).start()
    yield vendor
    vendor.stop()


@pytest.fixture
def proxy_factory(proxy_bin, fake_vendor, tmp_path):
    started: list[ProxyProcess] = []
    SENT_AUTHORIZATIONS.clear()

    def make(extra_env=None, extra_config="", start=True, ca=False):
        workdir = tmp_path / f"proxy{len(started)}"
        workdir.mkdir()
        p = ProxyProcess(proxy_bin, workdir, fake_vendor, extra_env=extra_env,
                         extra_config=extra_config)
        if ca:
            p.with_ca()
        started.append(p)
        if start:
            p.start()
        return p

    yield make

    failures = []
    secrets = secrets_of_test(fake_vendor)

    def no_secrets(p, when):
        try:
            assert_not_in_store(p, secrets)
        except AssertionError as e:
            failures.append(f"{when}: {e}")

    for p in started:
        if p.proc is None:
            continue
        no_secrets(p, "while running")
        if p.killed:
            r = p.verify()
            if r.returncode != 0:
                failures.append(f"audit verify after SIGKILL exited {r.returncode}: "
                                f"{(r.stdout + r.stderr).decode(errors='replace')}")
            continue
        try:
            code = p.stop()
        except AssertionError as e:
            failures.append(str(e))
            continue
        if code != 0:
            failures.append(f"retention-proxy exited {code} after SIGTERM (want 0)\n{p.logs()}")
        no_secrets(p, "after shutdown")
        if p.db.exists():
            r = p.verify()
            if r.returncode != 0:
                failures.append(
                    f"audit verify exited {r.returncode}: "
                    f"{(r.stdout + r.stderr).decode(errors='replace')}"
                )
    failures += fake_vendor.problems()
    if failures:
        pytest.fail("after the test:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture
def proxy(proxy_factory):
    return proxy_factory()


@pytest.fixture
def reverse(proxy, fake_vendor):
    return Ctx(proxy, fake_vendor, "reverse")


@pytest.fixture
def forward(proxy, fake_vendor):
    return Ctx(proxy, fake_vendor, "forward")


@pytest.fixture
def connect(proxy_factory, fake_vendor):
    return Ctx(proxy_factory(ca=True), fake_vendor, "connect")
