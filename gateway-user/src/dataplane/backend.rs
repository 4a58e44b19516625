//! The gateway's implementation of [`gateway_esp::DataPlane`]: the one
//! place where a CHILD SA or a learned route becomes running state. It owns
//! the ordering between the userspace [`SaTable`] (keys, sequence numbers,
//! replay windows; read by the AF_XDP workers and the TUN slow path) and the
//! XDP maps (`SA_IN`, `TUNNELS`, `ROUTES_V4`/`ROUTES_V6`; read by the
//! programs that steer packets to the workers), plus, optionally, the kernel
//! routes into each tunnel's TUN interface. It never touches `XSKS` (the
//! worker that owns a socket inserts it) nor `LOCAL_ADDRS` (the agent's).
//!
//! # Ordering (make-before-break)
//!
//! * Inbound SA: table first, then `SA_IN`; so XDP never steers a packet
//!   for an SPI the workers cannot find. Removal in the reverse order.
//! * Outbound SA: the table switches first (the new SA is live for every
//!   worker and the slow path at once), then `TUNNELS` is marked up with the
//!   SA's outer addresses. Removing the last outbound SA marks the tunnel
//!   down first (XDP stops steering to the fast path) and then empties the
//!   table.
//! * IKE's rekey is then: new inbound (both places) → new outbound (switch)
//!   → old inbound removed (both places) — each step consistent on its own.
//!
//! With no XDP maps (fast path off) only the table and the kernel routes are
//! programmed. Several map sets can be given: the lab runs `wan_ingress` and
//! `lan_ingress` from two loaded objects (see the worker module for why)
//! and every write goes to each.
//!
//! Each outbound SA also fixes the tunnel's inner MTU (from the WAN MTU, the
//! suite and the outer family, [`super::mtu::inner_mtu`]): it goes into
//! `TUNNELS` (what `lan_ingress` answers with ICMP above), into the shared
//! [`TunnelParams`] (MSS clamping in the workers and the slow path), and
//! onto the tunnel's TUN (the kernel's limit on the slow path).
//!
//! The replay window's right edge moves in the table on every packet; the
//! XDP early check only needs it approximately, so
//! [`GatewayDataPlane::sync_replay_edges`] copies it to `SA_IN` periodically
//! (and only the entries that moved).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use gateway_common::{
    SaInValue, TunnelValue, FAMILY_V4, FAMILY_V6, SA_FLAG_ESN, TUNNELS_MAX_ENTRIES, TUNNEL_DOWN,
    TUNNEL_UP,
};
use gateway_esp::table::{
    DataPlane, DataPlaneError, InboundSaConfig, OutboundSaConfig, SaTable, TunnelCountersSnapshot,
    TunnelId,
};
use gateway_esp::IpPrefix;
use gateway_netio::netlink::{Netlink, NetlinkError, Route};

use super::mtu::{inner_mtu, TunnelParams};
use super::xdp::{XdpDataplane, XdpError};

/// WAN MTU assumed until [`GatewayDataPlane::set_wan_mtu`] is called.
const DEFAULT_WAN_MTU: u32 = 1500;

/// The map operations the backend needs from one loaded XDP object. Real
/// maps are an [`XdpDataplane`]; unit tests record the calls.
pub trait FastPathMaps: Send {
    /// `SA_IN[spi] = value`.
    fn install_sa_in(&mut self, spi: u32, value: SaInValue) -> Result<(), XdpError>;
    /// Removes `SA_IN[spi]` (absent is fine).
    fn remove_sa_in(&mut self, spi: u32) -> Result<(), XdpError>;
    /// `TUNNELS[tunnel] = value`.
    fn set_tunnel(&mut self, tunnel: TunnelId, value: TunnelValue) -> Result<(), XdpError>;
    /// `ROUTES_V*[prefix] = tunnel`.
    fn add_route(&mut self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), XdpError>;
    /// Removes `ROUTES_V*[prefix]` (absent is fine).
    fn remove_route(&mut self, prefix: IpPrefix) -> Result<(), XdpError>;
    /// Returns a tunnel id's entries (`TUNNELS`, `STATS`) to zero before
    /// the id is reused.
    fn forget_tunnel(&mut self, tunnel: TunnelId) -> Result<(), XdpError> {
        self.set_tunnel(tunnel, TunnelValue::default())
    }
}

