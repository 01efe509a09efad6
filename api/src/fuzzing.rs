//! Fuzzing entry points (feature `fuzzing`, used by the cargo-fuzz targets in
//! `fuzz/`): one function per target, each taking arbitrary bytes and
//! panicking when a property the server relies on does not hold. The
//! ClickHouse store's targets live in [`crate::clickhouse::fuzzing`], next to
//! the private parts they reach; [`manifest`] is here, as the API server loads
//! manifests for its cluster state (`--cluster`).
//!
//! The seeds kept in `fuzz/corpus/<target>/` also run as ordinary unit tests
//! (below), so `cargo test` checks every target on its corpus without the
//! nightly toolchain; `scripts/fuzz.sh` explores beyond them.

use std::path::Path;

use netverdict_policy::manifest::Manifests;
use netverdict_policy::{ClusterState, LoadOptions};

pub use crate::clickhouse::fuzzing::{filter_sql, ingest_row, spool_reader};

/// Manifest loading: any text read as a manifest file (YAML or JSON, one or
/// many documents, `kind: List`) and loaded into a cluster state gives
/// objects or errors naming them, never a panic.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut manifests = Manifests::default();
    manifests.read_str(Path::new("fuzz.yaml"), text);
    let _ = ClusterState::from_manifests(manifests, &LoadOptions::default());
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Every seed of `target`'s corpus, by file name; the corpus is never empty.
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("a directory entry").path();
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                (path.display().to_string(), bytes)
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{} holds no seeds", dir.display());
        seeds
    }

    fn run(target: &str, check: fn(&[u8])) {
        for (name, bytes) in seeds(target) {
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "fuzz target {target} fails on seed {name}");
        }
    }

    #[test]
    fn ingest_row_holds_on_its_seeds() {
        run("ingest_row", super::ingest_row);
    }

    #[test]
    fn spool_reader_holds_on_its_seeds() {
        run("spool_reader", super::spool_reader);
    }

    #[test]
    fn filter_sql_holds_on_its_seeds() {
        run("filter_sql", super::filter_sql);
    }

    #[test]
    fn manifest_holds_on_its_seeds() {
        run("manifest", super::manifest);
    }
}
