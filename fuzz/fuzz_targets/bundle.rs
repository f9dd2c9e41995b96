//! Any bytes given to the bundle reader, then (when they read as a bundle) to the config
//! validation: neither may panic, loop, or allocate past its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stackdrop_core::bundle::{read_bundle, Limits};
use stackdrop_core::validate::validate_bundle;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = read_bundle(data, "fuzz.zip", &Limits::default()) {
        let _ = validate_bundle(&bundle);
    }
});
