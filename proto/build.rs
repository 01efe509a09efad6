//! Compiles the .proto files with protox (pure Rust, no protoc needed) and
//! generates the prost messages and tonic services.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/netverdict/v1/flow.proto",
    "proto/netverdict/v1/ingest.proto",
    "proto/netverdict/v1/observer.proto",
    "proto/netverdict/v1/query.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for gRPC reflection.
    std::fs::write(
        out.join("netverdict_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
