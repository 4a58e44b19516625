//! The writers of the route tables that `lan_ingress` reads, written in
//! place while the data path reads them.
//!
//! IPv4 ([`Route4Table`]): DIR-24-8 over two BPF array maps (layout and
//! entry encoding in `gateway_common::route4`), written through `mmap`.
//!
//! IPv6 ([`Route6Lengths`]): the prefixes go into one BPF hash map keyed
//! by (length, prefix) (`gateway_common::route6`), written by the caller;
//! this keeps the bitmap of the lengths in use, set after a length's first
//! prefix is in and cleared after its last is out.
//!
//! IPv4 in detail.
//!
//! The update rules are those of DPDK's `rte_lpm`: every entry carries the
//! prefix length of the route it holds, so a route overwrites exactly the
//! entries whose route is shorter than itself, and a removed route's
//! entries fall back to the longest remaining prefix that covers it. A
//! reader never sees a half-written table because every change is a
//! sequence of single aligned 4-byte stores, each of which leaves a
//! correct table for the addresses it covers: a new group is filled before
//! the `TBL24` entry that names it is written (release ordering), and a
//! group that is unlinked is not reused before [`GROUP_GRACE`] has passed,
//! so a lookup that read the old `TBL24` entry still finds its group
//! intact. The daemon keeps the set of prefixes itself (the maps hold only
//! what the lookups need).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gateway_common::route4::{
    decode, group, route, GROUP, TBL8_GROUPS, TBL8_GROUP_ENTRIES, VALID, VALUE_MASK,
};

/// How long an unlinked group stays unused: far longer than any lookup
/// (an XDP program runs for one packet inside an RCU read section).
pub const GROUP_GRACE: Duration = Duration::from_secs(1);

/// Storage of one level of the table: the mapped BPF array, or a vector in
/// unit tests.
pub trait Cells {
    fn get(&self, i: usize) -> u32;
    /// One aligned 4-byte store, ordered after every store before it.
    fn set(&mut self, i: usize, v: u32);
}

impl Cells for Vec<u32> {
    fn get(&self, i: usize) -> u32 {
        self[i]
    }
    fn set(&mut self, i: usize, v: u32) {
        self[i] = v;
    }
}

/// A BPF array map mapped into this process (`BPF_F_MMAPABLE`) and seen as
/// `u32` entries (two per 8-byte element, `route4::ENTRIES_PER_ELEMENT`)
/// or as its `u64` elements.
pub struct MappedArray {
    ptr: *mut AtomicU32,
    len: usize,
}

// SAFETY: the mapping is owned by this value; access goes through atomics.
unsafe impl Send for MappedArray {}
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Maps the first `len` 4-byte entries of the array map `fd`, shared
    /// with the kernel.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let bytes = len * 4;
        // SAFETY: a fresh shared mapping of the map's memory; the kernel
        // checks the size against the map and keeps the map alive while
        // it is mapped.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Element `i` of the array seen as `u64` elements.
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(2 * i + 1 < self.len, "word {i} out of {}", self.len / 2);
        // SAFETY: in bounds (checked above) of a live, page-aligned mapping.
        unsafe { &*self.ptr.cast::<AtomicU64>().add(i) }
    }

    fn cell(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.len, "route table index {i} out of {}", self.len);
        // SAFETY: in bounds (checked above) of a live, 4-byte aligned
        // (page-aligned start) mapping.
        unsafe { &*self.ptr.add(i) }
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 4) };
    }
}

