"""A reset link through the real proxy: `/web/reset/<token>` and the password token web API
(the auth API and the web proxy in-process on loopback, test_web.py's fixture)."""

from __future__ import annotations

import pyotp
import pytest

from teleport.errors import AccessDenied, NotFound
from tests.integration.proxy import test_web
from tests.integration.proxy.test_web import CLUSTER, Cluster, _keys, _raw

make_cluster = test_web.make_cluster  # the in-process auth API and web proxy
cluster = test_web.cluster
NEW_PASSWORD = "a brand new password"


async def test_reset_link_page_and_api_set_a_new_password_and_otp(cluster: Cluster) -> None:
    old_totp = await cluster.signup("alice")
    keys = _keys()
    await cluster.login("alice", old_totp, keys)
    token = (await cluster.auth.accounts.reset_user("alice", actor="admin")).metadata.name
    # The old password stops working before the link is even opened.
    with pytest.raises(AccessDenied, match="invalid username, password or second"):
        await cluster.login("alice", old_totp, keys)

    status, headers, text = await _raw(cluster, "GET", f"/web/reset/{token}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f"Reset your password on {CLUSTER}" in text and "Reset password</button>" in text
    assert '<strong id="user">alice</strong>' in text and f'data-token="{token}"' in text
    assert 'name="otp"' in text and "<svg" in text

    async with cluster.client() as web_client:
        info = await web_client.signup_info(token)
        assert (info.user, info.usage, info.second_factor) == ("alice", "reset", "otp")
        assert info.otp_secret and info.otp_secret in text and info.otp_secret != old_totp.secret
        new_totp = pyotp.TOTP(info.otp_secret)
        assert await web_client.complete_signup(token, NEW_PASSWORD,
                                                new_totp.at(cluster.clock.now())) == "alice"
        with pytest.raises(NotFound):  # used once
            await web_client.complete_signup(token, "yet another one", "000000")
    resp = await cluster.login("alice", new_totp, keys, password=NEW_PASSWORD)
    assert resp.cluster_name == CLUSTER
    status, _, text = await _raw(cluster, "GET", f"/web/reset/{token}")
    assert status == 404 and "This password reset link is invalid or has expired" in text


async def test_signup_page_still_says_sign_up(cluster: Cluster) -> None:
    token = await cluster.auth.accounts.create_user_signup("bob", [], [], created_by="admin")
    status, _, text = await _raw(cluster, "GET", f"/web/newuser/{token.metadata.name}")
    assert status == 200 and f"Welcome to {CLUSTER}" in text
    assert "Create account</button>" in text and "Reset" not in text
