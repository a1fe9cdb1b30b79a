//! Generates the Milvus gRPC client from `proto/` (Milvus's protocol files, Apache-2.0, see proto/README.md)
//! with the protoc binary shipped by `protoc-bin-vendored`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const FILES: [&str; 6] = ["common", "feder", "milvus", "msg", "rg", "schema"];
    for f in FILES {
        println!("cargo:rerun-if-changed=proto/{f}.proto");
    }
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY of set_var: build scripts are single-threaded.
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .build_server(false)
        // Milvus has an RPC named `Connect`, which would clash with the generated `connect` constructor.
        .build_transport(false)
        .compile_protos(&["proto/milvus.proto"], &["proto"])?;
    Ok(())
}
