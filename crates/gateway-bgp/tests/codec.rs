//! Golden encode/decode pairs for every message and attribute the speaker
//! uses, the NOTIFICATION each decode error maps to, RFC 7606 handling, and
//! a bounded random-input run asserting the decoder never panics.

use std::net::{Ipv4Addr, Ipv6Addr};

use gateway_bgp::attribute::{
    AfiSafi, AsPath, AsSegment, AttributeError, Community, MpNextHop, MpReachNlri, MpUnreachNlri,
    Origin, PathAttribute, SegmentType,
};
use gateway_bgp::message::{
    frame_len, Capability, Codec, GracefulRestart, Message, MessageError, Notification, Open,
    RouteRefresh, Update,
};

const FOUR: Codec = Codec {
    four_octet_as: true,
};
const TWO: Codec = Codec {
    four_octet_as: false,
};

/// Marker, length and type: the 19-byte header.
fn header(len: u16, kind: u8) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    v.extend_from_slice(&len.to_be_bytes());
    v.push(kind);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Encodes `msg`, compares with `wire`, decodes `wire`, compares with `msg`.
fn golden(msg: &Message, codec: Codec, wire: &[u8]) {
    assert_eq!(msg.encode(codec), wire, "encode of {msg:?}");
    assert_eq!(&Message::decode(wire, codec).unwrap(), msg, "decode");
}

#[test]
fn keepalive() {
    golden(&Message::Keepalive, FOUR, &header(19, 4));
}

#[test]
fn open_ipv4_with_capabilities() {
    let open = Open::new(
        12876,
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        &[AfiSafi::Ipv4Unicast],
    );
    let wire = cat(&[
        &header(45, 1),
        &[4, 0x32, 0x4c, 0, 90, 192, 0, 2, 1],
        &[16, 2, 14],
        &[1, 4, 0, 1, 0, 1],        // multiprotocol IPv4 unicast
        &[2, 0],                    // route refresh
        &[65, 4, 0, 0, 0x32, 0x4c], // 4-octet ASN 12876
    ]);
    golden(&Message::Open(open.clone()), FOUR, &wire);
    assert_eq!(open.asn(), 12876);
    assert!(open.route_refresh());
    assert_eq!(open.families(), vec![AfiSafi::Ipv4Unicast]);
}

#[test]
fn open_four_octet_asn_uses_as_trans() {
    let open = Open::new(
        4_200_000_001,
        3,
        Ipv4Addr::new(169, 254, 0, 2),
        &[AfiSafi::Ipv6Unicast],
    );
    assert_eq!(open.my_as, 23456);
    let wire = cat(&[
        &header(45, 1),
        &[4, 0x5b, 0xa0, 0, 3, 169, 254, 0, 2],
        &[16, 2, 14],
        &[1, 4, 0, 2, 0, 1],
        &[2, 0],
        &[65, 4, 0xfa, 0x56, 0xea, 0x01],
    ]);
    golden(&Message::Open(open.clone()), FOUR, &wire);
    assert_eq!(open.asn(), 4_200_000_001);
    assert_eq!(open.families(), vec![AfiSafi::Ipv6Unicast]);
}

