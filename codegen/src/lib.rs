//! Regatta's wire types and gRPC services, generated from `proto/` by
//! `cargo xtask codegen` into `src/generated/` (checked in, never edited by hand).
//!
//! Each proto package is re-exported under its own path, e.g.
//! `regatta_proto::regatta::v1::RangeRequest`.

/// Storage-level types: commands, key-value pairs, transactions.
pub mod mvcc {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        include!("generated/mvcc.v1.rs");
    }
}

/// The public KV API.
pub mod regatta {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        include!("generated/regatta.v1.rs");
    }
}

/// Cross-cluster replication: metadata, log and snapshot streams.
pub mod replication {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        include!("generated/replication.v1.rs");
    }
}

/// Operator tooling: backup, restore, reset.
pub mod maintenance {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        include!("generated/maintenance.v1.rs");
    }
}

/// Operator tooling of this implementation: replacing members; not part of
/// Regatta's API and not in [`FILE_DESCRIPTOR_SET`].
pub mod membership {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        include!("generated/membership.v1.rs");
    }
}

/// Writes a follower cluster forwards to the leader cluster, batched over
/// one stream; an extension of this implementation, not part of Regatta's
/// API and not in [`FILE_DESCRIPTOR_SET`].
pub mod forward {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod v1 {
        include!("generated/forward.v1.rs");
    }
}

/// Node-to-node transport of one cluster; not part of the public API and
/// not in [`FILE_DESCRIPTOR_SET`].
pub mod internal {
    pub mod raft {
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v1 {
            include!("generated/regatta.internal.raft.v1.rs");
        }
    }
}

/// What `cargo xtask bench` speaks besides our API: etcd's KV subset (its
/// package and field numbers) and a no-op service. Not part of Regatta's API
/// and not in [`FILE_DESCRIPTOR_SET`].
pub mod bench {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod etcd {
        include!("generated/etcdserverpb.rs");
    }
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod noop {
        include!("generated/regatta.bench.v1.rs");
    }
}

pub mod raw;

/// The encoded `google.protobuf.FileDescriptorSet` of every public proto file,
/// with comments; what gRPC reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/descriptor.bin");
