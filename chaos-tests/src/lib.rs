//! Fault injection for berth's multi-node tests and benchmarks.
//!
//! Today: [`wan`], a userspace WAN emulator (this kernel has no netem):
//! proxies that add latency to the TCP (Raft) and UDP (QUIC) traffic
//! between nodes. Nodes advertise the proxy's address, so every byte
//! between them crosses the emulated link. Only loopback is ever addressed.

pub mod wan;
