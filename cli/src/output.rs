//! The `-o`/`--output` formats, defined once for every command. Each command
//! takes the formats meaningful for what it prints ([`FLOWS`], [`REPORTS`],
//! ...), parsed by [`parser`] so that `--help`, shell completion and the error
//! for another value all list exactly those.
//!
//! | format | what it prints | commands |
//! | --- | --- | --- |
//! | `compact` | one short line per item, no header; streams | `observe`, `mismatches`, `capture` |
//! | `table` | aligned columns under a header; long columns left out | `observe`, `mismatches`, `denied`, `dns`, `status` |
//! | `wide` | the table with its long columns (reasons, the node) | `observe`, `mismatches`, `denied`, `dns` |
//! | `text` | prose for a person | `explain`, `lint`, `demo`, `lab matrix` |
//! | `json` | one JSON document | all but `capture` |
//! | `jsonl` | one JSON object per line; streams | `observe`, `mismatches`, `capture` |
//! | `yaml` | Kubernetes objects for `kubectl apply -f -` | `recommend` |

use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// An output format (see the module documentation).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One short line per item, no header; printed as items come.
    Compact,
    /// Aligned columns under a header; long columns left out.
    Table,
    /// The table with its long columns (reasons, the node).
    Wide,
    /// Prose for a person.
    Text,
    /// One JSON document.
    Json,
    /// One JSON object per line; printed as items come.
    Jsonl,
    /// Kubernetes objects as YAML documents.
    Yaml,
}

/// Flows (`observe`, `mismatches`).
pub const FLOWS: &[Output] = &[
    Output::Compact,
    Output::Table,
    Output::Wide,
    Output::Json,
    Output::Jsonl,
];

/// Grouped reports (`denied`, `dns`).
pub const REPORTS: &[Output] = &[Output::Table, Output::Wide, Output::Json];

/// A server's status (`status`).
pub const STATUS: &[Output] = &[Output::Table, Output::Json];

/// Explanations and findings (`explain`, `lint`, `demo`, `lab matrix`).
pub const PROSE: &[Output] = &[Output::Text, Output::Json];

/// Changed flow groups (`whatif`): `json` and `jsonl` alike print one JSON
/// object per group and line.
pub const WHATIF: &[Output] = &[Output::Table, Output::Wide, Output::Json, Output::Jsonl];

/// Kubernetes objects to apply (`recommend`): YAML documents, or one JSON
/// `List`.
pub const OBJECTS: &[Output] = &[Output::Yaml, Output::Json];

/// Kernel events as they come (`capture`).
pub const EVENTS: &[Output] = &[Output::Compact, Output::Jsonl];

/// The value parser of a command's `-o`: only the formats in `allowed`.
pub fn parser(allowed: &'static [Output]) -> impl TypedValueParser<Value = Output> {
    PossibleValuesParser::new(allowed.iter().filter_map(|o| o.to_possible_value()))
        .try_map(|name| Output::from_str(&name, false))
}

#[cfg(test)]
mod tests {
    use clap::{Arg, Command};

    use super::*;

    fn parse(allowed: &'static [Output], args: &[&str]) -> Result<Output, clap::Error> {
        Command::new("t")
            .arg(Arg::new("output").short('o').value_parser(parser(allowed)))
            .try_get_matches_from(args)
            .map(|m| *m.get_one::<Output>("output").unwrap())
    }

    #[test]
    fn each_command_takes_its_formats_only() {
        assert_eq!(parse(FLOWS, &["t", "-o", "jsonl"]).unwrap(), Output::Jsonl);
        assert_eq!(parse(REPORTS, &["t", "-o", "wide"]).unwrap(), Output::Wide);
        let e = parse(REPORTS, &["t", "-o", "jsonl"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[possible values: table, wide, json]"), "{e}");
        assert!(parse(PROSE, &["t", "-o", "table"]).is_err());
    }

    #[test]
    fn every_format_serves_some_command() {
        for o in Output::value_variants() {
            assert!(
                [FLOWS, REPORTS, STATUS, PROSE, WHATIF, OBJECTS, EVENTS]
                    .iter()
                    .any(|set| set.contains(o)),
                "{o:?}"
            );
        }
    }
}
