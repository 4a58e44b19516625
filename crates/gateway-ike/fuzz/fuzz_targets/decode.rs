#![no_main]
//! Feeds arbitrary datagrams to the IKE message and payload decoders:
//! they may reject anything but must never panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gateway_ike::message::Message::decode(data);
    if let Some((&first, rest)) = data.split_first() {
        let _ = gateway_ike::payload::decode_chain(first, rest);
    }
});