impl FastPathMaps for XdpDataplane {
    fn install_sa_in(&mut self, spi: u32, value: SaInValue) -> Result<(), XdpError> {
        XdpDataplane::install_sa_in(self, spi, value)
    }
    fn remove_sa_in(&mut self, spi: u32) -> Result<(), XdpError> {
        XdpDataplane::remove_sa_in(self, spi)
    }
    fn set_tunnel(&mut self, tunnel: TunnelId, value: TunnelValue) -> Result<(), XdpError> {
        XdpDataplane::set_tunnel(self, tunnel, value)
    }
    fn add_route(&mut self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), XdpError> {
        match prefix {
            IpPrefix::V4(a, l) => self.add_route_v4(a, l, tunnel),
            IpPrefix::V6(a, l) => self.add_route_v6(a, l, tunnel),
        }
    }
    fn remove_route(&mut self, prefix: IpPrefix) -> Result<(), XdpError> {
        match prefix {
            IpPrefix::V4(a, l) => self.remove_route_v4(a, l),
            IpPrefix::V6(a, l) => self.remove_route_v6(a, l),
        }
    }
    fn forget_tunnel(&mut self, tunnel: TunnelId) -> Result<(), XdpError> {
        XdpDataplane::forget_tunnel(self, tunnel)
    }
}

/// A shared handle on one set of XDP maps.
pub type SharedMaps = Arc<Mutex<dyn FastPathMaps>>;

/// Why a backend operation failed (wrapped in
/// [`DataPlaneError::Backend`] at the trait boundary).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// An XDP map update failed.
    #[error("XDP map update")]
    Xdp(#[from] XdpError),
    /// A kernel route update failed.
    #[error("kernel route for {prefix} into tunnel {tunnel}")]
    KernelRoute {
        /// Prefix.
        prefix: IpPrefix,
        /// Tunnel.
        tunnel: TunnelId,
        /// Cause.
        #[source]
        source: NetlinkError,
    },
}

impl From<BackendError> for DataPlaneError {
    fn from(e: BackendError) -> Self {
        DataPlaneError::Backend(Box::new(e))
    }
}

/// What the backend remembers about an installed inbound SA.
#[derive(Debug, Clone, Copy)]
struct InboundInfo {
    value: SaInValue,
}

#[derive(Default)]
struct State {
    inbound: HashMap<u32, InboundInfo>,
    /// Tunnels with an outbound SA, and the value last written to `TUNNELS`.
    tunnels: HashMap<TunnelId, TunnelValue>,
    /// SA index slots free for reuse (`SaInValue::sa_index`).
    free_slots: Vec<u32>,
    next_slot: u32,
    /// Per prefix, the tunnels that announced it, oldest first; the last
    /// one is programmed (a prefix maps to one tunnel in the XDP route tables).
    routes: BTreeMap<IpPrefix, Vec<TunnelId>>,
    /// TUN interface of each tunnel, for kernel routes.
    tun_ifindex: HashMap<TunnelId, u32>,
    netlink: Option<Netlink>,
}

impl State {
    fn alloc_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            let s = self.next_slot;
            self.next_slot += 1;
            s
        })
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every step below leaves the bookkeeping consistent before it can
    // fail, so a poisoned lock is safe to reuse.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The real data plane: an [`SaTable`] plus zero or more XDP map sets plus
/// optional kernel routes. Share it as `Arc<GatewayDataPlane>` (or
/// `Arc<dyn DataPlane>`).
pub struct GatewayDataPlane {
    table: Arc<SaTable>,
    maps: Vec<SharedMaps>,
    state: Mutex<State>,
    params: Arc<TunnelParams>,
    wan_mtu: AtomicU32,
}

impl std::fmt::Debug for GatewayDataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayDataPlane")
            .field("table", &self.table)
            .field("map_sets", &self.maps.len())
            .finish_non_exhaustive()
    }
}

