//! Loads the `gateway-ebpf` object, attaches `wan_ingress` / `lan_ingress`
//! to the interfaces of the config, pins the maps under bpffs, and offers
//! typed accessors for every map of the kernel ↔ userspace contract
//! (`gateway-common`). Dropping an [`XdpDataplane`] detaches the programs
//! and removes the pins, unless [`XdpDataplane::keep_attached`] pinned the
//! links first (a restart): then the programs stay attached, and the next
//! [`XdpDataplane::load`] replaces them in place (`bpf_link_update`), so
//! the interfaces never run without a program and a NIC whose driver
//! reconfigures its rings when XDP is attached or detached does not. It
//! owns no policy: the agent decides what goes in the maps.

use std::{
    collections::HashSet,
    error::Error as StdError,
    fmt::Write as _,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues, XskMap},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        ProgramError, Xdp, XdpMode as AyaXdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use gateway_common::{
    map_names, program_names, route4, route6, sa_slots, stats_index, Direction, DropReason,
    LanConfig, LocalAddrKey, LocalAddrValue, RouteValue, SaInKey, SaInValue, SaSlot, TunnelStats,
    TunnelValue, TUNNELS_MAX_ENTRIES,
};
use gateway_config::{Config, XdpMode};
use thiserror::Error;

use super::routes::{MappedArray, Route4Error, Route4Table, Route6Lengths, Words};
use super::sa_slots::{Placement, SaSlots};
use super::EBPF_OBJECT;

const _: () = assert!(gateway_config::MAX_ROUTE_GROUPS_V4 == route4::TBL8_GROUPS);

