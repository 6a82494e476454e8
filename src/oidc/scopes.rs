//! Scopes and resource servers: which scopes a client may hold, which a user
//! may consent to, which `client_credentials` may issue, and the audience
//! (RFC 9068 `aud`, RFC 8707 `resource`) of the tokens that carry them.
//!
//! Three kinds of scope:
//! * the OpenID Connect scopes (`openid`, `profile`, `email`, `offline_access`):
//!   consented to by users, registrable by any client, for the default resource
//!   server (userinfo reads them);
//! * scopes a resource server declares, each with its own policy (`consent`,
//!   `machine`, `registrable`);
//! * scopes nobody declares: only an administrator can give one to a client
//!   (so deployments from before the registry keep working), and they belong to
//!   the default resource server (`tokens.audience`).
//!
//! Pure: the views and the default audience come in as arguments.

use authlog_projections::{Client, ResourceServersView};

/// The OpenID Connect scopes, with what the consent page says of each.
pub const OIDC_SCOPES: &[(&str, &str)] = &[
    ("openid", "know who you are"),
    ("profile", "see your name and username"),
    ("email", "see your email address"),
    (
        "offline_access",
        "keep access while you are away (offline access)",
    ),
];

/// The scope only an administrator can give a client: it introspects other
/// clients' tokens (a resource server).
pub const INTROSPECTION_SCOPE: &str = "introspection";

pub fn is_oidc(scope: &str) -> bool {
    OIDC_SCOPES.iter().any(|(s, _)| *s == scope)
}

/// What is known of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    Oidc,
    /// Declared by the resource server `identifier`.
    Declared {
        identifier: &'a str,
        consent: bool,
        machine: bool,
        registrable: bool,
    },
    /// Declared by nobody: an administrator's (default resource server).
    Undeclared,
}

pub fn kind<'a>(scope: &str, servers: &'a ResourceServersView) -> Kind<'a> {
    if is_oidc(scope) {
        return Kind::Oidc;
    }
    match servers.scope(scope) {
        Some((rs, def)) => Kind::Declared {
            identifier: &rs.identifier,
            consent: def.consent,
            machine: def.machine,
            registrable: def.registrable,
        },
        None => Kind::Undeclared,
    }
}

/// What the consent page says a scope lets the client do.
pub fn description(scope: &str, servers: &ResourceServersView) -> Option<String> {
    if let Some((_, d)) = OIDC_SCOPES.iter().find(|(s, _)| *s == scope) {
        return Some((*d).to_string());
    }
    let (rs, def) = servers.scope(scope)?;
    Some(if def.description.is_empty() {
        format!("use {}", rs.name)
    } else {
        format!("{} ({})", def.description, rs.name)
    })
}

/// Whether a client that registers itself (RFC 7591) or changes itself
/// (RFC 7592) may hold these scopes: the OpenID Connect ones, those an
/// administrator marked registrable, and those it already held.
pub fn check_self_registered(
    scopes: &[&str],
    held: &[&str],
    servers: &ResourceServersView,
) -> Result<(), String> {
    for s in scopes {
        let ok = held.contains(s)
            || matches!(
                kind(s, servers),
                Kind::Oidc
                    | Kind::Declared {
                        registrable: true,
                        ..
                    }
            );
        if !ok {
            return Err(format!(
                "scope {} is not available to clients that register themselves; an administrator grants it",
                clip(s)
            ));
        }
    }
    Ok(())
}

/// Whether `client` may ask for `scope` in a user's sign-in: it holds it, and
/// the scope is one users consent to.
pub fn user_flow_allows(client: &Client, scope: &str, servers: &ResourceServersView) -> bool {
    holds(client, scope)
        && match kind(scope, servers) {
            Kind::Oidc => true,
            Kind::Declared { consent, .. } => consent,
            Kind::Undeclared => admin_granted(client),
        }
}

/// Whether `client_credentials` may issue `scope` to `client`: it holds it,
/// and the scope is one for machine clients.
pub fn machine_allows(client: &Client, scope: &str, servers: &ResourceServersView) -> bool {
    holds(client, scope)
        && match kind(scope, servers) {
            Kind::Oidc => false,
            Kind::Declared { machine, .. } => machine,
            Kind::Undeclared => admin_granted(client),
        }
}

/// The scopes `client_credentials` issues when the client names none: every
/// machine scope it holds.
pub fn default_machine_scopes(client: &Client, servers: &ResourceServersView) -> Vec<String> {
    client
        .metadata
        .scope
        .split(' ')
        .filter(|s| !s.is_empty() && machine_allows(client, s, servers))
        .map(str::to_string)
        .collect()
}

