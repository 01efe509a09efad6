//! The query commands' filter flags, turned into a request's protobuf
//! filters the way `hubble observe` does it:
//!
//! - every flag narrows (AND across flags); a flag given several times
//!   matches any of its values (OR);
//! - `--ip` and `--pod` match either end of a flow: the request gets one
//!   filter with the value on the source and one with it on the destination
//!   (with both flags, the four combinations), which the server ORs; they
//!   cannot be combined with their `--from-`/`--to-` forms;
//! - `--not` sends the next filter flag to the exclude filters instead, which
//!   are built from the excluded flags exactly as the include filters are from
//!   the others: `--not --type dns` drops DNS flows, and
//!   `--not -n kube-system --not --type dns` drops the DNS flows of
//!   kube-system (the excluded flags narrow each other, as in hubble). `--not`
//!   must come right before a filter flag;
//! - a pod or policy NAME without a namespace takes the namespace of the one
//!   `-n` given with it (the excluded `-n` for excluded flags, else the
//!   included one).
//!
//! The order of the flags matters only for `--not`; clap keeps each
//! occurrence's position ([`clap::ArgMatches::indices_of`]), which is how the
//! flags are read back in command-line order. Each value is checked on its
//! own by the filter compiler the servers use
//! ([`netverdict_proto::filter::Filter::compile`]), so an error names the
//! flag it came from.

use anyhow::{Context, Result, anyhow, bail};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args};
use netverdict_proto::filter::{Filter, LabelSelector};
use netverdict_proto::names::EnumName;
use netverdict_proto::v1 as pb;
use prost::Message;

/// Where the flows are: the namespace and label flags every query command
/// takes (`observe` can also negate them with `--not`).
#[derive(Args, Debug, Clone, Default)]
pub struct ScopeArgs {
    /// Flows with either endpoint in this namespace (repeatable).
    #[arg(short = 'n', long = "namespace", value_name = "NAMESPACE")]
    pub namespace: Vec<String>,
    /// Every namespace (the default; for kubectl habits).
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Flows where this label selector holds on either endpoint, e.g.
    /// "app=api,tier in (web,db)" (repeatable: any of them).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Vec<String>,
}

impl ScopeArgs {
    /// The label selectors, each checked (errors name `-l/--selector`).
    pub fn selectors(&self) -> Result<Vec<String>> {
        for s in &self.selector {
            LabelSelector::parse("labels", s)
                .map_err(|e| anyhow!("{}: {e}", Flag::Selector.name()))?;
        }
        Ok(self.selector.clone())
    }
}

/// `observe`'s filter flags (see the module documentation).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Flows from or to this pod: NAMESPACE/NAME, or NAME with one -n; a
    /// trailing * matches a name prefix.
    #[arg(long, value_name = "POD")]
    pub pod: Vec<String>,
    /// Flows from this pod (as --pod).
    #[arg(long, value_name = "POD")]
    pub from_pod: Vec<String>,
    /// Flows to this pod (as --pod).
    #[arg(long, value_name = "POD")]
    pub to_pod: Vec<String>,
    /// Flows from or to this IP address or CIDR.
    #[arg(long, value_name = "IP")]
    pub ip: Vec<String>,
    /// Flows from this IP address or CIDR.
    #[arg(long, value_name = "IP")]
    pub from_ip: Vec<String>,
    /// Flows to this IP address or CIDR (after Service DNAT).
    #[arg(long, value_name = "IP")]
    pub to_ip: Vec<String>,
    /// Flows from a pod in this namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub from_namespace: Vec<String>,
    /// Flows to a pod in this namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub to_namespace: Vec<String>,
    /// Flows whose source matches this label selector.
    #[arg(long, value_name = "SELECTOR")]
    pub from_label: Vec<String>,
    /// Flows whose destination matches this label selector.
    #[arg(long, value_name = "SELECTOR")]
    pub to_label: Vec<String>,
    /// Policy verdict.
    #[arg(long, value_parser = enum_names::<pb::Verdict>(), ignore_case = true)]
    pub verdict: Vec<String>,
    /// Kernel outcome.
    #[arg(long, value_parser = enum_names::<pb::Outcome>(), ignore_case = true)]
    pub outcome: Vec<String>,
    /// Kind of flow: allowed, denied, dropped (by the kernel), dns, mismatch
    /// (the kernel contradicts the verdict).
    #[arg(
        short = 't',
        long = "type",
        value_name = "TYPE",
        value_parser = enum_names::<pb::FlowType>(),
        ignore_case = true
    )]
    pub flow_type: Vec<String>,
    /// The kernel's drop reason, e.g. NETFILTER_DROP, NO_SOCKET (any case).
    #[arg(long, value_name = "REASON")]
    pub drop_reason: Vec<String>,
    /// Flows allowed or denied by this policy: NAMESPACE/NAME, or NAME with one -n.
    #[arg(long)]
    pub policy: Vec<String>,
    /// Destination port (after Service DNAT).
    #[arg(long)]
    pub port: Vec<String>,
    /// Transport protocol.
    #[arg(long, value_parser = enum_names::<pb::Protocol>(), ignore_case = true)]
    pub protocol: Vec<String>,
    /// DNS query name; "*.example.com" matches subdomains.
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// Name the source resolved to the destination (an address outside the
    /// cluster); "*.example.com" matches subdomains.
    #[arg(long, value_name = "NAME")]
    pub to_fqdn: Vec<String>,
    /// Flows where the kernel contradicts the policy verdict (every kind of
    /// mismatch).
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub mismatch: Vec<bool>,
    /// Flows observed on this node.
    #[arg(long)]
    pub node: Vec<String>,
    /// Exclude the flows the next filter flag matches (as in hubble): `--not
    /// --type dns`, `--not -n kube-system`. Excluded flags narrow each other.
    #[arg(long, action = ArgAction::Append, num_args = 0, default_missing_value = "true")]
    pub not: Vec<bool>,
}

