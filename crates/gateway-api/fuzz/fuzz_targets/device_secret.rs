//! The PSK rule and the swanctl.conf `secret` value on arbitrary bytes:
//! the value is always one line, a PSK the rule accepts is written as a
//! quoted string, anything else as hex, and the quoted form never ends
//! early (every quote and backslash inside is escaped).
#![no_main]

use gateway_api::device_config::swanctl_secret;
use gateway_api::secrets::check_psk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v = swanctl_secret(data);
    assert!(!v.contains('\n') && !v.contains('\r'));
    let encoded_prefix = data.len() >= 2
        && data[0] == b'0'
        && matches!(data[1].to_ascii_lowercase(), b'x' | b's');
    if check_psk(data).is_ok() && !encoded_prefix {
        assert!(v.starts_with('"') && v.ends_with('"'));
    }
    if let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        let mut escaped = false;
        for c in inner.chars() {
            assert!(escaped || c != '"', "unescaped quote in {v}");
            escaped = !escaped && c == '\\';
        }
        assert!(!escaped, "a trailing backslash would escape the closing quote: {v}");
    } else {
        assert!(v.starts_with("0x") && v.len() == 2 + 2 * data.len());
    }
});
