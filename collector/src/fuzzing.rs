//! Fuzzing entry points for what the collector reads from the kernel (feature
//! `fuzzing`, used by the cargo-fuzz targets in `fuzz/`): one function per
//! target, each taking arbitrary bytes and panicking when a property the
//! collector relies on does not hold.
//!
//! - [`kernel_records`]: ring buffer records, decoded and run through a whole
//!   pipeline with small bounds;
//! - [`dns_message`]: the DNS parser, on arbitrary bytes and on queries built
//!   from names.
//!
//! The seeds kept in `fuzz/corpus/<target>/` also run as ordinary unit tests,
//! with property tests (proptest) on random and well-formed records, so
//! `cargo test` checks both targets without the nightly toolchain.

use std::time::SystemTime;

use netverdict_cluster::SharedState;
use netverdict_ebpf::abi;
use netverdict_ebpf::dns;
use netverdict_ebpf::{Decoder, DropReasons, Event, EventKind, LossCause, StreamItem};
use netverdict_proto::v1 as pb;
use netverdict_proto::validate::{Problem, Validity, validate};

use crate::pipeline::{Held, Pipeline, PipelineConfig};

/// The correlation and aggregation bounds [`kernel_records`] runs with: small,
/// so that a few hundred records reach them.
pub const FUZZ_MAX_BYTES: usize = 16 * 1024;

/// Splits fuzz input into records: each is a little-endian `u16` length and
/// that many bytes (fewer at the end of the input).
pub fn split_records(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (record, after) = tail.split_at(len);
        rest = after;
        Some(record)
    })
}

/// The inverse of [`split_records`] (seeds are written with it).
pub fn join_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let len = u16::try_from(record.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&record[..usize::from(len)]);
    }
    out
}

/// Kernel records: any sequence of ring buffer records ([`split_records`]) is
/// decoded as the probes' stream decodes it (an undecodable record becomes a
/// counted decode loss of its kind) and pushed through a pipeline whose
/// correlation and aggregation are bounded by [`FUZZ_MAX_BYTES`], ticking at
/// the decoded events' own times (anywhere the kernel's clock can put them)
/// every 8 records. Then:
///
/// - nothing panics;
/// - a decoded event is of the record's kind, and a DNS event's message is
///   what the DNS parser makes of the record's payload;
/// - every record is counted: events taken plus decode losses make the records
///   (a TCP outcome that stands for its attempt is two events);
/// - what correlation and aggregation hold never exceeds their bounds, and
///   nothing is held after the pipeline finishes;
/// - every rendered flow is one a store can take, but for times outside what
///   stores hold (a garbage kernel clock; ingest decides those).
pub fn kernel_records(data: &[u8]) {
    run_records(data);
}

/// [`kernel_records`]; returns what the pipeline held and let go of.
fn run_records(data: &[u8]) -> Held {
    let decoder = Decoder::new(std::sync::Arc::new(DropReasons::from_pairs([
        (2, "NOT_SPECIFIED"),
        (12, "NETFILTER_DROP"),
    ])));
    let config = PipelineConfig {
        ring_capacity: 64,
        aggregation_max_bytes: FUZZ_MAX_BYTES,
        correlation_max_bytes: FUZZ_MAX_BYTES,
        ..PipelineConfig::default()
    };
    let mut pipeline = Pipeline::new(config, SharedState::default());
    let mut flows = Vec::new();
    let (mut records, mut events, mut undecodable) = (0u64, 0u64, 0u64);
    let mut last_time = SystemTime::UNIX_EPOCH;
    for (i, record) in split_records(data).enumerate() {
        records += 1;
        let kind = EventKind::from_abi(abi::kind_of(record));
        match decoder.decode(record) {
            Ok((first, second)) => {
                for event in std::iter::once(first).chain(second) {
                    check_event(&event, kind, record);
                    last_time = event.meta().time;
                    events += 1;
                    flows.extend(pipeline.push(&StreamItem::Event(event)));
                }
            }
            Err(_) => {
                undecodable += 1;
                flows.extend(pipeline.push(&StreamItem::Lost {
                    kind,
                    count: 1,
                    cause: LossCause::DecodeError,
                }));
            }
        }
        check_bounds(&pipeline);
        if i % 8 == 7 {
            flows.extend(pipeline.tick(last_time));
            check_bounds(&pipeline);
        }
    }
    flows.extend(pipeline.finish());
    let counters = pipeline.counters();
    assert_eq!(counters.events, events, "events taken");
    assert_eq!(counters.events_lost, undecodable, "decode losses");
    assert_eq!(
        counters.lost.decode_errors.total(),
        undecodable,
        "decode losses by kind"
    );
    assert!(events >= records - undecodable, "a decoded record is lost");
    let held = pipeline.held();
    assert_eq!(
        (held.correlation_flows, held.aggregation_records),
        (0, 0),
        "held after finish"
    );
    assert_eq!(
        counters.records,
        flows.len() as u64,
        "records rendered and returned"
    );
    for flow in &flows {
        check_flow(flow);
    }
    held
}

