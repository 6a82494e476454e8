//! Clients: lifecycle through the admin API, RFC 7591/7592, the CLI, and the
//! client_credentials grant, introspection (RFC 7662) and revocation (RFC 7009).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::oidc::{PASSWORD, browser, pkce, query, setup};
use crate::support::{TestApp, spawn_app_in, spawn_app_with};

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, app.url(path))
        .bearer_auth(&app.admin_token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn machine_client(app: &TestApp, scope: &str) -> (String, String) {
    let (s, v) = admin(app, reqwest::Method::POST, "/admin/clients", Some(json!({"client_name": "Batch job", "redirect_uris": [], "grant_types": ["client_credentials"], "scope": scope}))).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["response_types"], json!([]));
    (
        v["client_id"].as_str().unwrap().into(),
        v["client_secret"].as_str().unwrap().into(),
    )
}

async fn post_form(
    app: &TestApp,
    path: &str,
    id: &str,
    secret: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(app.url(path))
        .basic_auth(id, secret)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_introspection_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let (job, job_secret) = machine_client(&app, "reports:read reports:write").await;
    let (rs, rs_secret) = machine_client(&app, "introspection").await;

    // client_credentials: an access token only, scopes within the registration.
    let (s, t) = post_form(
        &app,
        "/oidc/oauth2/token",
        &job,
        Some(&job_secret),
        &[
            ("grant_type", "client_credentials"),
            ("scope", "reports:read"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert!(t.get("refresh_token").is_none() && t.get("id_token").is_none());
    assert_eq!(t["scope"], "reports:read");
    let at = t["access_token"].as_str().unwrap().to_string();
    let (s, e) = post_form(
        &app,
        "/oidc/oauth2/token",
        &job,
        Some(&job_secret),
        &[("grant_type", "client_credentials"), ("scope", "admin")],
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );
    let (_, e) = post_form(
        &app,
        "/oidc/oauth2/token",
        &job,
        Some(&job_secret),
        &[("grant_type", "client_credentials"), ("scope", "openid")],
    )
    .await;
    assert_eq!(e["error"], "invalid_scope");
    let (_, e) = post_form(
        &app,
        "/oidc/oauth2/token",
        &job,
        Some(&job_secret),
        &[("grant_type", "authorization_code"), ("code", "x")],
    )
    .await;
    assert_eq!(e["error"], "unauthorized_client");

    // Introspection by a resource server: active, with the client's own sub.
    let (s, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", &at)],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(i["active"], true);
    assert_eq!(
        i["sub"],
        format!("client:{job}"),
        "a client's sub never looks like a user's"
    );
    assert_eq!(i["client_id"], job);
    assert_eq!(i["scope"], "reports:read");
    assert_eq!(i["token_type"], "Bearer");
    for k in ["aud", "exp", "iat", "iss", "jti"] {
        assert!(i.get(k).is_some(), "{k}");
    }
    // Inactive: garbage, and without client authentication it is refused.
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", "garbage")],
    )
    .await;
    assert_eq!(i, json!({"active": false}));
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some("wrong"),
        &[("token", &at)],
    )
    .await;
    assert_eq!(s, 401);
    // A client-credentials token is not a user's: userinfo refuses it.
    let r = reqwest::Client::new()
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Revocation: another client cannot revoke it (still 200), the owner can.
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/revoke",
        &rs,
        Some(&rs_secret),
        &[("token", &at)],
    )
    .await;
    assert_eq!(s, 200);
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", &at)],
    )
    .await;
    assert_eq!(
        i["active"], true,
        "a foreign client's revocation does nothing"
    );
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/revoke",
        &job,
        Some(&job_secret),
        &[("token", &at), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(s, 200);
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", &at)],
    )
    .await;
    assert_eq!(i["active"], false);
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/revoke",
        &job,
        Some(&job_secret),
        &[("token", "unknown-token")],
    )
    .await;
    assert_eq!(s, 200, "unknown tokens still get 200");
    let (s, e) = post_form(
        &app,
        "/oidc/oauth2/revoke",
        &job,
        Some(&job_secret),
        &[("token", &at), ("token_type_hint", "bogus")],
    )
    .await;
    assert_eq!(
        s, 200,
        "an unknown hint is ignored; revoking again writes nothing more: {e}"
    );
    // A client without the introspection scope sees only its own tokens.
    let (s2, t2) = post_form(
        &app,
        "/oidc/oauth2/token",
        &job,
        Some(&job_secret),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(s2, 200);
    let mine = t2["access_token"].as_str().unwrap();
    let (s3, v3) = admin(&app, reqwest::Method::POST, "/admin/clients", Some(json!({"client_name": "Other", "redirect_uris": [], "grant_types": ["client_credentials"], "scope": "x"}))).await;
    assert_eq!(s3, 201);
    let (other, other_secret) = (
        v3["client_id"].as_str().unwrap().to_string(),
        v3["client_secret"].as_str().unwrap().to_string(),
    );
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &other,
        Some(&other_secret),
        &[("token", mine)],
    )
    .await;
    assert_eq!(
        i,
        json!({"active": false}),
        "another client's token is not its business"
    );
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &job,
        Some(&job_secret),
        &[("token", mine)],
    )
    .await;
    assert_eq!(i["active"], true, "its own token it may introspect");

    // Events: the grant and who revoked what.
    let events = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    let envs: Vec<_> = events.iter().map(|r| r.envelope().unwrap()).collect();
    let granted = envs
        .iter()
        .find(|e| e.event_type == authlog_schemas::EventType::TokenGranted)
        .unwrap();
    assert_eq!(granted.data["grant_type"], "client_credentials");
    let revocations: Vec<_> = envs
        .iter()
        .filter(|e| e.event_type == authlog_schemas::EventType::TokenRevoked)
        .collect();
    assert_eq!(
        revocations.len(),
        1,
        "revoking the same token twice is one event"
    );
    let revoked = revocations[0];
    assert_eq!(revoked.actor.id, job);
    assert_eq!(revoked.data["cause"], "revocation_endpoint");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_refresh_token_ends_its_grant() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let (rs, rs_secret) = machine_client(&app, "introspection").await;
    let b = browser();
    let (v, c) = pkce();
    let back = rp
        .sign_in(&b, &rp.auth_url(&c, "openid", &[]), PASSWORD)
        .await;
    let t: Value = rp
        .redeem(&query(&back)["code"], &v)
        .await
        .json()
        .await
        .unwrap();
    let (access, refresh) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", access)],
    )
    .await;
    assert_eq!(i["active"], true);
    assert_eq!(i["sub"], rp.user_id);
    // A refresh token is not an access token: inactive at introspection.
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", refresh)],
    )
    .await;
    assert_eq!(i["active"], false);
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", t["id_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(i["active"], false, "nor is an ID token");
    // Revoke the refresh token (no hint): the grant and its access token end.
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/revoke",
        &rp.client_id,
        rp.client_secret.as_deref(),
        &[("token", refresh)],
    )
    .await;
    assert_eq!(s, 200);
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", access)],
    )
    .await;
    assert_eq!(i["active"], false);
    let r = rp
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_client_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let (rs, rs_secret) = machine_client(&app, "introspection").await;
    for n in 0..3 {
        admin(
            &app,
            reqwest::Method::POST,
            "/admin/clients",
            Some(
                json!({"client_name": format!("c{n}"), "redirect_uris": ["https://c.example/cb"]}),
            ),
        )
        .await;
    }
    // Paginated, stable cursor.
    let (_, p1) = admin(&app, reqwest::Method::GET, "/admin/clients?limit=2", None).await;
    assert_eq!(p1["clients"].as_array().unwrap().len(), 2);
    let next = p1["next"].as_str().unwrap();
    let (_, p2) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/clients?limit=10&after={next}"),
        None,
    )
    .await;
    assert_eq!(p2["clients"].as_array().unwrap().len(), 3);
    assert!(p2["next"].is_null());

    // PUT replaces all metadata.
    let (s, v) = admin(&app, reqwest::Method::PUT, &format!("/admin/clients/{}", rp.client_id), Some(json!({"client_name": "Renamed", "redirect_uris": ["https://app.example/cb", "https://app.example/cb2"], "scope": "openid"}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["client_name"], "Renamed");
    assert_eq!(v["post_logout_redirect_uris"], json!([]));
    let (s, v) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/admin/clients/{}", rp.client_id),
        Some(json!({"client_name": "x", "redirect_uris": ["http://app.example/cb"]})),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "invalid_redirect_uri")
    );
    // The test server's issuer is http on loopback (a developer's machine):
    // web clients may register the loopback callbacks quick starts use.
    for dev in [
        "http://localhost:3000/callback",
        "http://127.0.0.1:3000/callback",
    ] {
        let (s, v) = admin(
            &app,
            reqwest::Method::POST,
            "/admin/clients",
            Some(json!({"client_name": "dev", "redirect_uris": [dev]})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{dev}: {v}");
    }

    // Secret rotation: the old secret stops at once; with grace it keeps working.
    let (s, v) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/admin/clients/{rs}/secret"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let new_secret = v["client_secret"].as_str().unwrap().to_string();
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&rs_secret),
        &[("token", "x")],
    )
    .await;
    assert_eq!(s, 401, "the old secret stopped");
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&new_secret),
        &[("token", "x")],
    )
    .await;
    assert_eq!(s, 200);
    let (_, v) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/admin/clients/{rs}/secret"),
        Some(json!({"grace_seconds": 1})),
    )
    .await;
    let newest = v["client_secret"].as_str().unwrap().to_string();
    for secret in [&new_secret, &newest] {
        let (s, _) = post_form(
            &app,
            "/oidc/oauth2/introspect",
            &rs,
            Some(secret),
            &[("token", "x")],
        )
        .await;
        assert_eq!(s, 200, "within the grace period both work");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&new_secret),
        &[("token", "x")],
    )
    .await;
    assert_eq!(s, 401, "after the grace period the old secret stops");

    // DELETE: the client's tokens stop being valid.
    let b = browser();
    let (v, c) = pkce();
    let back = rp
        .sign_in(&b, &rp.auth_url(&c, "openid", &[]), PASSWORD)
        .await;
    let t: Value = rp
        .redeem(&query(&back)["code"], &v)
        .await
        .json()
        .await
        .unwrap();
    let (s, _) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/clients/{}", rp.client_id),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (_, i) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &rs,
        Some(&newest),
        &[("token", t["access_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(i["active"], false);
    // Nor do userinfo or the token endpoint accept anything of a deleted client.
    let r = reqwest::Client::new()
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = rp
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let (s, _) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/clients/{}", rp.client_id),
        None,
    )
    .await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_rules_are_the_same_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        &[(
            "AUTHLOG_REGISTRATION_INITIAL_ACCESS_TOKEN",
            "iat-0123456789abcdef",
        )],
    )
    .await;
    let cases = [
        (
            json!({"client_name": "a", "redirect_uris": ["http://localhost:3000/cb"], "application_type": "native"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_name": "a", "redirect_uris": ["https://a.example/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_name": "a", "redirect_uris": ["http://a.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_name": "a", "redirect_uris": ["cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_name": "a", "redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_name": "a", "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_name": "a", "redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_name": "a", "redirect_uris": [], "grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_name": "a".repeat(200), "redirect_uris": ["https://a.example/cb"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_name": "a", "redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
            "invalid_client_metadata",
        ),
    ];
    for (body, want) in &cases {
        let (s, v) = admin(
            &app,
            reqwest::Method::POST,
            "/admin/clients",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str().unwrap_or("")),
            (StatusCode::BAD_REQUEST, *want),
            "admin: {body}"
        );
        let r = reqwest::Client::new()
            .post(app.url("/oidc/oauth2/register"))
            .bearer_auth("iat-0123456789abcdef")
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            *want,
            "RFC 7591: {body}"
        );
    }
    // Allowed: native loopback and private-use schemes.
    let (s, v) = admin(&app, reqwest::Method::POST, "/admin/clients", Some(json!({"client_name": "cli", "redirect_uris": ["http://127.0.0.1/cb", "com.example.app:/cb"], "application_type": "native", "token_endpoint_auth_method": "none"}))).await;
    assert_eq!(s, 201, "{v}");
    assert!(
        v.get("client_secret").is_none(),
        "public clients get no secret"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_registration_and_management() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        &[(
            "AUTHLOG_REGISTRATION_INITIAL_ACCESS_TOKEN",
            "iat-0123456789abcdef",
        )],
    )
    .await;
    let http = reqwest::Client::new();
    let d: Value = http
        .get(app.url("/oidc/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = d["registration_endpoint"].as_str().unwrap().to_string();
    let body = json!({"client_name": "Dyn", "redirect_uris": ["https://dyn.example/cb"]});
    // Unknown metadata is ignored; a machine client needs no redirect URIs.
    let r = http
        .post(&endpoint)
        .bearer_auth("iat-0123456789abcdef")
        .json(&json!({"client_name": "Job", "grant_types": ["client_credentials"], "contacts": ["ops@example.com"], "logo_uri": "https://x/l.png"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Nobody but an administrator grants the introspection scope.
    let r = http
        .post(&endpoint)
        .bearer_auth("iat-0123456789abcdef")
        .json(&json!({"client_name": "RS", "grant_types": ["client_credentials"], "scope": "introspection"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_client_metadata"
    );
    // No initial access token, or a wrong one: 401.
    assert_eq!(
        http.post(&endpoint)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        http.post(&endpoint)
            .bearer_auth("nope")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // skip_consent is not for this path.
    let r = http.post(&endpoint).bearer_auth("iat-0123456789abcdef").json(&json!({"client_name": "Dyn", "redirect_uris": ["https://dyn.example/cb"], "skip_consent": true})).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_client_metadata"
    );
    let r = http
        .post(&endpoint)
        .bearer_auth("iat-0123456789abcdef")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let reg: Value = r.json().await.unwrap();
    assert!(reg["client_secret"].is_string());
    assert_eq!(reg["client_secret_expires_at"], 0);
    let rat = reg["registration_access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let uri = reg["registration_client_uri"].as_str().unwrap().to_string();
    let id = reg["client_id"].as_str().unwrap().to_string();
    // RFC 7592: read, replace, delete with the registration access token.
    let r = http.get(&uri).bearer_auth(&rat).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["registration_access_token"], rat.as_str());
    assert_eq!(info["registration_client_uri"], uri.as_str());
    assert_eq!(
        http.get(&uri)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = http.put(&uri).bearer_auth(&rat).json(&json!({"client_id": id, "client_name": "Dyn 2", "redirect_uris": ["https://dyn.example/cb2"]})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["redirect_uris"],
        json!(["https://dyn.example/cb2"])
    );
    let r = http
        .put(&uri)
        .bearer_auth(&rat)
        .json(&json!({"client_id": "other", "client_name": "x", "redirect_uris": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        http.delete(&uri)
            .bearer_auth(&rat)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // Deleted: 401, the token is dead.
    assert_eq!(
        http.get(&uri)
            .bearer_auth(&rat)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let events = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    let text: String = events
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).to_string())
        .collect();
    assert!(
        !text.contains(&rat) && !text.contains(reg["client_secret"].as_str().unwrap()),
        "no secret in the log"
    );
    app.stop().await;

    // Open registration: allowed without a token, then throttled per address.
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &[("AUTHLOG_REGISTRATION_OPEN_DYNAMIC", "true")]).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            http.post(app.url("/oidc/oauth2/register"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..3], &[201, 201, 201]);
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_clients_with_the_server_stopped_or_running() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
            .args(args)
            .env("AUTHLOG_DATA_DIR", dir.path())
            .env("AUTHLOG_LOG_LEVEL", "warn")
            .output()
            .unwrap()
    };
    // Stopped: the CLI works on the data directory.
    let out = cli(&[
        "client",
        "create",
        "--name",
        "CLI app",
        "--redirect-uri",
        "https://cli.example/cb",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("directly"));
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_id: "))
        .unwrap()
        .to_string();
    assert!(stdout.contains("client_secret: "));
    let out = cli(&["client", "list"]);
    assert!(String::from_utf8(out.stdout).unwrap().contains(&id));
    let out = cli(&["client", "rotate-secret", &id]);
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("client_secret: ")
    );

    // Running: the same commands go through the admin API.
    let app = spawn_app_in(dir.path()).await;
    let url = app.url("");
    let out = cli(&["client", "show", &id, "--url", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin API"));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["client_name"], "CLI app");
    let out = cli(&[
        "client",
        "create",
        "--name",
        "Machine",
        "--grant-type",
        "client_credentials",
        "--scope",
        "api",
        "--url",
        &url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["client", "delete", &id, "--url", &url]);
    assert!(out.status.success());
    let (s, _) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/clients/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    app.stop().await;
}

fn b64_claims(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

const REPORTS: &str = "https://reports.example";

/// Scopes are the administrators': a resource server declares its scopes and
/// who may have each. Clients that register themselves get only registrable
/// scopes; client_credentials issues only machine scopes the client holds;
/// access tokens are for the resource servers their scopes belong to, or the
/// RFC 8707 resources asked for, and the consent page says what each scope does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_servers_decide_scopes_and_audiences() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &[("AUTHLOG_REGISTRATION_OPEN_DYNAMIC", "true")]).await;
    let (s, v) = admin(&app, reqwest::Method::POST, "/admin/resource-servers", Some(json!({
        "identifier": REPORTS,
        "name": "Reports API",
        "scopes": [
            {"name": "reports:read", "description": "Read your reports", "consent": true, "registrable": true},
            {"name": "reports:sync", "description": "Copy all reports", "consent": false, "machine": true},
        ],
    }))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["scopes"][1]["machine"], true);
    let (s, _) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/resource-servers",
        Some(json!({"identifier": REPORTS, "name": "again"})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = admin(
        &app,
        reqwest::Method::POST,
        "/admin/resource-servers",
        Some(json!({"identifier": "not a uri", "name": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let encoded = form_urlencoded::byte_serialize(REPORTS.as_bytes()).collect::<String>();
    let (s, v) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/resource-servers/{encoded}"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["name"].as_str()),
        (StatusCode::OK, Some("Reports API"))
    );

    // An outsider registers: registrable scopes yes, the machine scope and
    // undeclared ones no.
    let http = reqwest::Client::new();
    let register = |body: Value| {
        http.post(app.url("/oidc/oauth2/register"))
            .json(&body)
            .send()
    };
    let r = register(json!({"client_name": "Outsider", "redirect_uris": ["https://out.example/cb"], "scope": "openid reports:read"})).await.unwrap();
    assert_eq!(r.status(), 201);
    let outsider: Value = r.json().await.unwrap();
    for scope in ["reports:sync", "admin:everything", "introspection"] {
        let r = register(
            json!({"client_name": "Greedy", "grant_types": ["client_credentials"], "scope": scope}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 400, "{scope}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_client_metadata", "{scope}: {v}");
    }
    let _ = outsider;

    // A machine client an administrator registered: machine scopes only.
    let (id, secret) = machine_client(&app, "reports:sync reports:read legacy:export").await;
    let token = |form: Vec<(&'static str, String)>| {
        let (id, secret, app) = (id.clone(), secret.clone(), &app);
        async move {
            let mut f = vec![("grant_type", "client_credentials".to_string())];
            f.extend(form);
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post_form(app, "/oidc/oauth2/token", &id, Some(&secret), &pairs).await
        }
    };
    let (s, v) = token(vec![]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["scope"], "reports:sync legacy:export",
        "consent-only scopes are not for machines"
    );
    let claims = b64_claims(v["access_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"],
        json!(["authlog-resources", REPORTS]),
        "{claims}"
    );
    let (s, v) = token(vec![("scope", "reports:read".into())]).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope")),
        "{v}"
    );
    // RFC 8707: a token for one resource carries that resource's scopes only.
    let (s, v) = token(vec![("resource", REPORTS.into())]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["scope"], "reports:sync");
    let claims = b64_claims(v["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], REPORTS);
    let (s, v) = post_form(
        &app,
        "/oidc/oauth2/introspect",
        &id,
        Some(&secret),
        &[("token", v["access_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(
        (s, v["aud"].as_str()),
        (StatusCode::OK, Some(REPORTS)),
        "{v}"
    );
    for bad in ["https://elsewhere.example", "not-a-uri"] {
        let (s, v) = token(vec![("resource", bad.into())]).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_target")),
            "{bad}: {v}"
        );
    }
    let log = app.log().await;
    let granted: Vec<&Value> = log
        .iter()
        .filter(|e| e["type"] == "token.granted")
        .collect();
    assert_eq!(
        granted.last().unwrap()["data"]["audience"],
        json!([REPORTS]),
        "the audience is recorded"
    );

    // A sign-in for the reports API: the consent page says what the scope does,
    // and the token is for that API alone (so userinfo, another resource, refuses it).
    let rp = setup(
        &app.url(""),
        &app.admin_token,
        json!({"scope": "openid reports:read reports:sync"}),
    )
    .await;
    let b = browser();
    let (verifier, ch) = pkce();
    let url = rp.auth_url(&ch, "openid reports:read", &[("resource", REPORTS)]);
    let r = b.get(&url).send().await.unwrap();
    let login = app.url(&crate::support::oidc::location(&r));
    let page = b.get(&login).send().await.unwrap().text().await.unwrap();
    let r = b
        .post(app.url("/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", PASSWORD),
            ("tx", &crate::support::oidc::field(&page, "tx")),
            ("csrf", &crate::support::oidc::field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    let consent = app.url(&crate::support::oidc::location(&r));
    let page = b.get(&consent).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Read your reports (Reports API)"), "{page}");
    let back = rp.sign_in(&b, &url, PASSWORD).await;
    let code = query(&back)["code"].clone();
    let r = rp.redeem(&code, &verifier).await;
    let t: Value = r.json().await.unwrap();
    let claims = b64_claims(t["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], REPORTS, "{claims}");
    let r = http
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a token for the reports API is not for userinfo"
    );
    // Without a resource: for every resource server its scopes belong to.
    let (verifier, ch) = pkce();
    let back = rp
        .sign_in(&b, &rp.auth_url(&ch, "openid reports:read", &[]), PASSWORD)
        .await;
    let t: Value = rp
        .redeem(&query(&back)["code"], &verifier)
        .await
        .json()
        .await
        .unwrap();
    let claims = b64_claims(t["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], json!(["authlog-resources", REPORTS]));
    let r = http
        .get(app.url("/oidc/userinfo"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A machine scope in a sign-in, an unknown resource: refused back to the client.
    let (_, ch) = pkce();
    for (scope, resource, error) in [
        ("openid reports:sync", None, "invalid_scope"),
        (
            "openid",
            Some("https://elsewhere.example"),
            "invalid_target",
        ),
    ] {
        let mut extra = vec![];
        if let Some(r) = resource {
            extra.push(("resource", r));
        }
        let r = b.get(rp.auth_url(&ch, scope, &extra)).send().await.unwrap();
        let to = crate::support::oidc::location(&r);
        assert_eq!(query(&to)["error"], error, "{to}");
    }
    // Clients still hold its scopes: the resource server cannot go.
    let (s, v) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/resource-servers/{encoded}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("still hold"),
        "{v}"
    );
    // The CLI lists it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args([
            "resource-server",
            "list",
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
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("\"identifier\": \"https://reports.example\"")
    );
    app.stop().await;
}

/// A client that registered itself without an initial access token cannot
/// use authlog as an open redirector (RFC 9700 §4.11.2): its errors are shown
/// on a page naming the target, until an administrator approves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_registration_errors_are_shown_until_an_administrator_approves() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), &[("AUTHLOG_REGISTRATION_OPEN_DYNAMIC", "true")]).await;
    let r = reqwest::Client::new()
        .post(app.url("/oidc/oauth2/register"))
        .json(&json!({"client_name": "Landing", "redirect_uris": ["https://evil.example/landing"], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let client: Value = r.json().await.unwrap();
    let id = client["client_id"].as_str().unwrap();
    assert!(
        client.get("approved").is_none(),
        "RFC 7591 answers carry no admin fields"
    );
    let (_, ch) = pkce();
    let url = format!(
        "{}/oidc/oauth2/auth?response_type=code&client_id={id}&redirect_uri={}&scope=openid&prompt=none&code_challenge={ch}&code_challenge_method=S256&state=s",
        app.url(""),
        form_urlencoded::byte_serialize(b"https://evil.example/landing").collect::<String>()
    );
    let b = browser();
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 400, "no redirect without user interaction");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("no administrator has approved it yet")
            && page.contains("https://evil.example"),
        "{page}"
    );
    assert!(page.contains("Continue to https://evil.example"), "{page}");
    let (s, v) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/clients/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["approved"].clone(), v["registered_via"].clone()),
        (StatusCode::OK, json!(false), json!("open_registration"))
    );
    let (s, v) = admin(
        &app,
        reqwest::Method::POST,
        &format!("/admin/clients/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["approved"].clone()),
        (StatusCode::OK, json!(true)),
        "{v}"
    );
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to = crate::support::oidc::location(&r);
    assert!(
        to.starts_with("https://evil.example/landing?error=login_required"),
        "{to}"
    );
    let log = app.log().await;
    assert_eq!(
        log.iter()
            .filter(|e| e["type"] == "client.approved")
            .count(),
        1
    );
    app.stop().await;
}

/// RFC 7592 and admin updates do not widen by accident: an omitted scope keeps
/// the client's, a client widening its own scopes loses an administrator's
/// skip_consent, a public client turning confidential gets a working secret,
/// and repeated JSON keys are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_updates_never_widen_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        &[(
            "AUTHLOG_REGISTRATION_INITIAL_ACCESS_TOKEN",
            "iat-0123456789abcdef",
        )],
    )
    .await;
    let http = reqwest::Client::new();
    // Repeated keys: refused, not "the last one wins".
    let r = http
        .post(app.url("/oidc/oauth2/register"))
        .bearer_auth("iat-0123456789abcdef")
        .header("content-type", "application/json")
        .body(r#"{"client_name":"Dup","redirect_uris":["https://d.example/cb"],"scope":"openid","scope":"openid profile"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client_metadata");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("\"scope\" appears more than once"),
        "{v}"
    );
    // A public client registers itself with one scope.
    let r = http
        .post(app.url("/oidc/oauth2/register"))
        .bearer_auth("iat-0123456789abcdef")
        .json(&json!({"client_name": "Pub", "redirect_uris": ["https://p.example/cb"], "token_endpoint_auth_method": "none", "scope": "openid"}))
        .send()
        .await
        .unwrap();
    let reg: Value = r.json().await.unwrap();
    let id = reg["client_id"].as_str().unwrap().to_string();
    let rat = reg["registration_access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // An administrator marks it skip_consent; a PUT that omits the scope keeps "openid".
    let (s, v) = admin(&app, reqwest::Method::PUT, &format!("/admin/clients/{id}"), Some(json!({"client_name": "Pub", "redirect_uris": ["https://p.example/cb"], "token_endpoint_auth_method": "none", "skip_consent": true}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["scope"].as_str(), v["skip_consent"].as_bool()),
        (Some("openid"), Some(true))
    );
    // The client widens its own scopes: the administrator's skip_consent goes.
    let manage = |body: Value| {
        http.put(app.url(&format!("/oidc/oauth2/register/{id}")))
            .bearer_auth(&rat)
            .json(&body)
            .send()
    };
    let r = manage(json!({"client_id": id, "client_name": "Pub", "redirect_uris": ["https://p.example/cb"], "token_endpoint_auth_method": "none", "scope": "openid email"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/admin/clients/{id}"),
        None,
    )
    .await;
    assert_eq!(
        (v["scope"].as_str(), v["skip_consent"].as_bool()),
        (Some("openid email"), Some(false)),
        "{v}"
    );
    // It turns confidential: a secret is issued, shown once, and it works.
    let r = manage(json!({"client_id": id, "client_name": "Pub", "redirect_uris": ["https://p.example/cb"], "token_endpoint_auth_method": "client_secret_basic", "grant_types": ["authorization_code", "refresh_token"], "scope": "openid email"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let secret = v["client_secret"]
        .as_str()
        .expect("a secret for the now confidential client")
        .to_string();
    let (s, v) = post_form(
        &app,
        "/oidc/oauth2/token",
        &id,
        Some(&secret),
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "authenticated, then refused the grant: {v}"
    );
    let (s, _) = post_form(
        &app,
        "/oidc/oauth2/token",
        &id,
        Some("wrong"),
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    app.stop().await;
}
