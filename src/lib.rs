//! authlog: an OpenID Connect provider whose whole state is an append-only event log.

pub mod store;
