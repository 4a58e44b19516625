//! The seed corpus of the `responder` fuzz target (fuzz/corpus/responder):
//! each seed is a script for `testing::ResponderHarness` built here from
//! real payloads, so that fuzzing starts from exchanges that reach deep
//! (CHILD SA creation with PFS, CHILD and IKE rekeys, deletes, DPD,
//! retransmissions, a repeated IKE_AUTH). This test checks that the
//! committed seeds are the ones built here and that each reaches what it
//! is for; `S2S_WRITE_SEEDS=1` writes them after a format change.

use std::path::PathBuf;

use gateway_ike::payload::{
    encode_chain, notify, proto, DeletePayload, IdPayload, KePayload, NotifyPayload, Payload,
    TrafficSelector, AUTH_SHARED_KEY_MIC,
};
use gateway_ike::testing::{
    child_sa_payloads, ike_rekey_payloads, ResponderHarness, HARNESS_CHILD_SPI,
};
use gateway_ike::{Action, DownReason};

/// The X25519 base point: a valid public value that costs nothing.
fn ke() -> Payload {
    let mut data = vec![0u8; 32];
    data[0] = 9;
    Payload::Ke(KePayload { group: 31, data })
}

fn any() -> Vec<TrafficSelector> {
    vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()]
}

/// One scripted message: control byte, first payload, length, chain.
fn msg(ctl: u8, payloads: &[Payload]) -> Vec<u8> {
    let mut inner = Vec::new();
    let first = encode_chain(payloads, &mut inner);
    let mut v = vec![ctl, first];
    v.extend_from_slice(&u16::try_from(inner.len()).unwrap().to_be_bytes());
    v.extend_from_slice(&inner);
    v
}

const CREATE: u8 = 1;
const INFO: u8 = 2;
const AUTH: u8 = 0;
const PREVIOUS_ID: u8 = 1 << 3;
const TIMERS: u8 = 0x20;

fn new_child(spi: u32) -> Vec<Payload> {
    let mut p = child_sa_payloads(
        &ResponderHarness::esp_ciphers(),
        spi,
        Some(vec![0x4e; 32]),
        any(),
        any(),
    );
    p.insert(2, ke());
    p
}

fn delete_esp(spi: u32) -> Vec<Payload> {
    vec![Payload::Delete(DeletePayload {
        protocol: proto::ESP,
        spi_size: 4,
        spis: vec![spi.to_be_bytes().to_vec()],
    })]
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut rekey_child = vec![Payload::Notify(NotifyPayload {
        protocol: proto::ESP,
        spi: HARNESS_CHILD_SPI.to_be_bytes().to_vec(),
        ntype: notify::REKEY_SA,
        data: Vec::new(),
    })];
    rekey_child.extend(new_child(0x3333_3333));
    let mut rekey_ike = ike_rekey_payloads(
        ResponderHarness::ike_cipher(),
        0x5eed_5eed_5eed_5eed,
        vec![0x4e; 32],
    );
    // A fixed KE, so that the seed is the same every time it is built.
    rekey_ike[2] = ke();
    let ike_auth = {
        let id = IdPayload {
            id_type: 1,
            data: vec![192, 0, 2, 1],
        };
        let mut p = vec![
            Payload::IdI(id),
            Payload::Auth(gateway_ike::payload::AuthPayload {
                method: AUTH_SHARED_KEY_MIC,
                data: vec![0xa5; 32],
            }),
        ];
        p.extend(child_sa_payloads(
            &ResponderHarness::esp_ciphers(),
            0x4444_4444,
            None,
            any(),
            any(),
        ));
        p
    };
    let delete_ike = vec![Payload::Delete(DeletePayload {
        protocol: proto::IKE,
        spi_size: 0,
        spis: Vec::new(),
    })];
    vec![
        ("create_child_pfs", msg(CREATE, &new_child(0x2222_2222))),
        (
            "rekey_child_then_delete_old",
            [
                msg(CREATE, &rekey_child),
                // Timers after the DELETE: the old pair goes once the
                // rekey grace has passed.
                msg(INFO | TIMERS, &delete_esp(HARNESS_CHILD_SPI)),
            ]
            .concat(),
        ),
        ("rekey_ike", msg(CREATE, &rekey_ike)),
        ("delete_child", msg(INFO, &delete_esp(HARNESS_CHILD_SPI))),
        ("delete_ike", msg(INFO, &delete_ike)),
        (
            "dpd_with_timers",
            [msg(INFO | TIMERS, &[]), msg(INFO | TIMERS, &[])].concat(),
        ),
        (
            "create_child_retransmitted",
            [
                msg(CREATE, &new_child(0x2222_2222)),
                msg(CREATE | PREVIOUS_ID, &new_child(0x2222_2222)),
            ]
            .concat(),
        ),
        ("ike_auth_again", msg(AUTH, &ike_auth)),
    ]
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/responder")
}

