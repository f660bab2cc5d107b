//! `infra`: access to Kubernetes clusters through OpenID Connect.
//!
//! One crate, three roles (CLI, API server, connector). `api` is the wire
//! contract; `server` is the API server; `cli` holds the commands; `client`
//! speaks to the server; `local` owns this machine's files and keyring;
//! `edge` is the network edge the server and the connector share; `clock`
//! is every role's one "now".

pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod connector;
pub mod edge;
pub mod fsutil;
pub mod local;
pub mod login;
pub mod server;
pub mod shutdown;
pub mod tui;
pub mod web;
