//! Fuzzes what an untrusted sender controls: the signature header and the body. The first byte
//! chooses how the header is built (valid, garbled, or taken from the input), the rest is the
//! body; neither the signature check nor the event parser may panic, and a body whose valid
//! signature verifies must parse or be refused with an error naming a path.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The service's own domain module, compiled here from its source (see Cargo.toml); what the
// fuzzer does not call is unused.
#[path = "../../src/domain/mod.rs"]
#[allow(dead_code, unused_imports)]
mod domain;

use domain::argyle;
use domain::signature::{Secret, sign, verify};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let secrets = [Secret::new("fuzz-secret"), Secret::new("rotated")];
    let (header, body): (Vec<u8>, &[u8]) = match mode % 3 {
        0 => (sign(&secrets[0], rest).into_bytes(), rest),
        1 => {
            let split = rest.len().min(usize::from(mode));
            (rest[..split].to_vec(), &rest[split..])
        }
        _ => {
            let mut header = sign(&secrets[1], rest).into_bytes();
            if let Some(first) = header.first_mut() {
                *first = mode;
            }
            (header, rest)
        }
    };
    if let Ok(verified) = verify(&secrets, Some(&header), body) {
        if let Err(error) = argyle::parse(verified.get()) {
            assert!(!error.path.is_empty());
        }
    }
    let _ = argyle::parse(body);
});
