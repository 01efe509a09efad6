//! Fuzz target `ingest_row`: what it checks is documented at `netverdict_api::fuzzing::ingest_row`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netverdict_fuzz::ingest_row(data));
