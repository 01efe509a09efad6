//! What a collector may push: only its own node's flows. On a connection
//! authenticated by certificate, the certificate's CN is the node
//! ([`netverdict_tls::authz::bound_node`]); every batch must name that node,
//! and every flow must name it too, with an id in that node's scope
//! (`NODE/run/sequence`). So no node can store flows under another node's
//! ids, and no node can shadow another's flows by storing their ids first
//! (the store skips ids it already holds).
//!
//! A batch that breaks the rule ends the stream with `PERMISSION_DENIED`,
//! naming the certificate's node and the node the batch or flow claims; it is
//! never re-stamped, because a collector sending another node's flows is
//! misconfigured (or compromised) and should be seen, not silently fixed.
//! Nothing of such a batch is stored. This check comes before validation
//! (`super::ingest`): a batch that passes has its malformed flows (an empty
//! id among them) refused one by one, never the whole stream. Unauthenticated connections (plaintext
//! on loopback, `--insecure`, TLS without a client CA) are bound to no node.

use netverdict_proto::v1 as pb;
use tonic::Status;

/// Checks that `batch` holds only flows of `node` (the certificate's CN).
pub fn check_batch(node: &str, batch: &pb::FlowBatch) -> Result<(), Status> {
    if batch.node_name != node {
        return Err(Status::permission_denied(format!(
            "the client certificate is node {node:?}'s, but batch {} is from node {:?}: a collector may push only its own node's flows",
            batch.sequence, batch.node_name
        )));
    }
    for flow in &batch.flows {
        // An empty id claims no node's scope: such a flow is malformed,
        // refused on its own by validation after this check, never stored.
        let id_node = flow.id.split('/').next().unwrap_or_default();
        if flow.node_name != node || (id_node != node && !flow.id.is_empty()) {
            return Err(Status::permission_denied(format!(
                "the client certificate is node {node:?}'s, but flow {:?} of batch {} is node {:?}'s \
                 (id scope {id_node:?}): a collector may push only its own node's flows",
                flow.id, batch.sequence, flow.node_name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(id: &str, node: &str) -> pb::Flow {
        pb::Flow {
            id: id.into(),
            node_name: node.into(),
            ..Default::default()
        }
    }

    fn batch(node: &str, flows: Vec<pb::Flow>) -> pb::FlowBatch {
        pb::FlowBatch {
            node_name: node.into(),
            sequence: 7,
            flows,
        }
    }

    #[test]
    fn own_flows_pass() {
        let b = batch("a", vec![flow("a/1/1", "a"), flow("a/1/2", "a")]);
        assert!(check_batch("a", &b).is_ok());
    }

    #[test]
    fn another_nodes_batch_flow_or_id_is_refused_naming_both() {
        let e = check_batch("a", &batch("b", vec![])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("node \"a\"'s") && e.message().contains("from node \"b\""),
            "{}",
            e.message()
        );
        let e = check_batch("a", &batch("a", vec![flow("a/1/1", "b")])).unwrap_err();
        assert!(e.message().contains("is node \"b\"'s"), "{}", e.message());
        // The node field says a, the id is b's: shadowing b's flow.
        let e = check_batch("a", &batch("a", vec![flow("b/1/1", "a")])).unwrap_err();
        assert!(e.message().contains("id scope \"b\""), "{}", e.message());
        // A node name that is a prefix of another is not its scope.
        assert!(check_batch("a", &batch("a", vec![flow("ab/1/1", "a")])).is_err());
        // No id: left to validation, which refuses that flow alone.
        assert!(check_batch("a", &batch("a", vec![flow("", "a")])).is_ok());
        assert!(check_batch("a", &batch("a", vec![flow("", "b")])).is_err());
    }
}
