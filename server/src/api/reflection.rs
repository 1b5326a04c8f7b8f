//! gRPC reflection as Regatta 0.5 serves it: both protocol versions
//! (`grpc.reflection.v1`, and `grpc.reflection.v1alpha`, which many tools,
//! grpcurl 1.8 among them, still ask for alone), over the public protos
//! only (the internal transport is not advertised).

use tonic_reflection::server::{v1, v1alpha, Builder};

/// The v1 and v1alpha reflection services.
#[allow(clippy::type_complexity)]
pub fn services() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    String,
> {
    let builder = || {
        Builder::configure()
            .register_encoded_file_descriptor_set(regatta_proto::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    Ok((v1, v1alpha))
}
