//! The typed accessors of the kernel ↔ userspace maps: inbound SAs (slots
//! and the spill hash), tunnels, LAN routes, local addresses, the LAN
//! config, the AF_XDP sockets, statistics and drop counters.

use super::*;

impl XdpDataplane {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, XdpError> {
        self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))
    }

    fn map_ref(&self, name: &'static str) -> Result<&Map, XdpError> {
        self.ebpf.map(name).ok_or(XdpError::MissingMap(name))
    }

    /// Installs (or replaces) the inbound SA with this SPI: into its slot
    /// of `SA_SLOTS` if it can, else into `SA_IN` (and `SA_IN_SPILL` counts
    /// it, so that `wan_ingress` looks there).
    pub fn install_sa_in(&mut self, spi: u32, value: SaInValue) -> Result<(), XdpError> {
        if !self.sa_hashed.contains(&spi) {
            match self.sa_slots.install(spi, &value) {
                Placement::Slot => return Ok(()),
                Placement::Spill => {}
                Placement::Move => {
                    // In the hash first: a lookup finds it all along.
                    self.hash_sa_in(spi, value)?;
                    self.sa_slots.remove(spi);
                    return Ok(());
                }
            }
        }
        self.hash_sa_in(spi, value)
    }

    /// `SA_IN[spi] = value`, then `SA_IN_SPILL` counts it.
    fn hash_sa_in(&mut self, spi: u32, value: SaInValue) -> Result<(), XdpError> {
        let name = map_names::SA_IN;
        let mut m: HashMap<_, SaInKey, SaInValue> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.insert(SaInKey { spi }, value, 0).map_err(map_err(name))?;
        self.sa_hashed.insert(spi);
        self.sa_spill.set_word(0, self.sa_hashed.len() as u64);
        Ok(())
    }

    /// Removes the inbound SA with this SPI (absent is not an error).
    pub fn remove_sa_in(&mut self, spi: u32) -> Result<(), XdpError> {
        if !self.sa_hashed.contains(&spi) {
            self.sa_slots.remove(spi);
            return Ok(());
        }
        let name = map_names::SA_IN;
        let mut m: HashMap<_, SaInKey, SaInValue> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        ignore_missing(m.remove(&SaInKey { spi })).map_err(map_err(name))?;
        self.sa_hashed.remove(&spi);
        self.sa_spill.set_word(0, self.sa_hashed.len() as u64);
        Ok(())
    }

    /// The inbound SA with this SPI, if installed.
    pub fn sa_in(&self, spi: u32) -> Result<Option<SaInValue>, XdpError> {
        if let Some(v) = self.sa_slots.get(spi) {
            return Ok(Some(v));
        }
        let name = map_names::SA_IN;
        let m: HashMap<_, SaInKey, SaInValue> =
            HashMap::try_from(self.map_ref(name)?).map_err(map_err(name))?;
        match m.get(&SaInKey { spi }, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(name)(e)),
        }
    }

    /// How many inbound SAs are in `SA_IN` rather than in their slot.
    pub fn sa_in_spilled(&self) -> usize {
        self.sa_hashed.len()
    }

    /// Sets the state and addresses of a tunnel.
    pub fn set_tunnel(&mut self, tunnel_id: u32, value: TunnelValue) -> Result<(), XdpError> {
        if tunnel_id >= TUNNELS_MAX_ENTRIES {
            return Err(XdpError::TunnelIdOutOfRange(tunnel_id));
        }
        let name = map_names::TUNNELS;
        let mut m: Array<_, TunnelValue> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.set(tunnel_id, value, 0).map_err(map_err(name))
    }

    /// Returns a tunnel id to its initial state before it is given to
    /// another tunnel: `TUNNELS` down and empty, its `STATS` zero on every
    /// CPU (both directions).
    pub fn forget_tunnel(&mut self, tunnel_id: u32) -> Result<(), XdpError> {
        self.set_tunnel(tunnel_id, TunnelValue::default())?;
        let name = map_names::STATS;
        let mut m: PerCpuArray<_, TunnelStats> =
            PerCpuArray::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| XdpError::Cpus(e))?;
        for d in [Direction::Inbound, Direction::Outbound] {
            let zero = PerCpuValues::try_from(vec![TunnelStats::default(); cpus])
                .map_err(|e| XdpError::Cpus(std::io::Error::other(e)))?;
            m.set(stats_index(tunnel_id, d), zero, 0)
                .map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Routes `prefix/len` into `tunnel_id` (replacing any previous route of
    /// that prefix).
    pub fn add_route_v4(
        &mut self,
        prefix: Ipv4Addr,
        len: u8,
        tunnel_id: u32,
    ) -> Result<(), XdpError> {
        if tunnel_id >= TUNNELS_MAX_ENTRIES {
            return Err(XdpError::TunnelIdOutOfRange(tunnel_id));
        }
        check_len_v4(len)?;
        Ok(self.routes_v4.insert(prefix, len, tunnel_id)?)
    }

    pub fn remove_route_v4(&mut self, prefix: Ipv4Addr, len: u8) -> Result<(), XdpError> {
        check_len_v4(len)?;
        Ok(self.routes_v4.remove(prefix, len)?)
    }

    /// The IPv4 route `lan_ingress` finds for `addr` (tunnel id, prefix
    /// length), read from the maps.
    pub fn route_v4(&self, addr: Ipv4Addr) -> Option<(u32, u8)> {
        self.routes_v4.lookup(addr)
    }

    /// The route tables' fill, for metrics.
    pub fn route_table_usage(&self) -> RouteTableUsage {
        RouteTableUsage {
            v4_prefixes: self.routes_v4.len(),
            v6_prefixes: self.lengths_v6.len(),
            v4_groups_used: self.routes_v4.groups_in_use(),
            v4_groups_limit: self.routes_v4.groups(),
            v4_punted: self.routes_v4.punted(),
        }
    }

    /// How many IPv4 prefixes the table holds.
    pub fn routes_v4_len(&self) -> usize {
        self.routes_v4.len()
    }

    /// Routes `prefix/len` into `tunnel_id` (replacing any previous route of
    /// that prefix): the prefix into `ROUTES_V6`, then its length into the
    /// bitmap that lookups follow.
    pub fn add_route_v6(
        &mut self,
        prefix: Ipv6Addr,
        len: u8,
        tunnel_id: u32,
    ) -> Result<(), XdpError> {
        if tunnel_id >= TUNNELS_MAX_ENTRIES {
            return Err(XdpError::TunnelIdOutOfRange(tunnel_id));
        }
        let key = key_v6(prefix, len)?;
        let mut m = self.routes_v6()?;
        m.insert(key, RouteValue { tunnel_id }, 0)
            .map_err(map_err(map_names::ROUTES_V6))?;
        self.lengths_v6
            .inserted(u128::from_be_bytes(key.prefix), len);
        Ok(())
    }

    /// Removes the route of `prefix/len` (absent is not an error); its
    /// length leaves the bitmap after its last prefix.
    pub fn remove_route_v6(&mut self, prefix: Ipv6Addr, len: u8) -> Result<(), XdpError> {
        let key = key_v6(prefix, len)?;
        let mut m = self.routes_v6()?;
        ignore_missing(m.remove(&key)).map_err(map_err(map_names::ROUTES_V6))?;
        self.lengths_v6
            .removed(u128::from_be_bytes(key.prefix), len);
        Ok(())
    }

    /// How many IPv6 prefixes the table holds.
    pub fn routes_v6_len(&self) -> usize {
        self.lengths_v6.len()
    }

    /// Bulk insert for large tables (memory writes into the mapped
    /// tables, no syscall per route).
    pub fn add_routes_v4(
        &mut self,
        routes: impl IntoIterator<Item = (Ipv4Addr, u8, u32)>,
    ) -> Result<usize, XdpError> {
        let mut n = 0;
        for (prefix, len, tunnel_id) in routes {
            self.add_route_v4(prefix, len, tunnel_id)?;
            n += 1;
        }
        Ok(n)
    }

    fn routes_v6(&mut self) -> Result<HashMap<&mut MapData, route6::Key, RouteValue>, XdpError> {
        let name = map_names::ROUTES_V6;
        HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))
    }

    /// Replaces the set of our public addresses (ESP to anything else is
    /// passed to the kernel).
    pub fn set_local_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), XdpError> {
        let name = map_names::LOCAL_ADDRS;
        let mut m: HashMap<_, LocalAddrKey, LocalAddrValue> =
            HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        let wanted: Vec<LocalAddrKey> = addrs.iter().map(|a| local_key(*a)).collect();
        let stale: Vec<LocalAddrKey> = m
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        for k in stale {
            ignore_missing(m.remove(&k)).map_err(map_err(name))?;
        }
        for k in wanted {
            m.insert(k, LocalAddrValue { flags: 1 }, 0)
                .map_err(map_err(name))?;
        }
        Ok(())
    }

    /// Sets what `lan_ingress` answers too-big packets with: the LAN
    /// addresses and the ICMP rate limit.
    pub fn set_lan_config(&mut self, value: LanConfig) -> Result<(), XdpError> {
        let name = map_names::LAN_CONFIG;
        let mut m: Array<_, LanConfig> =
            Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.set(0, value, 0).map_err(map_err(name))
    }

    /// Writes the AF_XDP socket `fd` for receive queue `queue`. Must be
    /// called by the process that owns the socket.
    pub fn set_xsk(&mut self, queue: u32, fd: impl AsRawFd) -> Result<(), XdpError> {
        let name = map_names::XSKS;
        let mut m = XskMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.set(queue, fd.as_raw_fd(), 0).map_err(map_err(name))
    }

    pub fn unset_xsk(&mut self, queue: u32) -> Result<(), XdpError> {
        let name = map_names::XSKS;
        let mut m = XskMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        ignore_missing(m.unset(queue)).map_err(map_err(name))
    }

    /// A tunnel's counters for one direction, summed over CPUs.
    pub fn tunnel_stats(
        &self,
        tunnel_id: u32,
        direction: Direction,
    ) -> Result<TunnelStats, XdpError> {
        if tunnel_id >= TUNNELS_MAX_ENTRIES {
            return Err(XdpError::TunnelIdOutOfRange(tunnel_id));
        }
        let name = map_names::STATS;
        let m: PerCpuArray<_, TunnelStats> =
            PerCpuArray::try_from(self.map_ref(name)?).map_err(map_err(name))?;
        let per_cpu = m
            .get(&stats_index(tunnel_id, direction), 0)
            .map_err(map_err(name))?;
        Ok(per_cpu
            .iter()
            .fold(TunnelStats::default(), |a, s| TunnelStats {
                packets: a.packets + s.packets,
                bytes: a.bytes + s.bytes,
                no_socket: a.no_socket + s.no_socket,
            }))
    }

    /// Which drops the programs send to the log as events (aya-log), from
    /// now on.
    pub fn set_drop_events(&mut self, level: gateway_config::DropEvents) -> Result<(), XdpError> {
        let name = map_names::DROP_LOG;
        let mut m: Array<_, u32> = Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        m.set(0, level.aya_level(), 0).map_err(map_err(name))
    }

    /// Starts a thread that reads the programs' aya-log records (drop
    /// events) and writes them to the daemon's log; once per loaded
    /// object. Whether the programs send any is [`Self::set_drop_events`].
    pub fn start_drop_events(&mut self) -> Result<super::super::drop_events::Reader, XdpError> {
        let logger = self.drop_event_logger(super::super::drop_events::TracingLog)?;
        super::super::drop_events::Reader::start(logger)
            .map_err(|e| XdpError::DropEvents(e.to_string()))
    }

    /// The programs' aya-log records, delivered to `logger` at each
    /// `flush`; once per loaded object (it takes the ring buffer).
    pub fn drop_event_logger<T: log::Log>(
        &mut self,
        logger: T,
    ) -> Result<aya_log::EbpfLogger<T>, XdpError> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, logger)
            .map_err(|e| XdpError::DropEvents(e.to_string()))
    }

    /// Drops for one reason, summed over CPUs.
    pub fn drop_count(&self, reason: DropReason) -> Result<u64, XdpError> {
        let name = map_names::DROPS;
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.map_ref(name)?).map_err(map_err(name))?;
        let per_cpu = m.get(&(reason as u32), 0).map_err(map_err(name))?;
        Ok(per_cpu.iter().sum())
    }

    /// Every drop reason with its count, summed over CPUs.
    pub fn drops(&self) -> Result<Vec<(DropReason, u64)>, XdpError> {
        DropReason::ALL
            .iter()
            .map(|r| Ok((*r, self.drop_count(*r)?)))
            .collect()
    }
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> XdpError {
    move |source| XdpError::Map { map, source }
}

