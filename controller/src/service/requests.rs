//! The service's requests by group: objects (get, list, watch, delete), credentials
//! (tokens, joins, certificates) and events; `dispatch` in the module above routes to them
//! after authorizing.

use super::fields::Fields;
use super::*;

impl Service {
    pub(super) async fn objects(&self, req: Request) -> std::result::Result<Reply, WireError> {
        let one = |r: Response| Ok(Reply::One(r));
        match req {
            Request::Get {
                kind,
                namespace,
                name,
            } => {
                let key = ObjectKey::new(parse_kind(&kind)?, namespace.as_deref(), &name);
                let obj = self
                    .store
                    .get(&key)
                    .await?
                    .ok_or_else(|| Error::NotFound(key.to_string()))?;
                one(Response::Object(encode(&obj)?))
            }
            Request::List {
                kind,
                namespace,
                selector,
                fields,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let fields = Fields::parse(&fields, kind)?;
                let (items, revision) = self.store.list(kind, namespace.as_deref()).await?;
                let items = items
                    .iter()
                    .filter(|o| selector.matches(&o.metadata().labels) && fields.matches(o))
                    .map(encode)
                    .collect::<Result<Vec<_>>>()?;
                one(Response::List { items, revision })
            }
            Request::Watch {
                kind,
                namespace,
                selector,
                fields,
                revision,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let fields = Fields::parse(&fields, kind)?;
                let from = if revision == 0 {
                    self.store.revision()
                } else {
                    revision
                };
                let watch = self.store.watch(from, Some(kind)).await?;
                Ok(Reply::Watch(WatchStream {
                    watch,
                    namespace,
                    selector,
                    fields,
                }))
            }
            Request::Delete {
                kind,
                namespace,
                name,
                propagation,
                grace_period,
            } => {
                let key = ObjectKey::new(parse_kind(&kind)?, namespace.as_deref(), &name);
                let changes = self.delete(&key, propagation, grace_period).await?;
                one(Response::Deleted(
                    changes
                        .iter()
                        .map(|c| c.object.reference())
                        .take(1)
                        .collect(),
                ))
            }
            Request::DeleteSelected {
                kind,
                namespace,
                selector,
                propagation,
                grace_period,
            } => {
                let kind = parse_kind(&kind)?;
                let selector = parse_selector(&selector)?;
                let (items, _) = self.store.list(kind, namespace.as_deref()).await?;
                let mut deleted = Vec::new();
                for obj in items
                    .iter()
                    .filter(|o| selector.matches(&o.metadata().labels))
                {
                    match self
                        .delete(&ObjectKey::of(obj), propagation, grace_period)
                        .await
                    {
                        Ok(_) => deleted.push(obj.reference()),
                        Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                one(Response::Deleted(deleted))
            }
            _ => Err(bad_request("not a request of the object API")),
        }
    }

    pub(super) async fn credentials(
        &self,
        who: &Identity,
        req: Request,
    ) -> std::result::Result<Reply, WireError> {
        let one = |r: Response| Ok(Reply::One(r));
        match req {
            Request::CreateToken {
                description,
                ttl_secs,
                usages,
            } => one(Response::Token(
                self.create_token(&description, None, ttl_secs, usages)
                    .await?,
            )),
            Request::ListTokens => one(json_answer(&self.list_tokens().await?)?),
            Request::DeleteToken { id } => {
                self.delete_token(&id).await?;
                one(Response::Ok)
            }
            Request::IssueCredential {
                name,
                ttl_secs,
                csr_pem,
            } => one(self.issue_credential(&name, ttl_secs, &csr_pem).await?),
            Request::ListCredentials => one(json_answer(&self.list_credentials().await?)?),
            Request::DeleteCredential { name } => {
                self.delete_credential(who, &name).await?;
                one(Response::Ok)
            }
            Request::Join {
                secret,
                node_name,
                csr_pem,
            } => one(self.join(&secret, &node_name, &csr_pem).await?),
            Request::Renew { csr_pem } => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node renews its certificate this way; admins use `shoal cert rotate`"));
                };
                one(self.renew(me, &csr_pem).await?)
            }
            Request::PeerCert { csr_pem } => {
                let Identity::Node(me) = who else {
                    return Err(bad_request("only a node has a peer certificate"));
                };
                let cert_pem = self
                    .peer_ca
                    .sign_node_serving(&csr_pem, me, self.trust.node_cert_ttl)
                    .map_err(Error::from)?;
                one(self.joined(cert_pem))
            }
            _ => Err(bad_request("not a request of the credential API")),
        }
    }

    /// An Event from a node or an admin: bounded in size, rate-limited per node, and about
    /// the node itself or its own pods only.
    pub(super) async fn record_event(
        &self,
        who: &Identity,
        about: &[u8],
        type_: &str,
        reason: &str,
        message: &str,
    ) -> std::result::Result<Reply, WireError> {
        let mut about: shoal_api::ObjectReference = serde_json::from_slice(about)
            .map_err(|e| bad_request(format!("event object reference: {e}")))?;
        if reason.len() > EVENT_REASON_MAX {
            return Err(bad_request(format!(
                "an event reason is at most {EVENT_REASON_MAX} bytes, got {}",
                reason.len()
            )));
        }
        let message = truncated(message, EVENT_MESSAGE_MAX);
        let host = match who {
            Identity::Node(me) => {
                let allowed = self
                    .event_budget
                    .lock()
                    .map(|mut b| b.take(me, std::time::Instant::now()))
                    .unwrap_or(false);
                if !allowed {
                    return Err(Error::TooManyRequests(format!(
                        "node {me:?} records events faster than {} a second: this one was dropped",
                        crate::rate::EVENT_PER_SECOND
                    ))
                    .into());
                }
                let key = ObjectKey::new(
                    Kind::Pod,
                    about.namespace.as_deref(),
                    about.name.as_deref().unwrap_or(""),
                );
                let bound = self
                    .store
                    .get(&key)
                    .await?
                    .and_then(|o| o.into_typed::<Pod>().ok())
                    .is_some_and(|p| p.spec.node_name.as_deref() == Some(me.as_str()));
                let itself = about.kind.as_deref() == Some("Node")
                    && about.name.as_deref() == Some(me.as_str());
                if !itself && (about.kind.as_deref() != Some("Pod") || !bound) {
                    return Err(forbidden(format!(
                        "node {me:?} may only record events about itself and its own pods"
                    )));
                }
                if itself {
                    // Events about a Node live in `default`, as in Kubernetes.
                    about.namespace = Some("default".into());
                }
                Some(me.clone())
            }
            _ => None,
        };
        crate::events::try_record(
            &self.store,
            &about,
            type_,
            reason,
            &message,
            "shoal-agent",
            host.as_deref(),
        )
        .await?;
        Ok(Reply::One(Response::Ok))
    }
}
