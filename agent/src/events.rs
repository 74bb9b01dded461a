//! Events the agent records with the controller (best effort: a lost link loses the event,
//! nothing else).

use crate::error::{expect_ok, Error};
use shoal_transport::proto::Request;
use shoal_transport::Client;

/// Records an Event about this node (best effort).
pub(crate) async fn about_node(client: &Client, node: &str, reason: &str, message: String) {
    let about = shoal_api::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node.into()),
        ..Default::default()
    };
    record(client, &about, "Normal", reason, message).await;
}

/// Records an Event about `about` (best effort: a lost link loses the event, nothing else).
pub(crate) async fn record(
    client: &Client,
    about: &shoal_api::ObjectReference,
    type_: &str,
    reason: &str,
    message: String,
) {
    let Ok(about) = serde_json::to_vec(about) else {
        return;
    };
    let req = Request::RecordEvent {
        about,
        type_: type_.into(),
        reason: reason.into(),
        message,
    };
    if let Err(e) = client
        .call(&req)
        .await
        .map_err(Error::from)
        .and_then(expect_ok)
    {
        tracing::debug!(error = %shoal_transport::report(&e), reason, "event not recorded");
    }
}
