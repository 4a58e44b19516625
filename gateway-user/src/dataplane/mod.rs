//! The data plane seen from userspace. Kernel side: loading and attaching
//! the XDP programs of `gateway-ebpf` and programming their maps ([`xdp`]),
//! running them on synthetic frames through BPF_PROG_TEST_RUN
//! ([`test_run`]), and the one place where test and benchmark frames are
//! built ([`packet`]). User side: the agent-facing backend that keeps the SA
//! table and the maps in step ([`backend`]), the writers of the route
//! tables that `lan_ingress` reads ([`routes`]) and of the inbound SA
//! slots `wan_ingress` reads ([`sa_slots`]), the AF_XDP workers
//! ([`worker`]), the TUN slow path ([`slowpath`]), and packet sizes through
//! a tunnel: inner MTU, MSS clamping, ICMP too-big errors ([`mtu`]).

pub mod backend;
pub mod drop_events;
pub mod mtu;
/// Test frame builders (tests, fuzzing and the benchmarks).
#[cfg(feature = "testing")]
pub mod packet;
pub mod police;
pub mod routes;
pub mod sa_slots;
pub mod slowpath;
/// `BPF_PROG_TEST_RUN` for the XDP programs (tests and the benchmarks).
#[cfg(feature = "testing")]
pub mod test_run;
/// A harness of the worker pipeline for tests and fuzzing.
#[cfg(feature = "testing")]
pub mod testing;
pub mod worker;
pub mod xdp;

/// The compiled `gateway-ebpf` object (built by build.rs), 8-byte aligned as
/// the ELF parser wants.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf.o"));
