//! The NetworkPolicy controller: resolves every policy to the addresses of the pods its
//! selectors name ([`shoal_api::policy::resolve`]) and writes, for each node, what its own
//! pods' rules are, in ConfigMap `shoal-system/network-policy.NODE`. A node reads only its
//! own; no node learns the labels of pods elsewhere. While any policy is in force every node
//! has one, listing all its pods (so it can tell a pod whose rules are on their way from an
//! open one); with none in force, none has.

use super::tolerate;
use crate::error::Result;
use crate::store::{ObjectKey, Store};
use shoal_api::policy::{
    policy_config_map, NodeRules, POLICY_KEY, POLICY_NAMESPACE, POLICY_PREFIX, SERVICES_KEY,
};
use shoal_api::{ConfigMap, Kind, Namespace, NetworkPolicy, Node, Object, ObjectMeta, Pod};
use std::collections::BTreeMap;

/// The ConfigMap that gives `node` its pods' rules, and the Service range (which its proxy
/// holds to the rules: a pod's packets to a cluster IP go to the proxy, not to the pod).
fn config_map(node: &str, rules: &NodeRules, services: &str) -> Result<ConfigMap> {
    let json = serde_json::to_string(rules)
        .map_err(|e| crate::error::Error::Internal(format!("encoding network policy: {e}")))?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: policy_config_map(node),
            namespace: Some(POLICY_NAMESPACE.into()),
            labels: BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "shoal".to_string(),
            )]),
            ..Default::default()
        },
        data: BTreeMap::from([
            (POLICY_KEY.to_string(), json),
            (SERVICES_KEY.to_string(), services.to_string()),
        ]),
        ..Default::default()
    })
}

pub(super) async fn reconcile(store: &Store, pods: &[Pod], services: &str) -> Result<()> {
    let policies: Vec<NetworkPolicy> = store.list_typed(Kind::NetworkPolicy, None).await?;
    let stored: Vec<ConfigMap> = store
        .list_typed(Kind::ConfigMap, Some(POLICY_NAMESPACE))
        .await?;
    let stored: BTreeMap<String, ConfigMap> = stored
        .into_iter()
        .filter(|c| c.metadata.name.starts_with(POLICY_PREFIX))
        .map(|c| (c.metadata.name.clone(), c))
        .collect();
    if policies.is_empty() && stored.is_empty() {
        return Ok(());
    }
    let namespaces: Vec<Namespace> = store.list_typed(Kind::Namespace, None).await?;
    let nodes: Vec<Node> = store.list_typed(Kind::Node, None).await?;
    let names: Vec<&str> = nodes.iter().map(|n| n.metadata.name.as_str()).collect();
    let wanted = shoal_api::policy::resolve(&policies, pods, &namespaces, &names);
    for (node, rules) in &wanted {
        let want = config_map(node, rules, services)?;
        match stored.get(&want.metadata.name) {
            Some(have) if have.data == want.data => {}
            Some(have) => {
                let mut next = have.clone();
                next.data = want.data;
                let revision = have.metadata.revision();
                tolerate(store.update(Object::ConfigMap(next), Some(revision)).await)?;
            }
            None => tolerate(store.create(Object::ConfigMap(want)).await)?,
        }
    }
    for name in stored.keys() {
        let node = &name[POLICY_PREFIX.len()..];
        if !wanted.contains_key(node) {
            let key = ObjectKey::new(Kind::ConfigMap, Some(POLICY_NAMESPACE), name);
            tolerate(store.delete(key, None).await)?;
        }
    }
    Ok(())
}
