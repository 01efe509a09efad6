//! The collector's Prometheus metrics: one [`Snapshot`] of every stage's
//! counters, encoded in the Prometheus text format (0.0.4) with the
//! `prometheus-client` crate.
//!
//! The stages keep their own counters (plain fields under the pipeline's lock,
//! atomics in the exporter and the cluster sources); a scrape gathers them into
//! a [`Snapshot`] and encodes it, so nothing on the hot path touches a metrics
//! registry. Labels stay low-cardinality: verdicts, outcomes, mismatch kinds
//! (by their display names, `netverdict_proto::names`: `denied`,
//! `no-answer`, `allowed-though-denied`), kernel drop reasons (the kernel's
//! enum), event kinds, object kinds; never a pod or an IP. Policies label one
//! family, `policy_verdicts`, under a cap ([`crate::policy_verdicts`]).
//!
//! Every family is named `netverdict_collector_*`; counters end in `_total`.

use netverdict_ebpf::{EventKind, LossCounters};
use netverdict_policy::ObjectKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::export::{ConnectionState, ExportStats};
use crate::pipeline::{Held, PipelineCounters};
use crate::resolved_names::ResolvedNamesStats;
use netverdict_cluster::{KIND_COUNT, KINDS, MetricsSnapshot, kind_index, kind_name};
use netverdict_proto::names::EnumName;
use netverdict_proto::v1 as pb;

/// The `Content-Type` of [`Snapshot::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every counter of one collector at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The pipeline's counters.
    pub pipeline: PipelineCounters,
    /// The probes' own counters, read from the kernel (None without probes);
    /// their ring-buffer losses also reach the pipeline as `Lost` items, which
    /// is what `kernel_events_lost` counts.
    pub losses: Option<LossCounters>,
    /// The exporter's counters (None when not exporting).
    pub export: Option<ExportStats>,
    /// The cluster source's name (`kube`, `manifests`) and counters.
    pub cluster: Option<(&'static str, MetricsSnapshot)>,
    /// Objects in the cluster state now, in [`KINDS`] order.
    pub cluster_objects: [u64; KINDS.len()],
    /// Flows in the ring now.
    pub ring_flows: u64,
    /// Flows evicted from the ring to make room.
    pub ring_evictions: u64,
    /// Observer follow streams ended because the follower fell behind.
    pub observer_lagged: u64,
    /// Kernel NAT events that joined a connection, and those none claimed.
    pub nat: (u64, u64),
    /// The Observer's TLS counters (None in plaintext).
    pub observer_tls: Option<netverdict_tls::server::TlsStatsSnapshot>,
    /// What correlation and aggregation hold, and what their bounds made
    /// them let go of.
    pub held: Held,
    /// The resolved-names map's counters, and the client-address pairs it
    /// holds.
    pub resolved_names: (ResolvedNamesStats, usize),
    /// Accepts that failed (out of file descriptors...): of the metrics
    /// server, of the Observer server.
    pub accept_errors: (u64, u64),
    /// Observer connections closed for not sending the HTTP/2 preface in time.
    pub observer_preface_timeouts: u64,
    /// Metrics connections closed at once because too many were open.
    pub http_connections_refused: u64,
}

impl Snapshot {
    /// The snapshot in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    /// Counts the objects of each kind in `state`.
    pub fn count_objects(state: &netverdict_policy::ClusterState) -> [u64; KINDS.len()] {
        let mut out = [0u64; KINDS.len()];
        out[kind_index(ObjectKind::Namespace)] = state.namespaces().len() as u64;
        out[kind_index(ObjectKind::Pod)] = state.pod_count() as u64;
        out[kind_index(ObjectKind::NetworkPolicy)] = state.policy_count() as u64;
        out[kind_index(ObjectKind::Service)] = state.services().len() as u64;
        out[kind_index(ObjectKind::EndpointSlice)] = state.endpoint_slices().len() as u64;
        out[kind_index(ObjectKind::Node)] = state.nodes().len() as u64;
        for policy in state.admin_policies() {
            let kind = match policy.key.kind() {
                netverdict_policy::PolicyKind::AdminNetworkPolicy => ObjectKind::AdminNetworkPolicy,
                netverdict_policy::PolicyKind::BaselineAdminNetworkPolicy => {
                    ObjectKind::BaselineAdminNetworkPolicy
                }
                _ => ObjectKind::ClusterNetworkPolicy,
            };
            out[kind_index(kind)] += 1;
        }
        out
    }
}

type Fmt = Result<(), std::fmt::Error>;