/// A filter flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Namespace,
    Selector,
    Pod,
    FromPod,
    ToPod,
    Ip,
    FromIp,
    ToIp,
    FromNamespace,
    ToNamespace,
    FromLabel,
    ToLabel,
    Verdict,
    Outcome,
    Type,
    DropReason,
    Policy,
    Port,
    Protocol,
    Dns,
    ToFqdn,
    Mismatch,
    Node,
}

impl Flag {
    /// Every filter flag.
    pub const ALL: [Flag; 23] = [
        Flag::Namespace,
        Flag::Selector,
        Flag::Pod,
        Flag::FromPod,
        Flag::ToPod,
        Flag::Ip,
        Flag::FromIp,
        Flag::ToIp,
        Flag::FromNamespace,
        Flag::ToNamespace,
        Flag::FromLabel,
        Flag::ToLabel,
        Flag::Verdict,
        Flag::Outcome,
        Flag::Type,
        Flag::DropReason,
        Flag::Policy,
        Flag::Port,
        Flag::Protocol,
        Flag::Dns,
        Flag::ToFqdn,
        Flag::Mismatch,
        Flag::Node,
    ];

    /// The argument's id in the matches (its field's name).
    fn id(self) -> &'static str {
        match self {
            Flag::Namespace => "namespace",
            Flag::Selector => "selector",
            Flag::Pod => "pod",
            Flag::FromPod => "from_pod",
            Flag::ToPod => "to_pod",
            Flag::Ip => "ip",
            Flag::FromIp => "from_ip",
            Flag::ToIp => "to_ip",
            Flag::FromNamespace => "from_namespace",
            Flag::ToNamespace => "to_namespace",
            Flag::FromLabel => "from_label",
            Flag::ToLabel => "to_label",
            Flag::Verdict => "verdict",
            Flag::Outcome => "outcome",
            Flag::Type => "flow_type",
            Flag::DropReason => "drop_reason",
            Flag::Policy => "policy",
            Flag::Port => "port",
            Flag::Protocol => "protocol",
            Flag::Dns => "dns",
            Flag::ToFqdn => "to_fqdn",
            Flag::Mismatch => "mismatch",
            Flag::Node => "node",
        }
    }

    /// The flag as written, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Flag::Namespace => "-n/--namespace",
            Flag::Selector => "-l/--selector",
            Flag::Pod => "--pod",
            Flag::FromPod => "--from-pod",
            Flag::ToPod => "--to-pod",
            Flag::Ip => "--ip",
            Flag::FromIp => "--from-ip",
            Flag::ToIp => "--to-ip",
            Flag::FromNamespace => "--from-namespace",
            Flag::ToNamespace => "--to-namespace",
            Flag::FromLabel => "--from-label",
            Flag::ToLabel => "--to-label",
            Flag::Verdict => "--verdict",
            Flag::Outcome => "--outcome",
            Flag::Type => "-t/--type",
            Flag::DropReason => "--drop-reason",
            Flag::Policy => "--policy",
            Flag::Port => "--port",
            Flag::Protocol => "--protocol",
            Flag::Dns => "--dns",
            Flag::ToFqdn => "--to-fqdn",
            Flag::Mismatch => "--mismatch",
            Flag::Node => "--node",
        }
    }

    /// The flag's values in `args`, in command-line order (an empty value
    /// per occurrence of `--mismatch`).
    fn values(self, args: &FilterArgs) -> Vec<String> {
        let v = match self {
            Flag::Namespace => &args.scope.namespace,
            Flag::Selector => &args.scope.selector,
            Flag::Pod => &args.pod,
            Flag::FromPod => &args.from_pod,
            Flag::ToPod => &args.to_pod,
            Flag::Ip => &args.ip,
            Flag::FromIp => &args.from_ip,
            Flag::ToIp => &args.to_ip,
            Flag::FromNamespace => &args.from_namespace,
            Flag::ToNamespace => &args.to_namespace,
            Flag::FromLabel => &args.from_label,
            Flag::ToLabel => &args.to_label,
            Flag::Verdict => &args.verdict,
            Flag::Outcome => &args.outcome,
            Flag::Type => &args.flow_type,
            Flag::DropReason => &args.drop_reason,
            Flag::Policy => &args.policy,
            Flag::Port => &args.port,
            Flag::Protocol => &args.protocol,
            Flag::Dns => &args.dns,
            Flag::ToFqdn => &args.to_fqdn,
            Flag::Node => &args.node,
            Flag::Mismatch => return vec![String::new(); args.mismatch.len()],
        };
        v.clone()
    }
}

