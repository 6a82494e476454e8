//! The OpenID Connect flows over real HTTP with a cookie jar, and a negative test
//! for each rule.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::oidc::{
    PASSWORD, POST_LOGOUT, REDIRECT, Rp, browser, field, location, pkce, query, setup,
};
use crate::support::{TestApp, spawn_app_in, spawn_app_with};

async fn app_and_rp(extra: serde_json::Value) -> (tempfile::TempDir, TestApp, Rp) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let rp = setup(&app.url(""), &app.admin_token, extra).await;
    (dir, app, rp)
}

/// Starts the `authlog` binary on a free port; returns it with its base URL.
async fn spawn_binary(
    data: &std::path::Path,
    log: &std::path::Path,
) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .arg("serve")
        .env("AUTHLOG_DATA_DIR", data)
        .env("AUTHLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHLOG_ISSUER", format!("{base}/oidc"))
        .env("AUTHLOG_LOG_LEVEL", "debug")
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status() == StatusCode::OK
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out)
        } else {
            out.push(p)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_over_http_and_its_audit_trail() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_file = logs.path().join("server.log");
    let (mut server, base) = spawn_binary(data.path(), &log_file).await;
    let admin_token = std::fs::read_to_string(data.path().join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let rp = setup(&base, &admin_token, json!({})).await;
    let mut seen_secrets = vec![
        PASSWORD.to_string(),
        rp.client_secret.clone().unwrap(),
        admin_token.clone(),
    ];

    // Discovery advertises what the flow uses.
    let d: serde_json::Value =
        reqwest::get(format!("{base}/oidc/.well-known/openid-configuration"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(d["issuer"], format!("{base}/oidc"));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    for e in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        assert!(
            d[e].as_str().unwrap().starts_with(&format!("{base}/oidc/")),
            "{e}"
        );
    }

    // authorize → login form → consent → code.
    let b = browser();
    let (verifier, challenge) = pkce();
    let url = rp.auth_url(&challenge, "openid profile email", &[]);
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let login_url = location(&r);
    assert!(login_url.starts_with("/oidc/login?tx="), "{login_url}");
    let r = b.get(format!("{base}{login_url}")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("'nonce-"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let page = r.text().await.unwrap();
    assert!(page.contains("name=\"username\"") && page.contains("name=\"password\""));
    let r = b
        .post(format!("{base}/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("authlog_session=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    seen_secrets.push(
        cookie
            .split(';')
            .next()
            .unwrap()
            .split('=')
            .nth(1)
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_string(),
    );
    let consent_url = location(&r);
    assert!(consent_url.starts_with("/oidc/consent?tx="));
    let page = b
        .get(format!("{base}{consent_url}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Example App") && page.contains("<code>email</code>"),
        "{page}"
    );
    let r = b
        .post(format!("{base}/oidc/consent"))
        .form(&[
            ("decision", "allow"),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let back = location(&r);
    assert!(back.starts_with(REDIRECT));
    let q = query(&back);
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], format!("{base}/oidc"));
    let code = q["code"].clone();
    seen_secrets.push(code.split('.').nth(1).unwrap().to_string());

    // code → tokens.
    let r = rp.redeem(&code, &verifier).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["pragma"], "no-cache");
    let t: serde_json::Value = r.json().await.unwrap();
    let (access, id_token, refresh) = (
        t["access_token"].as_str().unwrap(),
        t["id_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    seen_secrets.extend([
        access.to_string(),
        id_token.to_string(),
        refresh.split('.').nth(2).unwrap().to_string(),
    ]);
    assert_eq!(t["token_type"], "Bearer");

    // The ID token's signature checks against the JWKS; its claims are right.
    let claims = rp.verify_jwt(id_token, &rp.client_id, "JWT").await;
    assert_eq!(claims["sub"], rp.user_id);
    assert_eq!(claims["nonce"], "n-456");
    assert!(claims["sid"].is_string() && claims["auth_time"].is_i64());
    let at_hash = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&sha2::Sha256::digest(access.as_bytes())[..16])
    };
    assert_eq!(claims["at_hash"], at_hash);
    // The access token is an RFC 9068 JWT for the resource audience, never the client.
    let at = rp.verify_jwt(access, "authlog-resources", "at+jwt").await;
    assert_eq!(at["client_id"], rp.client_id);
    assert_eq!(at["scope"], "openid profile email");

    // userinfo.
    let http = reqwest::Client::new();
    let ui: serde_json::Value = http
        .get(format!("{base}/oidc/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ui["sub"], rp.user_id);
    assert_eq!(ui["preferred_username"], rp.username);
    assert_eq!(ui["email"], "alice@example.com");
    // An ID token is not an access token.
    let r = http
        .get(format!("{base}/oidc/userinfo"))
        .bearer_auth(id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // refresh: rotated, no nonce, same auth_time and sub.
    let r = rp
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_eq!(r.status(), 200);
    let t2: serde_json::Value = r.json().await.unwrap();
    let refresh2 = t2["refresh_token"].as_str().unwrap().to_string();
    seen_secrets.push(refresh2.split('.').nth(2).unwrap().to_string());
    assert_ne!(refresh2, refresh);
    let c2 = rp
        .verify_jwt(t2["id_token"].as_str().unwrap(), &rp.client_id, "JWT")
        .await;
    assert_eq!(c2["sub"], claims["sub"]);
    assert_eq!(c2["auth_time"], claims["auth_time"]);
    assert!(c2.get("nonce").is_none());

    // Reuse of the rotated-out token: invalid_grant, and the family is revoked.
    let r = rp
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let r = rp
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
        ])
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let r = http
        .get(format!("{base}/oidc/userinfo"))
        .bearer_auth(t2["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "tokens of a revoked family stop working");

    // logout with a valid hint: straight back to the registered URI with state.
    let logout = format!(
        "{base}/oidc/oauth2/sessions/logout?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye-1",
        form_urlencoded::byte_serialize(POST_LOGOUT.as_bytes()).collect::<String>()
    );
    let r = b.get(&logout).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), format!("{POST_LOGOUT}?state=bye-1"));
    // The session is gone: prompt=none now needs a login.
    let (_, ch) = pkce();
    let r = b
        .get(rp.auth_url(&ch, "openid", &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(query(&location(&r))["error"], "login_required");

    // Stop the server; read the audit trail back from the log.
    let pid = server.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(server.wait().await.unwrap().success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args(["events", "tail"])
        .env("AUTHLOG_DATA_DIR", data.path())
        .output()
        .unwrap();
    let tail = String::from_utf8(out.stdout).unwrap();
    let types: Vec<String> = tail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["subject"] == rp.user_id || e["client_id"] == rp.client_id)
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    let expected = [
        "user.registered",
        "client.registered",
        "login.succeeded",
        "consent.granted",
        "authorization_code.issued",
        "token.granted",
        "token.granted",
        "refresh_token.reuse_detected",
        "session.ended",
    ];
    let mut it = types.iter();
    for want in expected {
        assert!(
            it.any(|t| t == want),
            "the trail lacks {want} in order: {types:?}"
        );
    }
    for line in tail.lines() {
        crate::support::validating::SchemaSet::get()
            .validate(&serde_json::from_str(line).unwrap())
            .unwrap();
    }

    // Not one secret in the data directory, the server's log or the event stream.
    let mut files = Vec::new();
    files_under(data.path(), &mut files);
    let mut haystacks: Vec<(String, Vec<u8>)> = files
        .iter()
        .filter(|p| !p.ends_with("admin-token") && !p.ends_with("kek"))
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    haystacks.push(("server log".into(), std::fs::read(&log_file).unwrap()));
    haystacks.push(("events tail".into(), tail.into_bytes()));
    assert!(
        haystacks
            .iter()
            .any(|(n, b)| n.ends_with("events.redb") && !b.is_empty())
    );
    for secret in &seen_secrets {
        assert!(secret.len() >= 8);
        for (name, bytes) in &haystacks {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret ({}…) is in {name}",
                &secret[..4]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_errors_go_back_only_to_trusted_redirects() {
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let b = browser();
    let (_, ch) = pkce();
    // Untrusted targets: error pages, never redirects.
    let bad_client = rp
        .auth_url(&ch, "openid", &[])
        .replace(&rp.client_id, "nope");
    let r = b.get(&bad_client).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    let bad_redirect = rp
        .auth_url(&ch, "openid", &[])
        .replace("app.example%2Fcb", "evil.example%2Fcb");
    let r = b.get(&bad_redirect).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());

    // Trusted targets: back to the client with error, state and iss.
    let cases: Vec<(String, &str)> = vec![
        (
            rp.auth_url(&ch, "openid", &[])
                .replace("&code_challenge_method=S256", ""),
            "invalid_request",
        ),
        (
            rp.auth_url(&ch, "openid", &[])
                .replace("code_challenge_method=S256", "code_challenge_method=plain"),
            "invalid_request",
        ),
        (
            rp.auth_url(&ch, "openid", &[])
                .replace(&format!("&code_challenge={ch}"), ""),
            "invalid_request",
        ),
        (
            rp.auth_url(&ch, "openid", &[("state", "again")]),
            "invalid_request",
        ),
        (
            rp.auth_url(&ch, "openid", &[("request", "eyJ")]),
            "request_not_supported",
        ),
        (
            rp.auth_url(&ch, "openid", &[("request_uri", "https://x")]),
            "request_uri_not_supported",
        ),
        (
            rp.auth_url(&ch, "openid", &[("registration", "{}")]),
            "registration_not_supported",
        ),
        (rp.auth_url(&ch, "openid admin", &[]), "invalid_scope"),
        (
            rp.auth_url(&ch, "openid", &[])
                .replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            rp.auth_url(&ch, "openid", &[("prompt", "none login")]),
            "invalid_request",
        ),
        (
            rp.auth_url(&ch, "openid", &[("prompt", "none")]),
            "login_required",
        ),
        (
            rp.auth_url(&ch, "openid", &[("max_age", "-1")]),
            "invalid_request",
        ),
    ];
    for (url, want) in cases {
        let r = b.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 302, "{url}");
        let back = location(&r);
        assert!(back.starts_with(REDIRECT), "{back}");
        let q = query(&back);
        assert_eq!(q["error"], want, "{url}");
        assert_eq!(q["iss"], app.url("/oidc"));
        assert!(q.contains_key("state"));
    }
    // Each rejection attributable to the client is in the log.
    let events = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    let rejected = events
        .iter()
        .filter(|r| {
            r.envelope().unwrap().event_type == authlog_schemas::EventType::AuthorizationRejected
        })
        .count();
    assert!(rejected >= 12, "{rejected} authorization.rejected events");
    // The unknown client left no event.
    assert!(
        events
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("\"nope\""))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_post_loopback_ports_and_sso() {
    let (_d, app, rp) = app_and_rp(
        json!({"redirect_uris": [REDIRECT, "http://127.0.0.1/native"], "application_type": "native", "skip_consent": true}),
    )
    .await;
    let b = browser();
    let (verifier, ch) = pkce();
    // response_mode=form_post: an auto-submitting form to the client.
    let r = b
        .get(rp.auth_url(&ch, "openid", &[("response_mode", "form_post")]))
        .send()
        .await
        .unwrap();
    let login = location(&r);
    let page = b
        .get(app.url(&login))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(app.url("/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "skip_consent: straight to the client");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("action=\"{REDIRECT}\"")) && csp.contains(REDIRECT));
    let code = field(&html, "code");
    assert_eq!(field(&html, "state"), "st-123");
    assert_eq!(field(&html, "iss"), app.url("/oidc"));
    assert_eq!(rp.redeem(&code, &verifier).await.status(), 200);

    // SSO: a live session skips the form; auth_time stays the real sign-in time.
    let native = rp.auth_url(&ch, "openid", &[]).replace(
        "https%3A%2F%2Fapp.example%2Fcb",
        "http%3A%2F%2F127.0.0.1%3A49152%2Fnative",
    );
    let r = b.get(&native).send().await.unwrap();
    let back = location(&r);
    assert!(
        back.starts_with("http://127.0.0.1:49152/native?code="),
        "loopback redirect on any port: {back}"
    );
    // prompt=login forces the form again; max_age=0 too.
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let r = b
            .get(rp.auth_url(&ch, "openid", &[extra]))
            .send()
            .await
            .unwrap();
        assert!(location(&r).starts_with("/oidc/login"), "{extra:?}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_refuses_every_mismatch() {
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let b = browser();
    let (verifier, ch) = pkce();
    let back = rp
        .sign_in(
            &b,
            &rp.auth_url(&ch, "openid offline_access", &[]),
            PASSWORD,
        )
        .await;
    let code = query(&back)["code"].clone();

    let err = |r: reqwest::Response| async move {
        let status = r.status();
        let www = r
            .headers()
            .get("www-authenticate")
            .map(|h| h.to_str().unwrap().to_string());
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body["error"].as_str().unwrap().to_string(), www)
    };
    // Wrong client secret: 401 invalid_client with a Basic challenge, and an event.
    let wrong = Rp {
        client_secret: Some("wrong".into()),
        ..rp_clone(&rp)
    };
    let (s, e, www) = err(wrong.redeem(&code, &verifier).await).await;
    assert_eq!(
        (s, e.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    assert!(www.unwrap().starts_with("Basic"));
    // The wrong method for the client (post instead of basic).
    let r = reqwest::Client::new()
        .post(app.url("/oidc/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &rp.client_id),
            ("client_secret", rp.client_secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(
        v["error_description"],
        "client authentication failed: this client is registered for client_secret_basic, not client_secret_post",
        "the description says which method the client is registered for"
    );
    // Bad verifier, bad redirect_uri, repeated parameter, unknown grant type.
    assert_eq!(
        err(rp.redeem(&code, &"x".repeat(43)).await).await.1,
        "invalid_grant"
    );
    assert_eq!(
        err(rp
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://app.example/other"),
                ("code_verifier", &verifier)
            ])
            .await)
        .await
        .1,
        "invalid_grant"
    );
    assert_eq!(
        err(rp
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code", &code)
            ])
            .await)
        .await
        .1,
        "invalid_request"
    );
    assert_eq!(
        err(rp.token(&[("grant_type", "password")]).await).await.1,
        "unsupported_grant_type"
    );

    // The right redemption works once; the replay is invalid_grant and revokes.
    let r = rp.redeem(&code, &verifier).await;
    assert_eq!(r.status(), 200);
    let t: serde_json::Value = r.json().await.unwrap();
    let (s, e, _) = err(rp.redeem(&code, &verifier).await).await;
    assert_eq!((s, e.as_str()), (StatusCode::BAD_REQUEST, "invalid_grant"));
    let r = reqwest::Client::new()
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "the replay revoked the first redemption's tokens"
    );
    let r = rp
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(err(r).await.1, "invalid_grant");

    let events = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    let types: Vec<String> = events
        .iter()
        .map(|r| r.envelope().unwrap().event_type.to_string())
        .collect();
    assert!(types.contains(&"client.authentication_failed".to_string()));
    assert!(types.contains(&"authorization_code.replay_detected".to_string()));
    app.stop().await;
}

fn rp_clone(rp: &Rp) -> Rp {
    Rp {
        base: rp.base.clone(),
        admin_token: rp.admin_token.clone(),
        client_id: rp.client_id.clone(),
        client_secret: rp.client_secret.clone(),
        username: rp.username.clone(),
        user_id: rp.user_id.clone(),
    }
}

/// One sign-in attempt in a fresh browser from `ip` (the test server trusts
/// 127.0.0.0/8 as a proxy, so `X-Forwarded-For` names the address): status,
/// page, and `Retry-After`.
async fn attempt(
    app: &TestApp,
    rp: &Rp,
    username: &str,
    password: &str,
    ip: &str,
) -> (StatusCode, String, Option<u64>) {
    let (_, ch) = pkce();
    let b = browser();
    let r = b
        .get(rp.auth_url(&ch, "openid", &[]))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    let page = b
        .get(app.url(&location(&r)))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(app.url("/oidc/login"))
        .header("x-forwarded-for", ip)
        .form(&[
            ("username", username),
            ("password", password),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (r.status(), r.text().await.unwrap(), retry)
}

/// Attempts until one is not throttled, waiting what `Retry-After` says.
async fn attempt_past_throttle(
    app: &TestApp,
    rp: &Rp,
    username: &str,
    password: &str,
    ip: &str,
) -> (StatusCode, String) {
    loop {
        let (s, page, retry) = attempt(app, rp, username, password, ip).await;
        if s != StatusCode::TOO_MANY_REQUESTS {
            return (s, page);
        }
        tokio::time::sleep(Duration::from_secs(retry.unwrap())).await;
    }
}

/// Settings that trust the test client (127.0.0.1) as a proxy, so
/// `X-Forwarded-For` can name other addresses.
fn proxied(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("AUTHLOG_LOGIN_TRUSTED_PROXIES", "127.0.0.0/8")];
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_look_alike_and_lock_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let settings = proxied(&[("AUTHLOG_LOGIN_MAX_FAILURES", "3")]);
    let app = spawn_app_with(dir.path(), &settings).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let (_, ch) = pkce();
    // A forged CSRF token is refused before anything is checked.
    let b = browser();
    let r = b.get(rp.auth_url(&ch, "openid", &[])).send().await.unwrap();
    let page = b
        .get(app.url(&location(&r)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(app.url("/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let ip = "198.51.100.20";
    let (s1, unknown, _) = attempt(&app, &rp, "nobody-here", "whatever1", ip).await;
    assert_eq!(s1, StatusCode::UNAUTHORIZED);
    for _ in 0..3 {
        let (s, wrong) = attempt_past_throttle(&app, &rp, &rp.username, "wrong-password", ip).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(
            wrong.contains("Wrong username or password.")
                && unknown.contains("Wrong username or password.")
        );
    }
    let r = reqwest::Client::new()
        .get(app.url(&format!("/admin/users/{}", rp.user_id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["locked"],
        true,
        "3 failures lock the account"
    );
    // Locked: a wrong password still gets the wrong-password answer; the right
    // one is told the account is locked and until when (it reveals nothing to
    // someone without the password), and no session starts.
    let (s, page) =
        attempt_past_throttle(&app, &rp, &rp.username, "wrong-again", "198.51.100.21").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Wrong username or password."), "{page}");
    let (s, locked) =
        attempt_past_throttle(&app, &rp, &rp.username, PASSWORD, "198.51.100.22").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{locked}");
    assert!(
        locked.contains("This account is locked after too many failed sign-ins, until ")
            && locked.contains(" UTC."),
        "{locked}"
    );
    // Too fast again: 429 with a Retry-After in whole seconds, said in words, no event.
    let before = app.store.head().await.unwrap().unwrap().seq;
    let (s, page, retry) = attempt(&app, &rp, &rp.username, PASSWORD, "198.51.100.22").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let retry = retry.unwrap();
    let words = if retry == 1 {
        "1 second".to_string()
    } else {
        format!("{retry} seconds")
    };
    assert!(page.contains(&format!("Try again in {words}.")), "{page}");
    assert_eq!(app.store.head().await.unwrap().unwrap().seq, before);

    let events = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    let envs: Vec<_> = events.iter().map(|r| r.envelope().unwrap()).collect();
    let unknown_event = envs
        .iter()
        .find(|e| e.reason.as_deref() == Some("unknown_user"))
        .unwrap();
    assert!(unknown_event.data["username_hash"].as_str().unwrap().len() == 64);
    assert!(
        !events
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("nobody-here")),
        "unknown usernames are only hashed"
    );
    assert!(
        envs.iter()
            .any(|e| e.event_type == authlog_schemas::EventType::UserLocked)
    );
    assert!(
        envs.iter()
            .any(|e| e.reason.as_deref() == Some("user_locked"))
    );
    assert!(
        !envs
            .iter()
            .any(|e| e.event_type == authlog_schemas::EventType::LoginSucceeded),
        "no session started while locked"
    );
    // An admin unlocks; then disables: the right password says so.
    let admin = reqwest::Client::new();
    let r = admin
        .post(app.url(&format!("/admin/users/{}/unlock", rp.user_id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["locked"],
        false
    );
    let r = admin
        .post(app.url(&format!("/admin/users/{}/disable", rp.user_id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, page) =
        attempt_past_throttle(&app, &rp, &rp.username, "not-it-at-all", "198.51.100.23").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Wrong username or password."), "{page}");
    let (s, page) = attempt_past_throttle(&app, &rp, &rp.username, PASSWORD, "198.51.100.24").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(
        page.contains("This account is disabled. Contact your administrator."),
        "{page}"
    );
    app.stop().await;
}

/// A burst of parallel guesses from many addresses verifies at most
/// `login.max_failures` of them before the lock, and a right password that
/// arrives after the lock is refused: the decision is made after the hash,
/// on the account as it then is, with the checks in flight bounded per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_guesses_cannot_outrun_the_lockout() {
    let dir = tempfile::tempdir().unwrap();
    let settings = proxied(&[]);
    let app = spawn_app_with(dir.path(), &settings).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let locked_now = || async {
        reqwest::Client::new()
            .get(app.url(&format!("/admin/users/{}", rp.user_id)))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["locked"]
            == true
    };
    // Rounds of 12 parallel guesses from 12 addresses, each round after the
    // throttle's wait, until the account locks.
    let mut answered = 0;
    for round in 0..12 {
        let guesses: Vec<_> =
            (0..12)
                .map(|i| {
                    let ip = format!("203.0.113.{}", 10 + i);
                    let (app, rp) = (&app, &rp);
                    async move {
                        attempt(app, rp, &rp.username, &format!("guess-{round}-{i}"), &ip).await
                    }
                })
                .collect();
        let results = futures_util::future::join_all(guesses).await;
        answered += results
            .iter()
            .filter(|(s, _, _)| *s == StatusCode::UNAUTHORIZED)
            .count();
        if locked_now().await {
            break;
        }
        let wait = results.iter().filter_map(|(_, _, r)| *r).max().unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    assert!(locked_now().await, "the guesses locked the account");
    let log = app.log().await;
    let of_user = |t: &str, reason: Option<&str>| {
        log.iter()
            .filter(|e| {
                e["type"] == t
                    && e["subject"] == json!(rp.user_id)
                    && reason.is_none_or(|r| e["reason"] == r)
            })
            .count()
    };
    let counted = of_user("login.failed", Some("invalid_credentials"));
    eprintln!("burst: {answered} answered 401, {counted} counted as invalid_credentials");
    assert_eq!(
        counted, 5,
        "exactly login.max_failures guesses were verified against the unlocked account"
    );
    assert_eq!(of_user("user.locked", None), 1);
    // Guesses verified during the lock are bounded too (at most max_failures more).
    assert!(of_user("login.failed", Some("user_locked")) <= 5);
    let (s, page) = attempt_past_throttle(&app, &rp, &rp.username, PASSWORD, "203.0.113.99").await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "the right password after the lock: {page}"
    );
    assert_eq!(of_user("login.succeeded", None), 0);
    app.stop().await;
}

/// People behind one address (an office, an ingress) are not held back by
/// each other's typos, a sign-in with the right password goes through while a
/// colleague is throttled, and floods of anonymous form views or
/// authorization requests from that address crowd out no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_shared_by_many_people() {
    let dir = tempfile::tempdir().unwrap();
    let settings = proxied(&[]);
    let app = spawn_app_with(dir.path(), &settings).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let colleague = setup(&app.url(""), &app.admin_token, json!({})).await;
    let office = "192.0.2.50";
    // One person makes typos until throttled.
    let mut throttled = None;
    for _ in 0..8 {
        let (s, page, retry) = attempt(&app, &rp, &rp.username, "typo-typo", office).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some((page, retry.unwrap()));
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (page, retry) = throttled.expect("typos get throttled");
    let words = if retry == 1 {
        "1 second".to_string()
    } else {
        format!("{retry} seconds")
    };
    assert!(page.contains(&format!("Try again in {words}.")), "{page}");
    // A colleague at the same address signs in at once.
    let (s, page, _) = attempt(&app, &colleague, &colleague.username, PASSWORD, office).await;
    assert_eq!(s, StatusCode::FOUND, "the colleague was held back: {page}");
    // 500 anonymous views of the login page store nothing, and 300 authorization
    // requests from the same address (no cap per address) leave room for one more.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for _ in 0..500 {
        let r = plain
            .get(app.url("/oidc/login"))
            .header("x-forwarded-for", office)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (_, ch) = pkce();
    for _ in 0..300 {
        let r = plain
            .get(colleague.auth_url(&ch, "openid", &[]))
            .header("x-forwarded-for", office)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
    }
    let b = browser();
    let back = colleague
        .sign_in_from(
            &b,
            &colleague.auth_url(&ch, "openid", &[]),
            PASSWORD,
            office,
        )
        .await;
    assert!(back.starts_with(REDIRECT), "{back}");
    app.stop().await;
}

/// A plain sign-in (no authorization request) works from the form alone: its
/// CSRF token is bound to the browser, so another browser cannot post it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_sign_in_needs_no_stored_transaction() {
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let b = browser();
    let page = b
        .get(app.url("/oidc/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = |csrf: String| {
        vec![
            ("username".to_string(), rp.username.clone()),
            ("password".to_string(), PASSWORD.to_string()),
            ("tx".to_string(), String::new()),
            ("csrf".to_string(), csrf),
        ]
    };
    // Another browser, with the same token, is refused.
    let r = browser()
        .post(app.url("/oidc/login"))
        .form(&form(field(&page, "csrf")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = b
        .post(app.url("/oidc/login"))
        .form(&form(field(&page, "csrf")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("You are signed in."));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_denied_logout_confirmation_and_userinfo_rules() {
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let b = browser();
    let (_, ch) = pkce();
    // Deny: access_denied back to the client.
    let r = b
        .get(rp.auth_url(&ch, "openid email", &[]))
        .send()
        .await
        .unwrap();
    let page = b
        .get(app.url(&location(&r)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(app.url("/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    let page = b
        .get(app.url(&location(&r)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = b
        .post(app.url("/oidc/consent"))
        .form(&[
            ("decision", "deny"),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(query(&location(&r))["error"], "access_denied");
    // prompt=none without consent: consent_required.
    let r = b
        .get(rp.auth_url(&ch, "openid email", &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert_eq!(query(&location(&r))["error"], "consent_required");

    // Logout without a hint: the user confirms with a CSRF-protected form.
    let r = b
        .get(app.url("/oidc/oauth2/sessions/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let r = b
        .post(app.url("/oidc/oauth2/sessions/logout"))
        .form(&[("tx", field(&page, "tx").as_str()), ("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a forged confirmation does nothing");
    let r = b
        .post(app.url("/oidc/oauth2/sessions/logout"))
        .form(&[
            ("tx", field(&page, "tx").as_str()),
            ("csrf", field(&page, "csrf").as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let events = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|r| r.envelope().unwrap().event_type == authlog_schemas::EventType::SessionEnded)
    );
    // An unregistered post_logout_redirect_uri is refused.
    let r = b.get(app.url(&format!("/oidc/oauth2/sessions/logout?client_id={}&post_logout_redirect_uri=https%3A%2F%2Fevil.example", rp.client_id))).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // userinfo without a token, with garbage.
    let http = reqwest::Client::new();
    let r = http.get(app.url("/oidc/userinfo")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = http
        .get(app.url("/oidc/userinfo"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // CORS on the token endpoint and discovery, never on authorize or login.
    let r = http
        .request(reqwest::Method::OPTIONS, app.url("/oidc/oauth2/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(
        r.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let r = http
        .get(app.url("/oidc/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let r = b.get(rp.auth_url(&ch, "openid", &[])).send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // Oversized form bodies are refused.
    let r = http
        .post(app.url("/oidc/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=".to_string() + &"b".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_registration_is_off_unless_enabled() {
    let (_d, app, _rp) = app_and_rp(json!({})).await;
    assert_eq!(
        reqwest::get(app.url("/oidc/register"))
            .await
            .unwrap()
            .status(),
        404
    );
    app.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &[("AUTHLOG_REGISTRATION_ENABLED", "true")]).await;
    let b = browser();
    let page = b
        .get(app.url("/oidc/register"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let action = page
        .split("action=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let r = b
        .post(app.url(&action))
        .form(&[
            ("username", "Ｂｏｂ"),
            ("email", "bob@example.com"),
            ("password", "long enough pw"),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let events = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    let reg = events
        .iter()
        .map(|r| r.envelope().unwrap())
        .find(|e| e.event_type == authlog_schemas::EventType::UserRegistered)
        .unwrap();
    assert_eq!(
        reg.data["username"], "Bob",
        "fullwidth characters are width-mapped"
    );
    assert_eq!(reg.data["registered_via"], "self_registration");
    assert_eq!(reg.stream, "username-bob");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_publish_first_then_sign_then_retire() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &[("AUTHLOG_KEYS_JWKS_CACHE_S", "1")]).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let b = browser();
    let (verifier, ch) = pkce();
    let back = rp
        .sign_in(&b, &rp.auth_url(&ch, "openid", &[]), PASSWORD)
        .await;
    let t: serde_json::Value = rp
        .redeem(&query(&back)["code"], &verifier)
        .await
        .json()
        .await
        .unwrap();
    let kid = |jwt: &str| jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let old_kid = kid(t["id_token"].as_str().unwrap());

    let http = reqwest::Client::new();
    let r = http
        .post(app.url("/admin/keys/rotate"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let new_kid = r.json::<serde_json::Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    // Published at once, signing nothing yet.
    let jwks: serde_json::Value = http
        .get(app.url("/oidc/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()));
    let mut refresh = t["refresh_token"].as_str().unwrap().to_string();
    let r: serde_json::Value = rp
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await
        .json()
        .await
        .unwrap();
    refresh = r["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        kid(r["id_token"].as_str().unwrap()),
        old_kid,
        "a new key does not sign before the JWKS cache lifetime"
    );

    // After one cache lifetime the scheduler activates it and retires the old one.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let keys: serde_json::Value = http
            .get(app.url("/admin/keys"))
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = |k: &str| {
            keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["kid"] == k)
                .map(|x| x["status"]["status"].clone())
        };
        if status(&new_kid) == Some(json!("active")) {
            assert_eq!(status(&old_kid), Some(json!("retired")));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation never completed: {keys}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r: serde_json::Value = rp
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(kid(r["id_token"].as_str().unwrap()), new_kid);
    // Tokens signed by the retired key still verify until they expire.
    rp.verify_jwt(t["id_token"].as_str().unwrap(), &rp.client_id, "JWT")
        .await;
    app.stop().await;

    // With the server stopped, the CLI publishes a key in the store directly.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args(["keys", "rotate", "--alg", "EdDSA"])
        .env("AUTHLOG_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kid3 = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let app = spawn_app_in(dir.path()).await;
    let keys: serde_json::Value = http
        .get(app.url("/admin/keys"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid3.as_str() && k["alg"] == "EdDSA")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_may_ask_for_es256_or_eddsa_id_tokens() {
    for alg in ["ES256", "EdDSA"] {
        let (_d, app, rp) = app_and_rp(json!({"id_token_signed_response_alg": alg})).await;
        let b = browser();
        let (verifier, ch) = pkce();
        let back = rp
            .sign_in(&b, &rp.auth_url(&ch, "openid", &[]), PASSWORD)
            .await;
        let t: serde_json::Value = rp
            .redeem(&query(&back)["code"], &verifier)
            .await
            .json()
            .await
            .unwrap();
        let id_token = t["id_token"].as_str().unwrap();
        assert_eq!(
            format!("{:?}", jsonwebtoken::decode_header(id_token).unwrap().alg),
            alg
        );
        let claims = rp.verify_jwt(id_token, &rp.client_id, "JWT").await;
        // at_hash uses the algorithm's hash: SHA-512 for EdDSA.
        let digest = if alg == "EdDSA" {
            use sha2::Digest;
            sha2::Sha512::digest(t["access_token"].as_str().unwrap().as_bytes()).to_vec()
        } else {
            use sha2::Digest;
            sha2::Sha256::digest(t["access_token"].as_str().unwrap().as_bytes()).to_vec()
        };
        use base64::Engine;
        assert_eq!(
            claims["at_hash"],
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
        );
        app.stop().await;
    }
}

/// Sign-in forms belong to the browser that opened them (no login CSRF).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_only_work_in_the_browser_that_opened_them() {
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let (victim, attacker) = (browser(), browser());
    let (_, ch) = pkce();
    // The attacker opens a sign-in and lures the victim's browser into posting it.
    let r = attacker
        .get(rp.auth_url(&ch, "openid", &[]))
        .send()
        .await
        .unwrap();
    let page = attacker
        .get(app.url(&location(&r)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = [
        ("username", rp.username.as_str()),
        ("password", PASSWORD),
        ("tx", &field(&page, "tx")),
        ("csrf", &field(&page, "csrf")),
    ];
    let r = victim
        .post(app.url("/oidc/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.headers()
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().contains("authlog_session=")),
        "no session for the victim"
    );
    // The same form from the attacker's own browser works.
    let r = attacker
        .post(app.url("/oidc/login"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_consent_scopes_and_disabled_users() {
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let http = reqwest::Client::new();
    let b = browser();
    let (v1, c1) = pkce();
    let back = rp
        .sign_in(&b, &rp.auth_url(&c1, "openid profile", &[]), PASSWORD)
        .await;
    let t1: serde_json::Value = rp
        .redeem(&query(&back)["code"], &v1)
        .await
        .json()
        .await
        .unwrap();
    let id1 = rp
        .verify_jwt(t1["id_token"].as_str().unwrap(), &rp.client_id, "JWT")
        .await;
    let old_cookie = b.get(app.url("/healthz")).send().await.unwrap();
    drop(old_cookie);

    // Remembered consent: the same scopes again go straight through (SSO).
    let (v2, c2) = pkce();
    let r = b
        .get(rp.auth_url(&c2, "openid profile", &[]))
        .send()
        .await
        .unwrap();
    let back = location(&r);
    assert!(
        back.starts_with(REDIRECT),
        "no login and no consent the second time: {back}"
    );
    let t2: serde_json::Value = rp
        .redeem(&query(&back)["code"], &v2)
        .await
        .json()
        .await
        .unwrap();
    let id2 = rp
        .verify_jwt(t2["id_token"].as_str().unwrap(), &rp.client_id, "JWT")
        .await;
    assert_eq!(id2["sid"], id1["sid"]);
    assert_eq!(
        id2["auth_time"], id1["auth_time"],
        "auth_time is when the user really signed in"
    );
    // offline_access always asks.
    let r = b
        .get(rp.auth_url(&c2, "openid offline_access", &[]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("/oidc/consent"));
    // prompt=login: a new sign-in makes a new session id.
    let (v3, c3) = pkce();
    let back = rp
        .sign_in(
            &b,
            &rp.auth_url(&c3, "openid profile", &[("prompt", "login")]),
            PASSWORD,
        )
        .await;
    let t3: serde_json::Value = rp
        .redeem(&query(&back)["code"], &v3)
        .await
        .json()
        .await
        .unwrap();
    let id3 = rp
        .verify_jwt(t3["id_token"].as_str().unwrap(), &rp.client_id, "JWT")
        .await;
    assert_ne!(id3["sid"], id1["sid"]);

    // prompt=none with a hint naming another user: login_required.
    let other = setup(&app.url(""), &app.admin_token, json!({})).await;
    let b2 = browser();
    let (v4, c4) = pkce();
    let back = other
        .sign_in(&b2, &other.auth_url(&c4, "openid", &[]), PASSWORD)
        .await;
    let t4: serde_json::Value = other
        .redeem(&query(&back)["code"], &v4)
        .await
        .json()
        .await
        .unwrap();
    let hint = t4["id_token"].as_str().unwrap();
    let r = b
        .get(rp.auth_url(
            &c1,
            "openid profile",
            &[("prompt", "none"), ("id_token_hint", hint)],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(query(&location(&r))["error"], "login_required");

    // A refresh may narrow, never widen.
    let r = rp
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t3["refresh_token"].as_str().unwrap()),
            ("scope", "openid email"),
        ])
        .await;
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    let r: serde_json::Value = rp
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t3["refresh_token"].as_str().unwrap()),
            ("scope", "profile"),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["scope"], "profile");
    assert!(
        r.get("id_token").is_none(),
        "no openid in the narrowed scope, no ID token"
    );
    // Narrowing once does not narrow the grant.
    let r: serde_json::Value = rp
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", r["refresh_token"].as_str().unwrap()),
        ])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["scope"], "openid profile");

    // Disabling the user revokes what it holds and refuses more.
    let d = http
        .post(app.url(&format!("/admin/users/{}/disable", rp.user_id)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    let ui = http
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(r["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 401);
    let again = rp
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", r["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let r = b
        .get(rp.auth_url(&c1, "openid profile", &[]))
        .send()
        .await
        .unwrap();
    assert!(
        location(&r).starts_with("/oidc/login"),
        "a disabled user's session is gone"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_session_cookie_is_dead() {
    let (_d, app, rp) = app_and_rp(json!({"skip_consent": true})).await;
    let (_, ch) = pkce();
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let jar_cookie = {
        // Sign in through a client whose cookies we handle, to hold the value.
        let b3 = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let first = b3
            .get(rp.auth_url(&ch, "openid", &[]))
            .send()
            .await
            .unwrap();
        let binding = first.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let page = b3
            .get(app.url(&location(&first)))
            .header("cookie", &binding)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let done = b3
            .post(app.url("/oidc/login"))
            .header("cookie", &binding)
            .form(&[
                ("username", rp.username.as_str()),
                ("password", PASSWORD),
                ("tx", &field(&page, "tx")),
                ("csrf", &field(&page, "csrf")),
            ])
            .send()
            .await
            .unwrap();
        done.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    };
    // The cookie works, then logout, then the same cookie replayed does not.
    let r = r
        .get(rp.auth_url(&ch, "openid", &[("prompt", "none")]))
        .header("cookie", &jar_cookie)
        .send()
        .await
        .unwrap();
    assert!(query(&location(&r)).contains_key("code"));
    let confirm = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The confirmation form is bound to the browser binding cookie minted with it.
    let first = confirm
        .get(app.url("/oidc/oauth2/sessions/logout"))
        .header("cookie", &jar_cookie)
        .send()
        .await
        .unwrap();
    let binding = first
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .unwrap_or_default();
    let page2 = first.text().await.unwrap();
    let r = confirm
        .post(app.url("/oidc/oauth2/sessions/logout"))
        .header("cookie", format!("{jar_cookie}; {binding}"))
        .form(&[
            ("tx", field(&page2, "tx").as_str()),
            ("csrf", field(&page2, "csrf").as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = replay
        .get(rp.auth_url(&ch, "openid", &[("prompt", "none")]))
        .header("cookie", &jar_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        query(&location(&r))["error"],
        "login_required",
        "a replayed cookie of an ended session is refused"
    );
    app.stop().await;
}

/// With an https issuer, cookies are `Secure` and `__Host-` prefixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_issuers_get_host_prefixed_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &[("AUTHLOG_ISSUER", "https://id.example/oidc")]).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (_, ch) = pkce();
    let r = plain
        .get(rp.auth_url(&ch, "openid", &[]))
        .send()
        .await
        .unwrap();
    let binding = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        binding.starts_with("__Host-authlog_browser=")
            && binding.contains("; Secure")
            && binding.contains("Path=/")
            && binding.contains("SameSite=Lax"),
        "{binding}"
    );
    let pair = binding.split(';').next().unwrap().to_string();
    let page = plain
        .get(app.url(&location(&r)))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = plain
        .post(app.url("/oidc/login"))
        .header("cookie", &pair)
        .form(&[
            ("username", rp.username.as_str()),
            ("password", PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .find(|c| c.contains("authlog_session"))
        .unwrap();
    assert!(
        session.starts_with("__Host-authlog_session=")
            && session.contains("; Secure")
            && session.contains("HttpOnly"),
        "{session}"
    );
    // Loopback http callbacks are for a developer's http issuer, never an https one.
    let r = reqwest::Client::new()
        .post(app.url("/admin/clients"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"client_name": "dev", "redirect_uris": ["http://localhost:3000/callback"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_redirect_uri", "{v}");
    app.stop().await;
}

/// Headers a sign-in does not need cannot break it: a stray non-ASCII cookie
/// of another application on the host, a UTF-8 User-Agent. Form values that
/// are not UTF-8 are refused (replacing them would make different passwords
/// one), and nothing is appended for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_headers_are_tolerated_and_invalid_utf8_forms_refused() {
    use reqwest::header::{HeaderValue, USER_AGENT};
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let (_, ch) = pkce();
    let b = browser();
    let stray = HeaderValue::from_bytes("theme=café; lang=fr".as_bytes()).unwrap();
    let ua = HeaderValue::from_bytes("Navigateur/1.0 (Hélène's laptop)".as_bytes()).unwrap();
    let r = b
        .get(rp.auth_url(&ch, "openid", &[]))
        .header(USER_AGENT, ua.clone())
        .header("cookie", stray.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let binding = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let cookies = HeaderValue::from_bytes(format!("theme=café; {binding}").as_bytes()).unwrap();
    let page = b
        .get(app.url(&location(&r)))
        .header(USER_AGENT, ua.clone())
        .header("cookie", cookies.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let body = format!(
        "username={}&password={}&tx={}&csrf={}",
        rp.username,
        form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect::<String>(),
        field(&page, "tx"),
        field(&page, "csrf")
    );
    let before = app.store.head().await.unwrap().unwrap().seq;
    // The same form with a password that is not UTF-8: refused, nothing appended.
    let bad = body.replace("password=correct", "password=%FFcorrect");
    let r = b
        .post(app.url("/oidc/login"))
        .header(USER_AGENT, ua.clone())
        .header("cookie", cookies.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_request", "{v}");
    assert_eq!(app.store.head().await.unwrap().unwrap().seq, before);
    let r = b
        .post(app.url("/oidc/login"))
        .header(USER_AGENT, ua)
        .header("cookie", cookies)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    // The user agent is recorded as sent.
    let log = app.log().await;
    let login = log.iter().find(|e| e["type"] == "login.succeeded").unwrap();
    assert_eq!(
        login["source"]["user_agent"],
        "Navigateur/1.0 (Hélène's laptop)"
    );
    app.stop().await;
}

/// Admin tokens cannot be guessed at line rate: past ten wrong ones from an
/// address, each further attempt waits (429 with Retry-After), and the right
/// token from another address still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_tokens_are_throttled_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let settings = proxied(&[]);
    let app = spawn_app_with(dir.path(), &settings).await;
    let http = reqwest::Client::new();
    let call = |token: &str, ip: &str| {
        http.get(app.url("/admin/clients"))
            .bearer_auth(token)
            .header("x-forwarded-for", ip)
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..12 {
        let r = call(&format!("guess-{i:032}"), "198.51.100.66")
            .await
            .unwrap();
        statuses.push((r.status(), r.headers().get("retry-after").cloned()));
    }
    assert!(
        statuses[..10]
            .iter()
            .all(|(s, _)| *s == StatusCode::UNAUTHORIZED)
    );
    let (s, retry) = &statuses[11];
    assert_eq!(*s, StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert!(retry.is_some());
    // Even the right token waits from the guessing address; another address is fine.
    let r = call(&app.admin_token, "198.51.100.66").await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = call(&app.admin_token, "198.51.100.67").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await;
}

/// Signs `rp`'s user in through `b` with `scope` and redeems the code: the
/// token response.
async fn tokens_for(rp: &Rp, b: &reqwest::Client, scope: &str) -> serde_json::Value {
    let (verifier, ch) = pkce();
    let back = rp.sign_in(b, &rp.auth_url(&ch, scope, &[]), PASSWORD).await;
    let code = query(&back)["code"].clone();
    let r = rp.redeem(&code, &verifier).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn userinfo_status(app: &TestApp, access_token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn refresh_status(rp: &Rp, refresh_token: &str) -> StatusCode {
    rp.token(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ])
    .await
    .status()
}

/// An administrator's password reset ends everything the old password
/// signed in: every session, every access and refresh token (offline ones
/// included). "End all sessions" and "revoke all grants" do each on its own,
/// through the API and the CLI, with events naming the administrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_every_session_and_grant() {
    let (_d, app, rp) = app_and_rp(json!({})).await;
    let admin = reqwest::Client::new();
    let b1 = browser();
    let online = tokens_for(&rp, &b1, "openid").await;
    let b2 = browser();
    let offline = tokens_for(&rp, &b2, "openid offline_access").await;
    for t in [&online, &offline] {
        assert_eq!(
            userinfo_status(&app, t["access_token"].as_str().unwrap()).await,
            200
        );
    }
    let r = admin
        .post(app.url(&format!("/admin/users/{}/password", rp.user_id)))
        .bearer_auth(&app.admin_token)
        .json(&json!({"password": "a brand new passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["sessions_ended"].as_u64(), v["grants_revoked"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    for t in [&online, &offline] {
        assert_eq!(
            userinfo_status(&app, t["access_token"].as_str().unwrap()).await,
            401
        );
        assert_eq!(
            refresh_status(&rp, t["refresh_token"].as_str().unwrap()).await,
            400
        );
    }
    // The old session cookie no longer signs anyone in: the login page comes back.
    let (_, ch) = pkce();
    let r = b1
        .get(rp.auth_url(&ch, "openid", &[]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).contains("/oidc/login"), "{}", location(&r));
    let log = app.log().await;
    let ended: Vec<_> = log
        .iter()
        .filter(|e| e["type"] == "session.ended" && e["data"]["cause"] == "password_changed")
        .collect();
    assert_eq!(ended.len(), 2);
    assert!(
        ended
            .iter()
            .all(|e| e["actor"]["kind"] == "admin" && e["actor"]["id"] == "default")
    );
    assert_eq!(
        log.iter()
            .filter(|e| e["type"] == "token.revoked" && e["data"]["cause"] == "password_changed")
            .count(),
        2
    );

    // End all sessions / revoke all grants, each on its own.
    let new_pw = "a brand new passphrase";
    let sign_in = |b: reqwest::Client| {
        let rp = &rp;
        async move {
            let (verifier, ch) = pkce();
            let back = rp
                .sign_in(&b, &rp.auth_url(&ch, "openid offline_access", &[]), new_pw)
                .await;
            let r = rp.redeem(&query(&back)["code"], &verifier).await;
            (b, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (b3, t3) = sign_in(browser()).await;
    let r = admin
        .post(app.url(&format!("/admin/users/{}/end-sessions", rp.username)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["sessions_ended"],
        1
    );
    let r = b3
        .get(rp.auth_url(&ch, "openid", &[]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).contains("/oidc/login"));
    // The offline grant outlives the sessions; revoking grants ends it, here from the CLI.
    assert_eq!(
        userinfo_status(&app, t3["access_token"].as_str().unwrap()).await,
        200
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args([
            "user",
            "revoke-grants",
            &rp.username,
            "--url",
            &app.url(""),
            "--token",
            &app.admin_token,
        ])
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}: 1 grant(s) revoked", rp.username)
    );
    assert_eq!(
        userinfo_status(&app, t3["access_token"].as_str().unwrap()).await,
        401
    );
    assert_eq!(
        refresh_status(&rp, t3["refresh_token"].as_str().unwrap()).await,
        400
    );
    let r = admin
        .post(app.url("/admin/users/nobody-at-all/end-sessions"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no such user: nobody-at-all")
    );
    app.stop().await;
}

/// Names a person cannot tell apart cannot both be users (RFC 8264
/// IdentifierClass, no compatibility characters, one script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_usernames_are_refused() {
    let (_d, app, _rp) = app_and_rp(json!({})).await;
    let http = reqwest::Client::new();
    let create = |name: &str| {
        http.post(app.url("/admin/users"))
            .bearer_auth(&app.admin_token)
            .json(&json!({"username": name, "password": PASSWORD}))
            .send()
    };
    assert_eq!(create("alice").await.unwrap().status(), 201);
    assert_eq!(
        create("ＡＬＩＣＥ").await.unwrap().status(),
        409,
        "fullwidth is alice"
    );
    for name in ["𝐚𝐥𝐢𝐜𝐞", "ⓐⓛⓘⓒⓔ", "ﬁnance", "userⅣ", "x²", "\u{430}lice"]
    {
        let r = create(name).await.unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_request", "{name}: {v}");
        assert!(
            v["error_description"]
                .as_str()
                .unwrap()
                .starts_with("usernames cannot"),
            "{name}: {v}"
        );
    }
    assert_eq!(create("Ярослав").await.unwrap().status(), 201);
    app.stop().await;
}
