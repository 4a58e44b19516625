//! Message decoder on arbitrary bytes, with and without 4-octet ASNs: it must
//! never panic, and a message that decoded cleanly must survive
//! encode-then-decode unchanged.
#![no_main]

use gateway_bgp::message::{frame_len, Codec, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for four_octet_as in [true, false] {
        let codec = Codec { four_octet_as };
        let Ok(Some(len)) = frame_len(data) else {
            continue;
        };
        let Ok(msg) = Message::decode(&data[..len], codec) else {
            continue;
        };
        if let Message::Update(u) = &msg {
            if u.treat_as_withdraw.is_some() {
                continue;
            }
        }
        let again = Message::decode(&msg.encode(codec), codec).expect("re-encoded message decodes");
        assert_eq!(again, msg);
    }
});
