//! Who is asking and what they may do.
//!
//! - [`auth`]: credentials to a principal (users and robots in the
//!   metadata, application tokens, the node's operator token), with login
//!   throttling;
//! - [`jwt`]: the registry tokens of the Docker token flow;
//! - [`policy`]: what a principal may do to a repository or namespace;
//! - [`audit`]: the usage log, batched into the metadata;
//! - [`session`]: the web console's sign-in and its session tokens;
//! - [`api`]: the identity API (organizations, teams, robots, tokens,
//!   permissions, users) as the gateway's `Identity`.

pub mod api;
pub mod audit;
pub mod auth;
pub mod jwt;
pub mod ldap;
pub mod policy;
pub mod session;