fn addr_bytes(a: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

impl GatewayDataPlane {
    /// A backend over `table` with the fast path off (no XDP maps).
    pub fn new(table: Arc<SaTable>) -> Self {
        Self {
            table,
            maps: Vec::new(),
            state: Mutex::new(State::default()),
            params: Arc::new(TunnelParams::default()),
            wan_mtu: AtomicU32::new(DEFAULT_WAN_MTU),
        }
    }

    /// The per-tunnel inner MTU and MSS clamping switch, for the workers
    /// and the slow path.
    pub fn tunnel_params(&self) -> &Arc<TunnelParams> {
        &self.params
    }

    /// The WAN interface's MTU, from which each tunnel's inner MTU follows
    /// (applies to SAs installed from now on).
    pub fn set_wan_mtu(&self, mtu: u32) {
        self.wan_mtu.store(mtu, Ordering::Relaxed);
    }

    /// Turns TCP MSS clamping on or off for a tunnel (on by default).
    pub fn set_mss_clamp(&self, tunnel: TunnelId, on: bool) {
        self.params.set_mss_clamp(tunnel, on);
    }

    /// Polices a tunnel's traffic, both ways, at its VPN gateway's
    /// bandwidth (bits per second, 0: unlimited), shared by all the
    /// gateway's tunnels; a new rate applies to all of them at once.
    pub fn set_bandwidth(&self, tunnel: TunnelId, vpn_gateway: &str, bits_per_s: u64) {
        self.params.police().set(tunnel, vpn_gateway, bits_per_s);
    }

    /// The inner MTU of a tunnel with an outbound SA.
    pub fn tunnel_inner_mtu(&self, tunnel: TunnelId) -> Option<u32> {
        lock(&self.state).tunnels.get(&tunnel).map(|t| t.inner_mtu)
    }

    /// A backend that also programs the maps of `xdp` (fast path on).
    pub fn with_xdp(table: Arc<SaTable>, xdp: Option<Arc<Mutex<XdpDataplane>>>) -> Self {
        let mut s = Self::new(table);
        if let Some(x) = xdp {
            s.maps.push(x);
        }
        s
    }

    /// Adds one more set of maps every write goes to.
    pub fn add_maps(&mut self, maps: SharedMaps) {
        self.maps.push(maps);
    }

    /// Also installs kernel routes (`prefix dev <tun>`, protocol 196) for
    /// every route, through this netlink socket.
    pub fn set_netlink(&self, nl: Netlink) {
        lock(&self.state).netlink = Some(nl);
    }

    /// Declares the TUN interface of a tunnel (for kernel routes).
    pub fn set_tunnel_interface(&self, tunnel: TunnelId, ifindex: u32) {
        lock(&self.state).tun_ifindex.insert(tunnel, ifindex);
    }

    /// Returns a removed tunnel's id to zero everywhere (table counters and
    /// source filter, `TUNNELS`, `STATS`, its TUN's ifindex) so that the id
    /// can be given to another tunnel. The tunnel's SAs and routes must be
    /// gone already.
    pub fn forget_tunnel(&self, tunnel: TunnelId) -> Result<(), DataPlaneError> {
        self.table.forget_tunnel(tunnel);
        self.params.police().remove(tunnel);
        {
            let mut st = lock(&self.state);
            st.tun_ifindex.remove(&tunnel);
            st.tunnels.remove(&tunnel);
        }
        if self.check_tunnel_id(tunnel).is_ok() {
            self.each_map(|m| m.forget_tunnel(tunnel))
                .map_err(BackendError::Xdp)?;
        }
        Ok(())
    }

    /// The SA table the workers and the slow path share.
    pub fn table(&self) -> &Arc<SaTable> {
        &self.table
    }

    /// True when XDP maps are programmed.
    pub fn fast_path(&self) -> bool {
        !self.maps.is_empty()
    }

    fn each_map(
        &self,
        mut f: impl FnMut(&mut dyn FastPathMaps) -> Result<(), XdpError>,
    ) -> Result<(), XdpError> {
        for m in &self.maps {
            f(&mut *lock(m))?;
        }
        Ok(())
    }

    /// Tunnel ids index the `TUNNELS` array: refuse ids it cannot hold
    /// (only when XDP maps are programmed).
    fn check_tunnel_id(&self, tunnel: TunnelId) -> Result<(), DataPlaneError> {
        if !self.maps.is_empty() && tunnel >= TUNNELS_MAX_ENTRIES {
            return Err(BackendError::Xdp(XdpError::TunnelIdOutOfRange(tunnel)).into());
        }
        Ok(())
    }

    /// The `SA_IN` value the backend last wrote for `spi`.
    pub fn sa_in_value(&self, spi: u32) -> Option<SaInValue> {
        lock(&self.state).inbound.get(&spi).map(|i| i.value)
    }

    /// Copies every inbound SA's replay right edge from the table to
    /// `SA_IN`, writing only the entries that moved. Returns how many were
    /// written. Call it periodically (see [`Self::spawn_replay_sync`]).
    pub fn sync_replay_edges(&self) -> Result<usize, BackendError> {
        if self.maps.is_empty() {
            return Ok(0);
        }
        let mut moved: Vec<(u32, u64)> = Vec::new();
        self.table
            .for_each_right_edge(|spi, edge| moved.push((spi, edge)));
        let mut st = lock(&self.state);
        let mut n = 0;
        for (spi, edge) in moved {
            // Only SAs we installed (and have not removed since the snapshot).
            let Some(info) = st.inbound.get_mut(&spi) else {
                continue;
            };
            if info.value.replay_right_edge >= edge {
                continue;
            }
            info.value.replay_right_edge = edge;
            let v = info.value;
            self.each_map(|m| m.install_sa_in(spi, v))?;
            n += 1;
        }
        Ok(n)
    }

    /// Runs [`Self::sync_replay_edges`] every `interval` on a thread until
    /// `stop` is set (errors are logged and retried).
    pub fn spawn_replay_sync(
        self: &Arc<Self>,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("replay-sync".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = me.sync_replay_edges() {
                        tracing::warn!(error = %e, "replay edge sync failed");
                    }
                    // Sleep in short steps so `stop` is honoured quickly.
                    let mut left = interval;
                    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
                        let step = left.min(Duration::from_millis(50));
                        std::thread::sleep(step);
                        left -= step;
                    }
                }
            })
    }

    /// The TUN carries what the fast path carries, so that the kernel's
    /// ICMP errors and fragmentation on the slow path give the same MTU.
    fn tun_mtu(st: &mut State, tunnel: TunnelId, mtu: u32) {
        let (Some(nl), Some(&ifindex)) = (st.netlink.as_mut(), st.tun_ifindex.get(&tunnel)) else {
            return;
        };
        match nl.set_mtu(ifindex, mtu) {
            Ok(()) => tracing::info!(tunnel, inner_mtu = mtu, "tunnel MTU"),
            Err(e) => tracing::warn!(tunnel, error = %e, "cannot set the TUN's MTU"),
        }
    }

    fn kernel_route(
        st: &mut State,
        prefix: IpPrefix,
        tunnel: Option<TunnelId>,
    ) -> Result<(), BackendError> {
        let Some(nl) = st.netlink.as_mut() else {
            return Ok(());
        };
        let mut r = Route::new(prefix.addr(), prefix.len());
        match tunnel {
            Some(t) => {
                let Some(&oif) = st.tun_ifindex.get(&t) else {
                    return Ok(());
                };
                r.oif = Some(oif);
                nl.replace_route(&r)
                    .map_err(|source| BackendError::KernelRoute {
                        prefix,
                        tunnel: t,
                        source,
                    })
            }
            None => match nl.del_route(&r) {
                Err(e) if e.errno() == Some(libc::ESRCH) => Ok(()),
                other => other.map_err(|source| BackendError::KernelRoute {
                    prefix,
                    tunnel: u32::MAX,
                    source,
                }),
            },
        }
    }
}