#[test]
fn open_capabilities_in_separate_parameters_and_unknown_ones() {
    // BIRD sends one capability per parameter, plus ones we do not use
    // (200 here). Graceful restart (64): Restart State set, 120 s, no
    // family.
    let wire = cat(&[
        &header(19 + 10 + 20, 1),
        &[4, 0xfd, 0xe9, 0, 240, 10, 0, 0, 1],
        &[20],
        &[2, 6, 1, 4, 0, 1, 0, 1],
        &[2, 4, 64, 2, 0x80, 0x78],
        &[2, 4, 200, 2, 0xab, 0xcd],
    ]);
    let Message::Open(open) = Message::decode(&wire, FOUR).unwrap() else {
        panic!("not an OPEN")
    };
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.four_octet_as(), None);
    assert_eq!(
        open.capabilities,
        vec![
            Capability::MultiProtocol { afi: 1, safi: 1 },
            Capability::GracefulRestart(GracefulRestart {
                restarting: true,
                restart_time: 120,
                families: Vec::new(),
            }),
            Capability::Other {
                code: 200,
                value: vec![0xab, 0xcd]
            }
        ]
    );
    // Graceful restart with families round-trips; a malformed one (not
    // 2 + 4n bytes) stays an unknown capability.
    let mut ours = open.clone();
    ours.capabilities = vec![Capability::GracefulRestart(GracefulRestart {
        restarting: false,
        restart_time: 4095,
        families: vec![(1, 1, true), (2, 1, false)],
    })];
    let bytes = Message::Open(ours.clone()).encode(FOUR);
    assert_eq!(Message::decode(&bytes, FOUR).unwrap(), Message::Open(ours));
    let odd = cat(&[
        &header(19 + 10 + 7, 1),
        &[4, 0xfd, 0xe9, 0, 240, 10, 0, 0, 1],
        &[7],
        &[2, 5, 64, 3, 0, 120, 1],
    ]);
    let Message::Open(open) = Message::decode(&odd, FOUR).unwrap() else {
        panic!("not an OPEN")
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::Other {
            code: 64,
            value: vec![0, 120, 1]
        }]
    );
    // No multiprotocol capability at all means IPv4 unicast.
    let bare = cat(&[&header(29, 1), &[4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 0]]);
    let Message::Open(open) = Message::decode(&bare, FOUR).unwrap() else {
        panic!("not an OPEN")
    };
    assert_eq!(open.families(), vec![AfiSafi::Ipv4Unicast]);
}

#[test]
fn notification() {
    let n = Notification::with_data(6, 1, vec![0, 1, 1, 0, 0, 0, 10]);
    golden(
        &Message::Notification(n),
        FOUR,
        &cat(&[&header(28, 3), &[6, 1, 0, 1, 1, 0, 0, 0, 10]]),
    );
    golden(
        &Message::Notification(Notification::new(4, 0)),
        FOUR,
        &cat(&[&header(21, 3), &[4, 0]]),
    );
}

#[test]
fn route_refresh() {
    golden(
        &Message::RouteRefresh(RouteRefresh { afi: 2, safi: 1 }),
        FOUR,
        &cat(&[&header(23, 5), &[0, 2, 0, 1]]),
    );
}

fn net4(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}
fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

#[test]
fn update_ipv4_every_attribute() {
    let update = Update {
        withdrawn_routes: vec![net4("198.51.100.0/24")],
        path_attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![65001, 4_200_000_001])),
            PathAttribute::NextHop(Ipv4Addr::new(169, 254, 0, 2)),
            PathAttribute::MultiExitDisc(10),
            PathAttribute::LocalPref(100),
            PathAttribute::AtomicAggregate,
            PathAttribute::Aggregator {
                asn: 65001,
                address: Ipv4Addr::new(192, 0, 2, 1),
            },
            PathAttribute::Communities(vec![
                Community::new(12876, 42050),
                Community::new(12876, 42200),
            ]),
        ],
        nlri: vec![
            net4("203.0.113.0/24"),
            net4("203.0.113.128/25"),
            net4("0.0.0.0/0"),
        ],
        treat_as_withdraw: None,
    };
    let withdrawn: &[u8] = &[24, 198, 51, 100];
    let attrs: &[u8] = &cat(&[
        &[0x40, 1, 1, 0],
        &[0x40, 2, 10, 2, 2, 0, 0, 0xfd, 0xe9, 0xfa, 0x56, 0xea, 0x01],
        &[0x40, 3, 4, 169, 254, 0, 2],
        &[0x80, 4, 4, 0, 0, 0, 10],
        &[0x40, 5, 4, 0, 0, 0, 100],
        &[0x40, 6, 0],
        &[0xc0, 7, 8, 0, 0, 0xfd, 0xe9, 192, 0, 2, 1],
        &[0xc0, 8, 8, 0x32, 0x4c, 0xa4, 0x42, 0x32, 0x4c, 0xa4, 0xd8],
    ]);
    let nlri: &[u8] = &[24, 203, 0, 113, 25, 203, 0, 113, 128, 0];
    let len = 19 + 2 + withdrawn.len() + 2 + attrs.len() + nlri.len();
    let wire = cat(&[
        &header(len as u16, 2),
        &(withdrawn.len() as u16).to_be_bytes(),
        withdrawn,
        &(attrs.len() as u16).to_be_bytes(),
        attrs,
        nlri,
    ]);
    golden(&Message::Update(update), FOUR, &wire);
}

