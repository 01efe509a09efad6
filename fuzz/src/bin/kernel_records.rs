//! Fuzz target `kernel_records`: what it checks is documented at `netverdict_collector::fuzzing::kernel_records`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netverdict_fuzz::kernel_records(data));