#[test]
fn committed_seeds_are_current() {
    let write = std::env::var_os("S2S_WRITE_SEEDS").is_some();
    for (name, bytes) in seeds() {
        let path = corpus().join(name);
        if write {
            std::fs::create_dir_all(corpus()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (S2S_WRITE_SEEDS=1 writes it)", path.display()));
        assert_eq!(
            committed, bytes,
            "{name} differs from what this test builds"
        );
    }
}

fn run(name: &str) -> Vec<Action> {
    let (_, script) = seeds().into_iter().find(|(n, _)| *n == name).unwrap();
    let mut h = ResponderHarness::new();
    let before = h.actions.len();
    h.run(&script);
    h.actions.split_off(before)
}

fn installs(acts: &[Action]) -> Vec<&gateway_ike::ChildSaInstall> {
    acts.iter()
        .filter_map(|a| match a {
            Action::InstallChildSa(c) => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn each_seed_reaches_what_it_is_for() {
    let acts = run("create_child_pfs");
    assert_eq!(installs(&acts).len(), 1, "{acts:?}");

    let acts = run("rekey_child_then_delete_old");
    let i = installs(&acts);
    assert_eq!(i.len(), 1, "{acts:?}");
    assert!(i[0].replaces_spi_in.is_some());
    // We answered the rekey: the new pair sends only once the old one is
    // deleted, and the old one leaves the data plane after the grace.
    assert!(i[0].outbound_deferred);
    let new_in = i[0].spi_in;
    let activated = acts
        .iter()
        .position(|a| matches!(a, Action::ActivateOutbound { spi_in, .. } if *spi_in == new_in));
    let removed = acts
        .iter()
        .position(|a| matches!(a, Action::RemoveChildSa { spi_in, .. } if *spi_in != new_in));
    assert!(
        matches!((activated, removed), (Some(a), Some(r)) if a < r),
        "{acts:?}"
    );

    let acts = run("rekey_ike");
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::IkeSaUp {
                rekey_of: Some(_),
                ..
            }
        )),
        "{acts:?}"
    );

    let acts = run("delete_child");
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::RemoveChildSa { .. })));

    let acts = run("delete_ike");
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::IkeSaDown {
            reason: DownReason::Deleted,
            ..
        }
    )));

    let acts = run("create_child_retransmitted");
    assert_eq!(
        installs(&acts).len(),
        1,
        "a retransmission installs nothing"
    );

    let acts = run("ike_auth_again");
    assert!(installs(&acts).is_empty());
    assert!(!acts.iter().any(|a| matches!(a, Action::IkeSaDown { .. })));

    let acts = run("dpd_with_timers");
    assert!(!acts.iter().any(|a| matches!(a, Action::IkeSaDown { .. })));
}

/// A short deterministic pass of what the fuzzer does: mutated seeds.
#[test]
fn mutated_seeds_keep_the_invariants() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = seeds();
    for i in 0..300 {
        let (_, base) = &seeds[i % seeds.len()];
        let mut s = base.clone();
        for _ in 0..1 + rnd() % 4 {
            let pos = (rnd() as usize) % s.len();
            s[pos] ^= 1 << (rnd() % 8);
        }
        // The harness asserts the invariants itself.
        ResponderHarness::new().run(&s);
    }
}
