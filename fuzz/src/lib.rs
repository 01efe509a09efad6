//! What each fuzz target runs: one function per target, so a target file in
//! `src/bin/` is the one line that hands libFuzzer's bytes to it. The
//! functions and the properties they check are in `netverdict_api::fuzzing`
//! and `netverdict_collector::fuzzing` (feature `fuzzing` of each), whose unit
//! tests also run each target's seeds from `corpus/` under plain `cargo test`.

pub use netverdict_api::fuzzing::{filter_sql, ingest_row, manifest, spool_reader};
pub use netverdict_collector::fuzzing::{dns_message, kernel_records};