/// One filter flag as given: the flag, its value, and whether `--not` came
/// right before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The flag.
    pub flag: Flag,
    /// Its value (empty for `--mismatch`).
    pub value: String,
    /// Whether it excludes.
    pub negated: bool,
}

impl Occurrence {
    /// An included occurrence.
    pub fn include(flag: Flag, value: impl Into<String>) -> Self {
        Occurrence {
            flag,
            value: value.into(),
            negated: false,
        }
    }
}

/// What is at one position of the command line.
#[derive(Debug)]
enum Token {
    Not,
    Filter(Flag, String),
    Other(String),
}

/// The filter flags of `args` in command-line order, each marked when a
/// `--not` came right before it. `matches` are the ones `args` came from.
pub fn occurrences(args: &FilterArgs, matches: &ArgMatches) -> Result<Vec<Occurrence>> {
    let mut tokens: Vec<(usize, Token)> = Vec::new();
    for flag in Flag::ALL {
        let values = flag.values(args);
        let indices: Vec<usize> = matches
            .indices_of(flag.id())
            .map(Iterator::collect)
            .unwrap_or_default();
        if indices.len() != values.len() {
            bail!(
                "{}: {} values at {} positions (a bug in reading the flags)",
                flag.name(),
                values.len(),
                indices.len()
            );
        }
        tokens.extend(
            indices
                .into_iter()
                .zip(values)
                .map(|(i, v)| (i, Token::Filter(flag, v))),
        );
    }
    let not: Vec<usize> = matches
        .indices_of("not")
        .map(Iterator::collect)
        .unwrap_or_default();
    if not.len() != args.not.len() {
        bail!(
            "--not: {} uses at {} positions (a bug in reading the flags)",
            args.not.len(),
            not.len()
        );
    }
    tokens.extend(not.into_iter().map(|i| (i, Token::Not)));
    for id in matches.ids() {
        let id = id.as_str();
        if id == "not" || Flag::ALL.iter().any(|f| f.id() == id) {
            continue;
        }
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        if let Some(indices) = matches.indices_of(id) {
            tokens.extend(indices.map(|i| (i, Token::Other(id.to_string()))));
        }
    }
    tokens.sort_by_key(|(i, _)| *i);
    let mut out = Vec::new();
    let mut negate = false;
    for (_, token) in tokens {
        match token {
            Token::Not if negate => {
                bail!("--not --not: --not excludes the one filter flag after it")
            }
            Token::Not => negate = true,
            Token::Filter(flag, value) => {
                out.push(Occurrence {
                    flag,
                    value,
                    negated: negate,
                });
                negate = false;
            }
            Token::Other(id) if negate => bail!(
                "--not must come right before a filter flag (such as --ip or --type), not --{}",
                id.replace('_', "-")
            ),
            Token::Other(_) => {}
        }
    }
    if negate {
        bail!("--not at the end: it excludes the filter flag after it");
    }
    Ok(out)
}

