//! HTML pages. Every interpolated value goes through [`Text`], which escapes; raw
//! markup is only what this module writes itself. Each page carries a
//! nonce-based Content-Security-Policy, `frame-ancestors 'none'`,
//! `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`.

use std::fmt::Write;

use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

/// Escaped text.
pub struct Text<'a>(pub &'a str);

impl std::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#x27;")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}\
h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}input[type=text],input[type=password],input[type=email]{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin-top:1rem;padding:.5rem 1.2rem;margin-right:.5rem}.error{color:#a40000}ul{padding-left:1.2rem}small{color:#555}";

const WIDE: &str = "body{max-width:60rem}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd;font-size:.9rem;overflow-wrap:anywhere}tr.failed td{background:#fde8e8}";

/// A page: title, body markup (already built from escaped parts), and the CSP
/// `form-action` sources (default `'self'`).
pub struct Page {
    pub status: StatusCode,
    pub title: String,
    pub body: String,
    pub form_action: Option<String>,
    pub script: Option<String>,
    /// Tables need more than the forms' width.
    pub wide: bool,
}

impl Page {
    pub fn new(title: &str, body: String) -> Page {
        Page {
            status: StatusCode::OK,
            title: title.to_string(),
            body,
            form_action: None,
            script: None,
            wide: false,
        }
    }

    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    pub fn render(self) -> Response {
        let nonce = crate::crypto::random_bytes::<16>()
            .map(|b| crate::crypto::b64url(&b))
            .unwrap_or_default();
        let script = self
            .script
            .as_ref()
            .map(|s| format!("<script nonce=\"{nonce}\">{s}</script>"))
            .unwrap_or_default();
        let wide = if self.wide { WIDE } else { "" };
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{}</title><style nonce=\"{nonce}\">{STYLE}{wide}</style></head><body>{}{script}</body></html>",
            Text(&self.title),
            self.body
        );
        let form_action = self.form_action.unwrap_or_else(|| "'self'".into());
        let csp = format!(
            "default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
        );
        let mut res = Response::new(html.into());
        *res.status_mut() = self.status;
        let h = res.headers_mut();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert("content-security-policy", v);
        }
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        h.insert("pragma", HeaderValue::from_static("no-cache"));
        res
    }
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        Text(name),
        Text(value)
    )
}

pub fn error_page(description: &str) -> Response {
    Page::new(
        "Sign-in error",
        format!("<h1>Something is wrong with this sign-in request</h1><p class=\"error\">{}</p><p>Go back to the application and try again.</p>", Text(description)),
    )
    .status(StatusCode::BAD_REQUEST)
    .render()
}

/// A request the server could not complete for a reason of its own (the
/// store refused a write: a full disk, a database that went away). 503 with a
/// Retry-After, saying that nothing is wrong with the request and that trying
/// again is safe: nothing half-done was kept.
pub fn unavailable_page(what: &str) -> Response {
    let mut res = Page::new(
        "Temporarily unavailable",
        format!(
            "<h1>The service cannot complete this right now</h1><p class=\"error\">{} could not be saved. Nothing is wrong with your request, and nothing half-done was kept.</p><p>Try again in a minute. If this goes on, tell the service's administrators.</p>",
            Text(what)
        ),
    )
    .status(StatusCode::SERVICE_UNAVAILABLE)
    .render();
    res.headers_mut()
        .insert("retry-after", warp::http::HeaderValue::from_static("30"));
    res
}

pub fn login_page(
    action: &str,
    tx: &str,
    csrf: &str,
    client_name: Option<&str>,
    username: &str,
    error: Option<&str>,
) -> Response {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(c) = client_name {
        let _ = write!(body, "<p>to continue to <strong>{}</strong></p>", Text(c));
    }
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", Text(e));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{}\">{}{}<label for=\"username\">Username</label><input type=\"text\" id=\"username\" name=\"username\" value=\"{}\" autocomplete=\"username\" required autofocus><label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required><button type=\"submit\">Sign in</button></form>",
        Text(action),
        hidden("tx", tx),
        hidden("csrf", csrf),
        Text(username)
    );
    Page::new("Sign in", body).render()
}

