//! Fuzz target `filter_sql`: what it checks is documented at `netverdict_api::fuzzing::filter_sql`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netverdict_fuzz::filter_sql(data));
