//! [`FakeDataPlane`]: an in-memory [`DataPlane`] that records the calls
//! made on it, for the tests of IKE, BGP and the agent.

use super::*;

/// One call made on a [`FakeDataPlane`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPlaneCall {
    /// `install_inbound_sa`.
    InstallInbound(InboundSaConfig),
    /// `install_outbound_sa`.
    InstallOutbound(OutboundSaConfig),
    /// `remove_inbound_sa`.
    RemoveInbound {
        /// SPI.
        spi: u32,
    },
    /// `remove_outbound_sa`.
    RemoveOutbound {
        /// Tunnel.
        tunnel: TunnelId,
        /// SPI.
        spi: u32,
    },
    /// `set_outbound_udp_dst_port`.
    SetOutboundUdpDstPort {
        /// Tunnel.
        tunnel: TunnelId,
        /// SPI.
        spi: u32,
        /// New UDP destination port.
        port: u16,
    },
    /// `install_route`.
    InstallRoute {
        /// Prefix.
        prefix: IpPrefix,
        /// Tunnel.
        tunnel: TunnelId,
    },
    /// `withdraw_route`.
    WithdrawRoute {
        /// Prefix.
        prefix: IpPrefix,
        /// Tunnel.
        tunnel: TunnelId,
    },
}

#[derive(Debug, Default)]
struct FakeState {
    calls: Vec<DataPlaneCall>,
    inbound: BTreeMap<u32, InboundSaConfig>,
    outbound: BTreeMap<TunnelId, OutboundSaConfig>,
    routes: BTreeSet<(IpPrefix, TunnelId)>,
    counters: BTreeMap<TunnelId, TunnelCountersSnapshot>,
}

/// In-memory [`DataPlane`] for tests of IKE, BGP and the agent: records
/// every call and keeps the resulting state, with the same refusals as the
/// real table (SPI in use, unknown SPI, outbound SPI mismatch).
#[derive(Debug, Default)]
pub struct FakeDataPlane {
    state: Mutex<FakeState>,
}

impl FakeDataPlane {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order (successful or not).
    pub fn calls(&self) -> Vec<DataPlaneCall> {
        lock(&self.state).calls.clone()
    }

    /// Takes and clears the recorded calls.
    pub fn take_calls(&self) -> Vec<DataPlaneCall> {
        std::mem::take(&mut lock(&self.state).calls)
    }

    /// SPIs of the installed inbound SAs, ascending.
    pub fn inbound_spis(&self) -> Vec<u32> {
        lock(&self.state).inbound.keys().copied().collect()
    }

    /// The installed inbound SA with this SPI.
    pub fn inbound(&self, spi: u32) -> Option<InboundSaConfig> {
        lock(&self.state).inbound.get(&spi).cloned()
    }

    /// The installed outbound SA of a tunnel.
    pub fn outbound(&self, tunnel: TunnelId) -> Option<OutboundSaConfig> {
        lock(&self.state).outbound.get(&tunnel).cloned()
    }

    /// Installed routes, sorted.
    pub fn routes(&self) -> Vec<(IpPrefix, TunnelId)> {
        lock(&self.state).routes.iter().copied().collect()
    }

    /// Sets what `tunnel_counters` returns for a tunnel.
    pub fn set_counters(&self, tunnel: TunnelId, counters: TunnelCountersSnapshot) {
        lock(&self.state).counters.insert(tunnel, counters);
    }
}

impl DataPlane for FakeDataPlane {
    fn install_inbound_sa(&self, sa: InboundSaConfig) -> Result<(), DataPlaneError> {
        let mut s = lock(&self.state);
        s.calls.push(DataPlaneCall::InstallInbound(sa.clone()));
        if s.inbound.contains_key(&sa.spi) {
            return Err(DataPlaneError::SpiInUse { spi: sa.spi });
        }
        s.counters.entry(sa.tunnel).or_default();
        s.inbound.insert(sa.spi, sa);
        Ok(())
    }
    fn install_outbound_sa(&self, sa: OutboundSaConfig) -> Result<Option<u32>, DataPlaneError> {
        let mut s = lock(&self.state);
        s.calls.push(DataPlaneCall::InstallOutbound(sa.clone()));
        if sa.outer.src.is_ipv4() != sa.outer.dst.is_ipv4() {
            return Err(SaError::MixedFamilies {
                src: sa.outer.src,
                dst: sa.outer.dst,
            }
            .into());
        }
        s.counters.entry(sa.tunnel).or_default();
        Ok(s.outbound.insert(sa.tunnel, sa).map(|p| p.spi))
    }
    fn remove_inbound_sa(&self, spi: u32) -> Result<(), DataPlaneError> {
        let mut s = lock(&self.state);
        s.calls.push(DataPlaneCall::RemoveInbound { spi });
        s.inbound
            .remove(&spi)
            .map(|_| ())
            .ok_or(DataPlaneError::UnknownSpi { spi })
    }
    fn remove_outbound_sa(&self, tunnel: TunnelId, spi: u32) -> Result<(), DataPlaneError> {
        let mut s = lock(&self.state);
        s.calls.push(DataPlaneCall::RemoveOutbound { tunnel, spi });
        match s.outbound.get(&tunnel) {
            Some(o) if o.spi == spi => {
                s.outbound.remove(&tunnel);
                Ok(())
            }
            _ => Err(DataPlaneError::NoOutboundSa { tunnel, spi }),
        }
    }
    fn set_outbound_udp_dst_port(
        &self,
        tunnel: TunnelId,
        spi: u32,
        port: u16,
    ) -> Result<(), DataPlaneError> {
        let mut s = lock(&self.state);
        s.calls
            .push(DataPlaneCall::SetOutboundUdpDstPort { tunnel, spi, port });
        if port == 0 {
            return Err(DataPlaneError::InvalidUdpPort { port });
        }
        match s.outbound.get_mut(&tunnel) {
            Some(o) if o.spi == spi => match o.outer.udp.as_mut() {
                Some(u) => {
                    u.dst_port = port;
                    Ok(())
                }
                None => Err(DataPlaneError::NotUdpEncapsulated { tunnel, spi }),
            },
            _ => Err(DataPlaneError::NoOutboundSa { tunnel, spi }),
        }
    }
    fn install_route(&self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), DataPlaneError> {
        let mut s = lock(&self.state);
        s.calls.push(DataPlaneCall::InstallRoute { prefix, tunnel });
        s.routes.insert((prefix, tunnel));
        Ok(())
    }
    fn withdraw_route(&self, prefix: IpPrefix, tunnel: TunnelId) -> Result<(), DataPlaneError> {
        let mut s = lock(&self.state);
        s.calls
            .push(DataPlaneCall::WithdrawRoute { prefix, tunnel });
        s.routes.remove(&(prefix, tunnel));
        Ok(())
    }
    fn tunnel_counters(&self, tunnel: TunnelId) -> Option<TunnelCountersSnapshot> {
        lock(&self.state).counters.get(&tunnel).copied()
    }
}
