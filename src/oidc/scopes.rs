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
use authlog_schemas::data::ClientRegisteredVia;

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
    client.registered_via != ClientRegisteredVia::DynamicRegistration
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

/// RFC 8707: the scopes of a grant that a token for `resources` may carry.
/// `Err` names a resource the grant does not cover (`invalid_target`).
pub fn narrow_to(
    scopes: &[String],
    resources: &[String],
    servers: &ResourceServersView,
    default: &str,
) -> Result<Vec<String>, String> {
    let covered = audience(scopes, servers, default);
    if let Some(r) = resources.iter().find(|r| !covered.contains(r)) {
        return Err(format!(
            "resource {} is not covered by this grant's scopes",
            clip(r)
        ));
    }
    Ok(scopes
        .iter()
        .filter(|s| resources.iter().any(|r| r == owner(s, servers, default)))
        .cloned()
        .collect())
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