impl DataPlane for GatewayDataPlane {
    fn install_inbound_sa(&self, sa: InboundSaConfig) -> Result<(), DataPlaneError> {
        self.check_tunnel_id(sa.tunnel)?;
        let mut st = lock(&self.state);
        self.table.install_inbound(&sa)?;
        let slot = st.alloc_slot();
        let value = SaInValue {
            tunnel_id: sa.tunnel,
            sa_index: slot,
            replay_right_edge: 0,
            replay_window: sa.replay_window,
            flags: if sa.esn { SA_FLAG_ESN } else { 0 },
        };
        if let Err(e) = self.each_map(|m| m.install_sa_in(sa.spi, value)) {
            // Undo so the two sides agree: the SA is not installed.
            let _ = self.each_map(|m| m.remove_sa_in(sa.spi));
            let _ = self.table.remove_inbound(sa.spi);
            st.free_slots.push(slot);
            return Err(BackendError::from(e).into());
        }
        st.inbound.insert(sa.spi, InboundInfo { value });
        Ok(())
    }

    fn install_outbound_sa(&self, sa: OutboundSaConfig) -> Result<Option<u32>, DataPlaneError> {
        // Refused before the table switches: a half-done switch (table yes,
        // TUNNELS no) cannot be rolled back.
        self.check_tunnel_id(sa.tunnel)?;
        let mut st = lock(&self.state);
        let prev = self.table.install_outbound(&sa)?;
        let mtu = inner_mtu(
            sa.keys.suite(),
            sa.outer.dst.is_ipv6(),
            sa.outer.udp.is_some(),
            self.wan_mtu.load(Ordering::Relaxed),
        );
        let value = TunnelValue {
            state: TUNNEL_UP,
            family: if sa.outer.dst.is_ipv4() {
                FAMILY_V4
            } else {
                FAMILY_V6
            },
            local: addr_bytes(sa.outer.src),
            remote: addr_bytes(sa.outer.dst),
            inner_mtu: mtu,
            _pad: 0,
        };
        let mtu_changed = st.tunnels.get(&sa.tunnel).map(|t| t.inner_mtu) != Some(mtu);
        self.params.set_inner_mtu(sa.tunnel, mtu);
        if st.tunnels.get(&sa.tunnel) != Some(&value) {
            self.each_map(|m| m.set_tunnel(sa.tunnel, value))
                .map_err(BackendError::from)?;
            st.tunnels.insert(sa.tunnel, value);
        }
        if mtu_changed {
            Self::tun_mtu(&mut st, sa.tunnel, mtu);
        }
        Ok(prev)
    }

