//! The data plane seen from userspace: loading and attaching the XDP
//! programs of `gateway-ebpf` and programming their maps ([`xdp`]), running
//! them on synthetic frames through BPF_PROG_TEST_RUN ([`test_run`]), and the
//! one place where test and benchmark frames are built ([`packet`]). Crypto
//! and the AF_XDP workers live elsewhere; this module only talks to the
//! kernel's BPF side.

pub mod backend;
pub mod packet;
pub mod slowpath;
pub mod test_run;
pub mod worker;
pub mod xdp;

/// The compiled `gateway-ebpf` object (built by build.rs), 8-byte aligned as
/// the ELF parser wants.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf.o"));