#[test]
fn update_two_octet_as_path() {
    let update = Update {
        path_attributes: vec![
            PathAttribute::Origin(Origin::Incomplete),
            PathAttribute::AsPath(AsPath {
                segments: vec![
                    AsSegment {
                        kind: SegmentType::AsSequence,
                        asns: vec![65001],
                    },
                    AsSegment {
                        kind: SegmentType::AsSet,
                        asns: vec![65002, 65003],
                    },
                ],
            }),
            PathAttribute::NextHop(Ipv4Addr::new(169, 254, 0, 2)),
        ],
        nlri: vec![net4("203.0.113.0/24")],
        ..Update::default()
    };
    let attrs: &[u8] = &cat(&[
        &[0x40, 1, 1, 2],
        &[0x40, 2, 10, 2, 1, 0xfd, 0xe9, 1, 2, 0xfd, 0xea, 0xfd, 0xeb],
        &[0x40, 3, 4, 169, 254, 0, 2],
    ]);
    let len = 19 + 4 + attrs.len() + 4;
    let wire = cat(&[
        &header(len as u16, 2),
        &[0, 0],
        &(attrs.len() as u16).to_be_bytes(),
        attrs,
        &[24, 203, 0, 113],
    ]);
    golden(&Message::Update(update.clone()), TWO, &wire);
    let Some(PathAttribute::AsPath(p)) = update.path_attributes.get(1) else {
        panic!()
    };
    assert_eq!(p.length(), 2);
}

#[test]
fn update_mp_reach_ipv6_global_and_link_local() {
    let global: Ipv6Addr = "fd00::1".parse().unwrap();
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    for link_local in [None, Some(ll)] {
        let update = Update {
            path_attributes: vec![
                PathAttribute::MpReachNlri(MpReachNlri {
                    afi_safi: AfiSafi::Ipv6Unicast,
                    next_hop: MpNextHop::Ipv6 { global, link_local },
                    nlri: vec![net("2001:db8:200::/48"), net("::/0")],
                }),
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::sequence(vec![65001])),
            ],
            ..Update::default()
        };
        let mut nh = global.octets().to_vec();
        if let Some(l) = link_local {
            nh.extend_from_slice(&l.octets());
        }
        let mut mp = vec![0, 2, 1, nh.len() as u8];
        mp.extend_from_slice(&nh);
        mp.extend_from_slice(&[0, 48, 0x20, 0x01, 0x0d, 0xb8, 0x02, 0x00, 0]);
        let attrs = cat(&[
            &[0x80, 14, mp.len() as u8],
            &mp,
            &[0x40, 1, 1, 0],
            &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9],
        ]);
        let len = 19 + 4 + attrs.len();
        let wire = cat(&[
            &header(len as u16, 2),
            &[0, 0],
            &(attrs.len() as u16).to_be_bytes(),
            &attrs,
        ]);
        golden(&Message::Update(update), FOUR, &wire);
    }
}

#[test]
fn update_mp_unreach_ipv6() {
    let update = Update {
        path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri {
            afi_safi: AfiSafi::Ipv6Unicast,
            withdrawn: vec![net("2001:db8:200::/48")],
        })],
        ..Update::default()
    };
    let attrs: &[u8] = &[
        0x80, 15, 10, 0, 2, 1, 48, 0x20, 0x01, 0x0d, 0xb8, 0x02, 0x00,
    ];
    let wire = cat(&[&header(19 + 4 + 13, 2), &[0, 0, 0, 13], attrs]);
    golden(&Message::Update(update), FOUR, &wire);
}

