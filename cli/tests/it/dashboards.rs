//! The Grafana dashboards (dashboards/*.json) against the real ClickHouse: the
//! seed guide's flows are made by the collector's annotator from the seed
//! cluster, stored through `ClickHouseStore` (its migrations and rollups), and
//! every panel's and variable's SQL, with the plugin's macros and the template
//! variables expanded (All, one value, several, none matching), runs and
//! returns what the panel needs. The JSON is checked for what Grafana's
//! dashboard schema requires.

use crate::dashboards_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashboards_support::*;
use netverdict_api::ApiConfig;
use netverdict_api::store::Store;
use netverdict_cluster::{SharedState, Source};
use netverdict_collector::agent::{Agent, AgentConfig, EventSource};
use netverdict_collector::annotate::Annotator;
use netverdict_collector::correlate::{DnsSeen, Observation, SeenBy, TrafficDirection};
use netverdict_policy::{ClusterState, Protocol};
use netverdict_proto::v1 as pb;
use netverdict_testing::clickhouse::TestDb;
use netverdict_testing::observation::{addr, observation};
use netverdict_testing::{scrape, seed, wait_until};
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const NODE: &str = "lab-node";

/// The dashboards the deployment ships (dashboards/kustomization.yaml).
const DASHBOARDS: [&str; 4] = [
    "denied-flows",
    "dns-health",
    "enforcement",
    "netverdict-self",
];

/// The series names the collector and the API server (over the ClickHouse
/// store) expose on /metrics, as PromQL sees them: counters with `_total`,
/// histograms as `_bucket`, `_sum` and `_count`. Read from live endpoints, so
/// a renamed metric fails the dashboards that still use the old name.
async fn exposed_metrics() -> BTreeSet<String> {
    let db = TestDb::shared();
    let api = netverdict_api::serve(
        ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        db.connect().await,
        SharedState::default(),
    )
    .await
    .unwrap();
    let (_events, rx) = tokio::sync::mpsc::channel(1);
    let mut config = AgentConfig::new(NODE, Source::Shared(SharedState::default()));
    config.events = EventSource::Channel(rx);
    config.observer_listen = None;
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let agent = Agent::start(config).await.unwrap();
    let mut names = BTreeSet::new();
    for addr in [api.metrics_addr().unwrap(), agent.metrics_addr().unwrap()] {
        names.extend(scrape(addr).await.series_names());
    }
    agent.shutdown().await.unwrap();
    api.shutdown().await.unwrap();
    names
}

