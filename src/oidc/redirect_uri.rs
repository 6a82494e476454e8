//! Redirect URIs a client may register (RFC 6749 §3.1.2, RFC 8252, RFC 9700
//! §4.1): absolute, no fragment, no user information, a real host and port;
//! web clients on https; native clients on https, a loopback IP literal
//! (RFC 8252 §7.3) or a private-use scheme in reverse-DNS form (§7.1).
//!
//! On a developer's machine — the issuer itself is `http://` on a loopback
//! address — web clients may also use `http://localhost`, `http://127.0.0.1`
//! and `http://[::1]`, which every framework's quick start registers. Never
//! with an https issuer.

use std::net::{IpAddr, Ipv6Addr};

/// The parts of an absolute URI with an authority.
struct Authority<'a> {
    scheme: &'a str,
    host: Host<'a>,
    port: Option<u16>,
}

#[derive(Debug, PartialEq, Eq)]
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

impl Host<'_> {
    fn is_loopback_ip(&self) -> bool {
        matches!(self, Host::Ip(ip) if ip.is_loopback())
    }
}

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

fn valid_scheme(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// A DNS name: labels of letters, digits and inner hyphens, 1 to 63 each.
fn valid_dns_name(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_authority<'a>(
    uri: &'a str,
    scheme: &'a str,
    rest: &'a str,
) -> Result<Authority<'a>, String> {
    let after = rest
        .strip_prefix("//")
        .ok_or_else(|| format!("{}: not an absolute URI with a host", clip(uri)))?;
    let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
    if authority.contains('@') {
        return Err(format!(
            "{}: redirect URIs cannot carry user information",
            clip(uri)
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, tail) = v6
            .split_once(']')
            .ok_or_else(|| format!("{}: unterminated IPv6 address", clip(uri)))?;
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("{}: {addr} is not an IPv6 address", clip(uri)))?;
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or_else(|| format!("{}: bad authority", clip(uri)))?,
            ),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (h, p) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let host = match h.parse::<std::net::Ipv4Addr>() {
            Ok(v4) => Host::Ip(IpAddr::V4(v4)),
            Err(_) if valid_dns_name(h) => Host::Name(h),
            Err(_) => {
                return Err(format!(
                    "{}: {} is not a valid host name",
                    clip(uri),
                    clip(h)
                ));
            }
        };
        (host, p)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                return Err(format!(
                    "{}: the port must be a number from 1 to 65535",
                    clip(uri)
                ));
            }
        },
    };
    Ok(Authority { scheme, host, port })
}

/// Checks a redirect URI for a client of `application_type` (`web` or
/// `native`). `dev_loopback`: the issuer is `http://` on a loopback address.
pub fn check(uri: &str, application_type: &str, dev_loopback: bool) -> Result<(), String> {
    if uri.len() > 2000 {
        return Err("redirect URIs are at most 2000 characters".into());
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{}: spaces and control characters are not allowed",
            clip(uri.trim())
        ));
    }
    if uri.contains('#') {
        return Err(format!(
            "{}: redirect URIs cannot have a fragment",
            clip(uri)
        ));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!("{}: not an absolute URI", clip(uri)));
    };
    if !valid_scheme(scheme) {
        return Err(format!("{}: not an absolute URI", clip(uri)));
    }
    let scheme_lower = scheme.to_ascii_lowercase();
    if scheme_lower == "https" || scheme_lower == "http" {
        let a = parse_authority(uri, scheme, rest)?;
        let _ = a.port;
        if a.scheme == "https" {
            return Ok(());
        }
        if a.scheme != "http" {
            return Err(format!("{}: write the scheme in lower case", clip(uri)));
        }
        let localhost = matches!(a.host, Host::Name(n) if n.eq_ignore_ascii_case("localhost"));
        return match application_type {
            // Loopback redirects are for apps on the user's device (RFC 8252 §7.3).
            "native" if a.host.is_loopback_ip() => Ok(()),
            "native" if localhost => Err(format!(
                "{}: use http://127.0.0.1 or http://[::1] rather than localhost (RFC 8252 §8.3)",
                clip(uri)
            )),
            "web" if dev_loopback && (a.host.is_loopback_ip() || localhost) => Ok(()),
            "web" if a.host.is_loopback_ip() || localhost => Err(format!(
                "{}: web clients use https redirect URIs (http on loopback only while the issuer itself is http on loopback, a developer's machine)",
                clip(uri)
            )),
            "web" => Err(format!(
                "{}: web clients use https redirect URIs",
                clip(uri)
            )),
            _ => Err(format!(
                "{}: native clients use https, a loopback IP literal or a private-use scheme",
                clip(uri)
            )),
        };
    }
    // A private-use URI scheme (RFC 8252 §7.1): a reverse domain name such as
    // com.example.app, for native clients only.
    if application_type != "native" {
        return Err(format!(
            "{}: not an allowed redirect URI for a {application_type} client",
            clip(uri)
        ));
    }
    let reverse_dns = scheme.contains('.') && valid_dns_name(scheme);
    if !reverse_dns {
        return Err(format!(
            "{}: private-use schemes are reverse domain names such as com.example.app (RFC 8252 §7.1)",
            clip(uri)
        ));
    }
    if rest.starts_with("//") {
        // An authority after a private-use scheme must still be well formed.
        parse_authority(uri, scheme, rest)?;
    }
    Ok(())
}

