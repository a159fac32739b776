//! Fault injection for berth's multi-node tests and benchmarks.
//!
//! - [`wan`]: a userspace WAN emulator (this kernel has no netem): proxies
//!   that add latency to the TCP (Raft) and UDP (QUIC) traffic between
//!   nodes. Nodes advertise the proxy's address, so every byte between them
//!   crosses the emulated link. Only loopback is ever addressed.
//! - `tests/`: scenarios against real `berth` processes with a recorded
//!   history and a checker (today: the leader SIGKILLed during pushes).
//!   `BERTH_CHAOS_SECS` sets their length (CI default 15 s) and
//!   `BERTH_CHAOS_SEED` replays a run.

pub mod wan;