fn check_event(event: &Event, kind: EventKind, record: &[u8]) {
    assert_eq!(
        event.kind(),
        kind,
        "{event:?} from a record of kind {kind:?}"
    );
    if let Event::Dns { message, .. } = event {
        let Ok(abi::RawEvent::Skb(_, payload)) = abi::parse(record) else {
            panic!("a DNS event from a record that is not one: {event:?}");
        };
        assert_eq!(dns::parse(payload).as_ref(), Ok(message));
    }
}

fn check_bounds(pipeline: &Pipeline) {
    let held = pipeline.held();
    assert!(
        held.correlation_bytes <= FUZZ_MAX_BYTES as u64,
        "correlation holds {} bytes",
        held.correlation_bytes
    );
    assert!(
        held.aggregation_bytes <= FUZZ_MAX_BYTES as u64,
        "aggregation holds {} bytes",
        held.aggregation_bytes
    );
}

fn check_flow(flow: &pb::Flow) {
    match validate(flow) {
        Validity::Valid => {}
        Validity::Invalid(e) if matches!(e.problem, Problem::TimeOutOfRange(_)) => {}
        other => panic!("{other:?}: {flow:#?}"),
    }
}

/// The DNS parser: on any bytes it never panics; a message is refused only
/// when shorter than its header; the header fields are the bytes'; a name is
/// printable ASCII of bounded length. And a query built from a name drawn
/// from the bytes (labels of letters, digits and hyphens, in any case) parses
/// back to that name in lower case with its type.
pub fn dns_message(data: &[u8]) {
    match dns::parse(data) {
        Err(dns::DnsError::Short(n)) => assert!(n < 12 && n == data.len()),
        Ok(message) => {
            assert!(data.len() >= 12);
            assert_eq!(message.id, u16::from_be_bytes([data[0], data[1]]));
            assert_eq!(message.response, data[2] & 0x80 != 0);
            assert_eq!(message.rcode.0, data[3] & 0x0f);
            assert_eq!(message.questions, u16::from_be_bytes([data[4], data[5]]));
            if message.questions == 0 {
                assert_eq!((&message.name, message.qtype), (&None, None));
            }
            if let Some(name) = &message.name {
                // At most 255 bytes before the last label, which may add 63
                // bytes escaped to 4 each, and its dot.
                assert!(name.len() <= 255 + 4 * 63 + 1, "{} bytes", name.len());
                assert!(name.bytes().all(|c| c.is_ascii_graphic()), "{name:?}");
            }
        }
    }
    let name = name_from(data);
    if name.is_empty() {
        return;
    }
    let id = data.first().copied().unwrap_or(0).into();
    let query = dns::build_query(id, &name, 28);
    let message = dns::parse(&query).expect("a built query parses");
    assert_eq!(message.id, id);
    assert!(!message.response);
    assert_eq!(message.name, Some(name.to_ascii_lowercase()));
    assert_eq!(message.qtype, Some(28));
}

