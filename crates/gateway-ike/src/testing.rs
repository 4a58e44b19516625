//! A scripted IKE peer for tests and fuzzing (feature `testing`): it runs
//! IKE_SA_INIT against an [`crate::IkeManager`] in either role with the
//! crate's own crypto, so it knows the IKE SA's SK keys, and then seals
//! whatever it is told to (payloads, or raw hostile payload chains) as
//! protected messages of that IKE SA. It knows the PSK only when a test
//! gives it one. Nothing here is used by the gateway itself.

use std::net::SocketAddr;

use thiserror::Error;

use crate::config::{esp_proposals, ike_chosen, ike_proposals, select_ike, EspCipher, IkeCipher};
use crate::crypto::{
    derive_ike_keys, psk_auth, random_bytes, skeyseed, DhPrivate, IkeKeys, SkCrypto, SkDirKeys,
};
use crate::message::{exchange, Message, MessageError, FLAG_INITIATOR, FLAG_RESPONSE};
use crate::payload::{
    notify, AuthPayload, IdPayload, KePayload, NotifyPayload, Payload, TrafficSelector,
    AUTH_SHARED_KEY_MIC,
};

#[derive(Debug, Error)]
pub enum ScriptError {
    #[error("message: {0}")]
    Message(#[from] MessageError),
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
}

/// One side of an IKE SA played by a test.
pub struct ScriptedPeer {
    pub spi_i: u64,
    pub spi_r: u64,
    /// This script is the original initiator.
    pub initiator: bool,
    pub cipher: IkeCipher,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// The IKE_SA_INIT request and response octets (for AUTH).
    pub init_req: Vec<u8>,
    pub init_resp: Vec<u8>,
    dh: Option<DhPrivate>,
    keys: Option<IkeKeys>,
}

fn find<'a, T>(msg: &'a Message, f: impl Fn(&'a Payload) -> Option<T>) -> Option<T> {
    msg.payloads.iter().find_map(f)
}

impl ScriptedPeer {
    /// Initiator: an IKE_SA_INIT request offering `cipher` (no NAT
    /// detection: plain IKE on port 500).
    pub fn initiate(cipher: IkeCipher, spi_i: u64) -> (Self, Vec<u8>) {
        let dh = DhPrivate::generate(cipher.dh);
        let ni = random_bytes(32);
        let mut m = Message::new(spi_i, 0, exchange::IKE_SA_INIT, FLAG_INITIATOR, 0);
        m.payloads.push(Payload::Sa(ike_proposals(&[cipher], &[])));
        m.payloads.push(Payload::Ke(KePayload {
            group: cipher.dh.id(),
            data: dh.public_value(),
        }));
        m.payloads.push(Payload::Nonce(ni.clone()));
        let bytes = m.encode_plain();
        let peer = Self {
            spi_i,
            spi_r: 0,
            initiator: true,
            cipher,
            ni,
            nr: Vec::new(),
            init_req: bytes.clone(),
            init_resp: Vec::new(),
            dh: Some(dh),
            keys: None,
        };
        (peer, bytes)
    }