fn load(name: &str) -> Value {
    let path = Path::new(ROOT).join(format!("dashboards/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn queries(name: &str) -> Vec<Query> {
    check_dashboard(name, &load(name)).unwrap_or_else(|p| panic!("{}", p.join("\n")))
}

#[test]
fn every_dashboard_is_valid_for_grafana() {
    let mut uids = BTreeSet::new();
    let listed = std::fs::read_to_string(Path::new(ROOT).join("dashboards/kustomization.yaml"))
        .expect("dashboards/kustomization.yaml");
    for name in DASHBOARDS {
        let d = load(name);
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{name}: uid repeated"
        );
        assert!(
            listed.contains(&format!("- {name}.json")),
            "{name}.json is not in dashboards/kustomization.yaml"
        );
        let qs = queries(name);
        assert!(
            qs.iter()
                .any(|q| q.kind != "promql" && !q.what.starts_with("variable")),
            "{name}: no ClickHouse panel"
        );
    }
    let on_disk: BTreeSet<String> = std::fs::read_dir(Path::new(ROOT).join("dashboards"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".json").map(str::to_string)
        })
        .collect();
    assert_eq!(
        on_disk,
        DASHBOARDS.iter().map(|s| s.to_string()).collect(),
        "dashboards/*.json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_uses_only_metrics_the_components_expose() {
    let known = exposed_metrics().await;
    for m in [
        "netverdict_collector_kernel_events_lost_total",
        "netverdict_api_store_insert_duration_seconds_bucket",
        "netverdict_api_clickhouse_spool_pending_rows",
    ] {
        assert!(known.contains(m), "{m} is not exposed; exposed: {known:?}");
    }
    let mut used = BTreeSet::new();
    for name in DASHBOARDS {
        for q in queries(name).iter().filter(|q| q.kind == "promql") {
            let metrics = promql_metrics(&q.text);
            assert!(
                !metrics.is_empty(),
                "{name} {}: no metric in {}",
                q.what,
                q.text
            );
            for m in metrics {
                assert!(
                    known.contains(m.as_str()),
                    "{name} {}: unknown metric {m}",
                    q.what
                );
                used.insert(m);
            }
            assert_eq!(
                q.text.matches('(').count(),
                q.text.matches(')').count(),
                "{name} {}: unbalanced parentheses",
                q.what
            );
            assert!(
                q.text.replace("$__rate_interval", "").find('$').is_none(),
                "{name} {}: Grafana variable other than $__rate_interval",
                q.what
            );
        }
    }
    for m in [
        "netverdict_collector_kernel_events_lost_total",
        "netverdict_collector_export_queue_depth",
        "netverdict_api_store_insert_duration_seconds_bucket",
        "netverdict_api_store_insert_errors_total",
        "netverdict_api_clickhouse_spool_pending_rows",
        "netverdict_api_clickhouse_insert_failures_total",
        "netverdict_collector_policy_verdicts_total",
    ] {
        assert!(used.contains(m), "no dashboard shows {m}");
    }
}

// ---------------------------------------------------------------- the seed scenario

/// Builds observations as the correlator reports them, annotated and rendered
/// by the collector's annotator against the seed cluster of their time.
struct Scenario {
    annotator: Annotator,
    base: SystemTime,
    flows: Vec<pb::Flow>,
}

impl Scenario {
    fn observe(
        &mut self,
        (state, minute): (&ClusterState, u64),
        src: &str,
        dst: &str,
        protocol: Protocol,
        outcome: pb::Outcome,
        tweak: impl FnOnce(&mut Observation),
    ) -> &pb::Flow {
        let t = self.base + Duration::from_secs(minute * 60 + 7);
        let mut o = observation(src, dst, protocol, outcome, t);
        o.last_seen = t + Duration::from_secs(2);
        tweak(&mut o);
        let id = format!("{NODE}/{}", self.flows.len() + 1);
        let flow = self
            .annotator
            .render(&self.annotator.annotate(state, o), id);
        self.flows.push(flow);
        self.flows.last().unwrap()
    }
}

fn names(refs: &[pb::PolicyRef]) -> Vec<String> {
    refs.iter()
        .map(|r| format!("{}/{}", r.namespace, r.name))
        .collect()
}

fn dns(query: &str, rcode: Option<&'static str>, answers: u16) -> DnsSeen {
    DnsSeen {
        id: 42,
        query: Some(query.into()),
        qtype: Some(1),
        rcode,
        answers,
    }
}

const SHOP_CLIENT: &str = "10.244.2.20";
const DEFAULT_CLIENT: &str = "10.244.1.20";
const API_SERVICE: &str = "10.96.1.10:8080";
const API_POD: &str = "10.244.1.10:8080";
const KUBE_DNS: &str = "10.96.0.10:53";

/// The seed guide's story: default-deny and api-from-web in `default`, a shop
/// client denied, DNS from default/np-client dropped until allow-dns-egress,
/// an NXDOMAIN, an unanswered query, and a mismatch of each kind.
fn seed_flows(base: SystemTime) -> Vec<pb::Flow> {
    let mut s = Scenario {
        annotator: Annotator::new(NODE),
        base,
        flows: Vec::new(),
    };
    let none = seed::cluster(&[]);
    let locked = seed::cluster(&["default-deny", "api-from-web"]);
    let fixed = seed::cluster(&["default-deny", "api-from-web", "allow-dns-egress"]);

    // Before any policy: allowed traffic, and a drop nftables should not make.
    let f = s.observe(
        (&none, 0),
        &format!("{SHOP_CLIENT}:40000"),
        API_SERVICE,
        Protocol::Tcp,
        pb::Outcome::Established,
        |_| {},
    );
    assert_eq!(f.verdict(), pb::Verdict::Allowed);
    let f = s.observe(
        (&none, 0),
        &format!("{SHOP_CLIENT}:40001"),
        API_POD,
        Protocol::Tcp,
        pb::Outcome::Dropped,
        |o| {
            o.drops = 2;
            o.drop_reason = Some("NETFILTER_DROP".into());
        },
    );
    assert_eq!(f.mismatch(), pb::Mismatch::DroppedThoughAllowed);

    // default-deny and api-from-web: the shop client is denied, three times.
    for (minute, port) in [(1, 40010), (2, 40011), (3, 40012)] {
        let f = s.observe(
            (&locked, minute),
            &format!("{SHOP_CLIENT}:{port}"),
            API_SERVICE,
            Protocol::Tcp,
            pb::Outcome::Dropped,
            |o| {
                o.backend = Some(addr(API_POD));
                o.drops = 3;
                o.drop_reason = Some("NETFILTER_DROP".into());
                o.direction = TrafficDirection::Ingress;
            },
        );
        assert_eq!(
            names(&f.denied_by),
            ["default/api-from-web", "default/default-deny"]
        );
    }
    // ... and once it got through: is NetworkPolicy enforced?
    let f = s.observe(
        (&locked, 3),
        &format!("{SHOP_CLIENT}:40013"),
        API_POD,
        Protocol::Tcp,
        pb::Outcome::Established,
        |_| {},
    );
    assert_eq!(f.mismatch(), pb::Mismatch::AllowedThoughDenied);
    // ... which the API's namespace saw accepted too: a second observation of
    // the same connection, which no panel may count again.
    let f = s.observe(
        (&locked, 3),
        &format!("{SHOP_CLIENT}:40013"),
        API_POD,
        Protocol::Tcp,
        pb::Outcome::Established,
        |o| {
            o.seen_by = SeenBy::ResponderSocket;
            o.direction = TrafficDirection::Ingress;
        },
    );
    assert!(f.counted_elsewhere);
    assert_eq!(f.observation_point(), pb::ObservationPoint::Destination);
    assert_eq!(f.mismatch(), pb::Mismatch::None);

    // DNS from default/np-client is dropped by default-deny...
    for (minute, port) in [(1, 50000), (2, 50001)] {
        let f = s.observe(
            (&locked, minute),
            &format!("{DEFAULT_CLIENT}:{port}"),
            KUBE_DNS,
            Protocol::Udp,
            pb::Outcome::Dropped,
            |o| {
                o.drops = 1;
                o.drop_reason = Some("NETFILTER_DROP".into());
                o.dns = Some(dns("api.default.svc.cluster.local", None, 0));
            },
        );
        assert_eq!(f.verdict(), pb::Verdict::Denied);
        assert!(!f.dns.as_ref().unwrap().egress_allows_cluster_dns);
    }
    // An outside API the client resolved, denied by its egress policies.
    let f = s.observe(
        (&fixed, 4),
        &format!("{DEFAULT_CLIENT}:40030"),
        "203.0.113.7:443",
        Protocol::Tcp,
        pb::Outcome::Dropped,
        |o| {
            o.drops = 2;
            o.drop_reason = Some("NETFILTER_DROP".into());
        },
    );
    assert_eq!(f.verdict(), pb::Verdict::Denied);
    // The pipeline adds the names its resolved-names map holds.
    if let Some(f) = s.flows.last_mut() {
        f.destination_names = vec!["api.example.com".into()];
    }
    // ... answered after allow-dns-egress, and a name that does not exist.
    let f = s.observe(
        (&fixed, 4),
        &format!("{DEFAULT_CLIENT}:50002"),
        KUBE_DNS,
        Protocol::Udp,
        pb::Outcome::Answered,
        |o| o.dns = Some(dns("api.default.svc.cluster.local", Some("NOERROR"), 1)),
    );
    assert!(f.dns.as_ref().unwrap().egress_allows_cluster_dns);
    s.observe(
        (&fixed, 4),
        &format!("{DEFAULT_CLIENT}:50003"),
        KUBE_DNS,
        Protocol::Udp,
        pb::Outcome::Answered,
        |o| o.dns = Some(dns("nosuch.default.svc.cluster.local", Some("NXDOMAIN"), 0)),
    );
    // The shop client's DNS is not isolated; one query is never answered.
    s.observe(
        (&fixed, 4),
        &format!("{SHOP_CLIENT}:50004"),
        KUBE_DNS,
        Protocol::Udp,
        pb::Outcome::Answered,
        |o| o.dns = Some(dns("api.default.svc.cluster.local", Some("NOERROR"), 1)),
    );
    s.observe(
        (&fixed, 4),
        &format!("{SHOP_CLIENT}:50005"),
        KUBE_DNS,
        Protocol::Udp,
        pb::Outcome::NoAnswer,
        |o| o.dns = Some(dns("shop-db.shop.svc.cluster.local", None, 0)),
    );
    // The web client in default reaches the API once it may (egress is still
    // denied by default-deny, so this is denied too).
    s.observe(
        (&fixed, 4),
        &format!("{DEFAULT_CLIENT}:40020"),
        API_SERVICE,
        Protocol::Tcp,
        pb::Outcome::NoAnswer,
        |o| o.backend = Some(addr(API_POD)),
    );
    s.flows
}

/// The seed flows stored in a fresh database, with the rollups holding them.
struct Loaded {
    db: TestDb,
    flows: Vec<pb::Flow>,
    from: i64,
    to: i64,
}

async fn loaded() -> Loaded {
    let db = TestDb::shared();
    let store = db.connect().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Whole minutes, ten minutes back, so every flow is in the past.
    let base = UNIX_EPOCH + Duration::from_secs(now / 60 * 60 - 600);
    let flows = seed_flows(base);
    let outcome = store.insert(flows.clone()).await.expect("insert");
    assert_eq!(outcome.stored as usize, flows.len(), "{outcome:?}");
    // The rollups count records of account only.
    let counted = || flows.iter().filter(|f| !f.counted_elsewhere);
    assert!(
        counted().count() < flows.len(),
        "a second observation is stored"
    );
    let n = counted().count() as u64;
    let denied_pairs: u64 = counted()
        .filter(|f| f.verdict() == pb::Verdict::Denied)
        .map(|f| f.denied_by.len() as u64)
        .sum();
    let dns = counted().filter(|f| f.dns.is_some()).count() as u64;
    let want = format!("{n}\t{denied_pairs}\t{dns}\n");
    let sql = format!(
        "SELECT (SELECT sum(flows) FROM {d}.flows_by_minute), \
         (SELECT sum(flows) FROM {d}.denied_by_minute), \
         (SELECT sum(flows) FROM {d}.dns_by_minute)",
        d = db.name
    );
    let what = format!("the rollups to hold {want:?}");
    wait_until(&what, Duration::from_secs(30), async || {
        db.sql(&sql) == want
    })
    .await;
    let secs = base.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    Loaded {
        db,
        flows,
        from: secs - 3600,
        to: now as i64 + 60,
    }
}

impl Loaded {
    fn ctx(&self, vars: &[(&str, VarValue)]) -> Context {
        Context {
            from: self.from,
            to: self.to,
            interval_s: 60,
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// Runs one query expanded with `ctx`; checks the shape its panel needs.
    fn run(&self, q: &Query, ctx: &Context) -> Rows {
        let sql = expand(&q.text, ctx).unwrap_or_else(|e| panic!("{}: {e}", q.what));
        let rows = query(&self.db.addr, &self.db.name, &sql)
            .unwrap_or_else(|e| panic!("{} failed:\n{sql}\n{e}", q.what));
        if q.kind == "timeseries" {
            assert_eq!(
                rows.columns.first().map(|(n, t)| (n.as_str(), t.as_str())),
                Some(("time", "DateTime")),
                "{}: a time series starts with a DateTime column named time",
                q.what
            );
            let value = &rows.columns.last().unwrap().1;
            assert!(
                value.starts_with("UInt") || value.starts_with("Float") || value.starts_with("Int"),
                "{}: the last column is the value, not {value}",
                q.what
            );
            let times: Vec<String> = (0..rows.rows.len()).map(|r| rows.text(r, "time")).collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{}: not ordered by time",
                q.what
            );
        }
        rows
    }
}

fn all() -> VarValue {
    VarValue::All(ALL_VALUE.into())
}

fn one(v: &str) -> VarValue {
    VarValue::Values(vec![v.into()])
}

/// Runs every query of `name` with each variable set; returns rows by title.
fn run_all(l: &Loaded, name: &str, ctx: &Context) -> BTreeMap<String, Rows> {
    queries(name)
        .iter()
        .filter(|q| q.kind != "promql")
        .map(|q| (q.what.clone(), l.run(q, ctx)))
        .collect()
}

fn by_title<'a>(rows: &'a BTreeMap<String, Rows>, title: &str) -> &'a Rows {
    rows.iter()
        .find(|(k, _)| k.contains(&format!("({title})")) || k == &&format!("variable {title}"))
        .unwrap_or_else(|| panic!("no query {title:?} in {:?}", rows.keys()))
        .1
}

