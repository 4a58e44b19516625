//! CHILD SA creation (RFC 7296 §1.3, §2.9): ESP proposals from the
//! connection's `esp_ciphers`, traffic selectors (0.0.0.0/0 and ::/0 for a
//! route-based tunnel, narrowed by the responder), KEYMAT, and the
//! `InstallChildSa` action. Runs inside IKE_AUTH for the first CHILD SA.
//! A failure here is not fatal for the IKE SA: the responder answers with
//! NO_PROPOSAL_CHOSEN / TS_UNACCEPTABLE instead of SA/TS payloads. `install`
//! is the one place CHILD SAs come into being, and it refuses to unless
//! the IKE SA is authenticated, whatever exchange asked.

use crate::action::{Action, ChildSaInstall, LogLevel, UdpEncap};
use crate::child_sa::{derive_child_keys, ChildSa, ChildSaState};
use crate::config::{chosen_proposal, esp_chosen, esp_proposals, select_esp, EspChosen};
use crate::ike_sa::IkeSa;
use crate::message::Message;
use crate::payload::{notify, proto, NotifyPayload, Payload, Proposal, TrafficSelector};
use crate::spi::SpiLease;

use super::TaskError;

/// Responder's choice: peer proposal number, peer SPI, transforms, TSi, TSr.
type Selected = (
    u8,
    u32,
    EspChosen,
    Vec<TrafficSelector>,
    Vec<TrafficSelector>,
);

#[derive(Default)]
pub(crate) struct ChildCreate {
    spi_in: Option<SpiLease>,
    /// Responder: what we chose, or the notify to answer instead.
    chosen: Option<Selected>,
    failure: Option<u16>,
    skipped: bool,
}

