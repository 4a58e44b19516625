//! A thin wrapper over `bpf(BPF_PROG_TEST_RUN)` for XDP programs (aya 0.14
//! has none): run a loaded program on a frame, get the action, the output
//! frame with its metadata and the kernel's average run time. Used by the
//! table tests and the benchmark; never by the running gateway.

use std::os::fd::{AsRawFd, BorrowedFd};

use thiserror::Error;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Room for metadata and `bpf_xdp_adjust_tail` growth in the output buffer.
const OUT_SLACK: usize = 256;

/// The `test` member of `union bpf_attr` (uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}
const _: () = assert!(size_of::<TestRunAttr>() == 80);

/// `struct xdp_md` as seen by the program (uapi/linux/bpf.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}
const _: () = assert!(size_of::<XdpMd>() == 24);

/// XDP actions (enum xdp_action).
pub mod action {
    pub const XDP_ABORTED: u32 = 0;
    pub const XDP_DROP: u32 = 1;
    pub const XDP_PASS: u32 = 2;
    pub const XDP_TX: u32 = 3;
    pub const XDP_REDIRECT: u32 = 4;

    /// The action's name, for messages.
    pub fn name(a: u32) -> &'static str {
        match a {
            XDP_ABORTED => "XDP_ABORTED",
            XDP_DROP => "XDP_DROP",
            XDP_PASS => "XDP_PASS",
            XDP_TX => "XDP_TX",
            XDP_REDIRECT => "XDP_REDIRECT",
            _ => "XDP_?",
        }
    }
}

/// One test run's input.
#[derive(Clone, Debug)]
pub struct TestRun<'a> {
    pub data: &'a [u8],
    /// 0 for no device; otherwise a real interface of this namespace.
    pub ingress_ifindex: u32,
    /// Must be 0 without an ingress interface.
    pub rx_queue_index: u32,
    /// Runs of the program; the kernel reports the mean duration.
    pub repeat: u32,
}

impl<'a> TestRun<'a> {
    /// The frame's length and the input context that describes it.
    fn input(&self) -> Result<(u32, XdpMd), TestRunError> {
        let len =
            u32::try_from(self.data.len()).map_err(|_| TestRunError::TooLarge(self.data.len()))?;
        let ctx = XdpMd {
            data: 0,
            data_end: len,
            data_meta: 0,
            ingress_ifindex: self.ingress_ifindex,
            rx_queue_index: self.rx_queue_index,
            egress_ifindex: 0,
        };
        Ok((len, ctx))
    }

    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            ingress_ifindex: 0,
            rx_queue_index: 0,
            repeat: 1,
        }
    }
}

/// One test run's result.
#[derive(Clone, Debug)]
pub struct TestRunOutput {
    /// The XDP action the program returned (last run).
    pub action: u32,
    /// Metadata the program placed in front of the frame
    /// (`bpf_xdp_adjust_meta`), empty if none.
    pub meta: Vec<u8>,
    /// The frame after the program.
    pub data: Vec<u8>,
    /// Mean nanoseconds per run, as measured by the kernel.
    pub duration_ns: u32,
}

#[derive(Debug, Error)]
pub enum TestRunError {
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    Syscall(#[source] std::io::Error),
    #[error("BPF_PROG_TEST_RUN returned an inconsistent context (data {data}, data_end {data_end}, output {len} bytes)")]
    BadContext {
        data: u32,
        data_end: u32,
        len: usize,
    },
    #[error("frame of {0} bytes is too large")]
    TooLarge(usize),
}

/// Runs the XDP program `prog` once per `run.repeat` on `run.data`.
pub fn run_xdp(prog: BorrowedFd<'_>, run: &TestRun<'_>) -> Result<TestRunOutput, TestRunError> {
    let (len, ctx_in) = run.input()?;
    let mut out = vec![0u8; run.data.len() + OUT_SLACK];
    let mut ctx_out = XdpMd::default();
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: len,
        data_size_out: out.len() as u32,
        data_in: run.data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: run.repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_size_out: size_of::<XdpMd>() as u32,
        ctx_in: &ctx_in as *const XdpMd as u64,
        ctx_out: &mut ctx_out as *mut XdpMd as u64,
        ..Default::default()
    };
    // SAFETY: attr points at live buffers whose sizes it states; the kernel
    // writes at most data_size_out / ctx_size_out bytes into them.
    unsafe { prog_test_run(&mut attr) }?;
    // The kernel copies from data_meta; ctx_out's offsets are relative to it.
    let out_len = (attr.data_size_out as usize).min(out.len());
    let (meta_len, end) = (ctx_out.data as usize, ctx_out.data_end as usize);
    if meta_len > end || end > out_len {
        return Err(TestRunError::BadContext {
            data: ctx_out.data,
            data_end: ctx_out.data_end,
            len: out_len,
        });
    }
    Ok(TestRunOutput {
        action: attr.retval,
        meta: out[..meta_len].to_vec(),
        data: out[meta_len..end].to_vec(),
        duration_ns: attr.duration,
    })
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: the kernel carries out the program's
/// verdict (a redirect really reaches its target, a pass enters the stack).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Runs `prog` on `run.data` `run.repeat` times in live-frame mode, in
/// batches of `batch_size` (1..=256): each run's frame is a fresh page and
/// the verdict is carried out as on a real receive queue of
/// `run.ingress_ifindex` (queue 0, the kernel's choice for live frames), so
/// an `XDP_REDIRECT` into an XSKMAP reaches the bound socket. Returns the
/// kernel's mean nanoseconds per run. The kernel reports no verdict and no
/// output frame in this mode: check the target (the socket's ring) instead.
pub fn run_xdp_live(
    prog: BorrowedFd<'_>,
    run: &TestRun<'_>,
    batch_size: u32,
) -> Result<u32, TestRunError> {
    let (len, ctx_in) = run.input()?;
    // Live mode refuses an output buffer or an output context.
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: len,
        data_in: run.data.as_ptr() as u64,
        repeat: run.repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &ctx_in as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    // SAFETY: attr points at live input buffers whose sizes it states; with
    // no output buffers the kernel writes only into attr.
    unsafe { prog_test_run(&mut attr) }?;
    Ok(attr.duration)
}

/// `BPF_PROG_TEST_RUN` with `attr`.
///
/// # Safety
/// Every pointer in `attr` must point at a live buffer of the size `attr`
/// states for it (or be null with a zero size).
unsafe fn prog_test_run(attr: &mut TestRunAttr) -> Result<(), TestRunError> {
    // SAFETY: the caller vouches for the buffers; attr itself is live.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(TestRunError::Syscall(std::io::Error::last_os_error()));
    }
    Ok(())
}
