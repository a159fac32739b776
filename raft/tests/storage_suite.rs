//! openraft's own storage conformance suite, run against the RocksDB store.

use berth_raft::store::{RocksLogStore, RocksStateMachine};
use berth_raft::{RocksStore, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, RocksLogStore, RocksStateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, RocksLogStore, RocksStateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RocksStore::open(dir.path()).expect("open rocksdb");
        Ok((dir, store.log_store(), store.state_machine()))
    }
}

#[test]
fn openraft_storage_suite_passes_on_rocksdb() {
    Suite::test_all(RocksBuilder).expect("openraft storage suite");
}