    fn remove_inbound_sa(&self, spi: u32) -> Result<(), DataPlaneError> {
        let mut st = lock(&self.state);
        if st.inbound.contains_key(&spi) {
            self.each_map(|m| m.remove_sa_in(spi))
                .map_err(BackendError::from)?;
        }
        let r = self.table.remove_inbound(spi);
        if let Some(info) = st.inbound.remove(&spi) {
            st.free_slots.push(info.value.sa_index);
        }
        r
    }

    fn remove_outbound_sa(&self, tunnel: TunnelId, spi: u32) -> Result<(), DataPlaneError> {
        let mut st = lock(&self.state);
        match self.table.outbound(tunnel) {
            Some(e) if e.sa.spi() == spi => {}
            _ => return Err(DataPlaneError::NoOutboundSa { tunnel, spi }),
        }
        if let Some(v) = st.tunnels.get(&tunnel).copied() {
            let down = TunnelValue {
                state: TUNNEL_DOWN,
                ..v
            };
            self.each_map(|m| m.set_tunnel(tunnel, down))
                .map_err(BackendError::from)?;
            st.tunnels.remove(&tunnel);
        }
        self.table.remove_outbound(tunnel, spi)
    }

    fn set_outbound_udp_dst_port(
        &self,
        tunnel: TunnelId,
        spi: u32,
        port: u16,
    ) -> Result<(), DataPlaneError> {
        // The XDP maps hold no ports (inbound ESP is matched by SPI):
        // only the SA table's outer header moves.
        let _st = lock(&self.state);
        self.table.set_outbound_udp_dst_port(tunnel, spi, port)
    }

    fn install_route(&self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), DataPlaneError> {
        self.check_tunnel_id(tunnel)?;
        let mut st = lock(&self.state);
        let list = st.routes.entry(prefix).or_default();
        list.retain(|t| *t != tunnel);
        list.push(tunnel);
        self.each_map(|m| m.add_route(prefix, tunnel))
            .map_err(BackendError::from)?;
        Self::kernel_route(&mut st, prefix, Some(tunnel))?;
        Ok(())
    }