    /// Initiator: takes the responder's IKE_SA_INIT response and derives
    /// the IKE SA keys.
    pub fn complete_init(&mut self, resp: &[u8]) -> Result<(), ScriptError> {
        let m = Message::decode(resp)?;
        if m.exchange != exchange::IKE_SA_INIT || !m.is_response() {
            return Err(ScriptError::Unexpected("not an IKE_SA_INIT response"));
        }
        let props = find(&m, |p| match p {
            Payload::Sa(s) => Some(s),
            _ => None,
        })
        .ok_or(ScriptError::Unexpected("no SA payload"))?;
        ike_chosen(&[self.cipher], props).ok_or(ScriptError::Unexpected("proposal"))?;
        let ke = find(&m, |p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        })
        .ok_or(ScriptError::Unexpected("no KE"))?;
        let nr = find(&m, |p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        })
        .ok_or(ScriptError::Unexpected("no nonce"))?;
        let dh = self.dh.take().ok_or(ScriptError::Unexpected("no DH"))?;
        let gir = dh
            .shared_secret(&ke.data)
            .map_err(|_| ScriptError::Unexpected("KE"))?;
        self.nr = nr;
        self.spi_r = m.spi_r;
        self.init_resp = resp.to_vec();
        self.derive(&gir);
        Ok(())
    }

    /// Responder: answers an IKE_SA_INIT request with `cipher` (which the
    /// request must offer, with a KE of its group) and SPI `spi_r`.
    pub fn respond(
        cipher: IkeCipher,
        req: &[u8],
        spi_r: u64,
    ) -> Result<(Self, Vec<u8>), ScriptError> {
        let m = Message::decode(req)?;
        if m.exchange != exchange::IKE_SA_INIT || m.is_response() {
            return Err(ScriptError::Unexpected("not an IKE_SA_INIT request"));
        }
        let props = find(&m, |p| match p {
            Payload::Sa(s) => Some(s),
            _ => None,
        })
        .ok_or(ScriptError::Unexpected("no SA payload"))?;
        let (number, _) =
            select_ike(&[cipher], props).ok_or(ScriptError::Unexpected("proposal"))?;
        let ke = find(&m, |p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        })
        .ok_or(ScriptError::Unexpected("no KE"))?;
        let ni = find(&m, |p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        })
        .ok_or(ScriptError::Unexpected("no nonce"))?;
        let dh = DhPrivate::generate(cipher.dh);
        let gir = dh
            .shared_secret(&ke.data)
            .map_err(|_| ScriptError::Unexpected("KE"))?;
        let nr = random_bytes(32);
        let mut r = Message::new(m.spi_i, spi_r, exchange::IKE_SA_INIT, FLAG_RESPONSE, 0);
        r.payloads.push(Payload::Sa(crate::config::chosen_proposal(
            number,
            crate::payload::proto::IKE,
            Vec::new(),
            crate::config::ike_cipher_transforms(&cipher),
        )));
        r.payloads.push(Payload::Ke(KePayload {
            group: cipher.dh.id(),
            data: dh.public_value(),
        }));
        r.payloads.push(Payload::Nonce(nr.clone()));
        let bytes = r.encode_plain();
        let mut peer = Self {
            spi_i: m.spi_i,
            spi_r,
            initiator: false,
            cipher,
            ni,
            nr,
            init_req: req.to_vec(),
            init_resp: bytes.clone(),
            dh: None,
            keys: None,
        };
        peer.derive(&gir);
        Ok((peer, bytes))
    }

    fn derive(&mut self, gir: &[u8]) {
        let c = self.cipher;
        let seed = skeyseed(c.prf, &self.ni, &self.nr, gir);
        self.keys = Some(derive_ike_keys(
            c.prf,
            self.sk(),
            &seed,
            &self.ni,
            &self.nr,
            self.spi_i,
            self.spi_r,
        ));
    }

    fn sk(&self) -> SkCrypto {
        SkCrypto {
            encr: self.cipher.encr,
            integ: self.cipher.integ,
        }
    }

    fn dir_keys(&self, outbound: bool) -> Option<SkDirKeys> {
        let k = self.keys.as_ref()?;
        let (e, a) = if outbound == self.initiator {
            (&k.sk_ei, &k.sk_ai)
        } else {
            (&k.sk_er, &k.sk_ar)
        };
        Some(SkDirKeys {
            encr_key: zeroize::Zeroizing::new(e.to_vec()),
            integ_key: zeroize::Zeroizing::new(a.to_vec()),
        })
    }

    /// SK_d, from which every CHILD SA's keys derive.
    pub fn sk_d(&self) -> Option<&[u8]> {
        self.keys.as_ref().map(|k| k.sk_d.as_slice())
    }

    /// The AUTH payload this side would send for `id`, with `psk`.
    pub fn auth(&self, psk: &[u8], id: &IdPayload) -> AuthPayload {
        let (msg, nonce) = if self.initiator {
            (&self.init_req, &self.nr)
        } else {
            (&self.init_resp, &self.ni)
        };
        let sk_p = self.keys.as_ref().map_or(&[][..], |k| {
            if self.initiator {
                k.sk_pi.as_slice()
            } else {
                k.sk_pr.as_slice()
            }
        });
        AuthPayload {
            method: AUTH_SHARED_KEY_MIC,
            data: psk_auth(self.cipher.prf, psk, msg, nonce, sk_p, &id.body()).to_vec(),
        }
    }

    fn header(&self, exch: u8, response: bool, message_id: u32) -> Message {
        let mut flags = if self.initiator { FLAG_INITIATOR } else { 0 };
        if response {
            flags |= FLAG_RESPONSE;
        }
        Message::new(self.spi_i, self.spi_r, exch, flags, message_id)
    }

    /// `payloads` sealed in an SK payload of this IKE SA.
    pub fn seal(
        &self,
        exch: u8,
        response: bool,
        message_id: u32,
        payloads: Vec<Payload>,
    ) -> Vec<u8> {
        let mut m = self.header(exch, response, message_id);
        m.payloads = payloads;
        let keys = self.dir_keys(true).expect("IKE_SA_INIT completed");
        m.encode_protected(&self.sk(), &keys)
            .expect("sealing with derived keys")
    }

    /// A raw payload chain (`first` names its first payload), whatever it
    /// holds, sealed in an SK payload of this IKE SA.
    pub fn seal_raw(
        &self,
        exch: u8,
        response: bool,
        message_id: u32,
        first: u8,
        inner: &[u8],
    ) -> Vec<u8> {
        let m = self.header(exch, response, message_id);
        let keys = self.dir_keys(true).expect("IKE_SA_INIT completed");
        m.seal_chain(first, inner, &self.sk(), &keys)
            .expect("sealing with derived keys")
    }

    /// Opens a protected message of this IKE SA sent by the other side.
    pub fn open(&self, bytes: &[u8]) -> Option<Message> {
        let mut m = Message::decode(bytes).ok()?;
        let keys = self.dir_keys(false)?;
        m.decrypt(bytes, &self.sk(), &keys).ok()?;
        Some(m)
    }
}

