//! Compiles `proto/` with the pure-Rust `protox` compiler (no `protoc` needed), generates the
//! tonic/prost code from the descriptor set, and writes descriptor sets to `OUT_DIR` for
//! reflection: one for the public API and one for AdminService, which reflection describes only
//! when the service is enabled.

use std::{env, path::PathBuf};

/// The public API and the operator API, each with its own descriptor set for reflection.
const FILES: [(&str, &str); 2] = [
    (
        "proto/readiness/v1/readiness.proto",
        "readiness_descriptor.bin",
    ),
    ("proto/readiness/v1/admin.proto", "admin_descriptor.bin"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    for (file, descriptor) in FILES {
        let mut compiler = protox::Compiler::new(["proto"])?;
        compiler.include_source_info(true).include_imports(true);
        compiler.open_files([file])?;
        std::fs::write(
            out_dir.join(descriptor),
            compiler.encode_file_descriptor_set(),
        )?;
    }

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(FILES.map(|(file, _)| file))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