/// Encodes one family of counters; `name` without `_total` (the encoder adds it).
fn counters<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
) -> Fmt {
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, i64)>,
) -> Fmt {
    let gauge = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn one(value: u64) -> Vec<(Vec<(&'static str, &'static str)>, u64)> {
    vec![(Vec::new(), value)]
}

fn gauge_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn kind_label(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Tcp => "tcp",
        EventKind::Drop => "drop",
        EventKind::Udp => "udp",
        EventKind::Dns => "dns",
        EventKind::Nat => "nat",
        EventKind::Icmp => "icmp",
        EventKind::Unknown => "unknown",
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        let p = &self.pipeline;
        counters(
            &mut e,
            "netverdict_collector_flows",
            "Flow records of account emitted (after aggregation), by policy verdict and kernel outcome; second observations of a connection are in netverdict_collector_flows_counted_elsewhere.",
            pb::Verdict::ALL.iter().flat_map(|verdict| {
                pb::Outcome::ALL.iter().map(move |outcome| {
                    (
                        vec![("verdict", verdict.name()), ("outcome", outcome.name())],
                        p.by_verdict_outcome[*verdict as usize][*outcome as usize],
                    )
                })
            }),
        )?;
        let policies = p.policy_verdicts.series();
        counters(
            &mut e,
            "netverdict_collector_policy_verdicts",
            "Connection attempts by the policy that decided them, direction and verdict: the policies of the allowing rules, the NetworkPolicies isolating a denied pod (a default-deny counts under the policy that isolated it), or the admin policy of the deciding rule. Policies past the cap count under policy=\"_other\".",
            policies.iter().map(|s| {
                (
                    vec![
                        ("namespace", s.namespace),
                        ("policy", s.policy),
                        ("kind", s.kind),
                        ("direction", s.direction),
                        ("verdict", s.verdict),
                    ],
                    s.attempts,
                )
            }),
        )?;
        counters(
            &mut e,
            "netverdict_collector_flows_counted_elsewhere",
            "Flow records that are a second observation of a connection (seen at its other end), whose record of account is another one.",
            one(p.counted_elsewhere),
        )?;
        counters(
            &mut e,
            "netverdict_collector_nat_joined",
            "Kernel NAT events that named the backend a connection to a Service reached.",
            one(self.nat.0),
        )?;
        counters(
            &mut e,
            "netverdict_collector_nat_unclaimed",
            "Kernel NAT events no connection of the watched namespaces claimed.",
            one(self.nat.1),
        )?;
        counters(
            &mut e,
            "netverdict_collector_mismatches",
            "Flow records whose kernel outcome contradicts the policy verdict, by kind.",
            pb::Mismatch::ALL
                .iter()
                .filter(|k| **k != pb::Mismatch::None)
                .map(|k| (vec![("kind", k.name())], p.mismatches_by_kind[*k as usize])),
        )?;
        counters(
            &mut e,
            "netverdict_collector_kernel_drops",
            "Packets the kernel dropped in the watched network namespaces, by drop reason.",
            p.drops_by_reason
                .iter()
                .map(|(reason, n)| (vec![("reason", &**reason)], *n)),
        )?;
        counters(
            &mut e,
            "netverdict_collector_kernel_events",
            "Kernel events taken from the probes in the watched network namespaces.",
            one(p.events),
        )?;
        counters(
            &mut e,
            "netverdict_collector_kernel_events_ignored",
            "Kernel events of network namespaces the collector does not watch.",
            one(p.events_ignored),
        )?;
        counters(
            &mut e,
            "netverdict_collector_observations_annotated",
            "Observations (attempts with their outcome) annotated before aggregation.",
            one(p.annotated),
        )?;
        let lost = &p.lost;
        counters(
            &mut e,
            "netverdict_collector_kernel_events_lost",
            "Kernel events lost: the probes' ring buffer was full, or the record could not be decoded.",
            EventKind::ALL
                .into_iter()
                .chain([EventKind::Unknown])
                .flat_map(|kind| {
                    [
                        (
                            vec![("kind", kind_label(kind)), ("cause", "ring_buffer_full")],
                            lost.ring_buffer_full.get(kind),
                        ),
                        (
                            vec![("kind", kind_label(kind)), ("cause", "decode_error")],
                            lost.decode_errors.get(kind),
                        ),
                    ]
                }),
        )?;
        let losses = self.losses.unwrap_or_default();
        counters(
            &mut e,
            "netverdict_collector_kernel_events_not_emitted",
            "Packets the probes counted without emitting an event, by reason.",
            [
                (vec![("reason", "non_ip_drop")], losses.non_ip_drops),
                (
                    vec![("reason", "ignored_drop_reason")],
                    losses.ignored_drops,
                ),
                (
                    vec![("reason", "dns_without_payload")],
                    losses.dns_without_payload,
                ),
                (vec![("reason", "icmp_not_echo")], losses.icmp_other),
            ],
        )?;

        let x = self.export.unwrap_or_default();
        gauges(
            &mut e,
            "netverdict_collector_export_queue_depth",
            "Flows the exporter holds: not yet sent, or sent and not yet acknowledged.",
            [(Vec::new(), gauge_of(x.buffered))],
        )?;
        gauges(
            &mut e,
            "netverdict_collector_export_connected",
            "1 when the push stream to the API server is open.",
            [(
                Vec::new(),
                i64::from(self.export.is_some() && x.state == ConnectionState::Connected),
            )],
        )?;
        counters(
            &mut e,
            "netverdict_collector_export_flows_sent",
            "Flows sent to the API server (first sends only).",
            one(x.flows_sent),
        )?;
        counters(
            &mut e,
            "netverdict_collector_export_flows_acked",
            "Flows the API server acknowledged as stored.",
            one(x.flows_acked),
        )?;
        counters(
            &mut e,
            "netverdict_collector_export_flows_dropped",
            "Flows dropped because the export buffer was full.",
            one(x.flows_dropped),
        )?;
        counters(
            &mut e,
            "netverdict_collector_export_flows_refused",
            "Flows the API server refused and will never store (invalid, set aside, or in a batch refused whole).",
            one(x.flows_refused),
        )?;
        counters(
            &mut e,
            "netverdict_collector_export_batches_refused",
            "Batches the API server refused for good, dropped rather than sent again.",
            one(x.batches_refused),
        )?;
        counters(
            &mut e,
            "netverdict_collector_export_batches_resent",
            "Batches sent again on a new stream because they were not acknowledged.",
            one(x.batches_resent),
        )?;
        counters(
            &mut e,
            "netverdict_collector_export_reconnects",
            "Push streams opened after the first one.",
            one(x.reconnects),
        )?;

        gauges(
            &mut e,
            "netverdict_collector_cluster_objects",
            "Objects in the cluster state, by kind.",
            KINDS.iter().map(|&k| {
                (
                    vec![("kind", kind_name(k))],
                    gauge_of(self.cluster_objects[kind_index(k)]),
                )
            }),
        )?;
        if let Some((source, m)) = &self.cluster {
            self.encode_cluster(&mut e, source, m)?;
        }

        gauges(
            &mut e,
            "netverdict_collector_ring_flows",
            "Flows held in the ring of recent flows.",
            [(Vec::new(), gauge_of(self.ring_flows))],
        )?;
        counters(
            &mut e,
            "netverdict_collector_ring_evictions",
            "Flows evicted from the ring of recent flows to make room.",
            one(self.ring_evictions),
        )?;
        counters(
            &mut e,
            "netverdict_collector_observer_lagged",
            "Observer follow streams ended because the follower fell behind.",
            one(self.observer_lagged),
        )?;
        if let Some(tls) = self.observer_tls {
            netverdict_tls::metrics::encode_stats(&mut e, "netverdict_collector_observer_", tls)?;
        }
        let h = &self.held;
        gauges(
            &mut e,
            "netverdict_collector_held_flows",
            "Flows held now: by correlation (waiting for an outcome or response) and by aggregation (open records).",
            [
                (
                    vec![("stage", "correlation")],
                    gauge_of(h.correlation_flows),
                ),
                (
                    vec![("stage", "aggregation")],
                    gauge_of(h.aggregation_records),
                ),
            ],
        )?;
        gauges(
            &mut e,
            "netverdict_collector_held_bytes",
            "Memory the held flows take, estimated, by stage; each stage is bounded.",
            [
                (
                    vec![("stage", "correlation")],
                    gauge_of(h.correlation_bytes),
                ),
                (
                    vec![("stage", "aggregation")],
                    gauge_of(h.aggregation_bytes),
                ),
            ],
        )?;
        counters(
            &mut e,
            "netverdict_collector_held_evictions",
            "Flows a stage let go of early to stay within its bound (the oldest first; reported, not lost): correlation reports them without their outcome, aggregation closes their record before its window ends.",
            [
                (vec![("stage", "correlation")], h.correlation_evicted),
                (vec![("stage", "aggregation")], h.aggregation_evicted),
            ],
        )?;
        let (names, pairs) = &self.resolved_names;
        gauges(
            &mut e,
            "netverdict_collector_resolved_names",
            "Client-address pairs named by the DNS answers the pods received, held for their TTL (bounded by --max-resolved-names).",
            [(Vec::new(), gauge_of(*pairs as u64))],
        )?;
        counters(
            &mut e,
            "netverdict_collector_resolved_names_evictions",
            "Client-address pairs let go before their TTL to stay within the bound (the flows to those addresses are then unnamed).",
            one(names.evicted),
        )?;
        counters(
            &mut e,
            "netverdict_collector_outside_flows_named",
            "Flows to addresses outside the cluster, by whether a DNS answer the source received named the address.",
            [
                (vec![("named", "true")], names.named),
                (vec![("named", "false")], names.unnamed),
            ],
        )?;
        counters(
            &mut e,
            "netverdict_collector_accept_errors",
            "Connections a server could not accept (out of file descriptors...), by server; it pauses after each, longer while they keep failing.",
            [
                (vec![("server", "metrics")], self.accept_errors.0),
                (vec![("server", "observer")], self.accept_errors.1),
            ],
        )?;
        counters(
            &mut e,
            "netverdict_collector_observer_preface_timeouts",
            "Observer connections closed for not sending the HTTP/2 preface within 10 s of connecting (or of their TLS handshake).",
            one(self.observer_preface_timeouts),
        )?;
        counters(
            &mut e,
            "netverdict_collector_http_connections_refused",
            "Metrics connections closed at once because too many were open.",
            one(self.http_connections_refused),
        )?;
        Ok(())
    }
}

