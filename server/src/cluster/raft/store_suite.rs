//! openraft's own storage conformance suite over our RocksDB log store and
//! table state machine.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb};

use super::log_store::{GroupLogStore, LogDb};
use super::state_machine::GroupStateMachine;
use super::types::{StorageError, TypeConfig};
use crate::storage::{Storage, StorageOptions};

struct Builder;

impl StoreBuilder<TypeConfig, GroupLogStore, GroupStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, GroupLogStore, GroupStateMachine), StorageError> {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let log = LogDb::open(&dir.path().join("log")).expect("log db");
        let storage = Arc::new(
            Storage::open(&dir.path().join("sm"), &StorageOptions::default()).expect("storage"),
        );
        let (state_machine, _) = GroupStateMachine::open(
            storage,
            crate::storage::Space::User,
            b"suite",
            10001,
            Default::default(),
        )
        .map_err(|err| {
            StorageError::from_io_error(ErrorSubject::StateMachine, ErrorVerb::Write, err)
        })?;
        Ok((dir, log.group(10001), state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder).await
}