#[test]
fn extended_length_attribute() {
    // 70 /128 prefixes make the MP_UNREACH value 3 + 70 * 17 = 1193 bytes.
    let withdrawn: Vec<ipnet::IpNet> = (0..70u8)
        .map(|i| net(&format!("2001:db8::{i:x}/128")))
        .collect();
    let update = Update {
        path_attributes: vec![PathAttribute::MpUnreachNlri(MpUnreachNlri {
            afi_safi: AfiSafi::Ipv6Unicast,
            withdrawn,
        })],
        ..Update::default()
    };
    let wire = Message::Update(update.clone()).encode(FOUR);
    // flags 0x90 (optional + extended length), type 15, 2-byte length.
    assert_eq!(&wire[23..27], &[0x90, 15, 0x04, 0xa9]);
    assert_eq!(
        Message::decode(&wire, FOUR).unwrap(),
        Message::Update(update)
    );
}

#[test]
fn unknown_optional_attribute_is_kept_raw() {
    // A large community (RFC 8092, type 32): optional transitive, not ours to interpret.
    let attrs: &[u8] = &[0xc0, 32, 12, 0, 0, 0x32, 0x4c, 0, 0, 0, 1, 0, 0, 0, 2];
    let wire = cat(&[&header(19 + 4 + 15, 2), &[0, 0, 0, 15], attrs]);
    let msg = decode_update(&wire);
    assert_eq!(
        msg.path_attributes,
        vec![PathAttribute::Other {
            flags: 0xc0,
            type_code: 32,
            value: vec![0, 0, 0x32, 0x4c, 0, 0, 0, 1, 0, 0, 0, 2]
        }]
    );
    assert_eq!(Message::Update(msg).encode(FOUR), wire);
}

