//! Shared helpers for the privileged tests: network namespaces that delete
//! themselves, running a closure inside one, and `ip` invocations.
#![allow(dead_code, reason = "each test binary uses a subset")]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop (even on panic).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("s2s-nio-{}-{tag}{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args...`, panicking with the output on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip netns exec NAME cmd args...`.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", self.name.as_str(), cmd];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Run `f` on a fresh thread that has entered this namespace; propagate its
    /// result or panic. The thread's sockets live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

/// Move the calling thread into the namespace at `path`.
pub fn enter(path: &str) {
    let f = File::open(path).expect("open netns");
    // SAFETY: setns on a valid namespace fd; only affects the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair `a`/`b` with one queue per side (AF_XDP
/// binds queue 0).
pub struct VethPair {
    pub a: NetNs,
    pub b: NetNs,
}

impl VethPair {
    pub fn new(tag: &str) -> Self {
        let a = NetNs::new(&format!("{tag}a"));
        let b = NetNs::new(&format!("{tag}b"));
        a.ip(&[
            "link",
            "add",
            "va",
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
            "netns",
            &b.name,
        ]);
        Self { a, b }
    }
}

/// Parse the MAC of `dev` from `ip -o link show`.
pub fn mac_of(ns: &NetNs, dev: &str) -> [u8; 6] {
    let out = ns.ip(&["-o", "link", "show", dev]);
    let idx = out.find("link/ether ").expect("ether") + "link/ether ".len();
    let mut mac = [0u8; 6];
    for (i, part) in out[idx..idx + 17].split(':').enumerate() {
        mac[i] = u8::from_str_radix(part, 16).expect("hex");
    }
    mac
}

/// A global allocator that counts allocations made by threads that opted in,
/// to prove hot paths allocate nothing (other test threads are not counted).
pub mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct Counting;

    static COUNT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
    }

    // SAFETY: forwards every call unchanged to the system allocator.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            if ON.with(Cell::get) {
                COUNT.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: same contract as our caller's.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: same contract as our caller's.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            if ON.with(Cell::get) {
                COUNT.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: same contract as our caller's.
            unsafe { System.realloc(p, l, n) }
        }
    }

    /// Run `f` with counting on for this thread; returns (result, allocations).
    pub fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let before = COUNT.load(Ordering::Relaxed);
        ON.with(|c| c.set(true));
        let r = f();
        ON.with(|c| c.set(false));
        // Other opted-in threads could add to COUNT too; tests opt in one thread at a time.
        (r, COUNT.load(Ordering::Relaxed) - before)
    }
}
