//! Compiles the C probes in `bpf/` with clang (`-target bpf`, CO-RE) into
//! `$OUT_DIR`, where `src/loader.rs` embeds them with `include_bytes_aligned!`.

use std::path::PathBuf;
use std::process::Command;

/// The probe objects, each built from one `bpf/<name>.bpf.c`.
const PROBES: &[&str] = &["netverdict", "lab_tc_drop"];
/// Headers the probes include; a change to any of them rebuilds every probe.
const HEADERS: &[&str] = &["netverdict_events.h", "vmlinux_min.h"];

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let bpf = dir.join("bpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = std::env::var("NETVERDICT_CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=NETVERDICT_CLANG");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={}", bpf.join(h).display());
    }
    for name in PROBES {
        let src = bpf.join(format!("{name}.bpf.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let obj = out.join(format!("{name}.bpf.o"));
        let status = Command::new(&clang)
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-Wall",
            ])
            .arg("-I")
            .arg(&bpf)
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!(
                "clang failed ({s}) compiling {}; the probes need clang >= 14 and libbpf's headers \
                 (`apt-get install clang llvm libbpf-dev`)",
                src.display()
            ),
            Err(e) => panic!(
                "cannot run `{clang}` ({e}): install clang and libbpf's headers with \
                 `apt-get install clang llvm libbpf-dev` (or set NETVERDICT_CLANG)"
            ),
        }
    }
}
