//! authlog: an OpenID Connect provider whose whole state is an append-only event log.
//!
//! `main.rs` is a thin binary over this library: [`app::Application::build`]
//! opens the store and views and binds the listener, [`app::Application::run_until`]
//! serves until a shutdown signal. Tests start the server the same way.

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod http;
pub mod metrics;
pub mod oidc;
pub mod seal;
pub mod singleton;
pub mod sink;
pub mod store;
pub mod views;
