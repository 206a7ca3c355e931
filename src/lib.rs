//! Clavitor: a credential vault for AI agents.
//!
//! Agents read with scoped `cvt_` bearer tokens; only a human with a hardware key changes
//! anything. See ARCHITECTURE.md for the map of the modules below.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod edition;
pub mod mcp;
// Commercial only: the license envelope, validator and state machine (issue 15); `pub` so the
// vendor's minter crate verifies with the node's own code.
#[cfg(feature = "commercial")]
pub mod license;
pub mod node;
pub mod outbound;
pub mod proxy;
pub mod store;
pub mod vault;
pub mod web;