fn decode_update(wire: &[u8]) -> Update {
    match Message::decode(wire, FOUR) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

#[test]
fn unknown_attribute_with_needless_extended_length_reencodes_stably() {
    // Found by the fuzzer: flags 0xff (extended length for a 1-byte value).
    let attrs: &[u8] = &[0xff, 0, 0, 1, 0];
    let wire = cat(&[&header(19 + 4 + 5, 2), &[0, 0, 0, 5], attrs]);
    let msg = Message::Update(decode_update(&wire));
    let again = Message::decode(&msg.encode(FOUR), FOUR).unwrap();
    assert_eq!(again, msg);
}

// ---- errors and the NOTIFICATION they call for ----

fn notif(wire: &[u8]) -> (u8, u8, Vec<u8>) {
    let err = Message::decode(wire, FOUR).expect_err("must not decode");
    let n = err.notification().expect("a NOTIFICATION is due");
    (n.code, n.subcode, n.data)
}

fn update_wire(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let len = 19 + 4 + withdrawn.len() + attrs.len() + nlri.len();
    cat(&[
        &header(len as u16, 2),
        &(withdrawn.len() as u16).to_be_bytes(),
        withdrawn,
        &(attrs.len() as u16).to_be_bytes(),
        attrs,
        nlri,
    ])
}

const ORIGIN_OK: &[u8] = &[0x40, 1, 1, 0];
const AS_PATH_OK: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
const NEXT_HOP_OK: &[u8] = &[0x40, 3, 4, 169, 254, 0, 2];
const NLRI: &[u8] = &[24, 203, 0, 113];

#[test]
fn header_errors() {
    let mut bad_marker = header(19, 4);
    bad_marker[3] = 0;
    assert_eq!(notif(&bad_marker), (1, 1, vec![]));
    assert_eq!(
        frame_len(&header(18, 4)),
        Err(MessageError::BadMessageLength(18))
    );
    assert_eq!(notif(&header(18, 4)), (1, 2, vec![0, 18]));
    assert_eq!(
        frame_len(&header(5000, 2)),
        Err(MessageError::BadMessageLength(5000))
    );
    let mut ka20 = header(20, 4);
    ka20.push(0);
    assert_eq!(notif(&ka20), (1, 2, vec![0, 20]));
    assert_eq!(notif(&header(19, 9)), (1, 3, vec![9]));
    assert_eq!(
        notif(
            &header(22, 5)[..19]
                .iter()
                .copied()
                .chain([0, 1, 0])
                .collect::<Vec<_>>()
        ),
        (1, 2, vec![0, 22])
    );
    // Not enough bytes yet is not an error.
    assert_eq!(frame_len(&header(45, 1)), Ok(None));
}

#[test]
fn open_errors() {
    let v3 = cat(&[&header(29, 1), &[3, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 0]]);
    assert_eq!(notif(&v3), (2, 1, vec![0, 4]));
    let auth = cat(&[
        &header(31, 1),
        &[4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 2, 1, 0],
    ]);
    assert_eq!(notif(&auth), (2, 4, vec![]));
    let short_param = cat(&[
        &header(31, 1),
        &[4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 2, 2, 9],
    ]);
    assert_eq!(notif(&short_param), (2, 0, vec![]));
}

#[test]
fn update_session_reset_errors() {
    // Withdrawn Routes Length past the message.
    let wire = cat(&[&header(23, 2), &[0, 9, 0, 0]]);
    assert_eq!(notif(&wire), (3, 1, vec![]));
    // NLRI prefix longer than 32 bits.
    let wire = update_wire(
        &[],
        &cat(&[ORIGIN_OK, AS_PATH_OK, NEXT_HOP_OK]),
        &[33, 1, 2, 3, 4, 5],
    );
    assert_eq!(notif(&wire), (3, 10, vec![]));
    // Unrecognized well-known attribute: data is the attribute.
    let wire = update_wire(&[], &[0x40, 99, 1, 7], &[]);
    assert_eq!(notif(&wire), (3, 2, vec![0x40, 99, 1, 7]));
    // MP_REACH_NLRI with a 5-byte IPv6 next hop cannot be parsed: reset.
    let bad_mp: &[u8] = &[0x80, 14, 9, 0, 2, 1, 5, 1, 2, 3, 4, 5];
    let wire = update_wire(&[], bad_mp, &[]);
    assert_eq!(notif(&wire), (3, 9, bad_mp.to_vec()));
    // Two MP_UNREACH_NLRI.
    let unreach: &[u8] = &[0x80, 15, 3, 0, 2, 1];
    let wire = update_wire(&[], &cat(&[unreach, unreach]), &[]);
    assert_eq!(notif(&wire), (3, 1, vec![]));
    // A malformed NOTIFICATION is never answered.
    let err = Message::decode(
        &header(20, 3).into_iter().chain([6]).collect::<Vec<_>>(),
        FOUR,
    )
    .unwrap_err();
    assert_eq!(err, MessageError::MalformedNotification);
    assert_eq!(err.notification(), None);
}

fn treat_as_withdraw(attrs: &[u8]) -> Option<AttributeError> {
    decode_update(&update_wire(&[], attrs, NLRI)).treat_as_withdraw
}

#[test]
fn rfc7606_treat_as_withdraw() {
    assert_eq!(
        treat_as_withdraw(&cat(&[ORIGIN_OK, AS_PATH_OK, NEXT_HOP_OK])),
        None
    );
    assert_eq!(
        treat_as_withdraw(&cat(&[&[0x40, 1, 1, 5], AS_PATH_OK, NEXT_HOP_OK])),
        Some(AttributeError::InvalidOrigin(5))
    );
    assert_eq!(
        treat_as_withdraw(&cat(&[&[0xc0, 1, 1, 0], AS_PATH_OK, NEXT_HOP_OK])),
        Some(AttributeError::Flags {
            type_code: 1,
            flags: 0xc0
        })
    );
    assert_eq!(
        treat_as_withdraw(&cat(&[ORIGIN_OK, AS_PATH_OK])),
        Some(AttributeError::MissingWellKnown { type_code: 3 })
    );
    assert_eq!(
        treat_as_withdraw(&cat(&[ORIGIN_OK, &[0x40, 2, 2, 2, 0], NEXT_HOP_OK])),
        Some(AttributeError::MalformedAsPath)
    );
    assert_eq!(
        treat_as_withdraw(&cat(&[ORIGIN_OK, AS_PATH_OK, &[0x40, 3, 4, 0, 0, 0, 0]])),
        Some(AttributeError::InvalidNextHop(Ipv4Addr::UNSPECIFIED))
    );
    assert_eq!(
        treat_as_withdraw(&cat(&[
            ORIGIN_OK,
            AS_PATH_OK,
            NEXT_HOP_OK,
            &[0xc0, 8, 3, 1, 2, 3]
        ])),
        Some(AttributeError::Length {
            type_code: 8,
            length: 3
        })
    );
    assert_eq!(
        treat_as_withdraw(&cat(&[
            ORIGIN_OK,
            AS_PATH_OK,
            NEXT_HOP_OK,
            &[0x80, 4, 2, 0, 1]
        ])),
        Some(AttributeError::Length {
            type_code: 4,
            length: 2
        })
    );
    // The last attribute claims more bytes than the section holds.
    assert_eq!(
        treat_as_withdraw(&cat(&[
            ORIGIN_OK,
            AS_PATH_OK,
            NEXT_HOP_OK,
            &[0x80, 4, 9, 0]
        ])),
        Some(AttributeError::Overrun)
    );
}

#[test]
fn rfc7606_attribute_discard_and_duplicates() {
    // Bad ATOMIC_AGGREGATE and LOCAL_PREF are dropped, the route stands.
    let u = decode_update(&update_wire(
        &[],
        &cat(&[
            ORIGIN_OK,
            AS_PATH_OK,
            NEXT_HOP_OK,
            &[0x40, 6, 1, 0],
            &[0x40, 5, 1, 0],
        ]),
        NLRI,
    ));
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.path_attributes.len(), 3);
    // A repeated ORIGIN: the first one counts.
    let u = decode_update(&update_wire(
        &[],
        &cat(&[ORIGIN_OK, &[0x40, 1, 1, 2], AS_PATH_OK, NEXT_HOP_OK]),
        NLRI,
    ));
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.path_attributes[0], PathAttribute::Origin(Origin::Igp));
    assert_eq!(u.path_attributes.len(), 3);
}

