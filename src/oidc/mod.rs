//! OpenID Connect: the provider's flows over the log.
//!
//! `grant` and `request` are pure (decisions and validation); `runtime` holds
//! in-memory helpers that are never state of record; `service` is the shell that
//! reads views and streams, calls the deciders, seals secrets and appends;
//! `html` renders pages. The HTTP surface lives in `crate::http::oidc`.

pub mod grant;
pub mod html;
pub mod redirect_uri;
pub mod request;
pub mod runtime;
pub mod scopes;
pub mod service;
pub mod throttle;
pub mod tokens;
pub mod username;
