//! `wasi:sockets/ip-name-lookup` for wasm pods, so they resolve the cluster's names as OCI pods
//! do through the cluster DNS: the container's [`Resolver`] answers first (Service names), and
//! any other name goes to the node's resolver, as wasmtime-wasi's own implementation does.
//! wasmtime-wasi 48 has no hook for this, so the interface is defined again over its own,
//! with a resolve-address-stream resource of ours (resolved when it is made: always ready).

use crate::Resolver;
use std::net::{IpAddr, ToSocketAddrs};
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Network, Pollable};

/// The interface's name at the version of wasmtime-wasi 48's WIT (guests importing any 0.2.x
/// match it).
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// Store data that can resolve names: its resource table and the container's resolver.
pub(super) trait Lookups: Send + 'static {
    fn table(&mut self) -> &mut ResourceTable;
    fn resolver(&self) -> Option<&Resolver>;
}

/// The addresses a name resolved to, handed out one by one.
pub struct Addresses(std::vec::IntoIter<IpAddr>);

#[async_trait::async_trait]
impl Pollable for Addresses {
    async fn ready(&mut self) {}
}

/// What `name` resolves to: the cluster's answer if it has one, else the node's resolver.
pub(super) fn resolve(resolver: Option<&Resolver>, name: &str) -> Result<Vec<IpAddr>, ErrorCode> {
    if let Ok(ip) = name
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return Ok(vec![ip]);
    }
    if name.is_empty() || name.len() > 253 || name.contains(|c: char| c.is_whitespace() || c == '/')
    {
        return Err(ErrorCode::InvalidArgument);
    }
    let found = match resolver.and_then(|r| (r.0)(name)) {
        Some(addrs) => addrs,
        None => (name, 0)
            .to_socket_addrs()
            .map_err(|_| ErrorCode::NameUnresolvable)?
            .map(|a| a.ip().to_canonical())
            .collect(),
    };
    if found.is_empty() {
        Err(ErrorCode::NameUnresolvable)
    } else {
        Ok(found)
    }
}

/// Defines ip-name-lookup over what `wasmtime_wasi::p2::add_to_linker_sync` put there.
pub(super) fn add_to_linker<T: Lookups>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut i = linker.instance(INTERFACE)?;
    i.resource(
        "resolve-address-stream",
        ResourceType::host::<Addresses>(),
        |mut store, rep| {
            store
                .data_mut()
                .table()
                .delete(Resource::<Addresses>::new_own(rep))?;
            Ok(())
        },
    )?;
    i.func_wrap(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            let data = store.data_mut();
            data.table().get(&network)?;
            let resolved = resolve(data.resolver(), &name);
            let answer = match resolved {
                Ok(addrs) => Ok(data.table().push(Addresses(addrs.into_iter()))?),
                Err(e) => Err(e),
            };
            Ok((answer,))
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (stream,): (Resource<Addresses>,)| {
            let next = store.data_mut().table().get_mut(&stream)?.0.next();
            Ok((Ok::<Option<IpAddress>, ErrorCode>(
                next.map(IpAddress::from),
            ),))
        },
    )?;
    i.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (stream,): (Resource<Addresses>,)| {
            let pollable: Resource<DynPollable> =
                wasmtime_wasi::p2::subscribe(store.data_mut().table(), stream)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