fn column(rows: &Rows, c: &str) -> Vec<String> {
    (0..rows.rows.len()).map(|r| rows.text(r, c)).collect()
}

fn first_column(rows: &Rows) -> Vec<String> {
    column(rows, &rows.columns[0].0)
}

/// Every panel and variable query returns rows with All, and none when a
/// variable it uses matches nothing (so the filter really filters).
fn assert_all_and_nothing(l: &Loaded, name: &str, vars: &[&str]) {
    let with_all: Vec<(&str, VarValue)> = vars.iter().map(|v| (*v, all())).collect();
    let rows = run_all(l, name, &l.ctx(&with_all));
    for (what, r) in &rows {
        assert!(!r.rows.is_empty(), "{name} {what}: no rows with All");
    }
    for var in vars {
        let ctx = l.ctx(
            &vars
                .iter()
                .map(|v| {
                    (
                        *v,
                        if v == var {
                            one("no/such-thing")
                        } else {
                            all()
                        },
                    )
                })
                .collect::<Vec<_>>(),
        );
        for q in queries(name).iter().filter(|q| q.kind != "promql") {
            if referenced_vars(&q.text).contains(*var) {
                let r = l.run(q, &ctx);
                assert!(
                    r.rows.is_empty(),
                    "{name} {}: {var} matching nothing still gives {:?}",
                    q.what,
                    r.records()
                );
            }
        }
    }
}