pub(super) fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(ref e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other,
    }
}

pub(super) fn check_len_v4(len: u8) -> Result<(), XdpError> {
    if len > 32 {
        return Err(XdpError::BadPrefixLen {
            len,
            family: "IPv4",
        });
    }
    Ok(())
}

/// Maps the array map `name` of `elements` 8-byte elements (or their
/// equivalent: 4 for a 32-byte `SaSlot`) into the daemon.
pub(super) fn map_array(
    ebpf: &Ebpf,
    name: &'static str,
    elements: u32,
) -> Result<MappedArray, XdpError> {
    let Some(Map::Array(data)) = ebpf.map(name) else {
        return Err(XdpError::MissingMap(name));
    };
    let entries = elements as usize * route4::ENTRIES_PER_ELEMENT as usize;
    MappedArray::map(data.fd().as_fd(), entries)
        .map_err(|source| XdpError::MapMemory { map: name, source })
}

/// The `ROUTES_V6` key of `prefix/len` (host bits cleared).
pub(super) fn key_v6(prefix: Ipv6Addr, len: u8) -> Result<route6::Key, XdpError> {
    if len > 128 {
        return Err(XdpError::BadPrefixLen {
            len,
            family: "IPv6",
        });
    }
    let a = u128::from(prefix);
    Ok(route6::key((a >> 64) as u64, a as u64, len.into()))
}

/// The `LOCAL_ADDRS` key of an address.
pub fn local_key(addr: IpAddr) -> LocalAddrKey {
    match addr {
        IpAddr::V4(a) => LocalAddrKey::v4(a.octets()),
        IpAddr::V6(a) => LocalAddrKey::v6(a.octets()),
    }
}
