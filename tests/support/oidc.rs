//! A browser and a relying party for driving the OIDC flows over real HTTP.

use std::collections::HashMap;

use base64::Engine;
use sha2::{Digest, Sha256};

pub const REDIRECT: &str = "https://app.example/cb";
pub const POST_LOGOUT: &str = "https://app.example/bye";
pub const PASSWORD: &str = "correct horse battery staple";

/// A cookie-keeping HTTP client that does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `value` of the input named `name` in an HTML page.
pub fn field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end]
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location: {res:?}"))
        .to_str()
        .unwrap()
        .to_string()
}

pub fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

pub fn pkce() -> (String, String) {
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(uuid::Uuid::now_v7().as_bytes().repeat(2));
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub struct Rp {
    pub base: String,
    pub admin_token: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub username: String,
    pub user_id: String,
}

/// Creates a user and a confidential client through the admin API.
pub async fn setup(base: &str, admin_token: &str, client_extra: serde_json::Value) -> Rp {
    let http = reqwest::Client::new();
    let username = format!("alice-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let r = http
        .post(format!("{base}/admin/users"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({"username": username, "password": PASSWORD, "email": "alice@example.com", "name": "Alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let user: serde_json::Value = r.json().await.unwrap();
    let mut client = serde_json::json!({
        "client_name": "Example App",
        "redirect_uris": [REDIRECT],
        "post_logout_redirect_uris": [POST_LOGOUT],
        "scope": "openid profile email offline_access",
    });
    if let (Some(c), Some(extra)) = (client.as_object_mut(), client_extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    let r = http
        .post(format!("{base}/admin/clients"))
        .bearer_auth(admin_token)
        .json(&client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let c: serde_json::Value = r.json().await.unwrap();
    Rp {
        base: base.to_string(),
        admin_token: admin_token.to_string(),
        client_id: c["client_id"].as_str().unwrap().to_string(),
        client_secret: c["client_secret"].as_str().map(str::to_string),
        username,
        user_id: user["id"].as_str().unwrap().to_string(),
    }
}

impl Rp {
    pub fn auth_url(&self, challenge: &str, scope: &str, extra: &[(&str, &str)]) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", scope)
            .append_pair("state", "st-123")
            .append_pair("nonce", "n-456")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            ser.append_pair(k, v);
        }
        format!("{}/oidc/oauth2/auth?{}", self.base, ser.finish())
    }

    /// Signs in through the login form (and the consent form when asked) and
    /// returns the redirect back to the client.
    pub async fn sign_in(&self, browser: &reqwest::Client, url: &str, password: &str) -> String {
        self.sign_in_as(browser, url, password, None).await
    }

    /// As [`Rp::sign_in`], every request carrying `X-Forwarded-For: ip` (for a
    /// server that trusts the test client as a proxy).
    pub async fn sign_in_from(
        &self,
        browser: &reqwest::Client,
        url: &str,
        password: &str,
        ip: &str,
    ) -> String {
        self.sign_in_as(browser, url, password, Some(ip)).await
    }

    async fn sign_in_as(
        &self,
        browser: &reqwest::Client,
        url: &str,
        password: &str,
        ip: Option<&str>,
    ) -> String {
        let xff = |r: reqwest::RequestBuilder| match ip {
            Some(ip) => r.header("x-forwarded-for", ip),
            None => r,
        };
        let r = xff(browser.get(url)).send().await.unwrap();
        assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
        let mut next = location(&r);
        if next.contains("/oidc/login") {
            let page = xff(browser.get(format!("{}{}", self.base, next)))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let r = xff(browser.post(format!("{}/oidc/login", self.base)))
                .form(&[
                    ("username", self.username.as_str()),
                    ("password", password),
                    ("tx", &field(&page, "tx")),
                    ("csrf", &field(&page, "csrf")),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 302, "login: {}", r.text().await.unwrap());
            next = location(&r);
        }
        if next.contains("/oidc/consent") {
            let page = xff(browser.get(format!("{}{}", self.base, next)))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let r = xff(browser.post(format!("{}/oidc/consent", self.base)))
                .form(&[
                    ("decision", "allow"),
                    ("tx", &field(&page, "tx")),
                    ("csrf", &field(&page, "csrf")),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 302);
            next = location(&r);
        }
        next
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/oidc/oauth2/token", self.base))
            .basic_auth(&self.client_id, self.client_secret.as_deref())
            .form(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn redeem(&self, code: &str, verifier: &str) -> reqwest::Response {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Verifies a JWT against the provider's JWKS.
    pub async fn verify_jwt(
        &self,
        token: &str,
        audience: &str,
        expect_typ: &str,
    ) -> serde_json::Value {
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some(expect_typ));
        let jwks: jsonwebtoken::jwk::JwkSet =
            reqwest::get(format!("{}/oidc/.well-known/jwks.json", self.base))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let jwk = jwks
            .find(header.kid.as_deref().unwrap())
            .expect("the signing key is in the JWKS");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[audience]);
        v.set_issuer(&[format!("{}/oidc", self.base)]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .unwrap()
            .claims
    }
}
