//! Untrusted API input (query strings, JSON bodies, field validators).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gateway_api::ops::exercise_untrusted_input(data);
});