impl Cells for MappedArray {
    fn get(&self, i: usize) -> u32 {
        self.cell(i).load(Ordering::Relaxed)
    }
    fn set(&mut self, i: usize, v: u32) {
        self.cell(i).store(v, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Route4Error {
    #[error("IPv4 prefix length {0} is longer than 32")]
    BadLength(u8),
    #[error("tunnel id {0} does not fit a route entry")]
    BadTunnel(u32),
}

/// The IPv4 route table and the prefixes it was built from.
pub struct Route4Table<C> {
    tbl24: C,
    tbl8: C,
    /// Per prefix length: prefix (host order, host bits zero) → tunnel id.
    prefixes: Vec<HashMap<u32, u32>>,
    /// Groups never used yet start at `next_group`; freed ones wait in
    /// `freed` for their grace period.
    next_group: u32,
    groups: u32,
    freed: VecDeque<(u32, Instant)>,
    grace: Duration,
    /// /24s (by number, address >> 8) left to the kernel for want of a
    /// group: their `TBL24` entry is 0 whatever the routes say.
    punted: BTreeSet<u32>,
}

impl<C: Cells> Route4Table<C> {
    /// A table over zeroed storage with room for `groups` groups.
    pub fn new(tbl24: C, tbl8: C, groups: u32) -> Self {
        Self {
            tbl24,
            tbl8,
            prefixes: vec![HashMap::new(); 33],
            next_group: 0,
            groups: groups.min(TBL8_GROUPS),
            freed: VecDeque::new(),
            grace: GROUP_GRACE,
            punted: BTreeSet::new(),
        }
    }

    /// How many prefixes the table holds.
    pub fn len(&self) -> usize {
        self.prefixes.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Groups the table has room for.
    pub fn groups(&self) -> u32 {
        self.groups
    }

    /// Groups in use (linked from `TBL24`).
    pub fn groups_in_use(&self) -> u32 {
        self.next_group - self.freed.len() as u32
    }

    /// /24s left to the kernel because no group was free for them.
    pub fn punted(&self) -> usize {
        self.punted.len()
    }

    /// Routes `prefix/len` into `tunnel_id`, replacing any route of that
    /// prefix. A prefix longer than /24 in a /24 that has no group yet
    /// takes one; when none is free, that /24 is left to the kernel (its
    /// entry says "no route", so `lan_ingress` passes its packets and the
    /// kernel routes them through the tunnel's TUN by the same routes) and
    /// gets its group back at a later change once one is free. The fast
    /// path never steers a packet where the routes do not send it. On
    /// error the table is unchanged.
    pub fn insert(&mut self, prefix: Ipv4Addr, len: u8, tunnel_id: u32) -> Result<(), Route4Error> {
        if len > 32 {
            return Err(Route4Error::BadLength(len));
        }
        if tunnel_id > VALUE_MASK {
            return Err(Route4Error::BadTunnel(tunnel_id));
        }
        self.restore_punted();
        let p = masked(prefix, len);
        let new = route(tunnel_id, len);
        self.prefixes[len as usize].insert(p, tunnel_id);
        let take = |e: u32| covered(e, len).then_some(new);
        if len <= 24 {
            self.rewrite_span(p, len, take);
            return Ok(());
        }
        let i = (p >> 8) as usize;
        if self.punted.contains(&(i as u32)) {
            return Ok(());
        }
        let e = self.tbl24.get(i);
        let base = if e & GROUP != 0 {
            group_base(e)
        } else {
            let Some(g) = self.alloc_group() else {
                self.tbl24.set(i, 0);
                self.punted.insert(i as u32);
                // Once, then at each doubling: a peer announcing many long
                // prefixes must not flood the log.
                let n = self.punted.len();
                if n.is_power_of_two() {
                    tracing::warn!(
                        prefix = %Ipv4Addr::from(p), len, groups = self.groups,
                        waiting = self.freed.len(), slow_24s = n,
                        "IPv4 route table full: /24s without a group are left to the kernel (slow path) until one is free; raise datapath.route_groups_v4"
                    );
                }
                return Ok(());
            };
            // Filled with what the /24 answers today, then linked.
            let base = (g * TBL8_GROUP_ENTRIES) as usize;
            for j in base..base + TBL8_GROUP_ENTRIES as usize {
                self.tbl8.set(j, e);
            }
            self.tbl24.set(i, group(g));
            base
        };
        let first = base + (p & 0xff) as usize;
        self.rewrite_tbl8(first..first + (1usize << (32 - len)), &take);
        Ok(())
    }

    /// Whether `TBL24` entry `i` is left to the kernel.
    fn is_punted(&self, i: usize) -> bool {
        !self.punted.is_empty() && self.punted.contains(&(i as u32))
    }

    /// Over the entries `p/len` (at most /24) spans, in both levels (the
    /// /24s left to the kernel excepted), writes `f(e)` over each entry
    /// `e` for which it is `Some`.
    fn rewrite_span(&mut self, p: u32, len: u8, f: impl Fn(u32) -> Option<u32>) {
        for i in tbl24_span(p, len) {
            if self.is_punted(i) {
                continue;
            }
            let e = self.tbl24.get(i);
            if e & GROUP != 0 {
                let base = group_base(e);
                self.rewrite_tbl8(base..base + TBL8_GROUP_ENTRIES as usize, &f);
            } else if let Some(v) = f(e) {
                self.tbl24.set(i, v);
            }
        }
    }

    /// [`Self::rewrite_span`] over a range of `TBL8`.
    fn rewrite_tbl8(&mut self, range: std::ops::Range<usize>, f: &impl Fn(u32) -> Option<u32>) {
        for j in range {
            if let Some(v) = f(self.tbl8.get(j)) {
                self.tbl8.set(j, v);
            }
        }
    }

    /// Removes the route of `prefix/len` (absent: nothing happens); its
    /// addresses fall back to the longest remaining prefix that covers it.
    pub fn remove(&mut self, prefix: Ipv4Addr, len: u8) -> Result<(), Route4Error> {
        if len > 32 {
            return Err(Route4Error::BadLength(len));
        }
        self.restore_punted();
        let p = masked(prefix, len);
        if self.prefixes[len as usize].remove(&p).is_none() {
            return Ok(());
        }
        let fallback = self.covering(p, len).map_or(0, |(t, l)| route(t, l));
        // The entries this prefix holds: its length, inside its span.
        let mine = |e: u32| decode(e).is_some_and(|(_, d)| d == len).then_some(fallback);
        if len <= 24 {
            self.rewrite_span(p, len, mine);
            return Ok(());
        }
        let i = (p >> 8) as usize;
        if self.punted.contains(&(i as u32)) {
            // Its last long prefix gone, the /24 needs no group any more.
            if !self.has_long_prefixes(i as u32) {
                self.punted.remove(&(i as u32));
                let whole = self.covering(p, 25).map_or(0, |(t, l)| route(t, l));
                self.tbl24.set(i, whole);
            }
            return Ok(());
        }
        let e = self.tbl24.get(i);
        debug_assert!(e & GROUP != 0, "a /{len} without its group");
        if e & GROUP == 0 {
            return Ok(());
        }
        let base = group_base(e);
        let first = base + (p & 0xff) as usize;
        self.rewrite_tbl8(first..first + (1usize << (32 - len)), &mine);
        // No prefix longer than /24 left in this /24: every entry of the
        // group holds the same route, which the TBL24 entry takes back
        // before the group is freed.
        let whole = self.tbl8.get(base);
        if (base..base + TBL8_GROUP_ENTRIES as usize).all(|j| self.tbl8.get(j) == whole)
            && decode(whole).is_none_or(|(_, d)| d <= 24)
        {
            self.tbl24.set(i, whole);
            self.freed
                .push_back(((base / TBL8_GROUP_ENTRIES as usize) as u32, Instant::now()));
        }
        Ok(())
    }

    /// Whether /24 number `i` holds a prefix longer than /24.
    fn has_long_prefixes(&self, i: u32) -> bool {
        (25..=32u8).any(|len| {
            let step = 1u32 << (32 - len);
            (0..256 / step)
                .any(|k| self.prefixes[len as usize].contains_key(&((i << 8) | (k * step))))
        })
    }

    /// Gives punted /24s their group back while groups are free: built
    /// from the prefixes (the covering route, then the longer prefixes by
    /// length), then linked.
    fn restore_punted(&mut self) {
        while let Some(&i) = self.punted.first() {
            let Some(g) = self.alloc_group() else { return };
            let base = (g * TBL8_GROUP_ENTRIES) as usize;
            let whole = self.covering(i << 8, 25).map_or(0, |(t, l)| route(t, l));
            for j in base..base + TBL8_GROUP_ENTRIES as usize {
                self.tbl8.set(j, whole);
            }
            for len in 25..=32u8 {
                let step = 1u32 << (32 - len);
                for k in 0..256 / step {
                    if let Some(&t) = self.prefixes[len as usize].get(&((i << 8) | (k * step))) {
                        let first = base + (k * step) as usize;
                        let new = route(t, len);
                        self.rewrite_tbl8(first..first + step as usize, &|e| {
                            covered(e, len).then_some(new)
                        });
                    }
                }
            }
            self.tbl24.set(i as usize, group(g));
            self.punted.remove(&i);
        }
    }

    /// The route `lan_ingress` would find for `addr`: (tunnel id, prefix
    /// length), read from the table itself.
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<(u32, u8)> {
        let a = u32::from(addr);
        let mut e = self.tbl24.get((a >> 8) as usize);
        if e & GROUP != 0 {
            e = self.tbl8.get(group_base(e) + (a & 0xff) as usize);
        }
        decode(e)
    }

    /// The longest prefix shorter than `len` that covers `p`.
    fn covering(&self, p: u32, len: u8) -> Option<(u32, u8)> {
        (0..len).rev().find_map(|l| {
            self.prefixes[l as usize]
                .get(&masked(Ipv4Addr::from(p), l))
                .map(|&t| (t, l))
        })
    }

    /// A free group: never used, or freed more than the grace ago.
    fn alloc_group(&mut self) -> Option<u32> {
        if let Some(&(g, at)) = self.freed.front() {
            if at.elapsed() >= self.grace {
                self.freed.pop_front();
                return Some(g);
            }
        }
        if self.next_group < self.groups {
            self.next_group += 1;
            return Some(self.next_group - 1);
        }
        None
    }
}

/// The bitmap words of `ROUTES_V6_LENGTHS`: the mapped array, or an array
/// in unit tests.
pub trait Words {
    fn word(&self, i: usize) -> u64;
    /// One aligned 8-byte store, ordered after every store before it
    /// (and so after the hash map update that preceded it).
    fn set_word(&mut self, i: usize, v: u64);
}

impl Words for [u64; 3] {
    fn word(&self, i: usize) -> u64 {
        self[i]
    }
    fn set_word(&mut self, i: usize, v: u64) {
        self[i] = v;
    }
}

impl Words for MappedArray {
    fn word(&self, i: usize) -> u64 {
        MappedArray::word(self, i).load(Ordering::Relaxed)
    }
    fn set_word(&mut self, i: usize, v: u64) {
        MappedArray::word(self, i).store(v, Ordering::Release);
    }
}

/// The IPv6 prefixes installed and the bitmap of their lengths.
pub struct Route6Lengths<W> {
    words: W,
    /// Prefixes per length.
    counts: [u32; 129],
    /// Every prefix installed (host bits zero), to tell a new prefix from
    /// a replaced route.
    prefixes: HashSet<(u128, u8)>,
}

impl<W: Words> Route6Lengths<W> {
    /// Over zeroed words.
    pub fn new(words: W) -> Self {
        Self {
            words,
            counts: [0; 129],
            prefixes: HashSet::new(),
        }
    }

    /// After `prefix/len` went into the hash map: its length's bit is set.
    pub fn inserted(&mut self, prefix: u128, len: u8) {
        let len = len.min(128);
        if self.prefixes.insert((prefix, len)) {
            self.counts[len as usize] += 1;
            if self.counts[len as usize] == 1 {
                let (i, bit) = (len as usize / 64, len % 64);
                self.words.set_word(i, self.words.word(i) | 1 << bit);
            }
        }
    }

    /// After `prefix/len` left the hash map: its length's bit is cleared
    /// if it was the last of that length.
    pub fn removed(&mut self, prefix: u128, len: u8) {
        let len = len.min(128);
        if self.prefixes.remove(&(prefix, len)) {
            self.counts[len as usize] -= 1;
            if self.counts[len as usize] == 0 {
                let (i, bit) = (len as usize / 64, len % 64);
                self.words.set_word(i, self.words.word(i) & !(1 << bit));
            }
        }
    }

    /// How many prefixes are installed.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The lengths in use, longest first: the order a lookup probes them.
    pub fn lengths(&self) -> Vec<u8> {
        (0..=128u8)
            .rev()
            .filter(|&l| self.words.word(l as usize / 64) & 1 << (l % 64) != 0)
            .collect()
    }
}

/// The prefix's address in host order with its host bits cleared.
fn masked(prefix: Ipv4Addr, len: u8) -> u32 {
    let a = u32::from(prefix);
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - len as u32))
    }
}

/// The `TBL24` entries of the prefix `p/len` (at most /24).
fn tbl24_span(p: u32, len: u8) -> std::ops::Range<usize> {
    let first = (p >> 8) as usize;
    first..first + (1usize << (24 - len))
}

fn group_base(e: u32) -> usize {
    ((e & VALUE_MASK) * TBL8_GROUP_ENTRIES) as usize
}

/// Whether a route of `len` bits takes an entry: it is empty or holds a
/// route no longer than `len`.
fn covered(e: u32, len: u8) -> bool {
    e & VALID == 0 || decode(e).is_some_and(|(_, d)| d <= len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::route4::TBL24_ENTRIES;

    fn table(groups: u32) -> Route4Table<Vec<u32>> {
        Route4Table::new(
            vec![0; TBL24_ENTRIES as usize],
            vec![0; (groups * TBL8_GROUP_ENTRIES) as usize],
            groups,
        )
    }

    /// Longest-prefix match over the prefix sets: the reference.
    fn reference(t: &Route4Table<Vec<u32>>, a: Ipv4Addr) -> Option<(u32, u8)> {
        (0..=32u8)
            .rev()
            .find_map(|l| t.prefixes[l as usize].get(&masked(a, l)).map(|&v| (v, l)))
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_in_both_levels_and_removal_falls_back() {
        let mut t = table(4);
        t.insert(ip("10.0.0.0"), 8, 1).unwrap();
        t.insert(ip("10.1.2.0"), 24, 2).unwrap();
        t.insert(ip("10.1.2.128"), 25, 3).unwrap();
        t.insert(ip("10.1.2.200"), 32, 4).unwrap();
        assert_eq!(t.lookup(ip("10.9.9.9")), Some((1, 8)));
        assert_eq!(t.lookup(ip("10.1.2.1")), Some((2, 24)));
        assert_eq!(t.lookup(ip("10.1.2.129")), Some((3, 25)));
        assert_eq!(t.lookup(ip("10.1.2.200")), Some((4, 32)));
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
        assert_eq!(t.groups_in_use(), 1);
        // A shorter prefix added later does not override longer ones.
        t.insert(ip("10.1.0.0"), 16, 5).unwrap();
        assert_eq!(t.lookup(ip("10.1.2.200")), Some((4, 32)));
        assert_eq!(t.lookup(ip("10.1.3.1")), Some((5, 16)));
        t.remove(ip("10.1.2.0"), 24).unwrap();
        assert_eq!(t.lookup(ip("10.1.2.1")), Some((5, 16)));
        assert_eq!(t.lookup(ip("10.1.2.129")), Some((3, 25)));
        t.remove(ip("10.1.2.200"), 32).unwrap();
        assert_eq!(t.lookup(ip("10.1.2.200")), Some((3, 25)));
        t.remove(ip("10.1.2.128"), 25).unwrap();
        // Nothing longer than /24 left: the group is unlinked and freed.
        assert_eq!(t.groups_in_use(), 0);
        assert_eq!(t.tbl24[0x0a0102], route(5, 16));
        assert_eq!(t.lookup(ip("10.1.2.200")), Some((5, 16)));
        t.remove(ip("10.1.0.0"), 16).unwrap();
        t.remove(ip("10.0.0.0"), 8).unwrap();
        assert!(t.is_empty());
        assert!(t.tbl24.iter().all(|&e| e == 0));
    }

    #[test]
    fn v6_length_bits_follow_the_first_and_last_prefix_of_each_length() {
        let mut l = Route6Lengths::new([0u64; 3]);
        let p = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        l.inserted(p("2001:db8:1::"), 48);
        l.inserted(p("2001:db8:2::"), 48);
        l.inserted(p("2001:db8:2::"), 48); // a replaced route
        l.inserted(p("::"), 0);
        l.inserted(p("2001:db8::1"), 128);
        l.inserted(p("2001:db8::"), 64);
        assert_eq!(l.lengths(), vec![128, 64, 48, 0]);
        assert_eq!(l.words, [1 | 1 << 48, 1, 1]);
        assert_eq!(l.len(), 5);
        l.removed(p("2001:db8:1::"), 48);
        assert_eq!(l.lengths(), vec![128, 64, 48, 0], "one /48 is left");
        l.removed(p("2001:db8:9::"), 48); // never installed
        l.removed(p("2001:db8:2::"), 48);
        l.removed(p("2001:db8::1"), 128);
        assert_eq!(l.lengths(), vec![64, 0]);
        l.removed(p("2001:db8::"), 64);
        l.removed(p("::"), 0);
        assert!(l.is_empty());
        assert_eq!(l.words, [0; 3]);
    }

    #[test]
    fn default_route_and_host_bits_and_replacement() {
        let mut t = table(2);
        t.insert(ip("0.0.0.0"), 0, 7).unwrap();
        assert_eq!(t.lookup(ip("198.51.100.1")), Some((7, 0)));
        // Host bits are ignored; the same prefix again replaces its route.
        t.insert(ip("198.51.100.77"), 24, 8).unwrap();
        t.insert(ip("198.51.100.0"), 24, 9).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(ip("198.51.100.1")), Some((9, 24)));
        t.remove(ip("198.51.100.3"), 24).unwrap();
        assert_eq!(t.lookup(ip("198.51.100.1")), Some((7, 0)));
        // Absent prefixes and bad input.
        t.remove(ip("192.0.2.0"), 24).unwrap();
        assert_eq!(
            t.insert(ip("1.2.3.4"), 33, 1),
            Err(Route4Error::BadLength(33))
        );
        assert_eq!(
            t.insert(ip("1.2.3.4"), 32, VALUE_MASK + 1),
            Err(Route4Error::BadTunnel(VALUE_MASK + 1))
        );
    }

    #[test]
    fn without_a_free_group_a_24_goes_to_the_kernel_until_one_frees() {
        let mut t = table(1);
        t.insert(ip("192.0.2.1"), 32, 1).unwrap();
        t.insert(ip("203.0.113.0"), 24, 3).unwrap();
        assert_eq!(t.lookup(ip("203.0.113.9")), Some((3, 24)));
        // No group for this one: the whole /24 says "no route" (the
        // kernel's), never the /24's route for the /32's address.
        t.insert(ip("203.0.113.1"), 32, 2).unwrap();
        assert_eq!(t.punted(), 1);
        assert_eq!(t.lookup(ip("203.0.113.1")), None);
        assert_eq!(t.lookup(ip("203.0.113.9")), None);
        // Routes over it leave it alone; next to it they work.
        t.insert(ip("203.0.0.0"), 16, 4).unwrap();
        assert_eq!(t.lookup(ip("203.0.113.9")), None);
        assert_eq!(t.lookup(ip("203.0.114.9")), Some((4, 16)));
        // A freed group waits for its grace: a reader may still be in it.
        t.remove(ip("192.0.2.1"), 32).unwrap();
        t.insert(ip("198.51.100.0"), 24, 5).unwrap();
        assert_eq!(t.punted(), 1);
        t.grace = Duration::ZERO;
        // The next change gives the /24 its group, built from the routes.
        t.insert(ip("198.51.100.0"), 24, 5).unwrap();
        assert_eq!(t.punted(), 0);
        assert_eq!(t.groups_in_use(), 1);
        assert_eq!(t.lookup(ip("203.0.113.1")), Some((2, 32)));
        assert_eq!(t.lookup(ip("203.0.113.9")), Some((3, 24)));
        assert_eq!(t.lookup(ip("192.0.2.1")), None);
    }

    #[test]
    fn a_punted_24_whose_long_prefixes_go_needs_no_group() {
        let mut t = table(0);
        t.insert(ip("198.51.0.0"), 16, 1).unwrap();
        t.insert(ip("198.51.100.128"), 25, 2).unwrap();
        t.insert(ip("198.51.100.7"), 32, 3).unwrap();
        assert_eq!(t.punted(), 1);
        assert_eq!(t.lookup(ip("198.51.100.1")), None);
        t.remove(ip("198.51.100.128"), 25).unwrap();
        assert_eq!(t.punted(), 1, "a /32 is left");
        t.remove(ip("198.51.100.7"), 32).unwrap();
        assert_eq!(t.punted(), 0);
        assert_eq!(t.lookup(ip("198.51.100.1")), Some((1, 16)));
        assert_eq!(t.tbl24[0xc63364], route(1, 16));
    }

    /// Random routes concentrated in a few /16s (so that levels interact),
    /// inserted and removed in random order: every lookup agrees with the
    /// reference (with enough groups), or with the reference outside the
    /// /24s left to the kernel and "no route" inside them (with three
    /// groups for twelve /24s); removing everything leaves empty tables.
    #[test]
    fn random_changes_agree_with_a_reference_lpm() {
        assert_eq!(random_changes(64), 0);
        assert!(random_changes(3) > 0, "the small table never punted");
    }

    /// Returns the most /24s punted at once.
    fn random_changes(groups: u32) -> usize {
        let mut most_punted = 0;
        let mut t = table(groups);
        t.grace = Duration::ZERO;
        let mut rng = fastrand::Rng::with_seed(0x2545_f491_4f6c_dd1d);
        let mut rnd = move || rng.u64(..);
        let mut live: Vec<(Ipv4Addr, u8)> = Vec::new();
        let addr = |r: u64| {
            let base = [0xc000_0200u32, 0xc633_6400, 0xcb00_7100][(r % 3) as usize];
            Ipv4Addr::from(base & 0xffff_0000 | (r >> 8) as u32 & 0x03ff)
        };
        for round in 0..3000 {
            let r = rnd();
            if live.is_empty() || r % 3 != 0 {
                let len = [8u8, 16, 20, 23, 24, 25, 26, 28, 30, 31, 32][(r >> 40) as usize % 11];
                let a = addr(rnd());
                t.insert(a, len, (r >> 20) as u32 % 1024).unwrap();
                live.push((a, len));
            } else {
                let (a, len) = live.swap_remove((r >> 8) as usize % live.len());
                t.remove(a, len).unwrap();
            }
            most_punted = most_punted.max(t.punted());
            if round % 50 == 0 {
                for _ in 0..200 {
                    let a = addr(rnd());
                    let want = if t.punted.contains(&(u32::from(a) >> 8)) {
                        None
                    } else {
                        reference(&t, a)
                    };
                    assert_eq!(t.lookup(a), want, "{a} after round {round}");
                }
            }
        }
        for (a, len) in live.drain(..) {
            t.remove(a, len).unwrap();
        }
        assert!(t.is_empty());
        assert_eq!(t.groups_in_use(), 0);
        assert_eq!(t.punted(), 0);
        assert!(t.tbl24.iter().all(|&e| e == 0));
        most_punted
    }
}
