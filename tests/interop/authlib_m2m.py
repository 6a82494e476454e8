"""client_credentials, introspection (RFC 7662) and revocation (RFC 7009) with
authlib's OAuth2Session, code authlog did not write.

Usage: authlib_m2m.py BASE CLIENT_ID CLIENT_SECRET RS_ID RS_SECRET
Prints one JSON object with what it saw; exits non-zero on any failure.
"""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session


def main():
    base, client_id, secret, rs_id, rs_secret = sys.argv[1:6]
    meta = requests.get(base + "/oidc/.well-known/openid-configuration", timeout=10).json()

    job = OAuth2Session(client_id, secret, scope="reports:read", token_endpoint_auth_method="client_secret_basic")
    token = job.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer" and "refresh_token" not in token, token

    rs = OAuth2Session(rs_id, rs_secret, token_endpoint_auth_method="client_secret_basic")
    before = rs.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
    assert before["active"] is True and before["client_id"] == client_id, before

    r = job.revoke_token(meta["revocation_endpoint"], token=token["access_token"], token_type_hint="access_token")
    assert r.status_code == 200, (r.status_code, r.text)
    after = rs.introspect_token(meta["introspection_endpoint"], token=token["access_token"]).json()
    assert after == {"active": False}, after

    print(json.dumps({"scope": token["scope"], "sub": before["sub"], "active_before": True, "active_after": False}))


if __name__ == "__main__":
    main()