// ---- hostile input ----

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn samples() -> Vec<Vec<u8>> {
    let upd = Update {
        withdrawn_routes: vec![net4("198.51.100.0/24")],
        path_attributes: vec![
            PathAttribute::MpReachNlri(MpReachNlri {
                afi_safi: AfiSafi::Ipv6Unicast,
                next_hop: MpNextHop::Ipv6 {
                    global: "fd00::1".parse().unwrap(),
                    link_local: None,
                },
                nlri: vec![net("2001:db8::/32")],
            }),
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::sequence(vec![65001])),
            PathAttribute::NextHop(Ipv4Addr::new(169, 254, 0, 2)),
            PathAttribute::Communities(vec![Community::new(12876, 42050)]),
        ],
        nlri: vec![net4("203.0.113.0/24")],
        treat_as_withdraw: None,
    };
    vec![
        Message::Open(Open::new(
            65001,
            90,
            Ipv4Addr::new(10, 0, 0, 1),
            &[AfiSafi::Ipv4Unicast],
        ))
        .encode(FOUR),
        Message::Update(upd).encode(FOUR),
        Message::RouteRefresh(RouteRefresh { afi: 1, safi: 1 }).encode(FOUR),
        Message::Notification(Notification::new(6, 2)).encode(FOUR),
    ]
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let samples = samples();
    for i in 0..20_000u32 {
        let input: Vec<u8> = match i % 3 {
            // Pure noise.
            0 => (0..rng.next() % 300).map(|_| rng.byte()).collect(),
            // A valid header with a random body, so decoding goes deep.
            1 => {
                let body_len = (rng.next() % 200) as usize;
                let mut v = header((19 + body_len) as u16, 1 + (rng.next() % 5) as u8);
                v.extend((0..body_len).map(|_| rng.byte()));
                v
            }
            // A real message with a few bytes flipped (length kept coherent half the time).
            _ => {
                let mut v = samples[(rng.next() % samples.len() as u64) as usize].clone();
                for _ in 0..1 + rng.next() % 4 {
                    let at = 16 + (rng.next() as usize % (v.len() - 16));
                    if i % 2 == 0 && (at == 16 || at == 17) {
                        continue;
                    }
                    v[at] = rng.byte();
                }
                v
            }
        };
        for codec in [FOUR, TWO] {
            if let Ok(Some(len)) = frame_len(&input) {
                let _ = Message::decode(&input[..len], codec);
            }
            let _ = Message::decode(&input, codec);
        }
    }
}
