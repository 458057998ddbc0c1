//! The WebDAV server's answer to the listing (PROPFIND) the reference sync
//! transport asks for: the HTTP/1.0 answer split into status and body, and
//! the multistatus XML read for names and sizes. Anything may be refused;
//! nothing may panic.
#![no_main]

use hearth_core::sync::webdav::{parse_multistatus, parse_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = parse_reply(data)
        && let Ok(text) = std::str::from_utf8(body)
    {
        let _ = parse_multistatus(text);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_multistatus(text);
    }
});