/// The payloads of a request for a new CHILD SA (IKE_AUTH's second half,
/// or CREATE_CHILD_SA without REKEY_SA): SA, TSi, TSr, and a nonce if
/// `nonce` is given (CREATE_CHILD_SA carries one, IKE_AUTH does not).
pub fn child_sa_payloads(
    esp: &[EspCipher],
    spi: u32,
    nonce: Option<Vec<u8>>,
    tsi: Vec<TrafficSelector>,
    tsr: Vec<TrafficSelector>,
) -> Vec<Payload> {
    let mut v = vec![Payload::Sa(esp_proposals(esp, spi, true, nonce.is_some()))];
    if let Some(n) = nonce {
        v.push(Payload::Nonce(n));
    }
    v.push(Payload::TsI(tsi));
    v.push(Payload::TsR(tsr));
    v
}

/// The payloads of an IKE_AUTH request with a CHILD SA: IDi,
/// INITIAL_CONTACT (unless `initial_contact` is false), AUTH (computed
/// with `psk`), SA, TSi, TSr.
pub fn ike_auth_payloads(
    peer: &ScriptedPeer,
    psk: &[u8],
    id: IdPayload,
    esp: &[EspCipher],
    spi: u32,
    initial_contact: bool,
) -> Vec<Payload> {
    let auth = peer.auth(psk, &id);
    let all = vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()];
    let mut v = vec![Payload::IdI(id)];
    if initial_contact {
        v.push(Payload::Notify(NotifyPayload::new(
            notify::INITIAL_CONTACT,
            Vec::new(),
        )));
    }
    v.push(Payload::Auth(auth));
    v.extend(child_sa_payloads(esp, spi, None, all.clone(), all));
    v
}

/// The payloads of a CREATE_CHILD_SA request that rekeys the IKE SA
/// (§1.3.2): SA (protocol IKE, our new SPI), Ni, KE of `cipher`'s group.
pub fn ike_rekey_payloads(cipher: IkeCipher, new_spi: u64, nonce: Vec<u8>) -> Vec<Payload> {
    let dh = DhPrivate::generate(cipher.dh);
    vec![
        Payload::Sa(ike_proposals(&[cipher], &new_spi.to_be_bytes())),
        Payload::Nonce(nonce),
        Payload::Ke(KePayload {
            group: cipher.dh.id(),
            data: dh.public_value(),
        }),
    ]
}