impl Snapshot {
    fn encode_cluster(
        &self,
        e: &mut DescriptorEncoder,
        source: &'static str,
        m: &MetricsSnapshot,
    ) -> Fmt {
        type Getter = fn(&netverdict_cluster::KindCounts) -> u64;
        let families: [(&str, &str, Getter); 6] = [
            (
                "netverdict_collector_cluster_objects_applied",
                "Objects added or changed in the cluster state.",
                |c| c.applied,
            ),
            (
                "netverdict_collector_cluster_objects_deleted",
                "Objects removed from the cluster state.",
                |c| c.deleted,
            ),
            (
                "netverdict_collector_cluster_objects_rejected",
                "Object versions rejected as invalid by the policy engine.",
                |c| c.rejected,
            ),
            (
                "netverdict_collector_cluster_lists",
                "Complete lists applied (initial list, re-lists, reloads).",
                |c| c.lists,
            ),
            (
                "netverdict_collector_cluster_relists",
                "Complete lists after the initial one (watch restarts, 410 Gone, reloads).",
                |c| c.relists(),
            ),
            (
                "netverdict_collector_cluster_watch_errors",
                "Errors of the cluster watches.",
                |c| c.watch_errors,
            ),
        ];
        for (name, help, get) in families {
            counters(
                e,
                name,
                help,
                m.kinds.iter().map(|(kind, c)| {
                    (vec![("source", source), ("kind", kind_name(*kind))], get(c))
                }),
            )?;
        }
        gauges(
            e,
            "netverdict_collector_cluster_kind_not_installed",
            "1 while the kind's CustomResourceDefinition is not installed (its list answers 404): \
             the kind is watched again every minute, its policies are not evaluated.",
            m.kinds.iter().map(|(kind, c)| {
                (
                    vec![("source", source), ("kind", kind_name(*kind))],
                    i64::from(c.not_installed),
                )
            }),
        )?;
        let mut invalid = [0i64; KINDS.len()];
        for o in &m.invalid {
            invalid[kind_index(o.kind)] += 1;
        }
        gauges(
            e,
            "netverdict_collector_cluster_invalid_objects",
            "Objects currently left out of the cluster state because they are invalid.",
            KINDS.iter().map(|&k| {
                (
                    vec![("source", source), ("kind", kind_name(k))],
                    invalid[kind_index(k)],
                )
            }),
        )?;
        let mut forbidden = [0i64; KIND_COUNT];
        for f in &m.forbidden {
            forbidden[kind_index(f.kind)] = 1;
        }
        gauges(
            e,
            "netverdict_collector_cluster_forbidden",
            "1 while the Kubernetes API refuses to list or watch the kind (403: the role lacks a grant; the log names it).",
            KINDS.iter().map(|&k| {
                (
                    vec![("source", source), ("kind", kind_name(k))],
                    forbidden[kind_index(k)],
                )
            }),
        )?;
        counters(
            e,
            "netverdict_collector_cluster_reloads",
            "Manifest reloads applied.",
            [(vec![("source", source)], m.reloads)],
        )?;
        counters(
            e,
            "netverdict_collector_cluster_reload_failures",
            "Manifest reloads refused because the files have errors.",
            [(vec![("source", source)], m.reload_failures)],
        )
    }
}
