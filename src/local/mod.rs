//! This machine's state for the CLI: the config file (which servers this
//! machine is logged in to, as whom, until when, and which certificate it
//! trusts for each) and the credential store that keeps each server's access
//! key in the OS keyring, or in a private file when there is no keyring.
//! It also owns the exec plugin's token cache (and the clock it reads), the
//! kubeconfig entries and the file locks. Nothing here talks to the
//! network: it is the part of the CLI that knows where things live on disk
//! and in the keyring, so the commands don't.

pub use crate::clock;
pub mod config;
pub mod credentials;
pub mod kubeconfig;
pub mod lock;
pub mod token_cache;