/// `p` (an SA payload) without the ESN transform 1: what a peer that does
/// not support extended sequence numbers offers.
pub fn without_esn(p: Payload) -> Payload {
    match p {
        Payload::Sa(mut props) => {
            for pr in &mut props {
                pr.transforms
                    .retain(|t| !(t.ttype == crate::payload::TransformType::Esn && t.id == 1));
            }
            Payload::Sa(props)
        }
        other => other,
    }
}

/// An IKE_SA_INIT request offering `cipher` with `ke` as it is (which
/// need not be a real public value: a flood does not compute one).
pub fn ike_sa_init_request(cipher: IkeCipher, spi_i: u64, ke: Vec<u8>, nonce: Vec<u8>) -> Vec<u8> {
    let mut m = Message::new(spi_i, 0, exchange::IKE_SA_INIT, FLAG_INITIATOR, 0);
    m.payloads.push(Payload::Sa(ike_proposals(&[cipher], &[])));
    m.payloads.push(Payload::Ke(KePayload {
        group: cipher.dh.id(),
        data: ke,
    }));
    m.payloads.push(Payload::Nonce(nonce));
    m.encode_plain()
}

/// Where the scripted peer's datagrams go: the manager's [`crate::Action::Send`]s
/// addressed to `to`, in order.
pub fn sent_to(actions: &[crate::Action], to: SocketAddr) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            crate::Action::Send { bytes, to: t, .. } if *t == to => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

/// Drives an [`crate::IkeManager`] responder past IKE_SA_INIT and IKE_AUTH
/// (it knows the keys and the PSK), then turns a byte script into
/// protected requests (or responses) of that IKE SA: the fuzz target
/// `responder` and the seed-corpus test share it. Per message, the script
/// holds:
///
/// * a control byte: bits 0-1 the exchange (IKE_AUTH, CREATE_CHILD_SA,
///   INFORMATIONAL, CREATE_CHILD_SA), bit 2 the response flag, bits 3-4
///   the message ID (0: the next one, 1: the previous one, 2: one ahead,
///   3: the four bytes that follow the length), bit 5 "advance the clock
///   by 10 s and fire the timers afterwards", bit 6 "flip a bit of the
///   sealed datagram";
/// * the type of the first inner payload;
/// * the inner payload chain's length (big-endian u16), then the chain.
///
/// It checks what must hold whatever the input: CHILD SAs come only from
/// IKE SAs reported up, and no two live CHILD SAs share an inbound SPI.
pub struct ResponderHarness {
    pub mgr: crate::IkeManager,
    pub peer: ScriptedPeer,
    pub now: std::time::Instant,
    pub actions: Vec<crate::Action>,
    next_id: u32,
    up: Vec<crate::IkeSaId>,
}

/// The PSK, addresses and SPIs the harness uses (seed files depend on
/// the CHILD SA SPI of its IKE_AUTH).
pub const HARNESS_PSK: &[u8] = b"fuzz harness pre-shared key";
pub const HARNESS_CHILD_SPI: u32 = 0x1111_1111;

impl ResponderHarness {
    fn us() -> SocketAddr {
        SocketAddr::new([192, 0, 2, 2].into(), 500)
    }
    fn them() -> SocketAddr {
        SocketAddr::new([192, 0, 2, 1].into(), 500)
    }

    /// The cipher suites: curve25519 for IKE, and PFS with it for ESP, so
    /// that CREATE_CHILD_SA with KE is reachable cheaply.
    pub fn ike_cipher() -> IkeCipher {
        IkeCipher::from_api("aes256gcm", Some("sha256"), Some("curve25519")).expect("a valid suite")
    }
    pub fn esp_ciphers() -> Vec<EspCipher> {
        vec![EspCipher::from_api("aes256gcm", None, Some("curve25519")).expect("a valid suite")]
    }

