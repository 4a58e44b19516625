use super::*;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

#[test]
fn rfc4231_hmac_sha2_vectors() {
    // Test case 1
    let key = [0x0b; 20];
    assert_eq!(
        *Prf::HmacSha256.prf(&key, b"Hi There"),
        h("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
    assert_eq!(
        *Prf::HmacSha384.prf(&key, b"Hi There"),
        h("afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6")
    );
    assert_eq!(
        *Prf::HmacSha512.prf(&key, b"Hi There"),
        h("87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854")
    );
    // Test case 2
    assert_eq!(
        *Prf::HmacSha256.prf(b"Jefe", b"what do ya want for nothing?"),
        h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    // Truncated integrity output (RFC 4868 uses the first half).
    assert_eq!(
        Integ::HmacSha256_128.mac(&key, b"Hi There"),
        h("b0344c61d8db38535ca8afceaf0bf12b")
    );
}

#[test]
fn prf_plus_follows_rfc7296() {
    let p = Prf::HmacSha256;
    let k = b"key";
    let s = b"seed";
    let t1 = p.prf(k, b"seed\x01");
    let mut in2 = t1.to_vec();
    in2.extend_from_slice(b"seed\x02");
    let t2 = p.prf(k, &in2);
    let mut expect = t1.to_vec();
    expect.extend_from_slice(&t2);
    expect.truncate(50);
    assert_eq!(*p.prf_plus(k, s, 50), expect);
    assert_eq!(p.prf_plus(k, s, 0).len(), 0);
}

#[test]
fn rfc3526_groups_are_well_formed() {
    for g in [DhGroup::Modp2048, DhGroup::Modp3072, DhGroup::Modp4096] {
        let p = g.modp_prime().unwrap();
        assert_eq!(p.bits() as usize, g.public_len() * 8);
        // RFC 3526 primes start and end with 64 one bits.
        let b = p.to_bytes_be();
        assert!(b[..8].iter().all(|&x| x == 0xff));
        assert!(b[b.len() - 8..].iter().all(|&x| x == 0xff));
        // Safe prime: p = 2q + 1 with generator 2 of order q, so 2^q = 1 (mod p).
        let q = (&p - 1u32) >> 1;
        assert_eq!(BigUint::from(2u32).modpow(&q, &p), BigUint::from(1u32));
    }
}

#[test]
fn modp_exchange_and_rfc6989_checks() {
    let a = DhPrivate::generate(DhGroup::Modp2048);
    let b = DhPrivate::generate(DhGroup::Modp2048);
    let pa = a.public_value();
    assert_eq!(pa.len(), 256);
    assert_eq!(
        *a.shared_secret(&b.public_value()).unwrap(),
        *b.shared_secret(&pa).unwrap()
    );
    let p = DhGroup::Modp2048.modp_prime().unwrap();
    let mut one = vec![0u8; 256];
    one[255] = 1;
    for bad in [
        vec![0u8; 256],
        one,
        pad_be(&(&p - 1u32).to_bytes_be(), 256),
        pad_be(&p.to_bytes_be(), 256),
    ] {
        assert!(a.shared_secret(&bad).is_err());
    }
    assert!(a.shared_secret(&[1u8; 255]).is_err());
}

struct EcVector {
    group: DhGroup,
    priv_i: &'static str,
    priv_r: &'static str,
    pub_i: &'static str,
    pub_r: &'static str,
    shared: &'static str,
}

/// ECDH known answers of RFC 5114 (appendix A.6-A.8), as used in
/// strongSwan's test_vectors plugin.
const EC_VECTORS: &[EcVector] = &[
    EcVector {
        group: DhGroup::Ecp256,
        priv_i: "814264145f2f56f2e96a8e337a1284993faf432a5abce59e867b7291d507a3af",
        priv_r: "2ce1788ec197e096db95a200cc0ab26a19ce6bccad562b8eee1b593761cf7f41",
        pub_i: "2af502f3be8952f2c9b5a8d4160d09e97165be50bc42ae4a5e8d3b4ba83aeb15eb0faf4ca986c4d38681a0f9872d79d56795bd4bff6e6de3c0f5015ece5efd85",
        pub_r: "b120de4aa36492795346e8de6c2c8646ae06aaea279fa775b3ab0715f6ce51b09f1b7eece20d7b5ed8ec685fa3f071d83727027092a8411385c34dde5708b2b6",
        shared: "dd0f5396219d1ea393310412d19a08f1f5811e9dc8ec8eea7f80d21c820c2788",
    },
    EcVector {
        group: DhGroup::Ecp384,
        priv_i: "d27335ea71664af244dd14e9fd1260715dfd8a7965571c48d709ee7a7962a156d706a90cbcb5df2986f05feadb9376f1",
        priv_r: "52d1791fdb4b70f89c0f00d456c2f7023b6125262c36a7df1f80231121cce3d39be52e00c194a4132c4a6c768bcd94d2",
        pub_i: "793148f1787634d5da4c6d9074417d05e057ab62f82054d10ee6b0403d6279547e6a8ea9d1fd77427d016fe27a8b8c66c6c41294331d23e6f480f4fb4cd40504c947392e94f4c3f06b8f398bb29e42368f7a685923de3b67baced214a1a1d128",
        pub_r: "5cd42ab9c41b5347f74b8d4efb708b3d5b36db65915359b44abc17647b6b9999789d72a84865ae2f223f12b5a1abc120e171458feaa939aaa3a8bfac46b404bd8f6d5b348c0fa4d80ceca16356ca933240bde8723415a8ece035b0edf36755de",
        shared: "5ea1fc4af7256d2055981b110575e0a8cae53160137d904c59d926eb1b8456e427aa8a4540884c37de159a58028abc0e",
    },
    EcVector {
        group: DhGroup::Ecp521,
        priv_i: "0113f82da825735e3d97276683b2b74277bad27335ea71664af2430cc4f33459b9669ee78b3ffb9b8683015d344dcbfef6fb9af4c6c470be254516cd3c1a1fb47362",
        priv_r: "00cee3480d8645a17d249f2776d28bae616952d1791fdb4b70f7c3378732aa1b22928448bcd1dc2496d435b01048066ebe4f72903c361b1a9dc1193dc2c9d0891b96",
        pub_i: "01ebb34dd75721abf8adc9dbed17889cbb9765d90a7c60f2cef007bb0f2b26e14881fd4442e689d61cb2dd046ee30e3ffd20f9a45bbdf6413d583a2dbf59924fd35c00f6b632d194c0388e22d8437e558c552ae195adfd153f92d74908351b2f8c4eda94edb0916d1b53c020b5eecaed1a5fc38a233e4830587bb2ee3489b3b42a5a86a4",
        pub_r: "010ebfafc6e85e08d24bfffcc1a4511db0e634beeb1b6dec8c5939ae44766201af6200430ba97c8ac6a0e9f08b33ce7e9feeb5ba4ee5e0d81510c24295b8a08d023500a4a6ec300df9e257b0372b5e7abfef093436719a77887ebb0b18cf8099b9f4212b6e30a1419c18e029d36863cc9d448f4dba4d2a0e60711be572915fbd4fef2695",
        shared: "00cdea89621cfa46b132f9e4cfe2261cde2d4368eb5656634c7cc98c7a00cde54ed1866a0dd3e6126c9d2f845daff82ceb1da08f5d87521bb0ebeca77911169c20cc",
    },
];

#[test]
fn ecdh_known_answers() {
    for v in EC_VECTORS {
        let i = DhPrivate::from_private_bytes(v.group, &h(v.priv_i)).unwrap();
        let r = DhPrivate::from_private_bytes(v.group, &h(v.priv_r)).unwrap();
        assert_eq!(i.public_value(), h(v.pub_i), "{:?}", v.group);
        assert_eq!(r.public_value(), h(v.pub_r), "{:?}", v.group);
        assert_eq!(*i.shared_secret(&h(v.pub_r)).unwrap(), h(v.shared));
        assert_eq!(*r.shared_secret(&h(v.pub_i)).unwrap(), h(v.shared));
        // A point off the curve is refused.
        let mut bad = h(v.pub_r);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(i.shared_secret(&bad).is_err(), "{:?}", v.group);
        assert!(i.shared_secret(&vec![0u8; v.group.public_len()]).is_err());
    }
}

#[test]
fn rfc7748_x25519_vector() {
    let a = DhPrivate::from_private_bytes(
        DhGroup::Curve25519,
        &h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    )
    .unwrap();
    let b = DhPrivate::from_private_bytes(
        DhGroup::Curve25519,
        &h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
    )
    .unwrap();
    assert_eq!(
        a.public_value(),
        h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        b.public_value(),
        h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let k = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(*a.shared_secret(&b.public_value()).unwrap(), k);
    assert_eq!(*b.shared_secret(&a.public_value()).unwrap(), k);
    // RFC 8031 §2.3: a small-order point giving an all-zero secret is refused.
    assert_eq!(
        a.shared_secret(&[0u8; 32]),
        Err(CryptoError::ZeroSharedSecret)
    );
}

#[test]
fn ike_key_lengths() {
    let sk = SkCrypto {
        encr: Encr::AesCbc(256),
        integ: Some(Integ::HmacSha256_128),
    };
    let k = derive_ike_keys(Prf::HmacSha256, sk, &[1; 32], &[2; 32], &[3; 32], 1, 2);
    assert_eq!(
        [
            k.sk_d.len(),
            k.sk_ai.len(),
            k.sk_ar.len(),
            k.sk_ei.len(),
            k.sk_er.len(),
            k.sk_pi.len(),
            k.sk_pr.len()
        ],
        [32, 32, 32, 32, 32, 32, 32]
    );
    let sk = SkCrypto {
        encr: Encr::AesGcm16(256),
        integ: None,
    };
    let k = derive_ike_keys(Prf::HmacSha384, sk, &[1; 48], &[2; 32], &[3; 32], 1, 2);
    assert_eq!([k.sk_ai.len(), k.sk_ei.len(), k.sk_pi.len()], [0, 36, 48]);
    // Keys are consecutive slices of prf+ output.
    let km = Prf::HmacSha384.prf_plus(
        &[1; 48],
        &[
            [2u8; 32].as_slice(),
            &[3; 32],
            &1u64.to_be_bytes(),
            &2u64.to_be_bytes(),
        ]
        .concat(),
        48,
    );
    assert_eq!(*k.sk_d, *km);
}

#[test]
fn natd_hash_is_sha1_of_spis_ip_port() {
    let v = natd_hash(1, 2, "192.0.2.1".parse().unwrap(), 500);
    let mut in_ = Vec::new();
    in_.extend_from_slice(&1u64.to_be_bytes());
    in_.extend_from_slice(&2u64.to_be_bytes());
    in_.extend_from_slice(&[192, 0, 2, 1]);
    in_.extend_from_slice(&500u16.to_be_bytes());
    assert_eq!(v, Sha1::digest(&in_).to_vec());
    // SHA-1("abc") known answer so the hash itself is pinned.
    assert_eq!(
        Sha1::digest(b"abc").to_vec(),
        h("a9993e364706816aba3e25717850c26c9cd0d89d")
    );
}