/// The consent page: each scope with what it lets the client do (the
/// resource server's own description for its scopes).
pub fn consent_page(
    action: &str,
    tx: &str,
    csrf: &str,
    client_name: &str,
    scopes: &[(String, Option<String>)],
) -> Response {
    let mut items = String::new();
    for (s, what) in scopes {
        let _ = write!(
            items,
            "<li><code>{}</code> {}</li>",
            Text(s),
            Text(what.as_deref().unwrap_or(""))
        );
    }
    let body = format!(
        "<h1>Allow access?</h1><p><strong>{}</strong> asks to:</p><ul>{items}</ul><form method=\"post\" action=\"{}\">{}{}<button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button><button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
        Text(client_name),
        Text(action),
        hidden("tx", tx),
        hidden("csrf", csrf)
    );
    Page::new("Allow access?", body).render()
}

/// OAuth 2.0 Form Post Response Mode: an auto-submitting form to the client.
pub fn form_post(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut fields = String::new();
    for (k, v) in params {
        fields.push_str(&hidden(k, v));
    }
    let body = format!(
        "<form method=\"post\" action=\"{}\">{fields}<noscript><button type=\"submit\">Continue</button></noscript></form>",
        Text(redirect_uri)
    );
    let mut page = Page::new("Continuing", body);
    page.script = Some("document.forms[0].submit();".into());
    page.form_action = Some(redirect_uri.replace([';', ' ', '\'', '"'], ""));
    page.render()
}

/// An authorization error for a client nobody vouches for: named, with its
/// target, and a link (or, for form_post, a button) the user may follow —
/// never an automatic redirect.
pub fn unvouched_error(
    client_name: &str,
    redirect_uri: &str,
    form_post: bool,
    params: &[(&str, &str)],
) -> Response {
    let description = params
        .iter()
        .find(|(k, _)| *k == "error_description")
        .map(|(_, v)| *v)
        .unwrap_or("the sign-in request was refused");
    let host = csp_source(redirect_uri).unwrap_or_else(|| redirect_uri.to_string());
    let name = if client_name.is_empty() {
        "The application".to_string()
    } else {
        format!("The application {client_name}")
    };
    let go = if form_post {
        let mut fields = String::new();
        for (k, v) in params {
            fields.push_str(&hidden(k, v));
        }
        format!(
            "<form method=\"post\" action=\"{}\">{fields}<button type=\"submit\">Continue to {}</button></form>",
            Text(redirect_uri),
            Text(&host)
        )
    } else {
        format!(
            "<p><a href=\"{}\">Continue to {}</a></p>",
            Text(&crate::oidc::request::with_query(redirect_uri, params)),
            Text(&host)
        )
    };
    let body = format!(
        "<h1>This sign-in could not go ahead</h1><p class=\"error\">{}</p><p>{} registered itself and no administrator has approved it yet, so authlog does not send you back to it automatically. Continue only if you trust <strong>{}</strong>.</p>{go}",
        Text(description),
        Text(&name),
        Text(&host)
    );
    let mut page = Page::new("Sign-in error", body).status(StatusCode::BAD_REQUEST);
    if form_post {
        page.form_action = Some(format!(
            "'self' {}",
            csp_source(redirect_uri).unwrap_or_default()
        ));
    }
    page.render()
}

pub fn logout_confirm_page(action: &str, tx: &str, csrf: &str) -> Response {
    let body = format!(
        "<h1>Sign out?</h1><p>Do you want to sign out of authlog?</p><form method=\"post\" action=\"{}\">{}{}<button type=\"submit\" name=\"confirm\" value=\"yes\">Sign out</button></form>",
        Text(action),
        hidden("tx", tx),
        hidden("csrf", csrf)
    );
    Page::new("Sign out?", body).render()
}

/// One line of a user's own sign-in history.
pub struct HistoryRow {
    pub time: String,
    pub succeeded: bool,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The client's name (or id).
    pub client: Option<String>,
}