#[tokio::test]
async fn denied_flows_dashboard_on_the_seed_flows() {
    let l = loaded().await;
    let vars = ["namespace", "policy", "pod"];
    assert_all_and_nothing(&l, "denied-flows", &vars);
    let rows = run_all(
        &l,
        "denied-flows",
        &l.ctx(&[("namespace", all()), ("policy", all()), ("pod", all())]),
    );
    assert_eq!(
        first_column(by_title(&rows, "namespace")),
        ["default", "kube-system", "shop"]
    );
    // allow-dns-egress selects default/np-client for egress and allows only
    // DNS, so it denies that client's connection to the API too.
    assert_eq!(
        first_column(by_title(&rows, "policy")),
        [
            "default/allow-dns-egress",
            "default/api-from-web",
            "default/default-deny"
        ]
    );
    let pods = first_column(by_title(&rows, "pod"));
    for p in [
        "shop/np-client",
        "default/api",
        "default/np-client",
        "kube-system/coredns",
    ] {
        assert!(pods.contains(&p.to_string()), "{p} not in {pods:?}");
    }

    let outside = by_title(&rows, "Denied outside destinations by name").records();
    assert_eq!(outside.len(), 1, "{outside:?}");
    assert_eq!(outside[0]["name"], "api.example.com");
    assert_eq!(outside[0]["source"], "default/Pod/np-client");
    assert_eq!(outside[0]["address"], "203.0.113.7");
    assert_eq!(outside[0]["port"], "443");

    // The top pair: the shop client to the API, denied by both policies.
    let top = by_title(&rows, "Top denied source → destination").records();
    let first = &top[0];
    // Workloads are the pods' owners, `Pod/NAME` for the seed's bare pods.
    assert_eq!(first["source"], "shop/Pod/np-client");
    assert_eq!(first["destination"], "default/Pod/api");
    assert_eq!(first["port"], "8080");
    assert_eq!(first["proto"], "tcp");
    assert_eq!(
        first["records"], "4",
        "three dropped and one established: {top:?}"
    );
    assert_eq!(
        first["policies"],
        "default/api-from-web, default/default-deny"
    );
    assert!(
        top.iter()
            .any(|r| r["destination"] == "kube-system/Pod/coredns"
                && r["port"] == "53"
                && r["policies"] == "default/default-deny"),
        "the dropped DNS queries: {top:?}"
    );

    let by_ns = by_title(&rows, "Denied flows by namespace");
    let series: BTreeSet<String> = column(by_ns, "namespace").into_iter().collect();
    // "(no pod)": the outside address the default client was denied.
    assert_eq!(
        series,
        ["(no pod)", "default", "kube-system", "shop"]
            .map(String::from)
            .into()
    );
    let shop_total: f64 = (0..by_ns.rows.len())
        .filter(|r| by_ns.text(*r, "namespace") == "shop")
        .map(|r| by_ns.number(r, "records"))
        .sum();
    assert_eq!(shop_total, 4.0, "the shop client's denied flows");

    let latest = by_title(&rows, "Latest denied flows").records();
    let denied = l
        .flows
        .iter()
        .filter(|f| f.verdict() == pb::Verdict::Denied && !f.counted_elsewhere)
        .count();
    assert_eq!(latest.len(), denied, "records of account only");
    let shop = latest
        .iter()
        .find(|r| r["source"] == "shop/np-client" && r["result"] == "dropped")
        .unwrap_or_else(|| panic!("{latest:?}"));
    assert_eq!(shop["destination"], "default/api");
    assert_eq!(shop["service"], "default/api");
    assert_eq!(
        shop["policies"],
        "default/api-from-web, default/default-deny"
    );
    assert!(!shop["reason"].is_empty(), "{shop:?}");
    assert!(
        latest.windows(2).all(|w| w[0]["time"] >= w[1]["time"]),
        "newest first"
    );
    let reasons = by_title(&rows, "Why flows are denied").records();
    assert!(
        reasons.iter().all(|r| !r["reason"].is_empty()),
        "{reasons:?}"
    );

    // One policy, one pod, and several namespaces.
    let rows = run_all(
        &l,
        "denied-flows",
        &l.ctx(&[
            (
                "namespace",
                VarValue::Values(vec!["shop".into(), "default".into()]),
            ),
            ("policy", one("default/api-from-web")),
            ("pod", one("shop/np-client")),
        ]),
    );
    let top = by_title(&rows, "Top denied source → destination").records();
    assert_eq!(
        top.len(),
        1,
        "only the API is denied by api-from-web: {top:?}"
    );
    assert_eq!(top[0]["policies"], "default/api-from-web");
    let outside = by_title(&rows, "Denied outside destinations by name").records();
    assert!(outside.is_empty(), "not the shop client's: {outside:?}");

    let latest = by_title(&rows, "Latest denied flows").records();
    assert_eq!(latest.len(), 4, "{latest:?}");
    assert!(latest.iter().all(|r| r["source"] == "shop/np-client"));
    assert_eq!(first_column(by_title(&rows, "policy")).len(), 3);
    let rows = run_all(
        &l,
        "denied-flows",
        &l.ctx(&[
            ("namespace", one("shop")),
            ("policy", all()),
            ("pod", all()),
        ]),
    );
    let pods = first_column(by_title(&rows, "pod"));
    assert_eq!(pods, ["shop/np-client"], "pods of the chosen namespace");
}

