//! Fuzz target `spool_reader`: what it checks is documented at `netverdict_api::fuzzing::spool_reader`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netverdict_fuzz::spool_reader(data));