/// The signed-in user's recent sign-ins, newest first.
pub fn history_page(username: &str, rows: &[HistoryRow]) -> Response {
    let mut table = String::new();
    for r in rows {
        let outcome = if r.succeeded {
            "Signed in".to_string()
        } else {
            format!(
                "Failed ({})",
                r.reason.as_deref().unwrap_or("unknown reason")
            )
        };
        let _ = write!(
            table,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.succeeded { "ok" } else { "failed" },
            Text(&r.time),
            Text(&outcome),
            Text(r.ip.as_deref().unwrap_or("-")),
            Text(r.user_agent.as_deref().unwrap_or("-")),
            Text(r.client.as_deref().unwrap_or("-")),
        );
    }
    let body = if rows.is_empty() {
        "<p>No sign-ins recorded yet.</p>".to_string()
    } else {
        format!(
            "<table><thead><tr><th>Time (UTC)</th><th>Outcome</th><th>IP address</th><th>Browser or app</th><th>Signed in to</th></tr></thead><tbody>{table}</tbody></table>"
        )
    };
    let mut page = Page::new(
        "Sign-in history",
        format!(
            "<h1>Recent sign-ins for {}</h1><p>If you see a sign-in that was not you, change your password and tell your administrator.</p>{body}",
            Text(username)
        ),
    );
    page.wide = true;
    page.render()
}

pub fn message_page(title: &str, message: &str) -> Response {
    Page::new(
        title,
        format!("<h1>{}</h1><p>{}</p>", Text(title), Text(message)),
    )
    .render()
}

pub fn register_page(
    action: &str,
    csrf: &str,
    username: &str,
    email: &str,
    error: Option<&str>,
) -> Response {
    let mut body = String::from("<h1>Create an account</h1>");
    if let Some(e) = error {
        let _ = write!(body, "<p class=\"error\" role=\"alert\">{}</p>", Text(e));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{}\">{}<label for=\"username\">Username</label><input type=\"text\" id=\"username\" name=\"username\" value=\"{}\" autocomplete=\"username\" required><label for=\"email\">Email</label><input type=\"email\" id=\"email\" name=\"email\" value=\"{}\" autocomplete=\"email\" required><label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\" minlength=\"8\" required><button type=\"submit\">Create account</button></form>",
        Text(action),
        hidden("csrf", csrf),
        Text(username),
        Text(email)
    );
    Page::new("Create an account", body).render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_escapes_markup() {
        assert_eq!(
            Text("<script>alert('x')&\"</script>").to_string(),
            "&lt;script&gt;alert(&#x27;x&#x27;)&amp;&quot;&lt;/script&gt;"
        );
    }
}

/// The CSP source of a redirect target: its origin (any port on loopback
/// hosts), or `scheme:` for private-use URI schemes.
pub fn csp_source(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    let source = match rest.strip_prefix("//") {
        Some(after) => {
            let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
            let host = match authority.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
                _ => authority,
            };
            if scheme == "http" && (host == "127.0.0.1" || host == "[::1]") {
                format!("http://{host}:*")
            } else {
                format!("{scheme}://{authority}")
            }
        }
        None => format!("{scheme}:"),
    };
    let safe = source.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b':' | b'/' | b'-' | b'+' | b'*' | b'[' | b']')
    });
    safe.then_some(source)
}

/// Lets the page's form end in a redirect to `target`: browsers apply
/// `form-action` to the redirects that follow a form submission, so a login or
/// consent form whose answer redirects to the client must allow the client.
pub fn allow_form_target(mut res: Response, target: Option<&str>) -> Response {
    let Some(source) = target.and_then(csp_source) else {
        return res;
    };
    let Some(csp) = res
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return res;
    };
    let updated = csp.replacen(
        "form-action 'self'",
        &format!("form-action 'self' {source}"),
        1,
    );
    if let Ok(v) = HeaderValue::from_str(&updated) {
        res.headers_mut().insert("content-security-policy", v);
    }
    res
}

#[cfg(test)]
mod csp_tests {
    use super::*;

    #[test]
    fn csp_sources_of_redirect_targets() {
        assert_eq!(
            csp_source("https://app.example/cb?x=1").as_deref(),
            Some("https://app.example")
        );
        assert_eq!(
            csp_source("https://app.example:8443/cb").as_deref(),
            Some("https://app.example:8443")
        );
        assert_eq!(
            csp_source("http://127.0.0.1:5000/cb").as_deref(),
            Some("http://127.0.0.1:*")
        );
        assert_eq!(
            csp_source("http://[::1]/cb").as_deref(),
            Some("http://[::1]:*")
        );
        assert_eq!(
            csp_source("com.example.app:/oauth2").as_deref(),
            Some("com.example.app:")
        );
        assert_eq!(csp_source("https://a.example;script-src *"), None);
    }
}