/// A request's filters: flows matching any include filter (every flow when
/// there is none) and no exclude filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFilters {
    /// Flows matching any of these.
    pub include: Vec<pb::FlowFilter>,
    /// Minus flows matching any of these.
    pub exclude: Vec<pb::FlowFilter>,
}

/// The include and exclude filters of the flags given.
pub fn build(occurrences: &[Occurrence]) -> Result<RequestFilters> {
    let namespaces = |negated: bool| -> Vec<String> {
        occurrences
            .iter()
            .filter(|o| o.negated == negated && o.flag == Flag::Namespace)
            .map(|o| o.value.clone())
            .collect()
    };
    let included = namespaces(false);
    let excluded = namespaces(true);
    let group = |negated: bool, qualify: &[String]| {
        let flags: Vec<&Occurrence> = occurrences
            .iter()
            .filter(|o| o.negated == negated)
            .collect();
        filters(&flags, qualify).map_err(|e| {
            if negated {
                e.context("in the --not flags")
            } else {
                e
            }
        })
    };
    Ok(RequestFilters {
        include: group(false, &included)?,
        exclude: group(
            true,
            if excluded.is_empty() {
                &included
            } else {
                &excluded
            },
        )?,
    })
}

/// The filters of one group of flags (the included or the excluded ones):
/// none without flags, else one filter per combination of ends of `--pod`
/// and `--ip`.
fn filters(flags: &[&Occurrence], qualify: &[String]) -> Result<Vec<pb::FlowFilter>> {
    if flags.is_empty() {
        return Ok(Vec::new());
    }
    let has = |flag: Flag| flags.iter().any(|o| o.flag == flag);
    for (either, one) in [
        (Flag::Pod, Flag::FromPod),
        (Flag::Pod, Flag::ToPod),
        (Flag::Ip, Flag::FromIp),
        (Flag::Ip, Flag::ToIp),
    ] {
        if has(either) && has(one) {
            bail!(
                "{} and {} cannot be combined: {} already matches the source or the destination",
                either.name(),
                one.name(),
                either.name()
            );
        }
    }
    let mut base = pb::FlowFilter::default();
    let mut pods = Vec::new();
    let mut ips = Vec::new();
    for o in flags {
        let alone = one_value(o.flag, &o.value, qualify)?;
        match o.flag {
            Flag::Pod => pods.extend(alone.source_pod),
            Flag::Ip => ips.extend(alone.source_ip),
            _ => merge(&mut base, &alone)?,
        }
    }
    let mut out = vec![base];
    if !pods.is_empty() {
        out = split(
            out,
            |f| f.source_pod.extend(pods.clone()),
            |f| f.destination_pod.extend(pods.clone()),
        );
    }
    if !ips.is_empty() {
        out = split(
            out,
            |f| f.source_ip.extend(ips.clone()),
            |f| f.destination_ip.extend(ips.clone()),
        );
    }
    Ok(out)
}

/// Each filter twice: once changed by `source`, once by `destination`.
fn split(
    filters: Vec<pb::FlowFilter>,
    source: impl Fn(&mut pb::FlowFilter),
    destination: impl Fn(&mut pb::FlowFilter),
) -> Vec<pb::FlowFilter> {
    filters
        .into_iter()
        .flat_map(|f| {
            let mut from = f.clone();
            source(&mut from);
            let mut to = f;
            destination(&mut to);
            [from, to]
        })
        .collect()
}

