//! Authorization requests (OIDC Core §3.1.2, RFC 6749 §4.1, RFC 7636, RFC 9700):
//! parsed and validated, deciding which errors may go back to the client.

use std::collections::BTreeSet;

use authlog_projections::{Client, ResourceServersView};

use crate::oidc::scopes;

/// The resource servers and scopes authorization requests are checked against.
#[derive(Clone, Copy)]
pub struct Registry<'a> {
    pub servers: &'a ResourceServersView,
    /// The default resource server (`tokens.audience`).
    pub default_audience: &'a str,
}

/// A validated authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub response_mode: ResponseMode,
    pub prompt: BTreeSet<String>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    pub id_token_hint: Option<String>,
    /// RFC 8707 resource indicators, deduplicated, in the order sent.
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    FormPost,
}

/// Where an error goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The redirect target is not trusted: an error page, never a redirect.
    Page {
        client_id: Option<String>,
        description: String,
    },
    /// Back to the client (RFC 6749 §4.1.2.1), with `iss` (RFC 9207).
    Redirect {
        client_id: String,
        redirect_uri: String,
        response_mode: ResponseMode,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// Does `requested` match `registered` exactly, allowing any port on loopback
/// IP redirects (RFC 8252 §7.3)?
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    for host in ["http://127.0.0.1", "http://[::1]"] {
        if let (Some(r), Some(q)) = (registered.strip_prefix(host), requested.strip_prefix(host)) {
            let strip_port = |s: &str| -> Option<String> {
                match s.strip_prefix(':') {
                    None => Some(s.to_string()),
                    Some(rest) => {
                        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                        let port = &rest[..end];
                        (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
                            .then(|| rest[end..].to_string())
                    }
                }
            };
            if let (Some(a), Some(b)) = (strip_port(r), strip_port(q)) {
                return a == b;
            }
        }
    }
    false
}

/// At most 64 characters of caller input, for messages that quote it.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validates `params` (as sent, repeats included) for `client` (None when
/// `client_id` names no client).
pub fn validate(
    params: &[(String, String)],
    client: impl Fn(&str) -> Option<Client>,
    registry: Registry<'_>,
) -> Result<AuthRequest, AuthError> {
    let count = |name: &str| params.iter().filter(|(k, _)| k == name).count();
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let page = |client_id: Option<String>, d: &str| AuthError::Page {
        client_id,
        description: d.to_string(),
    };

    // Until client and redirect_uri are trusted, errors are pages.
    if count("client_id") > 1 || count("redirect_uri") > 1 {
        return Err(page(None, "client_id and redirect_uri may appear once"));
    }
    let Some(client_id) = get("client_id") else {
        return Err(page(None, "client_id is missing"));
    };
    let Some(client) = client(&client_id) else {
        return Err(page(None, "unknown client"));
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return Err(page(Some(client_id), "redirect_uri is missing"));
    };
    if !client
        .metadata
        .redirect_uris
        .iter()
        .any(|r| redirect_matches(r, &redirect_uri))
    {
        return Err(page(
            Some(client_id),
            "redirect_uri is not registered for this client",
        ));
    }
    let response_mode = match get("response_mode").as_deref() {
        None | Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(_) => ResponseMode::Query,
    };
    let state = get("state");
    let redirect = |error: &'static str, d: &str| AuthError::Redirect {
        client_id: client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        response_mode,
        state: state.clone(),
        error,
        description: d.to_string(),
    };
    // `resource` may repeat (RFC 8707 §2); nothing else may.
    if let Some((name, _)) = params.iter().find(|(k, _)| k != "resource" && count(k) > 1) {
        return Err(redirect(
            "invalid_request",
            &format!("{} appears more than once", clip(name)),
        ));
    }
    if let Some(mode) = get("response_mode")
        && mode != "query"
        && mode != "form_post"
    {
        return Err(redirect(
            "invalid_request",
            "response_mode must be query or form_post",
        ));
    }
    if get("request").is_some() {
        return Err(redirect(
            "request_not_supported",
            "request objects are not supported",
        ));
    }
    if get("request_uri").is_some() {
        return Err(redirect(
            "request_uri_not_supported",
            "request_uri is not supported",
        ));
    }
    if get("registration").is_some() {
        return Err(redirect(
            "registration_not_supported",
            "the registration parameter is not supported",
        ));
    }
    match get("response_type").as_deref() {
        Some("code") => {}
        None => return Err(redirect("invalid_request", "response_type is missing")),
        Some(_) => {
            return Err(redirect(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    if !client.metadata.response_types.iter().any(|t| t == "code")
        || !client
            .metadata
            .grant_types
            .iter()
            .any(|t| t == "authorization_code")
    {
        return Err(redirect(
            "unauthorized_client",
            "this client may not use the authorization code flow",
        ));
    }
    let scope = get("scope").unwrap_or_default();
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    if scopes.is_empty() {
        return Err(redirect("invalid_scope", "scope is missing"));
    }
    let registered: BTreeSet<&str> = client
        .metadata
        .scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(s) = scopes.iter().find(|s| !registered.contains(s.as_str())) {
        return Err(redirect(
            "invalid_scope",
            &format!("scope {} is not registered for this client", clip(s)),
        ));
    }
    if let Some(s) = scopes
        .iter()
        .find(|s| !scopes::user_flow_allows(&client, s, registry.servers))
    {
        return Err(redirect(
            "invalid_scope",
            &format!("scope {} is not one users can grant in a sign-in", clip(s)),
        ));
    }
    let mut resources: Vec<String> = Vec::new();
    for (_, r) in params.iter().filter(|(k, _)| k == "resource") {
        if let Err(e) = scopes::check_resource_syntax(r, registry.default_audience) {
            return Err(redirect("invalid_target", &e));
        }
        if !scopes::is_resource(r, registry.servers, registry.default_audience) {
            return Err(redirect(
                "invalid_target",
                &format!(
                    "resource {} is not a resource server of this provider",
                    clip(r)
                ),
            ));
        }
        if !resources.contains(r) {
            resources.push(r.clone());
        }
    }
    if !resources.is_empty()
        && let Some(s) = scopes.iter().find(|s| {
            !scopes::is_oidc(s)
                && !resources
                    .iter()
                    .any(|r| r == scopes::owner(s, registry.servers, registry.default_audience))
        })
    {
        return Err(redirect(
            "invalid_scope",
            &format!(
                "scope {} is not a scope of the requested resources",
                clip(s)
            ),
        ));
    }
    // PKCE, required for every client (RFC 9700 §2.1.1), S256 only.
    let Some(code_challenge) = get("code_challenge") else {
        return Err(redirect(
            "invalid_request",
            "code_challenge is required (PKCE)",
        ));
    };
    match get("code_challenge_method").as_deref() {
        Some("S256") => {}
        None => {
            return Err(redirect(
                "invalid_request",
                "code_challenge_method is missing, so plain, which is not supported: use S256",
            ));
        }
        Some(_) => {
            return Err(redirect(
                "invalid_request",
                "code_challenge_method must be S256",
            ));
        }
    }
    if code_challenge.len() != 43 || !is_b64url(&code_challenge) {
        return Err(redirect(
            "invalid_request",
            "code_challenge must be the 43-character base64url SHA-256 of the verifier",
        ));
    }
    let prompt: BTreeSet<String> = get("prompt")
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(p) = prompt
        .iter()
        .find(|p| !matches!(p.as_str(), "none" | "login" | "consent" | "select_account"))
    {
        return Err(redirect(
            "invalid_request",
            &format!("unknown prompt value {}", clip(p)),
        ));
    }
    if prompt.contains("none") && prompt.len() > 1 {
        return Err(redirect(
            "invalid_request",
            "prompt=none cannot be combined with other values",
        ));
    }
    let max_age = match get("max_age") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(redirect(
                    "invalid_request",
                    "max_age must be a non-negative integer",
                ));
            }
        },
    };
    for (name, max) in [
        ("state", 2048),
        ("nonce", 512),
        ("login_hint", 256),
        ("id_token_hint", 8192),
    ] {
        if get(name).is_some_and(|v| v.len() > max) {
            return Err(redirect(
                "invalid_request",
                &format!("{name} is longer than {max} characters"),
            ));
        }
    }
    Ok(AuthRequest {
        client_id,
        redirect_uri,
        scopes,
        state,
        nonce: get("nonce"),
        code_challenge,
        response_mode,
        prompt,
        max_age,
        login_hint: get("login_hint"),
        id_token_hint: get("id_token_hint"),
        resources,
    })
}

/// `uri` with `params` added to its query string (keeping what it has).
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let query = ser.finish();
    let (base, fragment) = match uri.split_once('#') {
        Some((b, _)) => (b, ""),
        None => (uri, ""),
    };
    let sep = if base.contains('?') {
        if base.ends_with('?') || base.ends_with('&') {
            ""
        } else {
            "&"
        }
    } else {
        "?"
    };
    format!("{base}{sep}{query}{fragment}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_match_on_any_port_only() {
        assert!(redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:51004/cb"
        ));
        assert!(redirect_matches(
            "http://127.0.0.1:8000/cb",
            "http://127.0.0.1:9/cb"
        ));
        assert!(redirect_matches("http://[::1]/cb", "http://[::1]:4000/cb"));
        assert!(!redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:51004/other"
        ));
        assert!(!redirect_matches(
            "http://localhost/cb",
            "http://localhost:3000/cb"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb/"
        ));
        assert!(!redirect_matches(
            "http://127.0.0.1/cb",
            "http://127.0.0.1:x/cb"
        ));
    }

    #[test]
    fn query_parameters_are_added_to_the_registered_query() {
        assert_eq!(
            with_query("https://a/cb", &[("code", "x y"), ("state", "s")]),
            "https://a/cb?code=x+y&state=s"
        );
        assert_eq!(
            with_query("https://a/cb?tenant=1", &[("code", "c")]),
            "https://a/cb?tenant=1&code=c"
        );
    }
}
