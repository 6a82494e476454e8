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
