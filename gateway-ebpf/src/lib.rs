//! The programs live in `main.rs` (the binary linked by bpf-linker). This library target exists
//! so `gateway` can name the crate as a build-dependency, which makes cargo rebuild the gateway
//! when the eBPF sources change.
#![no_std]