#[tokio::test]
async fn dns_health_dashboard_on_the_seed_flows() {
    let l = loaded().await;
    assert_all_and_nothing(&l, "dns-health", &["namespace", "pod"]);
    let rows = run_all(
        &l,
        "dns-health",
        &l.ctx(&[("namespace", all()), ("pod", all())]),
    );
    assert_eq!(
        first_column(by_title(&rows, "namespace")),
        ["default", "shop"]
    );
    assert_eq!(
        first_column(by_title(&rows, "pod")),
        ["default/np-client", "shop/np-client"]
    );
    let outcomes: BTreeSet<String> = column(by_title(&rows, "DNS queries by outcome"), "result")
        .into_iter()
        .collect();
    assert_eq!(
        outcomes,
        ["answered", "dropped", "no-answer"]
            .map(String::from)
            .into()
    );
    let rcodes = column(by_title(&rows, "DNS failures by rcode"), "rcode");
    assert_eq!(rcodes, ["NXDOMAIN"]);
    let failing = by_title(&rows, "Unanswered and dropped queries by pod").records();
    let find = |pod: &str| {
        failing
            .iter()
            .find(|r| r["pod"] == pod)
            .unwrap_or_else(|| panic!("{pod} not in {failing:?}"))
            .clone()
    };
    assert_eq!(
        (
            find("default/np-client")["dropped"].as_str(),
            find("default/np-client")["unanswered"].as_str()
        ),
        ("2", "0")
    );
    assert_eq!(find("shop/np-client")["unanswered"], "1");
    let names = by_title(&rows, "Names asked for").records();
    let api = names
        .iter()
        .find(|r| r["name"] == "api.default.svc.cluster.local")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(api["queries"], "4");
    assert_eq!(api["types"], "A");
    assert!(
        names
            .iter()
            .any(|r| r["failed"] == "1" && r["rcodes"] == "NXDOMAIN")
    );
    let blocked = by_title(&rows, "Pods whose egress policy does not allow DNS").records();
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0]["pod"], "default/np-client");
    assert_eq!(blocked[0]["dropped"], "2");

    let rows = run_all(
        &l,
        "dns-health",
        &l.ctx(&[("namespace", one("shop")), ("pod", one("shop/np-client"))]),
    );
    assert!(
        by_title(&rows, "Pods whose egress policy does not allow DNS")
            .rows
            .is_empty()
    );
    assert_eq!(first_column(by_title(&rows, "pod")), ["shop/np-client"]);
    assert!(by_title(&rows, "DNS failures by rcode").rows.is_empty());
}

