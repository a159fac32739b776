//! Repository mirroring's work: the upstream client and the sync worker.
//! What a configuration may say and the password's sealing are
//! [`crate::mirror_config`]; the API is `identity::api::mirror`.
//!
//! - [`upstream`]: the client of the upstream registry;
//! - [`sync`]: the worker every node runs, syncing under a lease.

pub mod sync;
pub mod upstream;
