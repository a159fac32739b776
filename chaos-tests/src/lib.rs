//! Fault injection for berth: the chaos scenarios, and the WAN emulator the
//! benchmarks share.
//!
//! - [`wan`]: a userspace WAN (this kernel has no netem): per-link delay,
//!   jitter, bandwidth, loss and cuts for the TCP (Raft) and UDP (QUIC)
//!   traffic between nodes. Only loopback is ever addressed.
//! - [`cluster`]: real `berth` processes started through the CLI, placed in
//!   pretend regions behind the WAN, and the faults: SIGKILL, SIGSTOP,
//!   clean restarts, partitions, a full disk, remove and join.
//! - [`workload`]: clients pushing, moving tags, reading (linearizable and
//!   local), pulling and deleting through every node, recording a history.
//! - [`check`]: the checker (nothing acknowledged lost, linearizable tag
//!   reads, bytes match digests, convergence) and the summary table.
//! - [`scenario`]: the scenarios; `tests/matrix.rs` runs them.
//!
//! `BERTH_CHAOS_SECS` sets a run's length (CI default 15 s),
//! `BERTH_CHAOS_SEED` replays a run, `BERTH_CHAOS_ONLY` picks scenarios,
//! `BERTH_CHAOS_FULL=1` runs the whole matrix, `BERTH_CHAOS_RUNS` repeats it.

pub mod check;
pub mod cluster;
pub mod scenario;
pub mod wan;
pub mod workload;
