//! Fuzz target `dns_message`: what it checks is documented at `netverdict_collector::fuzzing::dns_message`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| netverdict_fuzz::dns_message(data));