#[tokio::test]
async fn enforcement_dashboard_on_the_seed_flows() {
    let l = loaded().await;
    assert_all_and_nothing(&l, "enforcement", &["namespace", "node"]);
    let rows = run_all(
        &l,
        "enforcement",
        &l.ctx(&[("namespace", all()), ("node", all())]),
    );
    assert_eq!(first_column(by_title(&rows, "node")), [NODE]);
    let kinds: BTreeSet<String> = column(by_title(&rows, "Mismatches by kind"), "kind")
        .into_iter()
        .collect();
    // The shop client's unanswered DNS query to a DNS pod that exists is the
    // weaker kind.
    assert_eq!(
        kinds,
        [
            "allowed though denied",
            "dropped though allowed",
            "no answer though allowed"
        ]
        .map(String::from)
        .into()
    );
    let drops = by_title(&rows, "Kernel drops by reason");
    assert_eq!(
        column(drops, "reason").into_iter().collect::<BTreeSet<_>>(),
        ["NETFILTER_DROP".to_string()].into()
    );
    let total: f64 = (0..drops.rows.len())
        .map(|r| drops.number(r, "packets"))
        .sum();
    let expected: u64 = l.flows.iter().map(|f| f.drop_count).sum();
    assert_eq!(total, expected as f64);
    let by_node = by_title(&rows, "Kernel drops by reason and node").records();
    assert_eq!(by_node[0]["packets_of_allowed_flows"], "2", "{by_node:?}");
    let latest = by_title(&rows, "Latest mismatched flows").records();
    assert_eq!(latest.len(), 3, "{latest:?}");
    let atd = latest
        .iter()
        .find(|r| r["kind"] == "allowed though denied")
        .unwrap();
    assert_eq!(
        atd["policies"],
        "default/api-from-web, default/default-deny"
    );
    assert_eq!(atd["result"], "established");
    let pairs = by_title(&rows, "Mismatched pairs").records();
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    let atd = pairs
        .iter()
        .find(|r| r["kind"] == "allowed though denied")
        .unwrap();
    assert_eq!(atd["records"], "1", "counted once: {pairs:?}");
}