    fn withdraw_route(&self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), DataPlaneError> {
        let mut st = lock(&self.state);
        let Some(list) = st.routes.get_mut(&prefix) else {
            return Ok(());
        };
        let was_active = list.last() == Some(&tunnel);
        list.retain(|t| *t != tunnel);
        let next = list.last().copied();
        if next.is_none() {
            st.routes.remove(&prefix);
        }
        if !was_active {
            return Ok(());
        }
        match next {
            Some(t) => self.each_map(|m| m.add_route(prefix, t)),
            None => self.each_map(|m| m.remove_route(prefix)),
        }
        .map_err(BackendError::from)?;
        Self::kernel_route(&mut st, prefix, next)?;
        Ok(())
    }

    fn tunnel_counters(&self, tunnel: TunnelId) -> Option<TunnelCountersSnapshot> {
        self.table.counters(tunnel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_esp::table::SaKeys;
    use gateway_esp::{Encryption, OuterHeader, Suite, TrafficSelectors, UdpEncap};
    use std::net::Ipv4Addr;

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        SaIn(u32, SaInValue),
        RemoveSaIn(u32),
        Tunnel(u32, TunnelValue),
        Route(IpPrefix, u32),
        RemoveRoute(IpPrefix),
    }

    /// Records map writes; `fail` makes the next `install_sa_in` fail.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<Call>,
        fail_sa_in: bool,
    }

    impl FastPathMaps for Recorder {
        fn install_sa_in(&mut self, spi: u32, value: SaInValue) -> Result<(), XdpError> {
            if self.fail_sa_in {
                return Err(XdpError::MissingMap("SA_IN"));
            }
            self.calls.push(Call::SaIn(spi, value));
            Ok(())
        }
        fn remove_sa_in(&mut self, spi: u32) -> Result<(), XdpError> {
            self.calls.push(Call::RemoveSaIn(spi));
            Ok(())
        }
        fn set_tunnel(&mut self, tunnel: TunnelId, value: TunnelValue) -> Result<(), XdpError> {
            self.calls.push(Call::Tunnel(tunnel, value));
            Ok(())
        }
        fn add_route(&mut self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), XdpError> {
            self.calls.push(Call::Route(prefix, tunnel));
            Ok(())
        }
        fn remove_route(&mut self, prefix: IpPrefix) -> Result<(), XdpError> {
            self.calls.push(Call::RemoveRoute(prefix));
            Ok(())
        }
    }

    fn suite() -> Suite {
        Suite::new(Encryption::Aes256Gcm, None).unwrap()
    }

    fn keys(b: u8) -> SaKeys {
        SaKeys::new(suite(), &[b; 36], &[]).unwrap()
    }

    fn inbound(tunnel: u32, spi: u32) -> InboundSaConfig {
        InboundSaConfig {
            tunnel,
            spi,
            keys: keys(spi as u8),
            esn: false,
            replay_window: 1024,
            selectors: TrafficSelectors::any(),
        }
    }

    fn outbound(tunnel: u32, spi: u32) -> OutboundSaConfig {
        OutboundSaConfig {
            tunnel,
            spi,
            keys: keys(spi as u8),
            esn: false,
            outer: OuterHeader {
                src: Ipv4Addr::new(192, 0, 2, 1).into(),
                dst: Ipv4Addr::new(192, 0, 2, 2).into(),
                udp: Some(UdpEncap::default()),
                ttl: 64,
            },
            lifetime: gateway_esp::Lifetime::NONE,
        }
    }

    fn setup() -> (GatewayDataPlane, Arc<Mutex<Recorder>>) {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        let mut dp = GatewayDataPlane::new(Arc::new(SaTable::new()));
        dp.add_maps(rec.clone());
        (dp, rec)
    }

    fn take(rec: &Arc<Mutex<Recorder>>) -> Vec<Call> {
        std::mem::take(&mut lock(rec).calls)
    }

