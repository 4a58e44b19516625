#![no_main]
//! Drives a worker `Pipeline` (the AF_XDP workers' per-frame logic) with
//! sequences of frames from WAN and LAN: raw Ethernet frames, and inner
//! packets that the harness seals as one of the peers (it holds their side
//! of every SA), so the fuzzer reaches what happens after decryption. No
//! panic, outputs within the chunk, nothing decrypted leaves with an inner
//! source outside its tunnel's filter, and what goes to WAN decrypts at
//! the peer (see `gateway_user::dataplane::testing::PipelineHarness` for
//! the input format). Seeds: `corpus/pipeline/`.

use gateway_user::dataplane::testing::PipelineHarness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    PipelineHarness::new().run(data);
});