pub(crate) fn find_sa(msg: &Message) -> Option<&Vec<Proposal>> {
    msg.payloads.iter().find_map(|p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

pub(crate) fn find_ts(msg: &Message, initiator: bool) -> Option<&Vec<TrafficSelector>> {
    msg.payloads.iter().find_map(|p| match (p, initiator) {
        (Payload::TsI(t), true) | (Payload::TsR(t), false) => Some(t),
        _ => None,
    })
}

/// Responder narrowing (§2.9): every non-empty intersection of what the
/// peer proposes with what we allow.
pub(crate) fn narrow(theirs: &[TrafficSelector], ours: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for t in theirs {
        for o in ours {
            if let Some(i) = t.intersect(o) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Where a CHILD SA's KEYMAT comes from: the nonces of the exchange that
/// created it (IKE_AUTH: the IKE SA's), its optional PFS secret, and
/// whether we initiated that exchange (§2.17 orders keys by it).
pub(crate) struct KeySource<'a> {
    pub gir: Option<&'a [u8]>,
    pub ni: &'a [u8],
    pub nr: &'a [u8],
    pub exchange_initiator: bool,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call per creating exchange; a struct would only rename them"
)]
pub(crate) fn install(
    sa: &mut IkeSa,
    lease: SpiLease,
    spi_out: u32,
    chosen: EspChosen,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    src: KeySource<'_>,
    replaces_spi_in: Option<u32>,
) -> bool {
    let spi_in = lease.spi();
    if !sa.authenticated {
        // The exchanges are gated by state already (`task_manager`); this
        // is the last line: no key material for an unauthenticated peer.
        sa.log(
            LogLevel::Warn,
            format!("CHILD SA {spi_in:08x}_i refused: the IKE SA is not authenticated"),
        );
        return false;
    }
    let (Some(c), Some(k)) = (sa.cipher, sa.keys.as_ref()) else {
        return false;
    };
    let (keys_in, keys_out) = derive_child_keys(
        c.prf,
        &k.sk_d,
        src.gir,
        src.ni,
        src.nr,
        &chosen,
        src.exchange_initiator,
    );
    let udp_encap = sa.encap.then_some(UdpEncap {
        local_port: sa.local.port(),
        remote_port: sa.remote.port(),
    });
    sa.log(
        LogLevel::Info,
        format!(
            "CHILD SA {spi_in:08x}_i {spi_out:08x}_o installed: {}{}{}{}",
            chosen.encr.api_name(),
            chosen
                .integ
                .map(|i| format!("/{}", i.api_name()))
                .unwrap_or_default(),
            if chosen.esn { " ESN" } else { "" },
            if sa.encap { " UDP-encap" } else { "" }
        ),
    );
    // Answering the peer's rekey of a CHILD SA we are not rekeying
    // ourselves: the peer can open the new SA's ESP only once it has our
    // answer, so we keep sending on the old one until it deletes it (a
    // collision, §2.8.1, switches at once as before).
    let deferred = !src.exchange_initiator
        && replaces_spi_in.is_some_and(|old| {
            sa.children
                .iter()
                .any(|c| c.spi_in == old && c.state == ChildSaState::Installed)
        });
    if let Some(c) =
        replaces_spi_in.and_then(|old| sa.children.iter_mut().find(|c| c.spi_in == old))
    {
        c.state = ChildSaState::Rekeyed;
        c.rekey_at = None;
    }
    sa.children.push(ChildSa {
        _lease: lease,
        spi_in,
        spi_out,
        chosen,
        encap: sa.encap,
        local_ts: local_ts.clone(),
        remote_ts: remote_ts.clone(),
        state: ChildSaState::Installed,
        installed_at: sa.last_rx,
        rekey_at: sa
            .conn
            .child_rekey_time
            .map(|t| crate::child_sa::jittered(sa.last_rx, t)),
        expire_at: sa.conn.child_lifetime.map(|t| sa.last_rx + t),
        replaces: replaces_spi_in,
        outbound_deferred_until: deferred.then(|| sa.last_rx + sa.conn.rekey_grace),
        keys: crate::child_sa::ChildKeys {
            inbound: keys_in.clone(),
            outbound: keys_out.clone(),
        },
    });
    if let Some(old) = replaces_spi_in {
        sa.log(
            LogLevel::Info,
            format!("CHILD SA {spi_in:08x}_i replaces {old:08x}_i"),
        );
    }
    sa.out.push(Action::InstallChildSa(ChildSaInstall {
        conn: sa.conn.name.clone(),
        ike: sa.id(),
        spi_in,
        spi_out,
        encryption: chosen.encr.api_name(),
        integrity: chosen.integ.map(|i| i.api_name()),
        keys_in,
        keys_out,
        esn: chosen.esn,
        udp_encap,
        local_addr: sa.local.ip(),
        remote_addr: sa.remote.ip(),
        local_ts,
        remote_ts,
        replaces_spi_in,
        outbound_deferred: deferred,
        volume: sa.conn.child_volume,
        resume: None,
    }));
    true
}

impl ChildCreate {
    pub(crate) fn build_i(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        let lease = sa.new_spi_in().ok_or_else(|| {
            TaskError::fatal(
                None,
                crate::action::DownReason::Protocol(notify::NO_ADDITIONAL_SAS),
                "no free inbound SPI",
            )
        })?;
        out.push(Payload::Sa(esp_proposals(
            &sa.conn.esp_ciphers,
            lease.spi(),
            sa.conn.esn,
            false,
        )));
        self.spi_in = Some(lease);
        out.push(Payload::TsI(sa.conn.local_ts.clone()));
        out.push(Payload::TsR(sa.conn.remote_ts.clone()));
        Ok(())
    }

    pub(crate) fn process_i(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        if let Some(n) = msg.notifies().find(|n| n.is_error()) {
            sa.log(
                LogLevel::Warn,
                format!("CHILD SA not created: peer answered notify {}", n.ntype),
            );
            return Ok(());
        }
        let Some(props) = find_sa(msg) else {
            sa.log(
                LogLevel::Warn,
                "CHILD SA not created: no SA payload in response".into(),
            );
            return Ok(());
        };
        let Some((spi_out, chosen)) = esp_chosen(&sa.conn.esp_ciphers, props, false, sa.conn.esn)
        else {
            sa.log(
                LogLevel::Warn,
                "CHILD SA not created: responder chose an ESP proposal we did not offer".into(),
            );
            return Ok(());
        };
        let (Some(tsi), Some(tsr)) = (find_ts(msg, true), find_ts(msg, false)) else {
            sa.log(
                LogLevel::Warn,
                "CHILD SA not created: no traffic selectors in response".into(),
            );
            return Ok(());
        };
        // Accept narrowing, but never widening.
        let ok = |got: &Vec<TrafficSelector>, ours: &[TrafficSelector]| {
            !got.is_empty() && got.iter().all(|t| ours.iter().any(|o| t.is_subset_of(o)))
        };
        if !ok(tsi, &sa.conn.local_ts) || !ok(tsr, &sa.conn.remote_ts) {
            sa.log(
                LogLevel::Warn,
                "CHILD SA not created: responder widened the traffic selectors".into(),
            );
            return Ok(());
        }
        let (ni, nr) = (sa.ni.clone(), sa.nr.clone());
        let src = KeySource {
            gir: None,
            ni: &ni,
            nr: &nr,
            exchange_initiator: true,
        };
        let Some(lease) = self.spi_in.take() else {
            return Ok(());
        };
        install(
            sa,
            lease,
            spi_out,
            chosen,
            tsi.clone(),
            tsr.clone(),
            src,
            None,
        );
        Ok(())
    }

    pub(crate) fn process_r(&mut self, sa: &mut IkeSa, msg: &Message) -> Result<(), TaskError> {
        let Some(props) = find_sa(msg) else {
            // IKE_AUTH without a CHILD SA (RFC 6023 style): nothing to do.
            self.skipped = true;
            return Ok(());
        };
        let Some((number, spi_out, chosen)) =
            select_esp(&sa.conn.esp_ciphers, props, false, sa.conn.esn)
        else {
            sa.log(
                LogLevel::Warn,
                "no acceptable ESP proposal from peer".into(),
            );
            self.failure = Some(notify::NO_PROPOSAL_CHOSEN);
            return Ok(());
        };
        let (Some(tsi), Some(tsr)) = (find_ts(msg, true), find_ts(msg, false)) else {
            self.failure = Some(notify::TS_UNACCEPTABLE);
            return Ok(());
        };
        let tsi = narrow(tsi, &sa.conn.remote_ts);
        let tsr = narrow(tsr, &sa.conn.local_ts);
        if tsi.is_empty() || tsr.is_empty() {
            sa.log(
                LogLevel::Warn,
                "peer's traffic selectors do not overlap ours".into(),
            );
            self.failure = Some(notify::TS_UNACCEPTABLE);
            return Ok(());
        }
        let Some(lease) = sa.new_spi_in() else {
            sa.log(LogLevel::Warn, "no free inbound SPI".into());
            self.failure = Some(notify::NO_ADDITIONAL_SAS);
            return Ok(());
        };
        self.spi_in = Some(lease);
        self.chosen = Some((number, spi_out, chosen, tsi, tsr));
        Ok(())
    }

    pub(crate) fn build_r(
        &mut self,
        sa: &mut IkeSa,
        out: &mut Vec<Payload>,
    ) -> Result<(), TaskError> {
        if self.skipped {
            return Ok(());
        }
        if let Some(n) = self.failure {
            out.push(Payload::Notify(NotifyPayload::new(n, Vec::new())));
            return Ok(());
        }
        let (Some((number, spi_out, chosen, tsi, tsr)), Some(lease)) =
            (self.chosen.take(), self.spi_in.take())
        else {
            return Ok(());
        };
        if !sa.authenticated {
            // IKE_AUTH failed before us; `install` would refuse anyway.
            return Ok(());
        }
        out.push(Payload::Sa(chosen_proposal(
            number,
            proto::ESP,
            lease.spi().to_be_bytes().to_vec(),
            chosen.transforms(),
        )));
        out.push(Payload::TsI(tsi.clone()));
        out.push(Payload::TsR(tsr.clone()));
        // For the responder, TSi is the remote side.
        let (ni, nr) = (sa.ni.clone(), sa.nr.clone());
        let src = KeySource {
            gir: None,
            ni: &ni,
            nr: &nr,
            exchange_initiator: false,
        };
        install(sa, lease, spi_out, chosen, tsr, tsi, src, None);
        Ok(())
    }
}