    /// A responder with one established IKE SA and CHILD SA.
    pub fn new() -> Self {
        let now = std::time::Instant::now();
        let mut mgr = crate::IkeManager::new();
        let mut c = crate::ConnectionConfig::new(
            "fuzz",
            Self::us().ip(),
            Self::them().ip(),
            crate::Psk::new(HARNESS_PSK.to_vec()),
        );
        c.initiate = false;
        c.ike_ciphers = vec![Self::ike_cipher()];
        c.esp_ciphers = Self::esp_ciphers();
        let mut actions = mgr.add_connection(c, now);
        let (mut peer, init) = ScriptedPeer::initiate(Self::ike_cipher(), 0x0f0f_0f0f_0f0f_0f0f);
        let acts = mgr.handle_datagram(&init, Self::them(), Self::us(), now);
        let resp = sent_to(&acts, Self::them());
        actions.extend(acts);
        peer.complete_init(resp.first().expect("IKE_SA_INIT answered"))
            .expect("a usable IKE_SA_INIT response");
        let id = crate::Identity::Addr(Self::them().ip()).to_payload();
        let auth = peer.seal(
            exchange::IKE_AUTH,
            false,
            1,
            ike_auth_payloads(
                &peer,
                HARNESS_PSK,
                id,
                &Self::esp_ciphers(),
                HARNESS_CHILD_SPI,
                true,
            ),
        );
        let acts = mgr.handle_datagram(&auth, Self::them(), Self::us(), now);
        let mut h = Self {
            mgr,
            peer,
            now,
            actions: Vec::new(),
            next_id: 2,
            up: Vec::new(),
        };
        h.check(&actions);
        h.check(&acts);
        h.actions.extend(actions);
        h.actions.extend(acts);
        assert!(
            h.actions
                .iter()
                .any(|a| matches!(a, crate::Action::InstallChildSa(_))),
            "the harness's IKE_AUTH installs a CHILD SA"
        );
        h
    }

    fn check(&mut self, acts: &[crate::Action]) {
        for a in acts {
            match a {
                crate::Action::IkeSaUp { ike, .. } => self.up.push(*ike),
                crate::Action::InstallChildSa(c) => {
                    assert!(self.up.contains(&c.ike), "CHILD SA from an IKE SA never up");
                }
                _ => {}
            }
        }
        let mut spis: Vec<u32> = self
            .mgr
            .ike_sas()
            .flat_map(|s| s.children().iter().map(|c| c.spi_in))
            .collect();
        let n = spis.len();
        spis.sort_unstable();
        spis.dedup();
        assert_eq!(n, spis.len(), "two CHILD SAs with one inbound SPI");
    }

    /// Runs a script (see the type's documentation).
    pub fn run(&mut self, mut script: &[u8]) {
        while let [ctl, first, l0, l1, rest @ ..] = script {
            let exch = [
                exchange::IKE_AUTH,
                exchange::CREATE_CHILD_SA,
                exchange::INFORMATIONAL,
                exchange::CREATE_CHILD_SA,
            ][usize::from(ctl & 3)];
            let response = ctl & 4 != 0;
            let mut rest = rest;
            let id = match (ctl >> 3) & 3 {
                0 => self.next_id,
                1 => self.next_id.wrapping_sub(1),
                2 => self.next_id.wrapping_add(1),
                _ => match rest {
                    [a, b, c, d, tail @ ..] => {
                        rest = tail;
                        u32::from_be_bytes([*a, *b, *c, *d])
                    }
                    _ => return,
                },
            };
            let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(rest.len());
            let (inner, tail) = rest.split_at(len);
            script = tail;
            let mut bytes = self.peer.seal_raw(exch, response, id, *first, inner);
            if ctl & 0x40 != 0 {
                let pos = usize::from(*first) % bytes.len();
                bytes[pos] ^= 0x10;
            }
            let acts = self
                .mgr
                .handle_datagram(&bytes, Self::them(), Self::us(), self.now);
            if !response && id == self.next_id && !sent_to(&acts, Self::them()).is_empty() {
                self.next_id = self.next_id.wrapping_add(1);
            }
            self.check(&acts);
            self.actions.extend(acts);
            if ctl & 0x20 != 0 {
                self.now += std::time::Duration::from_secs(10);
                let spis: Vec<u64> = self.mgr.ike_sas().map(|s| s.my_spi()).collect();
                for spi in spis {
                    let acts = self.mgr.handle_timer(crate::TimerId(spi), self.now);
                    self.check(&acts);
                    self.actions.extend(acts);
                }
            }
        }
    }
}

impl Default for ResponderHarness {
    fn default() -> Self {
        Self::new()
    }
}