/// Whether an issuer is a developer's: `http://` on a loopback address.
pub fn is_dev_issuer(issuer: &str) -> bool {
    let Some(rest) = issuer.strip_prefix("http://") else {
        return false;
    };
    parse_authority(issuer, "http", &format!("//{rest}"))
        .map(|a| {
            a.host.is_loopback_ip()
                || matches!(a.host, Host::Name(n) if n.eq_ignore_ascii_case("localhost"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_and_native_rules() {
        assert!(check("https://app.example/cb", "web", false).is_ok());
        assert!(check("https://app.example:8443/cb?x=1", "web", false).is_ok());
        assert!(check("http://127.0.0.1:8000/cb", "web", false).is_err());
        assert!(check("http://127.0.0.1:8000/cb", "native", false).is_ok());
        assert!(check("http://[::1]/cb", "native", false).is_ok());
        assert!(check("http://127.0.0.1:80@evil.example/cb", "native", false).is_err());
        assert!(check("https://user@app.example/cb", "web", false).is_err());
        assert!(check("https://app.example/c b", "web", false).is_err());
        assert!(check("com.example.app:/oauth2redirect", "native", false).is_ok());
        assert!(check("http://app.example/cb", "web", false).is_err());
        assert!(check("http://localhost:3000/cb", "native", false).is_err());
        assert!(check("https://app.example/cb#x", "web", false).is_err());
        assert!(check("/relative", "web", false).is_err());
        assert!(check("com.example.app:/cb", "web", false).is_err());
        assert!(check("http://127.0.0.1.evil.example/cb", "native", false).is_err());
    }

    #[test]
    fn hosts_and_ports_must_be_real() {
        for bad in [
            "https://*.example.com/cb",
            "https://app.example:99999/cb",
            "https://app.example:0/cb",
            "https://app.example:/cb",
            "https://app.example:+80/cb",
            "https:///cb",
            "https://-app.example/cb",
            "https://app..example/cb",
            "https://app_example.com/cb",
            "https://[::1/cb",
            "https://[not-v6]/cb",
            "https://app%2eexample/cb",
        ] {
            assert!(check(bad, "web", false).is_err(), "{bad} accepted");
        }
        assert!(check("https://[2001:db8::1]:443/cb", "web", false).is_ok());
        assert!(check("https://192.0.2.1/cb", "web", false).is_ok());
    }

    #[test]
    fn private_use_schemes_are_reverse_domain_names() {
        assert!(check("myapp:/cb", "native", false).is_err());
        assert!(check("com.example.app:/cb", "native", false).is_ok());
        assert!(check("com..example:/cb", "native", false).is_err());
        assert!(check("com.example-.app:/cb", "native", false).is_err());
        assert!(check("com.example.app://host:0/cb", "native", false).is_err());
    }

    #[test]
    fn a_developers_issuer_allows_loopback_web_clients() {
        assert!(is_dev_issuer("http://127.0.0.1:8080/oidc"));
        assert!(is_dev_issuer("http://localhost:8080/oidc"));
        assert!(is_dev_issuer("http://[::1]:8080"));
        assert!(!is_dev_issuer("https://127.0.0.1:8080/oidc"));
        assert!(!is_dev_issuer("http://id.example/oidc"));
        for uri in [
            "http://localhost:3000/callback",
            "http://127.0.0.1:3000/callback",
            "http://[::1]:3000/callback",
        ] {
            assert!(check(uri, "web", true).is_ok(), "{uri}");
            assert!(check(uri, "web", false).is_err(), "{uri}");
        }
        assert!(check("http://app.example/cb", "web", true).is_err());
    }
}
