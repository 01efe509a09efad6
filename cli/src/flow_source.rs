//! Where `whatif` and `recommend` read observed flows: a flows file (JSON
//! lines as `verdicts` reads them, with what was observed when the line
//! says it), or the API server's stored flows, read as successive `GetFlows`
//! pages of 10,000, oldest first, each page starting at the previous one's
//! newest `last_seen` and skipping the ids of that instant already read (a
//! page all at one instant doubles the next). Either way each flow reaches
//! the command as a `ReplayFlow`, one at a time, so no side holds the
//! window's flows at once.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::Args;
use netverdict_policy::ClusterState;
use netverdict_policy::whatif::ReplayFlow;
use netverdict_proto::v1 as pb;
use pb::observer_client::ObserverClient;

use crate::policy_cmds::{FlowLine, parse_flow};
use crate::query_cmds::{self, ServerArgs};

/// Flows asked of the API server per request: each page is one bounded
/// `GetFlows` stream (the oldest flows of what is left of the window).
const PAGE: u64 = 10_000;

/// The flows a command reads: a file, or the API server's.
#[derive(Args, Debug)]
pub struct FlowSourceArgs {
    /// Observed flows: JSON lines as `verdicts` reads them
    /// (`{"src":"x/a","dst":"y/b","port":80,"protocol":"TCP"}`), optionally
    /// with `"verdict":"allow"|"deny"` as observed and `"dst_name"` (the
    /// destination address's DNS name); `-` for standard input. Without it,
    /// the API server's stored flows (--server).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["since", "until"])]
    pub flows: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    /// The API server's flows last seen at or after this: a duration ago or
    /// an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// The API server's flows last seen before this (default: now).
    #[arg(long)]
    pub until: Option<String>,
}

impl FlowSourceArgs {
    /// Fails unless a source is given (checked before any work).
    pub fn require(&self) -> Result<()> {
        if self.flows.is_none() && self.server.server.is_none() {
            bail!("give the flows: --flows FILE, or --server ADDR for the API server's");
        }
        Ok(())
    }

    /// Reads every flow into `each`, the API server's flows matching
    /// `include` (any of them; none: all). Returns how many stored flows
    /// could not be taken (see `netverdict_policy::proto::replay_flow`).
    pub fn read(
        &self,
        state: &ClusterState,
        include: Vec<pb::FlowFilter>,
        each: &mut dyn FnMut(ReplayFlow),
    ) -> Result<u64> {
        self.require()?;
        match &self.flows {
            Some(path) => {
                read_file(path, state, each)?;
                Ok(0)
            }
            None => query_cmds::runtime()?.block_on(self.read_server(state, include, each)),
        }
    }

    /// The API server's flows of the window, a page at a time.
    async fn read_server(
        &self,
        state: &ClusterState,
        include: Vec<pb::FlowFilter>,
        each: &mut dyn FnMut(ReplayFlow),
    ) -> Result<u64> {
        let now = SystemTime::now();
        let mut since = query_cmds::parse_time("--since", &self.since, now)?;
        let until = match &self.until {
            Some(u) => query_cmds::parse_time("--until", u, now)?,
            None => netverdict_proto::time::timestamp(now),
        };
        let mut client = ObserverClient::new(query_cmds::channel(&self.server).await?);
        let mut done_at_since: HashSet<String> = HashSet::new();
        let mut page = PAGE;
        let mut skipped = 0u64;
        loop {
            let request = pb::GetFlowsRequest {
                number: page,
                first: true,
                follow: false,
                include: include.clone(),
                exclude: Vec::new(),
                since: Some(since),
                until: Some(until),
            };
            let mut stream = client
                .get_flows(request)
                .await
                .map_err(|s| query_cmds::status_error("GetFlows", s))?
                .into_inner();
            let mut received = 0u64;
            let mut newest: Option<prost_types::Timestamp> = None;
            let mut done_at_newest: HashSet<String> = HashSet::new();
            while let Some(response) = stream
                .message()
                .await
                .map_err(|s| query_cmds::status_error("GetFlows", s))?
            {
                received += 1;
                let Some(flow) = response.flow else { continue };
                let last_seen = flow.last_seen.unwrap_or_default();
                if newest != Some(last_seen) {
                    newest = Some(last_seen);
                    done_at_newest.clear();
                }
                done_at_newest.insert(flow.id.clone());
                if last_seen == since && done_at_since.contains(&flow.id) {
                    continue;
                }
                match netverdict_policy::proto::replay_flow(state, &flow) {
                    Some(replay_flow) => each(replay_flow),
                    None => skipped += 1,
                }
            }
            if received < page {
                return Ok(skipped);
            }
            match newest {
                // A whole page at one instant: ask for more of it at once.
                Some(n) if n == since => {
                    done_at_since.extend(done_at_newest);
                    page = page.saturating_mul(2);
                }
                Some(n) => {
                    since = n;
                    done_at_since = done_at_newest;
                    page = PAGE;
                }
                None => return Ok(skipped),
            }
        }
    }
}

/// Reads a flows file line by line; a bad line is an error naming the file,
/// the line and what is wrong.
fn read_file(path: &Path, state: &ClusterState, each: &mut dyn FnMut(ReplayFlow)) -> Result<()> {
    let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), index + 1);
        let line: FlowLine =
            serde_json::from_str(&line).with_context(|| format!("{}: invalid flow", at()))?;
        let connection = parse_flow(&line.src, &line.dst, line.port, line.protocol.as_deref())
            .with_context(|| format!("{}: invalid flow", at()))?;
        let mut flow = ReplayFlow::of_connection(state, connection);
        flow.observed_allowed = line
            .observed_allowed()
            .with_context(|| format!("{}: invalid flow", at()))?;
        if let Some(name) = &line.dst_name {
            flow.connection = flow.connection.with_destination_names(&[name]);
        }
        each(flow);
    }
    Ok(())
}
