//! gRPC reflection as Regatta 0.5 serves it: both protocol versions
//! (`grpc.reflection.v1`, and `grpc.reflection.v1alpha`, which many tools,
//! grpcurl 1.8 among them, still ask for alone), over the public protos and
//! gRPC health only (the internal transport is not advertised). Each port
//! lists the services it serves, as a Go server's reflection does.

use tonic_reflection::server::{v1, v1alpha, Builder};

/// The KV API port's services (without the maintenance token).
pub const API_SERVICES: [&str; 2] = ["regatta.v1.KV", "grpc.health.v1.Health"];
/// What the API port adds when it serves the maintenance API.
pub const MAINTENANCE_SERVICES: [&str; 2] =
    ["maintenance.v1.Maintenance", "replication.v1.Metadata"];
/// The replication port's services.
pub const REPLICATION_SERVICES: [&str; 4] = [
    "replication.v1.Metadata",
    "replication.v1.Log",
    "replication.v1.Snapshot",
    // Follower clusters forward writes here (`features/follower_writes.feature`).
    "regatta.v1.KV",
];

/// The v1 and v1alpha reflection services, listing `served` (and
/// themselves).
#[allow(clippy::type_complexity)]
pub fn services(
    served: &[&str],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    String,
> {
    let builder = || {
        served.iter().fold(
            Builder::configure()
                .register_encoded_file_descriptor_set(regatta_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    Ok((v1, v1alpha))
}
