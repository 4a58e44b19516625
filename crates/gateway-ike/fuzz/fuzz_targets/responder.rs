#![no_main]
//! Drives the IKE responder past the parsers: the harness completes
//! IKE_SA_INIT and IKE_AUTH itself (it knows the keys and the PSK), then
//! seals fuzzer-chosen payload chains as IKE_AUTH / CREATE_CHILD_SA /
//! INFORMATIONAL messages of the established IKE SA and feeds them (see
//! `gateway_ike::testing::ResponderHarness` for the input format). Nothing
//! may panic, CHILD SAs come only from IKE SAs that are up, and inbound
//! SPIs stay unique. Seeds: `corpus/responder/`.

use gateway_ike::testing::ResponderHarness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ResponderHarness::new().run(data);
});