/// A DNS name drawn from bytes: labels of letters, digits and hyphens (a zero
/// byte ends a label), each at most 63 bytes, at most 253 in all.
fn name_from(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
    let mut labels: Vec<String> = vec![String::new()];
    for &b in data {
        let label = labels.last_mut().expect("one label at least");
        if b == 0 && !label.is_empty() {
            labels.push(String::new());
        } else if b != 0 && label.len() < 63 {
            label.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
        }
    }
    labels.retain(|l| !l.is_empty());
    let mut name = String::new();
    for label in labels {
        if name.len() + 1 + label.len() > 253 {
            break;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&label);
    }
    name
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use netverdict_ebpf::abi::{RawHdr, RawNatEvent, RawSkbEvent, RawTcpEvent};
    use proptest::prelude::*;

    use super::*;

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
    fn kernel_records_seeds() {
        run("kernel_records", kernel_records);
    }

    #[test]
    fn the_flood_seed_reaches_both_bounds() {
        let (_, flood) = seeds("kernel_records")
            .into_iter()
            .find(|(name, _)| name.ends_with("scan-and-dns-flood"))
            .expect("the flood seed");
        let held = run_records(&flood);
        assert!(held.correlation_evicted > 0, "{held:?}");
        assert!(held.aggregation_evicted > 0, "{held:?}");
    }

    #[test]
    fn dns_message_seeds() {
        run("dns_message", dns_message);
    }

    /// A header from drawn values: family 2 or 10 mostly, any otherwise.
    fn hdr(kind: u16, v: &HdrValues) -> RawHdr {
        RawHdr {
            ts_ns: v.ts_ns,
            sock_id: v.sock_id,
            kind,
            direction: v.direction,
            family: v.family,
            protocol: v.protocol,
            netns: v.netns,
            ifindex: v.ifindex,
            sport: v.ports.0,
            dport: v.ports.1,
            saddr: v.addrs.0,
            daddr: v.addrs.1,
            ..RawHdr::default()
        }
    }

    #[derive(Debug, Clone)]
    struct HdrValues {
        ts_ns: u64,
        sock_id: u64,
        direction: u8,
        family: u8,
        protocol: u8,
        netns: u32,
        ifindex: u32,
        ports: (u16, u16),
        addrs: ([u8; 16], [u8; 16]),
    }

    fn hdr_values() -> impl Strategy<Value = HdrValues> {
        // Few sockets, addresses and namespaces, so records meet; any time.
        let time = prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            0u64..10_000_000_000,
            any::<u64>()
        ];
        let addr = (0u8..4).prop_map(|n| {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[10, 244, 0, n]);
            a
        });
        (
            time,
            0u64..8,
            0u8..3,
            prop_oneof![Just(2u8), Just(10u8), any::<u8>()],
            prop_oneof![Just(6u8), Just(17u8), any::<u8>()],
            0u32..3,
            0u32..3,
            (
                40000u16..40004,
                prop_oneof![Just(53u16), Just(80u16), any::<u16>()],
            ),
            (addr.clone(), addr),
        )
            .prop_map(
                |(ts_ns, sock_id, direction, family, protocol, netns, ifindex, ports, addrs)| {
                    HdrValues {
                        ts_ns,
                        sock_id,
                        direction,
                        family,
                        protocol,
                        netns,
                        ifindex,
                        ports,
                        addrs,
                    }
                },
            )
    }

    /// A well-formed record of any kind, with drawn (often extreme) values.
    fn record() -> impl Strategy<Value = Vec<u8>> {
        let tcp = (
            hdr_values(),
            0u8..12,
            0u8..12,
            0u16..2,
            prop_oneof![Just(0i32), Just(104), Just(110), Just(111), any::<i32>()],
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(|(h, oldstate, newstate, flags, sk_err, retransmits, at)| {
                abi::encode_tcp(&RawTcpEvent {
                    hdr: hdr(abi::KIND_TCP, &h),
                    oldstate,
                    newstate,
                    flags,
                    sk_err,
                    retransmits,
                    attempt_ts_ns: at,
                    ..RawTcpEvent::default()
                })
            });
        let skb = (
            hdr_values(),
            prop_oneof![
                Just(abi::KIND_DROP),
                Just(abi::KIND_UDP),
                Just(abi::KIND_DNS)
            ],
            0u32..20,
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..64),
                (
                    "[a-z0-9]{1,20}(\\.[a-z0-9]{1,20}){0,3}",
                    any::<u16>(),
                    any::<bool>()
                )
                    .prop_map(|(name, id, response)| {
                        let mut q = dns::build_query(id, &name, 1);
                        if response {
                            q[2] |= 0x80;
                            q[3] |= 3;
                        }
                        q
                    }),
            ],
        )
            .prop_map(|(h, kind, reason, pkt_len, location, packets, payload)| {
                let payload = &payload[..payload.len().min(abi::DNS_PAYLOAD_MAX)];
                abi::encode_skb(
                    &RawSkbEvent {
                        hdr: hdr(kind, &h),
                        reason,
                        pkt_len,
                        location,
                        packets,
                        payload_len: payload.len() as u16,
                        ..RawSkbEvent::default()
                    },
                    payload,
                )
            });
        let nat = (hdr_values(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(h, orig, port)| {
            abi::encode_nat(&RawNatEvent {
                hdr: hdr(abi::KIND_NAT, &h),
                orig_daddr: orig,
                orig_dport: port,
                ..RawNatEvent::default()
            })
        });
        prop_oneof![
            3 => tcp,
            3 => skb,
            1 => nat,
            1 => proptest::collection::vec(any::<u8>(), 0..128),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn kernel_records_of_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            kernel_records(&data);
        }

        #[test]
        fn kernel_records_well_formed(records in proptest::collection::vec(record(), 1..400)) {
            kernel_records(&join_records(records.iter().map(Vec::as_slice)));
        }

        #[test]
        fn dns_message_of_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            dns_message(&data);
        }

        #[test]
        fn dns_message_with_compression(
            header in proptest::collection::vec(any::<u8>(), 12),
            labels in proptest::collection::vec((0u8..=0xff, proptest::collection::vec(any::<u8>(), 0..70)), 0..6),
        ) {
            // Label lengths and pointers of any value, over any bytes.
            let mut data = header;
            data[4..6].copy_from_slice(&1u16.to_be_bytes());
            for (len, bytes) in labels {
                data.push(len);
                data.extend(bytes);
            }
            dns_message(&data);
        }
    }

    #[test]
    fn records_split_as_joined() {
        let records: [&[u8]; 3] = [b"abc", b"", &[7; 300]];
        let joined = join_records(records);
        assert_eq!(split_records(&joined).collect::<Vec<_>>(), records);
        // A length past the end takes what is left.
        assert_eq!(
            split_records(&[5, 0, 1, 2]).collect::<Vec<_>>(),
            [&[1u8, 2][..]]
        );
    }
}