/// Errors of the XDP loader. Each Display is one line meant for an operator.
#[derive(Debug, Error)]
pub enum XdpError {
    #[error("XDP drop events: {0}")]
    DropEvents(String),
    #[error("cannot count the possible CPUs for a per-CPU map")]
    Cpus(#[source] std::io::Error),
    #[error("interface {name:?} does not exist")]
    InterfaceNotFound { name: String },
    #[error(
        "missing privilege: {op} needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN for bpffs)"
    )]
    PermissionDenied {
        op: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("native XDP is not supported on {iface:?}; set interfaces.xdp_mode = \"native_or_generic\" to fall back to generic mode")]
    NativeUnsupported {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("the kernel verifier rejected {program}: {last_line}")]
    Verifier {
        program: &'static str,
        last_line: String,
        /// The complete verifier log.
        log: String,
    },
    #[error("loading the eBPF object: {0}")]
    Load(#[source] EbpfError),
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching {program} to {iface:?}: {source}")]
    Attach {
        program: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("program {0} missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("bpffs is not mounted at {0} (mount -t bpf bpf /sys/fs/bpf)")]
    BpffsMissing(PathBuf),
    #[error("pinning under {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("tunnel id {0} out of range (max {max})", max = TUNNELS_MAX_ENTRIES - 1)]
    TunnelIdOutOfRange(u32),
    #[error("prefix length {len} too long for {family}")]
    BadPrefixLen { len: u8, family: &'static str },
    #[error("mapping {map} into the daemon: {source}")]
    MapMemory {
        map: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    RoutesV4(#[from] Route4Error),
}

/// First OS error code found walking the source chain.
fn os_error(e: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        cur = err.source();
    }
    None
}

fn is_eperm(e: &(dyn StdError + 'static)) -> bool {
    matches!(os_error(e), Some(libc::EPERM) | Some(libc::EACCES))
}

/// What was attached where, for [`XdpDataplane::describe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub program: &'static str,
    pub iface: String,
    pub ifindex: u32,
    /// "native" or "generic".
    pub mode: &'static str,
    /// Attached by the previous process and replaced in place by this one.
    pub taken_over: bool,
}

/// Where a kept link is pinned: `<pin dir>/links/<program>-if<ifindex>-<mode>`
/// (bpffs refuses dots in names, and interface names may have some).
fn link_pin(dir: &Path, program: &str, ifindex: u32, mode: &str) -> PathBuf {
    dir.join("links")
        .join(format!("{program}-if{ifindex}-{mode}"))
}

/// The interface index in a kept link's pin name.
fn pinned_ifindex(name: &str) -> Option<u32> {
    let (_, rest) = name.rsplit_once("-if")?;
    rest.split_once('-')?.0.parse().ok()
}

/// How full the XDP route tables are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTableUsage {
    pub v4_prefixes: usize,
    pub v6_prefixes: usize,
    /// `ROUTES_V4_TBL8` groups linked (freed ones waiting for reuse are
    /// not counted), and how many there are.
    pub v4_groups_used: u32,
    pub v4_groups_limit: u32,
    /// /24s left to the kernel (slow path) for want of a free group.
    pub v4_punted: usize,
}

/// The loaded XDP programs and their maps.
pub struct XdpDataplane {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// The links of `attachments`, in the same order.
    links: Vec<XdpLinkId>,
    pin_dir: Option<PathBuf>,
    pinned: Vec<PathBuf>,
    /// The IPv4 routes: `ROUTES_V4_TBL24` / `ROUTES_V4_TBL8`, mapped.
    routes_v4: Route4Table<MappedArray>,
    /// The IPv6 prefixes and `ROUTES_V6_LENGTHS`, mapped.
    lengths_v6: Route6Lengths<MappedArray>,
    /// `SA_SLOTS`, mapped.
    sa_slots: SaSlots<MappedArray>,
    /// `SA_IN_SPILL`, mapped, and the SPIs in `SA_IN`.
    sa_spill: MappedArray,
    sa_hashed: HashSet<u32>,
}

impl std::fmt::Debug for XdpDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpDataplane")
            .field("attachments", &self.attachments)
            .field("pin_dir", &self.pin_dir)
            .finish_non_exhaustive()
    }
}

impl XdpDataplane {
    /// Loads the programs, attaches `wan_ingress` to `config.interfaces.wan`
    /// and `lan_ingress` to `config.interfaces.lan` in
    /// `config.interfaces.xdp_mode`, and pins the maps under
    /// `config.gateway.bpf_pin_dir`.
    pub fn load(config: &Config) -> Result<Self, XdpError> {
        // Check the interfaces first: the clearest error for a typo.
        for name in [&config.interfaces.wan, &config.interfaces.lan] {
            if ifindex(name).is_none() {
                return Err(XdpError::InterfaceNotFound { name: name.clone() });
            }
        }
        let mut dp = Self::load_programs(
            &[program_names::WAN_INGRESS, program_names::LAN_INGRESS],
            config.datapath.route_groups_v4,
        )?;
        let mode = config.interfaces.xdp_mode;
        // Pinned first: the pin directory also holds the links a restart
        // kept, which `attach` takes over.
        mount_bpffs_if_missing(&config.gateway.bpf_pin_dir)?;
        dp.pin_maps(&config.gateway.bpf_pin_dir)?;
        dp.attach(program_names::WAN_INGRESS, &config.interfaces.wan, mode)?;
        dp.attach(program_names::LAN_INGRESS, &config.interfaces.lan, mode)?;
        // Kept links of interfaces no longer configured: detached.
        dp.release_kept_links(|_| true);
        Ok(dp)
    }

    /// Loads every program into the kernel (verifier included) without
    /// attaching or pinning: for BPF_PROG_TEST_RUN tests and benchmarks
    /// (their baselines, `xdp_pass` and `wan_ingress_no_events`, too).
    /// Its IPv4 route table has every group the object declares.
    pub fn load_unattached() -> Result<Self, XdpError> {
        Self::load_unattached_with_groups(route4::TBL8_GROUPS)
    }

    /// [`Self::load_unattached`] with `groups_v4` groups in the IPv4 route
    /// table, as `datapath.route_groups_v4` gives the daemon.
    pub fn load_unattached_with_groups(groups_v4: u32) -> Result<Self, XdpError> {
        Self::load_programs(
            &[
                program_names::WAN_INGRESS,
                program_names::LAN_INGRESS,
                program_names::XDP_PASS,
                program_names::WAN_INGRESS_NO_EVENTS,
            ],
            groups_v4,
        )
    }

    /// Loads the object's maps and the programs `names` (the verifier runs
    /// on each: the longest part of a start, and of a restart's outage, so
    /// the daemon loads only the two it attaches), with `groups_v4` groups
    /// in the IPv4 route table (`datapath.route_groups_v4`).
    fn load_programs(names: &[&'static str], groups_v4: u32) -> Result<Self, XdpError> {
        let started = std::time::Instant::now();
        let groups_v4 = groups_v4.clamp(1, route4::TBL8_GROUPS);
        let tbl8_elements = groups_v4 * route4::TBL8_GROUP_ENTRIES / route4::ENTRIES_PER_ELEMENT;
        let ebpf = EbpfLoader::new()
            .map_max_entries(map_names::ROUTES_V4_TBL8, tbl8_elements)
            .load(EBPF_OBJECT)
            .map_err(|e| {
                if is_eperm(&e) {
                    XdpError::PermissionDenied {
                        op: "loading eBPF maps",
                        source: Box::new(e),
                    }
                } else {
                    XdpError::Load(e)
                }
            })?;
        let routes_v4 = Route4Table::new(
            map_array(&ebpf, map_names::ROUTES_V4_TBL24, route4::TBL24_ELEMENTS)?,
            map_array(&ebpf, map_names::ROUTES_V4_TBL8, tbl8_elements)?,
            groups_v4,
        );
        let lengths_v6 = Route6Lengths::new(map_array(
            &ebpf,
            map_names::ROUTES_V6_LENGTHS,
            route6::LENGTH_WORDS,
        )?);
        let sa_slots = SaSlots::new(map_array(
            &ebpf,
            map_names::SA_SLOTS,
            sa_slots::ENTRIES * (size_of::<SaSlot>() / size_of::<u64>()) as u32,
        )?);
        let sa_spill = map_array(&ebpf, map_names::SA_IN_SPILL, 1)?;
        let mut dp = Self {
            ebpf,
            attachments: Vec::new(),
            links: Vec::new(),
            pin_dir: None,
            pinned: Vec::new(),
            routes_v4,
            lengths_v6,
            sa_slots,
            sa_spill,
            sa_hashed: HashSet::new(),
        };
        for &name in names {
            let prog = dp.xdp_program(name)?;
            prog.load().map_err(|e| match e {
                ProgramError::LoadError {
                    io_error,
                    verifier_log,
                } if io_error.raw_os_error() == Some(libc::EPERM) => XdpError::PermissionDenied {
                    op: "loading XDP programs",
                    source: Box::new(io_error),
                }
                .or_verifier(name, verifier_log.to_string()),
                ProgramError::LoadError { verifier_log, .. } => {
                    let log = verifier_log.to_string();
                    XdpError::Verifier {
                        program: name,
                        last_line: last_meaningful_line(&log),
                        log,
                    }
                }
                other => XdpError::Program {
                    program: name,
                    source: other,
                },
            })?;
        }
        tracing::info!(
            programs = names.len(),
            ms = started.elapsed().as_millis() as u64,
            "XDP programs loaded and verified"
        );
        Ok(dp)
    }

    fn xdp_program(&mut self, name: &'static str) -> Result<&mut Xdp, XdpError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(XdpError::MissingProgram(name))?;
        prog.try_into().map_err(|source| XdpError::Program {
            program: name,
            source,
        })
    }

    /// The loaded program's fd (for `BPF_PROG_TEST_RUN` in tests and benchmarks).
    pub fn program_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, XdpError> {
        let prog = self
            .ebpf
            .program(name)
            .ok_or(XdpError::MissingProgram(name))?;
        let xdp: &Xdp = prog.try_into().map_err(|source| XdpError::Program {
            program: name,
            source,
        })?;
        let fd = xdp.fd().map_err(|source| XdpError::Program {
            program: name,
            source,
        })?;
        Ok(fd.as_fd())
    }

    /// Attaches a loaded program to `iface`. Native mode unless `mode` asks
    /// for generic, or for native-or-generic and the driver lacks native XDP
    /// (then with a warning: generic XDP is slow).
    pub fn attach(
        &mut self,
        program: &'static str,
        iface: &str,
        mode: XdpMode,
    ) -> Result<(), XdpError> {
        let idx = ifindex(iface).ok_or_else(|| XdpError::InterfaceNotFound {
            name: iface.to_owned(),
        })?;
        if self.take_over(program, iface, idx, mode)? {
            return Ok(());
        }
        // A kept link still on the interface (another program or mode)
        // would make the kernel refuse the attach (EBUSY).
        self.release_kept_links(|i| i == idx);
        let first = match mode {
            XdpMode::Generic => AyaXdpMode::Skb,
            XdpMode::Native | XdpMode::NativeOrGeneric => AyaXdpMode::Driver,
        };
        let prog = self.xdp_program(program)?;
        // A link of the previous process that the kernel releases
        // asynchronously (the last reference of a pinned link goes through
        // a work queue) can hold the interface for a moment: EBUSY, retried
        // for up to a second.
        let busy_until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let attached = loop {
            match prog.attach_to_if_index(idx, first) {
                Err(e)
                    if os_error(&e) == Some(libc::EBUSY)
                        && std::time::Instant::now() < busy_until =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        let (used, link) = match attached {
            Ok(link) => (first, link),
            Err(e) => {
                let code = os_error(&e);
                if matches!(code, Some(libc::EPERM) | Some(libc::EACCES)) {
                    return Err(XdpError::PermissionDenied {
                        op: "attaching XDP programs",
                        source: Box::new(e),
                    });
                }
                let unsupported = first == AyaXdpMode::Driver
                    && matches!(code, Some(libc::EOPNOTSUPP) | Some(libc::EINVAL));
                if !unsupported {
                    return Err(XdpError::Attach {
                        program,
                        iface: iface.to_owned(),
                        source: e,
                    });
                }
                if mode != XdpMode::NativeOrGeneric {
                    return Err(XdpError::NativeUnsupported {
                        iface: iface.to_owned(),
                        source: e,
                    });
                }
                tracing::warn!(
                    program,
                    iface,
                    "native XDP not supported, falling back to generic mode (slow path performance)"
                );
                let link = prog
                    .attach_to_if_index(idx, AyaXdpMode::Skb)
                    .map_err(|source| XdpError::Attach {
                        program,
                        iface: iface.to_owned(),
                        source,
                    })?;
                (AyaXdpMode::Skb, link)
            }
        };
        self.attachments.push(Attachment {
            program,
            iface: iface.to_owned(),
            ifindex: idx,
            mode: if used == AyaXdpMode::Skb {
                "generic"
            } else {
                "native"
            },
            taken_over: false,
        });
        self.links.push(link);
        Ok(())
    }

    /// Replaces the program of a link that the previous process kept
    /// ([`Self::keep_attached`]) for `program` on `iface` in a mode that
    /// `mode` allows, in place: the interface is never without a program.
    /// Returns whether it did; a kept link that cannot be taken over is
    /// released (detached) and the caller attaches anew.
    fn take_over(
        &mut self,
        program: &'static str,
        iface: &str,
        idx: u32,
        mode: XdpMode,
    ) -> Result<bool, XdpError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(false);
        };
        let modes: &[&'static str] = match mode {
            XdpMode::Native => &["native"],
            XdpMode::Generic => &["generic"],
            XdpMode::NativeOrGeneric => &["native", "generic"],
        };
        for &m in modes {
            let path = link_pin(&dir, program, idx, m);
            if !path.exists() {
                continue;
            }
            let link = PinnedLink::from_pin(&path)
                .map_err(|e| e.to_string())
                .and_then(|p| p.unpin().map_err(|e| e.to_string()))
                .and_then(|fd| XdpLink::try_from(fd).map_err(|e| e.to_string()));
            let link = match link {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(program, iface, path = %path.display(), error = %e, "cannot take over the XDP link kept by the previous run; attaching anew");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            let prog = self.xdp_program(program)?;
            match prog.attach_to_link(link) {
                Ok(id) => {
                    tracing::info!(
                        program,
                        iface,
                        mode = m,
                        "XDP program replaced in place (attached since the previous run)"
                    );
                    self.attachments.push(Attachment {
                        program,
                        iface: iface.to_owned(),
                        ifindex: idx,
                        mode: m,
                        taken_over: true,
                    });
                    self.links.push(id);
                    return Ok(true);
                }
                // The link is dropped with the error: detached.
                Err(e) => {
                    tracing::warn!(program, iface, error = %e, "cannot replace the XDP program in place (its interface changed?); attaching anew")
                }
            }
        }
        Ok(false)
    }

    /// Detaches the links a previous run kept whose interface `which`
    /// selects (their pins are removed; the links go with them).
    fn release_kept_links(&mut self, which: impl Fn(u32) -> bool) {
        let Some(dir) = &self.pin_dir else { return };
        let Ok(entries) = std::fs::read_dir(dir.join("links")) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !pinned_ifindex(&name).is_some_and(&which) {
                continue;
            }
            match PinnedLink::from_pin(e.path()).map(PinnedLink::unpin) {
                Ok(Ok(_)) => {
                    tracing::info!(link = %name, "XDP link kept by a previous run detached")
                }
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// For a restart: pins the links so that the programs stay attached
    /// after this process exits (and after this value is dropped), for the
    /// next [`Self::load`] to replace in place. Returns how many were kept.
    /// Without a pin directory (tests), or for a link made through netlink
    /// on an old kernel, nothing is kept.
    pub fn keep_attached(&mut self) -> usize {
        let Some(dir) = self.pin_dir.clone() else {
            return 0;
        };
        if let Err(e) = std::fs::create_dir_all(dir.join("links")) {
            tracing::warn!(error = %e, "cannot keep the XDP programs attached: they detach with the process");
            return 0;
        }
        let mut kept = 0;
        let attachments = std::mem::take(&mut self.attachments);
        let links = std::mem::take(&mut self.links);
        for (a, id) in attachments.into_iter().zip(links) {
            let path = link_pin(&dir, a.program, a.ifindex, a.mode);
            let _ = std::fs::remove_file(&path);
            let pinned = self
                .xdp_program(a.program)
                .map_err(|e| e.to_string())
                .and_then(|p| p.take_link(id).map_err(|e| e.to_string()))
                .and_then(|l| FdLink::try_from(l).map_err(|e| e.to_string()))
                .and_then(|fd| fd.pin(&path).map_err(|e| e.to_string()));
            match pinned {
                Ok(_) => kept += 1,
                Err(e) => {
                    tracing::warn!(program = a.program, iface = %a.iface, error = %e, "cannot keep the XDP program attached: it detaches with the process")
                }
            }
        }
        if kept > 0 {
            tracing::info!(
                programs = kept,
                dir = %dir.join("links").display(),
                "XDP programs left attached for the next start (pinned links)"
            );
        }
        kept
    }

    /// Pins every map under `dir` (created if needed; stale pins of a
    /// previous run are replaced).
    pub fn pin_maps(&mut self, dir: &Path) -> Result<(), XdpError> {
        // The nearest existing ancestor must already be on bpffs.
        let bpffs = dir.ancestors().find(|a| a.exists()).unwrap_or(dir);
        if !is_bpffs(bpffs) {
            return Err(XdpError::BpffsMissing(bpffs.to_path_buf()));
        }
        let pin_err = |path: &Path, source: Box<dyn StdError + Send + Sync>| {
            if is_eperm(source.as_ref()) {
                XdpError::PermissionDenied {
                    op: "pinning maps",
                    source,
                }
            } else {
                XdpError::Pin {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        std::fs::create_dir_all(dir).map_err(|e| pin_err(dir, Box::new(e)))?;
        self.pin_dir = Some(dir.to_path_buf());
        for name in map_names::ALL {
            let path = dir.join(name);
            if path.exists() {
                tracing::warn!(path = %path.display(), "replacing a stale pinned map");
                std::fs::remove_file(&path).map_err(|e| pin_err(&path, Box::new(e)))?;
            }
            let map = self.ebpf.map(name).ok_or(XdpError::MissingMap(name))?;
            map.pin(&path).map_err(|e| pin_err(&path, Box::new(e)))?;
            self.pinned.push(path);
        }
        Ok(())
    }

    /// One line per attached program and the pin directory.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for a in &self.attachments {
            let _ = writeln!(
                s,
                "{} attached to {} (ifindex {}, {} mode{})",
                a.program,
                a.iface,
                a.ifindex,
                a.mode,
                if a.taken_over {
                    ", replaced in place"
                } else {
                    ""
                }
            );
        }
        if let Some(dir) = &self.pin_dir {
            let _ = writeln!(
                s,
                "maps pinned under {}: {}",
                dir.display(),
                map_names::ALL.join(", ")
            );
        }
        if s.is_empty() {
            s.push_str("XDP programs loaded, not attached\n");
        }
        s
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    fn unpin(&mut self) {
        for path in self.pinned.drain(..) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove pinned map");
            }
        }
        if let Some(dir) = self.pin_dir.take() {
            // Only removes the directories if we left them empty.
            let _ = std::fs::remove_dir(dir.join("links"));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Drop for XdpDataplane {
    /// The links die with `self.ebpf` (detaching the programs); the pins
    /// would keep the maps alive, so they go first.
    fn drop(&mut self) {
        self.unpin();
    }
}

impl XdpError {
    /// A load EPERM can also be the verifier refusing an unprivileged
    /// feature; a non-empty log says which.
    fn or_verifier(self, program: &'static str, log: String) -> Self {
        if log.trim().is_empty() {
            self
        } else {
            XdpError::Verifier {
                program,
                last_line: last_meaningful_line(&log),
                log,
            }
        }
    }
}

fn last_meaningful_line(log: &str) -> String {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("processed ")
                && !l.starts_with("verification time")
                && !l.starts_with("stack depth")
        })
        .unwrap_or("(empty verifier log)")
        .to_owned()
}

mod host;
mod maps;
use host::*;
pub use host::{driver_name, ifindex, mount_bpffs_if_missing};
pub use maps::local_key;
use maps::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_link_names_give_back_their_interface() {
        let p = link_pin(Path::new("/sys/fs/bpf/x"), "wan_ingress", 17, "native");
        assert_eq!(p, Path::new("/sys/fs/bpf/x/links/wan_ingress-if17-native"));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(!name.contains('.'), "bpffs refuses dots: {name}");
        assert_eq!(pinned_ifindex(name), Some(17));
        for other in ["wan_ingress", "x-ifA-native", "lan_ingress-if-native", ""] {
            assert_eq!(pinned_ifindex(other), None, "{other}");
        }
    }
}