#[tokio::test]
async fn netverdict_self_dashboard_on_the_seed_flows() {
    let l = loaded().await;
    assert_all_and_nothing(&l, "netverdict-self", &["node"]);
    let rows = run_all(&l, "netverdict-self", &l.ctx(&[("node", all())]));
    let rate = by_title(&rows, "Flows per second per node");
    assert_eq!(
        column(rate, "node").into_iter().collect::<BTreeSet<_>>(),
        [NODE.to_string()].into()
    );
    let total: f64 = (0..rate.rows.len())
        .map(|r| rate.number(r, "flows_per_second") * 60.0)
        .sum();
    let counted = l.flows.iter().filter(|f| !f.counted_elsewhere).count();
    assert!(
        (total - counted as f64).abs() < 1e-6,
        "{total} flows over the buckets, want the {counted} records of account"
    );
    // A wider interval folds minutes into fewer buckets with the same total.
    let mut wide = l.ctx(&[("node", one(NODE))]);
    wide.interval_s = 300;
    let q = queries("netverdict-self")
        .into_iter()
        .find(|q| q.what.contains("Flows per second per node"))
        .unwrap();
    let r = l.run(&q, &wide);
    let total: f64 = (0..r.rows.len())
        .map(|i| r.number(i, "flows_per_second") * 300.0)
        .sum();
    assert!((total - counted as f64).abs() < 1e-6, "{total}");
    assert!(r.rows.len() <= rate.rows.len());
}