/// The filter of one flag's value alone (`--pod` and `--ip` on the source),
/// compiled as the servers compile it so that a bad value is an error naming
/// the flag.
fn one_value(flag: Flag, value: &str, qualify: &[String]) -> Result<pb::FlowFilter> {
    let name = flag.name();
    let mut f = pb::FlowFilter::default();
    let v = value.to_string();
    match flag {
        Flag::Namespace => f.namespace.push(v),
        Flag::Selector => f.labels.push(v),
        Flag::Pod | Flag::FromPod => f.source_pod.push(qualified(name, value, qualify)?),
        Flag::ToPod => f.destination_pod.push(qualified(name, value, qualify)?),
        Flag::Ip | Flag::FromIp => f.source_ip.push(v),
        Flag::ToIp => f.destination_ip.push(v),
        Flag::FromNamespace => f.source_namespace.push(v),
        Flag::ToNamespace => f.destination_namespace.push(v),
        Flag::FromLabel => f.source_labels.push(v),
        Flag::ToLabel => f.destination_labels.push(v),
        Flag::Verdict => f.verdict.push(enum_value::<pb::Verdict>(name, value)?),
        Flag::Outcome => f.outcome.push(enum_value::<pb::Outcome>(name, value)?),
        Flag::Protocol => f.protocol.push(enum_value::<pb::Protocol>(name, value)?),
        Flag::Type => f.flow_type.push(flow_type(value)?),
        Flag::DropReason => f.drop_reason.push(v),
        Flag::Policy => f.policy.push(qualified(name, value, qualify)?),
        Flag::Port => f.destination_port.push(match value.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => n,
            _ => bail!("{name}: invalid value {value:?}: expected a port number 1-65535"),
        }),
        Flag::Dns => f.dns_query.push(v),
        Flag::ToFqdn => f.destination_fqdn.push(v),
        Flag::Node => f.node_name.push(v),
        Flag::Mismatch => f.mismatch.extend(
            pb::Mismatch::ALL
                .iter()
                .filter(|m| **m != pb::Mismatch::None)
                .map(|m| m.number()),
        ),
    }
    Filter::compile(&f).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(f)
}

/// Adds every value of `more` to `into`: protobuf merging appends repeated
/// fields, so every field, present and future, is carried over.
fn merge(into: &mut pb::FlowFilter, more: &pb::FlowFilter) -> Result<()> {
    into.merge(more.encode_to_vec().as_slice())
        .context("merging a flag's filter into the request's (a bug)")
}

/// The value parser of an enum flag: the display names of the enum's values
/// (which completion offers and errors list; `FlowType`'s unspecified zero
/// left out), each also accepted as its proto name and with `_` for `-`, in
/// any case with the flag's `ignore_case`, as `EnumName::parse` accepts them.
fn enum_names<E: EnumName>() -> PossibleValuesParser {
    PossibleValuesParser::new(
        E::ALL
            .iter()
            .filter(|v| v.sql_name() != pb::FlowType::Unspecified.sql_name())
            .map(|v| {
                let bare = v.name().replace('-', "_");
                let value = PossibleValue::new(v.name()).alias(v.sql_name());
                if bare == v.name() {
                    value
                } else {
                    value.alias(bare)
                }
            }),
    )
}

/// The proto number of a flag's enum value, by its name (`netverdict_proto::names`).
pub fn enum_value<E: EnumName>(flag: &str, value: &str) -> Result<i32> {
    E::parse_or_list(value)
        .map(E::number)
        .map_err(|reason| anyhow!("{flag}: invalid value {value:?}: {reason}"))
}

/// A `--type` value: a flow type other than the unspecified zero.
fn flow_type(value: &str) -> Result<i32> {
    match pb::FlowType::parse(value) {
        Some(t) if t != pb::FlowType::Unspecified => Ok(t.number()),
        _ => {
            let names: Vec<&str> = pb::FlowType::ALL[1..].iter().map(|t| t.name()).collect();
            bail!(
                "{}: invalid value {value:?}: expected one of {}",
                Flag::Type.name(),
                names.join(", ")
            )
        }
    }
}