    #[test]
    fn outbound_sa_sets_the_tunnel_inner_mtu_everywhere() {
        let (dp, rec) = setup();
        assert_eq!(dp.tunnel_inner_mtu(4), None);
        dp.set_wan_mtu(1492);
        dp.install_outbound_sa(outbound(4, 0x40)).unwrap();
        // AES-GCM over IPv4 with NAT-T: 60 bytes of overhead, PPPoE WAN.
        assert_eq!(dp.tunnel_inner_mtu(4), Some(1430));
        assert_eq!(dp.tunnel_params().inner_mtu(4), 1430);
        let calls = take(&rec);
        assert!(
            calls.iter().any(
                |c| matches!(c, Call::Tunnel(4, v) if v.inner_mtu == 1430 && v.state == TUNNEL_UP)
            ),
            "{calls:?}"
        );
        // MSS clamping is on unless turned off per tunnel.
        assert!(dp.tunnel_params().mss_clamp(4));
        dp.set_mss_clamp(4, false);
        assert!(!dp.tunnel_params().mss_clamp(4));
    }

    #[test]
    fn make_before_break_rekey_keeps_table_and_maps_in_step() {
        let (dp, rec) = setup();
        dp.install_inbound_sa(inbound(3, 0x100)).unwrap();
        assert_eq!(
            take(&rec),
            vec![Call::SaIn(
                0x100,
                SaInValue {
                    tunnel_id: 3,
                    sa_index: 0,
                    replay_right_edge: 0,
                    replay_window: 1024,
                    flags: 0
                }
            )]
        );
        assert!(dp.table().inbound(0x100).is_some());
        assert_eq!(dp.install_outbound_sa(outbound(3, 0x200)).unwrap(), None);
        let calls = take(&rec);
        assert!(
            matches!(calls.as_slice(), [Call::Tunnel(3, v)] if v.state == TUNNEL_UP && v.family == FAMILY_V4 && v.remote[..4] == [192, 0, 2, 2]),
            "{calls:?}"
        );

        // Rekey: new inbound in both places, switch, old inbound out of both.
        dp.install_inbound_sa(inbound(3, 0x101)).unwrap();
        assert!(matches!(take(&rec).as_slice(), [Call::SaIn(0x101, v)] if v.sa_index == 1));
        assert!(dp.table().inbound(0x100).is_some() && dp.table().inbound(0x101).is_some());
        assert_eq!(
            dp.install_outbound_sa(outbound(3, 0x201)).unwrap(),
            Some(0x200)
        );
        // Same outer addresses: TUNNELS untouched.
        assert_eq!(take(&rec), vec![]);
        assert_eq!(dp.table().outbound(3).unwrap().sa.spi(), 0x201);
        dp.remove_inbound_sa(0x100).unwrap();
        assert_eq!(take(&rec), vec![Call::RemoveSaIn(0x100)]);
        assert!(dp.table().inbound(0x100).is_none());
        // A late delete of the replaced outbound SA leaves its successor.
        assert!(dp.remove_outbound_sa(3, 0x200).is_err());
        assert_eq!(take(&rec), vec![]);
        // Slot 0 is reused.
        dp.install_inbound_sa(inbound(4, 0x300)).unwrap();
        assert!(matches!(take(&rec).as_slice(), [Call::SaIn(0x300, v)] if v.sa_index == 0));

        dp.remove_outbound_sa(3, 0x201).unwrap();
        let calls = take(&rec);
        assert!(
            matches!(calls.as_slice(), [Call::Tunnel(3, v)] if v.state == TUNNEL_DOWN),
            "{calls:?}"
        );
        assert!(dp.table().outbound(3).is_none());
    }

