//! The gRPC calls tests make over real sockets: read every flow of a
//! `GetFlows` answer (an API server's or a collector's observer), and open an
//! ingest `Push` stream to send batches and read their acknowledgements.

use netverdict_proto::v1 as pb;
use pb::ingest_client::IngestClient;
use pb::observer_client::ObserverClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Every flow `GetFlows` answers at `url` (`http://host:port`), in order; the
/// call's error status when it fails.
pub async fn get_flows(
    url: &str,
    request: pb::GetFlowsRequest,
) -> Result<Vec<pb::Flow>, tonic::Status> {
    let mut client = ObserverClient::connect(url.to_string())
        .await
        .unwrap_or_else(|e| panic!("connecting to the observer at {url}: {e}"));
    let mut stream = client.get_flows(request).await?.into_inner();
    let mut flows = Vec::new();
    while let Some(response) = stream.message().await? {
        flows.extend(response.flow);
    }
    Ok(flows)
}

/// The ids of [`get_flows`], in order.
pub async fn flow_ids(url: &str, request: pb::GetFlowsRequest) -> Vec<String> {
    get_flows(url, request)
        .await
        .unwrap_or_else(|s| panic!("GetFlows at {url}: {s}"))
        .into_iter()
        .map(|f| f.id)
        .collect()
}

/// An open ingest `Push` stream to `url`: batches go into the sender, the
/// server's acknowledgements (or its error status) come out of the stream.
pub async fn push_stream(url: &str) -> (mpsc::Sender<pb::FlowBatch>, tonic::Streaming<pb::Ack>) {
    let mut client = IngestClient::connect(url.to_string())
        .await
        .unwrap_or_else(|e| panic!("connecting to ingest at {url}: {e}"));
    let (tx, rx) = mpsc::channel(16);
    let acks = client
        .push(ReceiverStream::new(rx))
        .await
        .unwrap_or_else(|s| panic!("Push to {url}: {s}"))
        .into_inner();
    (tx, acks)
}

/// A batch of `node`'s flows with this sequence number.
pub fn batch(node: &str, sequence: u64, flows: Vec<pb::Flow>) -> pb::FlowBatch {
    pb::FlowBatch {
        node_name: node.into(),
        sequence,
        flows,
    }
}

/// Sends `batch` on a push stream and waits for its acknowledgement, failing
/// when another sequence or an error comes back.
pub async fn push_acked(
    tx: &mpsc::Sender<pb::FlowBatch>,
    acks: &mut tonic::Streaming<pb::Ack>,
    batch: pb::FlowBatch,
) {
    let sequence = batch.sequence;
    tx.send(batch).await.expect("the push stream is open");
    let ack = acks
        .message()
        .await
        .unwrap_or_else(|s| panic!("batch {sequence}: {s}"))
        .unwrap_or_else(|| panic!("the stream ended before batch {sequence} was acknowledged"));
    assert_eq!(ack.sequence, sequence, "acknowledged out of order");
}
