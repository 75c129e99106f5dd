//! Rebuild the programs when the linker changes: the object depends on it as much as on the source.
use which::which;

fn main() {
    // The object is linked by bpf-linker (the bpfel-unknown-none target's default linker).
    // When this runs as a host build-dependency of `gateway`, bpf-linker needn't be on PATH.
    if let Ok(path) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
