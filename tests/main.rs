//! authlog's integration tests: one binary (one link), each test with its own
//! temporary data directory and, where it needs one, its own server on port 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod audit;
mod browser;
mod cli;
mod clients;
mod cluster;
mod contract;
mod crash;
mod deploy;
mod interop;
mod kafka;
mod oidc;
mod schemas;
mod server;
mod sink;
mod tidy;
mod views;
