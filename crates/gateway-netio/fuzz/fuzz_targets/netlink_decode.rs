//! Every rtnetlink decoder over arbitrary bytes: must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gateway_netio::netlink::wire::decode_all(data);
});
