//! Components that export `wasi:http/incoming-handler` are served, not run: the executor
//! listens on the container's first TCP `containerPort` (HTTP/1.1 with keep-alive, through
//! hyper) and handles each request in a fresh instance with the container's limits, env,
//! volumes and log, as Spin and `wasmtime serve` do. The container runs until it is stopped.

use super::run::{install_epoch_callback, limits, wasi_builder, KILLED_EXIT};
use crate::error::{Error, Result};
use crate::handle::{Exit, ExitReason, Handle};
use crate::ContainerSpec;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::sync::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Whether the component is an HTTP handler (exports `wasi:http/incoming-handler`).
pub fn is_handler(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2"))
}

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    limits: StoreLimits,
    resolver: Option<crate::Resolver>,
}

impl super::lookup::Lookups for State {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
    fn resolver(&self) -> Option<&crate::Resolver> {
        self.resolver.as_ref()
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

struct Shared {
    engine: Engine,
    pre: ProxyPre<State>,
    spec: ContainerSpec,
    /// Requests being handled at once (each is an instance on a blocking thread).
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Connections one served pod holds open at most; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// Requests one served pod handles at once; more wait their turn (within their timeout).
const MAX_IN_FLIGHT: usize = 32;
/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a request may take, waiting its turn included; then the guest is stopped and the
/// client told.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `component` on the container's port until the handle is stopped.
pub fn serve(engine: &Engine, component: &Component, spec: ContainerSpec) -> Result<Handle> {
    let start_err = |message: String| Error::Start {
        id: spec.id.clone(),
        message,
    };
    let port = spec
        .ports
        .iter()
        .find(|p| !p.udp)
        .map(|p| p.port)
        .ok_or_else(|| {
            start_err(
                "a wasi:http component is served on its containerPort: declare one (ports: [{containerPort: 8080}])"
                    .into(),
            )
        })?;
    let mut linker = Linker::<State>::new(engine);
    // All of WASI (Rust's std reads env and clocks beyond the proxy world), then wasi:http.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .and_then(|()| super::lookup::add_to_linker(&mut linker))
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker))
        .map_err(|e| start_err(format!("linking wasi:http: {e:#}")))?;
    let pre = linker
        .instantiate_pre(component)
        .and_then(ProxyPre::new)
        .map_err(|e| start_err(format!("the component cannot be served: {e:#}")))?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| start_err("wasi:http components are served on the agent's runtime".into()))?;
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| start_err(format!("cannot listen on port {port}: {e}")))?;
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let (handle, exit) = Handle::new(move |_grace, _exit| {
        let _ = stopping.send(true);
    });
    let shared = Arc::new(Shared {
        engine: engine.clone(),
        pre,
        spec,
        in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
    });
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                exit.send(Exit {
                    code: 1,
                    reason: ExitReason::Error,
                    message: Some(format!("cannot listen on port {port}: {e}")),
                });
                return;
            }
        };
        tracing::info!(container = %shared.spec.id, port, "serving the wasi:http component");
        loop {
            let permit = tokio::select! {
                _ = stopped.changed() => break,
                p = connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (conn, _) = tokio::select! {
                _ = stopped.changed() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let (shared, mut stopped) = (shared.clone(), stopped.clone());
            tokio::spawn(async move {
                let on_stop = stopped.clone();
                let service = hyper::service::service_fn(move |req| {
                    let (shared, on_stop) = (shared.clone(), on_stop.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle_request(shared, req, on_stop).await,
                        )
                    }
                });
                let serving = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), service);
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = serving => {}
                }
                drop(permit);
            });
        }
        exit.send(Exit {
            code: KILLED_EXIT,
            reason: ExitReason::Killed,
            message: Some("stopped".into()),
        });
    });
    Ok(handle)
}

fn plain(status: u16, text: String) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(text))
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    resp
}

/// One request: a fresh instance on a blocking thread, its response passed back as soon as
/// it sets it (the body follows as the guest writes it).
async fn handle_request(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> hyper::Response<HyperOutgoingBody> {
    let started = tokio::time::Instant::now();
    let Ok(Ok(_turn)) =
        tokio::time::timeout(REQUEST_TIMEOUT, shared.in_flight.clone().acquire_owned()).await
    else {
        return plain(503, "the component is busy: try again\n".into());
    };
    // This request's guest stops at its deadline or when the pod stops, whichever is first.
    let halt = Arc::new(AtomicBool::new(false));
    let halting = {
        let halt = halt.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped.changed() => {}
                _ = tokio::time::sleep_until(started + REQUEST_TIMEOUT) => {}
            }
            halt.store(true, Ordering::Relaxed);
        })
    };
    let response = handle_instance(shared, req, halt).await;
    halting.abort();
    if started.elapsed() >= REQUEST_TIMEOUT {
        return plain(
            504,
            format!("the component did not answer within {REQUEST_TIMEOUT:?}\n"),
        );
    }
    response
}

async fn handle_instance(
    shared: Arc<Shared>,
    req: hyper::Request<hyper::body::Incoming>,
    halt: Arc<AtomicBool>,
) -> hyper::Response<HyperOutgoingBody> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let task = tokio::task::spawn_blocking(move || -> wasmtime::Result<()> {
        let spec = &shared.spec;
        let ctx = wasi_builder(spec)?.build();
        let mut store = Store::new(
            &shared.engine,
            State {
                ctx,
                table: ResourceTable::new(),
                http: WasiHttpCtx::new(),
                limits: limits(spec),
                resolver: spec.resolver.clone(),
            },
        );
        store.limiter(|s| &mut s.limits);
        install_epoch_callback(&mut store, halt, spec.cpu_limit_millis);
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let proxy = shared.pre.instantiate(&mut store)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
    });
    match receiver.await {
        Ok(Ok(resp)) => resp,
        Ok(Err(code)) => plain(500, format!("the component failed the request: {code:?}\n")),
        Err(_) => {
            let why = match task.await {
                Ok(Ok(())) => "the component never set a response".to_string(),
                Ok(Err(e)) => format!(
                    "wasm trap: {}",
                    format!("{e:#}").lines().next().unwrap_or("")
                ),
                Err(e) => e.to_string(),
            };
            plain(500, format!("{why}\n"))
        }
    }
}