    #[test]
    fn failed_map_write_undoes_table_install() {
        let (dp, rec) = setup();
        lock(&rec).fail_sa_in = true;
        assert!(matches!(
            dp.install_inbound_sa(inbound(1, 0x42)),
            Err(DataPlaneError::Backend(_))
        ));
        assert!(dp.table().inbound(0x42).is_none());
        lock(&rec).fail_sa_in = false;
        dp.install_inbound_sa(inbound(1, 0x42)).unwrap();
        assert_eq!(dp.sa_in_value(0x42).unwrap().sa_index, 0);
        // Duplicate SPI refused by the table before any map write.
        take(&rec);
        assert!(matches!(
            dp.install_inbound_sa(inbound(1, 0x42)),
            Err(DataPlaneError::SpiInUse { spi: 0x42 })
        ));
        assert_eq!(take(&rec), vec![]);
        assert!(dp.remove_inbound_sa(0x9999).is_err());
        // A tunnel id TUNNELS cannot index is refused before the table moves.
        let big = gateway_common::TUNNELS_MAX_ENTRIES;
        assert!(dp.install_outbound_sa(outbound(big, 0x77)).is_err());
        assert!(dp.table().outbound(big).is_none());
        assert!(dp.install_inbound_sa(inbound(big, 0x78)).is_err());
        assert!(dp.table().inbound(0x78).is_none());
        assert!(dp
            .install_route("203.0.113.0/24".parse().unwrap(), big)
            .is_err());
        assert_eq!(take(&rec), vec![]);
    }

    #[test]
    fn routes_follow_the_latest_announcing_tunnel() {
        let (dp, rec) = setup();
        let p: IpPrefix = "203.0.113.0/24".parse().unwrap();
        dp.install_route(p, 1).unwrap();
        dp.install_route(p, 2).unwrap();
        assert_eq!(take(&rec), vec![Call::Route(p, 1), Call::Route(p, 2)]);
        // Withdrawing the inactive one changes nothing in the map.
        dp.withdraw_route(p, 1).unwrap();
        assert_eq!(take(&rec), vec![]);
        dp.install_route(p, 1).unwrap();
        dp.withdraw_route(p, 1).unwrap();
        assert_eq!(take(&rec), vec![Call::Route(p, 1), Call::Route(p, 2)]);
        dp.withdraw_route(p, 2).unwrap();
        assert_eq!(take(&rec), vec![Call::RemoveRoute(p)]);
        dp.withdraw_route(p, 2).unwrap();
        assert_eq!(take(&rec), vec![]);
    }

    #[test]
    fn replay_edges_are_copied_when_they_move() {
        let (dp, rec) = setup();
        dp.install_inbound_sa(inbound(1, 0x10)).unwrap();
        dp.install_outbound_sa(outbound(1, 0x10)).unwrap();
        take(&rec);
        assert_eq!(dp.sync_replay_edges().unwrap(), 0);
        // Loop a few packets through the table (same keys both ways).
        for _ in 0..5 {
            let mut buf = vec![0u8; 256];
            let inner = 100..128;
            buf[100] = 0x45;
            buf[102..104].copy_from_slice(&28u16.to_be_bytes());
            buf[108] = 64;
            buf[109] = 17;
            buf[112..116].copy_from_slice(&[198, 51, 100, 10]);
            buf[116..120].copy_from_slice(&[203, 0, 113, 10]);
            let e = dp.table().encap(1, &mut buf, inner).unwrap();
            dp.table().decap(&mut buf, e.packet).unwrap();
        }
        assert_eq!(dp.sync_replay_edges().unwrap(), 1);
        let calls = take(&rec);
        assert!(
            matches!(calls.as_slice(), [Call::SaIn(0x10, v)] if v.replay_right_edge == 5 && v.tunnel_id == 1),
            "{calls:?}"
        );
        assert_eq!(dp.sync_replay_edges().unwrap(), 0);
        assert_eq!(dp.tunnel_counters(1).unwrap().rx_packets, 5);
    }

    #[test]
    fn without_maps_only_the_table_is_programmed() {
        let dp = GatewayDataPlane::new(Arc::new(SaTable::new()));
        assert!(!dp.fast_path());
        dp.install_inbound_sa(inbound(1, 0x10)).unwrap();
        dp.install_outbound_sa(outbound(1, 0x11)).unwrap();
        dp.install_route("198.51.100.0/24".parse().unwrap(), 1)
            .unwrap();
        assert_eq!(dp.sync_replay_edges().unwrap(), 0);
        dp.remove_outbound_sa(1, 0x11).unwrap();
        dp.remove_inbound_sa(0x10).unwrap();
        assert!(dp.table().inbound(0x10).is_none());
    }
}
