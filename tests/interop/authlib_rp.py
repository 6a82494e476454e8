"""An ordinary relying party built on authlib (code authlog did not write):
discovery, authorization code + PKCE (S256), ID token validation against the
JWKS, userinfo, refresh. The only authlog-specific part is a user typing into
the login and consent forms, which this script plays with `requests`.

Usage: authlib_rp.py BASE CLIENT_ID CLIENT_SECRET REDIRECT_URI USERNAME PASSWORD
Prints one JSON object with what it saw; exits non-zero on any failure.
"""
import json
import re
import sys
from urllib.parse import urljoin

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken


def field(html, name):
    m = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), html)
    if not m:
        raise SystemExit("no %s field in page: %s" % (name, html[:300]))
    return m.group(1).replace("&amp;", "&")


def main():
    base, client_id, secret, redirect_uri, username, password = sys.argv[1:7]
    issuer = base + "/oidc"
    meta = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
    assert meta["issuer"] == issuer, meta

    client = OAuth2Session(
        client_id,
        secret,
        scope="openid profile email",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )

    # The user's browser.
    browser = requests.Session()
    r = browser.get(url, allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    login = urljoin(base, r.headers["location"])
    page = browser.get(login, timeout=10).text
    r = browser.post(
        urljoin(base, "/oidc/login"),
        data={"username": username, "password": password, "tx": field(page, "tx"), "csrf": field(page, "csrf")},
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 302, (r.status_code, r.text[:300])
    nxt = r.headers["location"]
    if "/oidc/consent" in nxt:
        page = browser.get(urljoin(base, nxt), timeout=10).text
        r = browser.post(
            urljoin(base, "/oidc/consent"),
            data={"decision": "allow", "tx": field(page, "tx"), "csrf": field(page, "csrf")},
            allow_redirects=False,
            timeout=10,
        )
        assert r.status_code == 302, (r.status_code, r.text[:300])
        nxt = r.headers["location"]
    assert nxt.startswith(redirect_uri), nxt

    # Back at the relying party: authlib checks state and exchanges the code.
    token = client.fetch_token(
        meta["token_endpoint"], authorization_response=nxt, state=state, code_verifier=verifier
    )
    assert "iss=" in nxt, "RFC 9207 iss in the authorization response"

    jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    claims = jwt.decode(
        token["id_token"],
        jwks,
        claims_cls=CodeIDToken,
        claims_options={"iss": {"essential": True, "value": issuer}},
        claims_params={"nonce": nonce, "client_id": client_id, "access_token": token["access_token"]},
    )
    claims.validate(leeway=60)  # iss, aud, exp, iat, nonce, at_hash

    userinfo = client.get(meta["userinfo_endpoint"], timeout=10).json()
    assert userinfo["sub"] == claims["sub"], (userinfo, claims)

    refreshed = client.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    claims2 = jwt.decode(
        refreshed["id_token"],
        jwks,
        claims_cls=CodeIDToken,
        claims_params={"client_id": client_id, "access_token": refreshed["access_token"]},
    )
    claims2.validate(leeway=60)
    assert claims2["sub"] == claims["sub"] and claims2["auth_time"] == claims["auth_time"]

    print(json.dumps({
        "sub": claims["sub"],
        "userinfo": userinfo,
        "refreshed": True,
    }))


if __name__ == "__main__":
    main()