/// `ns/name`, or `name` qualified by the only namespace of `namespaces`.
pub fn qualified(flag: &str, value: &str, namespaces: &[String]) -> Result<String> {
    if let Some((ns, name)) = value.split_once('/') {
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            bail!("{flag}: invalid value {value:?}: expected NAMESPACE/NAME");
        }
        return Ok(value.to_string());
    }
    match namespaces {
        [ns] => Ok(format!("{ns}/{value}")),
        _ => bail!("{flag}: {value:?} needs a namespace: write NAMESPACE/NAME or give one -n"),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        filters: FilterArgs,
        /// A flag that is not a filter.
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long, default_value = "x")]
        server: String,
    }

    fn filters(args: &[&str]) -> Result<RequestFilters> {
        let matches = Cmd::command()
            .try_get_matches_from(std::iter::once("observe").chain(args.iter().copied()))?;
        let cmd = Cmd::from_arg_matches(&matches)?;
        build(&occurrences(&cmd.filters, &matches)?)
    }

    fn error(args: &[&str]) -> String {
        format!("{:#}", filters(args).unwrap_err())
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_narrow_and_values_widen() {
        let f = filters(&[
            "-n",
            "shop",
            "--verdict",
            "denied",
            "--outcome",
            "no_answer",
            "--outcome",
            "OUTCOME_DROPPED",
            "--protocol",
            "TCP",
            "--port",
            "8080",
            "--policy",
            "default-deny",
            "--from-pod",
            "web*",
            "--type",
            "dns",
            "--drop-reason",
            "netfilter-drop",
            "--from-namespace",
            "shop",
            "--to-label",
            "app=api",
        ])
        .unwrap();
        assert!(f.exclude.is_empty());
        let [one] = &f.include[..] else {
            panic!("{f:?}")
        };
        assert_eq!(one.namespace, s(&["shop"]));
        assert_eq!(one.verdict, [pb::Verdict::Denied as i32]);
        assert_eq!(
            one.outcome,
            [pb::Outcome::NoAnswer as i32, pb::Outcome::Dropped as i32]
        );
        assert_eq!(one.policy, s(&["shop/default-deny"]));
        assert_eq!(one.source_pod, s(&["shop/web*"]));
        assert_eq!(one.flow_type, [pb::FlowType::Dns as i32]);
        assert_eq!(one.drop_reason, s(&["netfilter-drop"]));
        assert_eq!(one.source_namespace, s(&["shop"]));
        assert_eq!(one.destination_labels, s(&["app=api"]));
    }

    #[test]
    fn enum_flags_take_every_spelling() {
        let f = filters(&[
            "--outcome",
            "no-answer",
            "--outcome",
            "NO_ANSWER",
            "--outcome",
            "outcome_no_answer",
            "--protocol",
            "UDP",
            "-t",
            "DNS",
        ])
        .unwrap();
        assert_eq!(f.include[0].outcome, [pb::Outcome::NoAnswer as i32; 3]);
        assert_eq!(f.include[0].protocol, [pb::Protocol::Udp as i32]);
        assert_eq!(f.include[0].flow_type, [pb::FlowType::Dns as i32]);
    }

    #[test]
    fn no_flags_no_filters() {
        assert_eq!(filters(&["-f"]).unwrap(), RequestFilters::default());
    }

    #[test]
    fn either_end_flags_split_into_one_filter_per_end() {
        let f = filters(&[
            "--ip",
            "10.0.0.1",
            "--ip",
            "10.0.0.2",
            "--verdict",
            "denied",
        ])
        .unwrap();
        assert_eq!(f.include.len(), 2);
        assert_eq!(f.include[0].source_ip, s(&["10.0.0.1", "10.0.0.2"]));
        assert!(f.include[0].destination_ip.is_empty());
        assert_eq!(f.include[1].destination_ip, s(&["10.0.0.1", "10.0.0.2"]));
        assert!(f.include[1].source_ip.is_empty());
        assert!(f.include.iter().all(|f| f.verdict == [2]));
        // Both: every combination of ends.
        let f = filters(&["--ip", "10.0.0.1", "--pod", "shop/web"]).unwrap();
        let ends: Vec<(bool, bool)> = f
            .include
            .iter()
            .map(|f| (!f.source_pod.is_empty(), !f.source_ip.is_empty()))
            .collect();
        assert_eq!(
            ends,
            [(true, true), (true, false), (false, true), (false, false)]
        );
    }

    #[test]
    fn not_excludes_the_next_filter_flag_only() {
        let f = filters(&[
            "--from-ip",
            "10.0.0.1",
            "--not",
            "--to-ip",
            "10.0.0.9",
            "--verdict",
            "denied",
        ])
        .unwrap();
        assert_eq!(f.include.len(), 1);
        assert_eq!(f.include[0].source_ip, s(&["10.0.0.1"]));
        assert_eq!(f.include[0].verdict, [2]);
        assert_eq!(
            f.exclude,
            [pb::FlowFilter {
                destination_ip: s(&["10.0.0.9"]),
                ..Default::default()
            }]
        );
        // Excluded flags narrow each other, and either-end ones split.
        let f = filters(&[
            "--not",
            "-n",
            "kube-system",
            "--not",
            "--ip",
            "10.0.0.1",
            "-f",
        ])
        .unwrap();
        assert!(f.include.is_empty());
        assert_eq!(f.exclude.len(), 2);
        assert!(f.exclude.iter().all(|f| f.namespace == s(&["kube-system"])));
        assert_eq!(f.exclude[0].source_ip, s(&["10.0.0.1"]));
        assert_eq!(f.exclude[1].destination_ip, s(&["10.0.0.1"]));
        // --not --mismatch; the equals form; a flag after a non-filter flag.
        let f = filters(&["--not", "--mismatch", "-f", "--not", "--type=dns"]).unwrap();
        assert_eq!(f.exclude.len(), 1);
        assert_eq!(f.exclude[0].mismatch.len(), 3);
        assert_eq!(f.exclude[0].flow_type, [pb::FlowType::Dns as i32]);
        let f = filters(&["--mismatch", "--not", "--mismatch"]).unwrap();
        assert_eq!((f.include.len(), f.exclude.len()), (1, 1));
    }

    #[test]
    fn names_qualify_with_their_groups_namespace() {
        let f = filters(&["-n", "default", "--not", "--pod", "api"]).unwrap();
        assert_eq!(f.exclude[0].source_pod, s(&["default/api"]));
        let f = filters(&[
            "--not",
            "-n",
            "kube-system",
            "--not",
            "--from-pod",
            "coredns",
        ])
        .unwrap();
        assert_eq!(f.exclude[0].source_pod, s(&["kube-system/coredns"]));
        assert!(error(&["--pod", "api"]).contains("--pod: \"api\" needs a namespace"));
    }

    #[test]
    fn misplaced_not_is_an_error() {
        assert!(error(&["--ip", "10.0.0.1", "--not"]).contains("--not at the end"));
        assert!(error(&["--not", "--not", "--ip", "10.0.0.1"]).contains("--not --not"));
        let e = error(&["--not", "-f", "--ip", "10.0.0.1"]);
        assert!(
            e.contains("right before a filter flag") && e.contains("--follow"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, expected) in [
            (
                &["--verdict", "maybe"][..],
                "invalid value 'maybe' for '--verdict <VERDICT>'\n  [possible values: unspecified, allowed, denied]",
            ),
            (&["--port", "70000"][..], "--port: invalid value \"70000\""),
            (
                &["--from-pod", "api"][..],
                "--from-pod: \"api\" needs a namespace",
            ),
            (&["-l", "app in ("][..], "-l/--selector: "),
            (
                &["--from-ip", "nope"][..],
                "--from-ip: filter field source_ip",
            ),
            (&["--ip", "10.0.0.0/33"][..], "--ip: filter field source_ip"),
            (
                &["--to-label", "a b"][..],
                "--to-label: filter field destination_labels",
            ),
            (
                &["--drop-reason", "x' OR 1=1"][..],
                "--drop-reason: filter field drop_reason",
            ),
            (
                &["--type", "unspecified"][..],
                "[possible values: allowed, denied, dropped, dns, mismatch]",
            ),
            (
                &["--not", "--to-ip", "x"][..],
                "in the --not flags: --to-ip: filter field",
            ),
        ] {
            let e = error(args);
            assert!(e.contains(expected), "{args:?}: {e}");
        }
    }

    #[test]
    fn either_end_flags_do_not_mix_with_their_one_end_forms() {
        let e = error(&["--ip", "10.0.0.1", "--from-ip", "10.0.0.2"]);
        assert!(e.contains("--ip and --from-ip cannot be combined"), "{e}");
        let e = error(&["--not", "--pod", "a/b", "--not", "--to-pod", "a/c"]);
        assert!(e.contains("--pod and --to-pod cannot be combined"), "{e}");
        // In different groups they are fine.
        filters(&["--ip", "10.0.0.1", "--not", "--from-ip", "10.0.0.2"]).unwrap();
    }
}
