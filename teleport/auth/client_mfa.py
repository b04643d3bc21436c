"""The auth API client's calls for second factors (`teleport.auth.api_mfa`), mixed into
`AuthClient`: the proxy's web API (`proxy.webmfa`) sends them with its identity or a web
session's, `tsh mfa` with the user's own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

from teleport.errors import ConnectionProblem
from teleport.utils.lazy import lazy_module

if TYPE_CHECKING:  # the models load with the first MFA call: `tctl` and the services that
    # never make one do not build them
    from pydantic import BaseModel

    from teleport.api import auth_models as m
    from teleport.api import mfa_models as mfa
    from teleport.types import codec
    from teleport.types import resources as res
else:
    m = lazy_module("teleport.api.auth_models")
    mfa = lazy_module("teleport.api.mfa_models")
    codec = lazy_module("teleport.types.codec")
    res = lazy_module("teleport.types.resources")

T = TypeVar("T", bound="BaseModel")


def _q(part: str) -> str:
    return quote(part, safe="")


class MFACalls:
    """Second-factor routes; `call` is `AuthClient.call`."""

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        raise NotImplementedError

    async def _mfa_call(self, method: str, path: str, body: BaseModel | None,
                        answer: type[T]) -> T:
        from pydantic import ValidationError

        data = await self.call(method, path, body.model_dump(mode="json") if body else None)
        try:
            return answer.model_validate(data)
        except ValidationError:
            raise ConnectionProblem(f"auth server answered {method} {path} with an unexpected "
                                    f"body, not a {answer.__name__}") from None

    # --- the proxy, for browsers --------------------------------------------------------------

    async def mfa_signup_challenge(self, token: str) -> mfa.WebauthnChallenge:
        """Registration options for a signup (or reset) token's user (Proxy only)."""
        return await self._mfa_call("POST", f"/v1/signup/{_q(token)}/webauthn/register", None,
                                    mfa.WebauthnChallenge)

    async def mfa_complete_signup(self, token: str, body: mfa.MFASignupComplete) -> res.User:
        """Complete a signup with an OTP code or a new key (Proxy only)."""
        data = await self.call("POST", f"/v1/signup/{_q(token)}/complete/mfa",
                               body.model_dump(mode="json"))
        user = codec.from_dict(data, "auth server response")
        if not isinstance(user, res.User):
            raise ConnectionProblem("auth server answered the signup with something not a user")
        return user

    async def mfa_login_begin(self, user: str, password: str,
                              remote_addr: str) -> mfa.WebauthnChallenge:
        """Check the password, then get a challenge for the user's keys (Proxy only)."""
        return await self._mfa_call("POST", f"/v1/users/{_q(user)}/webauthn/login/begin",
                                    mfa.MFALoginBegin(password=password, remote_addr=remote_addr),
                                    mfa.WebauthnChallenge)

    async def mfa_login_finish(self, user: str, response: dict[str, Any],
                               remote_addr: str) -> m.WebSession:
        """The key's answer for a web session (Proxy only)."""
        return await self._mfa_call(
            "POST", f"/v1/users/{_q(user)}/webauthn/web/sessions",
            mfa.MFALoginFinish(webauthn_response=response, remote_addr=remote_addr), m.WebSession)

    async def mfa_login_certs(self, user: str, body: mfa.MFALoginCerts) -> mfa.MFALoginCertsAnswer:
        """The key's answer for `tsh login`'s certificates (Proxy only)."""
        return await self._mfa_call("POST", f"/v1/users/{_q(user)}/webauthn/ssh/authenticate",
                                    body, mfa.MFALoginCertsAnswer)

    async def passwordless_certs(self, body: mfa.MFALoginCerts) -> mfa.MFALoginCertsAnswer:
        """A resident key's answer for `tsh login --auth=passwordless` (Proxy only)."""
        return await self._mfa_call("POST", "/v1/webauthn/passwordless/ssh/authenticate", body,
                                    mfa.MFALoginCertsAnswer)

    async def passwordless_begin(self) -> mfa.WebauthnChallenge:
        return await self._mfa_call("POST", "/v1/webauthn/passwordless/begin", None,
                                    mfa.WebauthnChallenge)

    async def passwordless_finish(self, response: dict[str, Any],
                                  remote_addr: str) -> m.WebSession:
        return await self._mfa_call(
            "POST", "/v1/webauthn/passwordless/web/sessions",
            mfa.MFALoginFinish(webauthn_response=response, remote_addr=remote_addr), m.WebSession)

    # --- a user's own devices (the user's identity) -------------------------------------------

    async def list_mfa_devices(self, user: str) -> mfa.MFADeviceList:
        return await self._mfa_call("GET", f"/v1/users/{_q(user)}/mfa/devices", None,
                                    mfa.MFADeviceList)

    async def mfa_register_challenge(self, user: str,
                                     passwordless: bool = False) -> mfa.WebauthnChallenge:
        return await self._mfa_call("POST", f"/v1/users/{_q(user)}/mfa/devices/register",
                                    mfa.MFARegisterBegin(passwordless=passwordless),
                                    mfa.WebauthnChallenge)

    async def add_mfa_device(self, user: str, name: str, response: dict[str, Any],
                             remote_addr: str = "") -> mfa.MFADeviceInfo:
        return await self._mfa_call("POST", f"/v1/users/{_q(user)}/mfa/devices",
                                    mfa.MFARegisterFinish(name=name, webauthn_response=response,
                                                      remote_addr=remote_addr), mfa.MFADeviceInfo)

    async def delete_mfa_device(self, user: str, name_or_id: str, remote_addr: str = "") -> None:
        query = f"?{urlencode({'remote_addr': remote_addr})}" if remote_addr else ""
        await self.call("DELETE", f"/v1/users/{_q(user)}/mfa/devices/{_q(name_or_id)}{query}")