fn holds(client: &Client, scope: &str) -> bool {
    client.metadata.scope.split(' ').any(|s| s == scope)
}

/// An undeclared scope counts only when an administrator put it on the client:
/// never for a client that registered itself.
fn admin_granted(client: &Client) -> bool {
    !client.self_registered()
}

/// The resource server a scope's tokens are for.
pub fn owner<'a>(scope: &str, servers: &'a ResourceServersView, default: &'a str) -> &'a str {
    match kind(scope, servers) {
        Kind::Declared { identifier, .. } => identifier,
        Kind::Oidc | Kind::Undeclared => default,
    }
}

/// Whether `identifier` names a resource server tokens can be for.
pub fn is_resource(identifier: &str, servers: &ResourceServersView, default: &str) -> bool {
    identifier == default || servers.get(identifier).is_some()
}

/// The audience of a token carrying `scopes`: the resource servers they belong
/// to, in a stable order (the default first when present).
pub fn audience(scopes: &[String], servers: &ResourceServersView, default: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scopes {
        let o = owner(s, servers, default);
        if !out.iter().any(|x| x == o) {
            out.push(o.to_string());
        }
    }
    if out.is_empty() {
        out.push(default.to_string());
    }
    out.sort_by_key(|a| (a != default, a.clone()));
    out
}

/// The audience and scopes of one access token of a grant. The grant is for
/// `grant_resources` (the RFC 8707 resources its authorization request named)
/// or, without them, for the resource servers its scopes belong to; a token
/// request naming `requested` resources gets a token for those only, carrying
/// only their scopes. `Err` is `invalid_target`.
pub fn token_audience(
    scopes: &[String],
    grant_resources: &[String],
    requested: &[String],
    servers: &ResourceServersView,
    default: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let covered = if grant_resources.is_empty() {
        audience(scopes, servers, default)
    } else {
        grant_resources.to_vec()
    };
    if requested.is_empty() {
        return Ok((covered, scopes.to_vec()));
    }
    if let Some(r) = requested.iter().find(|r| !covered.contains(r)) {
        return Err(format!("resource {} is not one this grant is for", clip(r)));
    }
    let narrowed = scopes
        .iter()
        .filter(|s| requested.iter().any(|r| r == owner(s, servers, default)))
        .cloned()
        .collect();
    Ok((requested.to_vec(), narrowed))
}

/// RFC 8707 §2: a resource indicator is an absolute URI without a fragment
/// (authlog also takes the configured default audience, whatever its form).
pub fn check_resource_syntax(r: &str, default: &str) -> Result<(), String> {
    if r == default {
        return Ok(());
    }
    let absolute = r.split_once(':').is_some_and(|(scheme, rest)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && !rest.is_empty()
    });
    if !absolute || r.contains('#') || r.len() > 256 || r.chars().any(|c| c.is_whitespace()) {
        return Err(format!(
            "resource {} is not an absolute URI without a fragment",
            clip(r)
        ));
    }
    Ok(())
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A resource server as an administrator describes it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceServerRequest {
    #[serde(default)]
    pub identifier: Option<String>,
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<ScopeRequest>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Users may grant it on the consent page (default true).
    #[serde(default = "yes")]
    pub consent: bool,
    /// `client_credentials` may issue it (default false).
    #[serde(default)]
    pub machine: bool,
    /// Clients may give it to themselves in RFC 7591/7592 (default false).
    #[serde(default)]
    pub registrable: bool,
}

fn yes() -> bool {
    true
}

/// RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Checks a resource server an administrator registers (`identifier` None:
/// from the request) or updates (`identifier` Some: the one in the path,
/// which never changes). Returns (identifier, name, scopes).
pub fn validate_resource_server(
    req: ResourceServerRequest,
    identifier: Option<&str>,
    servers: &ResourceServersView,
    default: &str,
) -> Result<(String, String, Vec<authlog_schemas::data::ScopeDefinition>), String> {
    let identifier = match (identifier, req.identifier) {
        (Some(path), Some(body)) if body != path => {
            return Err("the identifier cannot change".into());
        }
        (Some(path), _) => path.to_string(),
        (None, Some(body)) => body,
        (None, None) => return Err("identifier is required".into()),
    };
    if identifier.is_empty()
        || identifier.chars().count() > 256
        || identifier
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("identifier is 1 to 256 characters without spaces".into());
    }
    check_resource_syntax(&identifier, default)?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 128 {
        return Err("name is 1 to 128 characters".into());
    }
    if req.scopes.len() > 100 {
        return Err("at most 100 scopes".into());
    }
    let mut out: Vec<authlog_schemas::data::ScopeDefinition> = Vec::new();
    for s in req.scopes {
        if !is_scope_token(&s.name) || s.name.len() > 128 {
            return Err(format!(
                "scope {} is not a scope token (RFC 6749 §3.3), 1 to 128 characters",
                clip(&s.name)
            ));
        }
        if is_oidc(&s.name) || s.name == INTROSPECTION_SCOPE {
            return Err(format!("scope {} is authlog's own", s.name));
        }
        if out.iter().any(|o| o.name == s.name) {
            return Err(format!("scope {} appears twice", s.name));
        }
        if let Some((other, _)) = servers.scope(&s.name)
            && other.identifier != identifier
        {
            return Err(format!(
                "scope {} is already defined by {}",
                s.name, other.identifier
            ));
        }
        let description = s.description.trim().to_string();
        if description.chars().count() > 300 || description.chars().any(char::is_control) {
            return Err(format!(
                "the description of {} is at most 300 characters on one line",
                s.name
            ));
        }
        if !s.consent && !s.machine {
            return Err(format!(
                "scope {} is for neither users (consent) nor machine clients (machine)",
                s.name
            ));
        }
        out.push(authlog_schemas::data::ScopeDefinition {
            name: s.name,
            description,
            consent: s.consent,
            machine: s.machine,
            registrable: s.registrable,
        });
    }
    Ok((identifier, name, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use authlog_projections::Views;
    use authlog_schemas::data::{ResourceServerRegistered, ScopeDefinition};
    use authlog_schemas::{Actor, Envelope, Position, Recorded, Timestamp};

    /// (name, consent, machine, registrable)
    type Scope<'a> = (&'a str, bool, bool, bool);

    fn views_with(servers: &[(&str, &[Scope<'_>])]) -> Views {
        let mut v = Views::initial();
        for (i, (id, scopes)) in servers.iter().enumerate() {
            let d = ResourceServerRegistered {
                identifier: id.to_string(),
                name: format!("API {i}"),
                scopes: scopes
                    .iter()
                    .map(|(n, consent, machine, registrable)| ScopeDefinition {
                        name: n.to_string(),
                        description: format!("do {n}"),
                        consent: *consent,
                        machine: *machine,
                        registrable: *registrable,
                    })
                    .collect(),
            };
            let env = Envelope::new(
                format!("01900000-0000-7000-8000-{i:012}"),
                format!("resource-server-{id}"),
                Timestamp::from_unix_millis(1_000),
                Actor::system("t"),
                &d,
            )
            .unwrap();
            v.apply(&Recorded {
                position: Position::dense(i as u64),
                revision: 0,
                seq: i as u64,
                stream: format!("resource-server-{id}"),
                body: env.to_body().unwrap(),
                sidecar: None,
            })
            .unwrap();
        }
        v
    }

    fn client(scope: &str, via: authlog_schemas::data::ClientRegisteredVia) -> Client {
        Client {
            client_id: "c".into(),
            metadata: authlog_schemas::data::ClientMetadata {
                client_name: "c".into(),
                redirect_uris: vec![],
                post_logout_redirect_uris: vec![],
                grant_types: vec!["client_credentials".into()],
                response_types: vec![],
                token_endpoint_auth_method: "client_secret_basic".into(),
                scope: scope.into(),
                application_type: "web".into(),
                id_token_signed_response_alg: "RS256".into(),
                skip_consent: false,
            },
            secret: None,
            previous_secret_valid_until: None,
            client_secret_expires_at: None,
            revision: 0,
            created_at: Timestamp::default(),
            registered_via: via,
            approved: true,
        }
    }

    const API: &str = "https://reports.example";
    const DEFAULT: &str = "authlog-resources";

    fn registry() -> Views {
        views_with(&[(
            API,
            &[
                ("reports:read", true, false, true),
                ("reports:sync", false, true, false),
            ],
        )])
    }

    #[test]
    fn self_registered_clients_get_only_registrable_scopes() {
        let v = registry();
        let rs = &v.resource_servers;
        assert!(check_self_registered(&["openid", "reports:read"], &[], rs).is_ok());
        let err = check_self_registered(&["reports:sync"], &[], rs).unwrap_err();
        assert!(err.contains("an administrator grants it"), "{err}");
        assert!(check_self_registered(&["anything:at-all"], &[], rs).is_err());
        // What an administrator already gave it, it keeps.
        assert!(check_self_registered(&["reports:sync"], &["reports:sync"], rs).is_ok());
    }

    #[test]
    fn machine_scopes_follow_their_policy_and_who_granted_them() {
        use authlog_schemas::data::ClientRegisteredVia::*;
        let v = registry();
        let rs = &v.resource_servers;
        let admin = client("reports:read reports:sync legacy openid", Admin);
        assert!(machine_allows(&admin, "reports:sync", rs));
        assert!(
            !machine_allows(&admin, "reports:read", rs),
            "a consent-only scope"
        );
        assert!(!machine_allows(&admin, "openid", rs));
        assert!(
            machine_allows(&admin, "legacy", rs),
            "undeclared, put there by an administrator"
        );
        assert!(!machine_allows(&admin, "not-held", rs));
        let dynamic = client("legacy reports:sync", OpenRegistration);
        assert!(
            !machine_allows(&dynamic, "legacy", rs),
            "undeclared, self-given"
        );
        assert!(machine_allows(&dynamic, "reports:sync", rs));
        assert_eq!(
            default_machine_scopes(&admin, rs),
            vec!["reports:sync".to_string(), "legacy".to_string()]
        );
        assert!(user_flow_allows(&admin, "reports:read", rs));
        assert!(!user_flow_allows(&admin, "reports:sync", rs));
    }

    #[test]
    fn audiences_follow_the_scopes_and_narrow_to_the_resources_asked_for() {
        let v = registry();
        let rs = &v.resource_servers;
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(audience(&s(&["openid"]), rs, DEFAULT), s(&[DEFAULT]));
        assert_eq!(audience(&s(&["reports:sync"]), rs, DEFAULT), s(&[API]));
        assert_eq!(
            audience(&s(&["reports:read", "openid", "legacy"]), rs, DEFAULT),
            s(&[DEFAULT, API])
        );
        let scopes = s(&["openid", "reports:read"]);
        assert_eq!(
            token_audience(&scopes, &[], &[], rs, DEFAULT).unwrap(),
            (s(&[DEFAULT, API]), scopes.clone())
        );
        assert_eq!(
            token_audience(&scopes, &[], &s(&[API]), rs, DEFAULT).unwrap(),
            (s(&[API]), s(&["reports:read"]))
        );
        assert!(token_audience(&scopes, &[], &s(&["https://other.example"]), rs, DEFAULT).is_err());
        // A grant made for one resource is for that one only.
        assert_eq!(
            token_audience(&scopes, &s(&[API]), &[], rs, DEFAULT)
                .unwrap()
                .0,
            s(&[API])
        );
        assert!(token_audience(&scopes, &s(&[API]), &s(&[DEFAULT]), rs, DEFAULT).is_err());
    }

    #[test]
    fn resource_servers_are_checked() {
        let v = registry();
        let rs = &v.resource_servers;
        let req = |id: Option<&str>, scopes: &[&str]| ResourceServerRequest {
            identifier: id.map(str::to_string),
            name: "Billing".into(),
            scopes: scopes
                .iter()
                .map(|n| ScopeRequest {
                    name: n.to_string(),
                    description: String::new(),
                    consent: true,
                    machine: false,
                    registrable: false,
                })
                .collect(),
        };
        assert!(
            validate_resource_server(
                req(Some("https://billing.example"), &["billing:read"]),
                None,
                rs,
                DEFAULT
            )
            .is_ok()
        );
        assert!(validate_resource_server(req(Some(DEFAULT), &["x"]), None, rs, DEFAULT).is_ok());
        for (id, scopes) in [
            (Some("not a uri"), &["a"][..]),
            (Some("https://b.example#frag"), &["a"][..]),
            (None, &["a"][..]),
            (Some("https://b.example"), &["reports:read"][..]),
            (Some("https://b.example"), &["openid"][..]),
            (Some("https://b.example"), &["a b"][..]),
            (Some("https://b.example"), &["a\"b"][..]),
            (Some("https://b.example"), &["dup", "dup"][..]),
        ] {
            assert!(
                validate_resource_server(req(id, scopes), None, rs, DEFAULT).is_err(),
                "{id:?} {scopes:?}"
            );
        }
        // The owner may keep its own scopes on an update; the identifier stays.
        assert!(
            validate_resource_server(req(None, &["reports:read"]), Some(API), rs, DEFAULT).is_ok()
        );
        assert!(
            validate_resource_server(req(Some("https://x.example"), &[]), Some(API), rs, DEFAULT)
                .is_err()
        );
    }
}
