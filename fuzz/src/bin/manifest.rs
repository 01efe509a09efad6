//! Fuzz target `manifest`: what it checks is documented at `netverdict_api::fuzzing::manifest`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netverdict_fuzz::manifest(data));
