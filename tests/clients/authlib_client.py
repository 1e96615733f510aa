"""Authlib (https://authlib.org), as an application uses it, against revokd's
RFC 7009 `/revoke` and RFC 7662 `/introspect` with both RFC 6749 client
authentication methods. Run by tests/it/oauth.rs; prints what it saw and
exits non-zero on any surprise."""

import os
import sys

from authlib.integrations.requests_client import OAuth2Session

url = os.environ["REVOKD_URL"]
secret = os.environ["CLIENT_SECRET"]


def session(client_id, method):
    return OAuth2Session(
        client_id=client_id,
        client_secret=secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
    )


failures = []
for method, token, name in [
    ("client_secret_basic", os.environ["TOKEN_BASIC"], "basic"),
    ("client_secret_post", os.environ["TOKEN_POST"], "post"),
]:
    revoke = session("app", method).revoke_token(
        url + "/revoke", token=token, token_type_hint="access_token"
    )
    print("revoke", name, revoke.status_code, revoke.headers.get("content-type"))
    if revoke.status_code != 200:
        failures.append(f"revoke {name}: {revoke.status_code} {revoke.text}")
    introspect = session("gw", method).introspect_token(
        url + "/introspect", token=os.environ["TOKEN_ACTIVE"]
    )
    body = introspect.json()
    print("introspect", name, "active" if body.get("active") else body)
    if introspect.status_code != 200 or body.get("active") is not True:
        failures.append(f"introspect {name}: {introspect.status_code} {body}")
    if body.get("token_type") != "Bearer":
        failures.append(f"introspect {name}: token_type {body.get('token_type')}")

wrong = OAuth2Session(client_id="app", client_secret="wrong").revoke_token(
    url + "/revoke", token=os.environ["TOKEN_ACTIVE"]
)
print("revoke wrong secret", wrong.status_code, wrong.headers.get("www-authenticate"))
if wrong.status_code != 401 or wrong.json().get("error") != "invalid_client":
    failures.append(f"wrong secret: {wrong.status_code} {wrong.text}")

if failures:
    print("\n".join(failures))
    sys.exit(1)
