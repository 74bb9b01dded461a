//! Running one container: WASI context from the spec, limits, the guest on its own thread,
//! and its end classified (exit code, trap, over the memory limit, stopped).

use super::cache::Compiled;
use crate::error::{Error, Result};
use crate::handle::{Exit, ExitReason, Handle};
use crate::ContainerSpec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Linker, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Exit code reported for a trap, as a process aborted by a signal (128 + SIGABRT).
const TRAP_EXIT: i32 = 134;
/// Exit code reported for a container killed by its supervisor or its memory limit.
pub(super) const KILLED_EXIT: i32 = 137;

struct P1 {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

struct P2 {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    resolver: Option<crate::Resolver>,
}

impl super::lookup::Lookups for P2 {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
    fn resolver(&self) -> Option<&crate::Resolver> {
        self.resolver.as_ref()
    }
}

impl WasiView for P2 {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

pub(super) fn wasi_builder(spec: &ContainerSpec) -> Result<WasiCtxBuilder> {
    let start_err = |message: String| Error::Start {
        id: spec.id.clone(),
        message,
    };
    let (out, err) = super::output::LogOutput::pair(&spec.log_path)?;
    let mut b = WasiCtxBuilder::new();
    b.args(&spec.argv).envs(&spec.env).stdout(out).stderr(err);
    // The node's network, as a hostNetwork pod has it, but a listener only on a declared
    // port: connections out are free, binds are to port 0 (implicit) or a containerPort.
    // Connections and datagrams out follow the pod's NetworkPolicy egress.
    let ports = spec.ports.clone();
    let egress = spec.egress.clone();
    b.allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true)
        .socket_addr_check(move |addr, use_| {
            use wasmtime_wasi::sockets::SocketAddrUse as U;
            let outbound = match use_ {
                U::TcpConnect => Some(false),
                U::UdpSend => Some(true),
                _ => None,
            };
            let allowed = socket_allowed(&ports, addr, use_)
                && match (outbound, &egress) {
                    (Some(udp), Some(check)) => (check.0)(addr, udp),
                    _ => true,
                };
            Box::pin(async move { allowed })
        });
    for m in &spec.mounts {
        let perms = if m.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&m.host_path, &m.guest_path, perms)
            .map_err(|e| {
                start_err(format!(
                    "volume {} at {}: {e}",
                    m.host_path.display(),
                    m.guest_path
                ))
            })?;
    }
    Ok(b)
}

/// Whether a wasm container may use `addr` so: binding and listening only on the ports it
/// declares (or an implicit bind to port 0 before a connect), anything else freely.
pub(crate) fn socket_allowed(
    ports: &[crate::Port],
    addr: std::net::SocketAddr,
    use_: wasmtime_wasi::sockets::SocketAddrUse,
) -> bool {
    use wasmtime_wasi::sockets::SocketAddrUse as U;
    let declared = |udp: bool| ports.iter().any(|p| p.udp == udp && p.port == addr.port());
    match use_ {
        U::TcpBind => addr.port() == 0 || declared(false),
        U::TcpListen => declared(false),
        U::UdpBind => addr.port() == 0 || declared(true),
        _ => true,
    }
}

/// The memory a wasm pod gets when it sets no limit: a guest never runs unbounded inside the
/// agent's process.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 << 20;
/// Bytes one table element is counted as against the memory limit (a function reference is
/// a pointer, with the bookkeeping around it).
const TABLE_ELEMENT_BYTES: u64 = 16;

/// What one instance of a guest may take: linear memory up to the pod's limit (or
/// [`DEFAULT_MEMORY_LIMIT`]), tables counted against the same limit, and a bounded number of
/// instances, tables and memories (a component is a few dozen core instances at most).
pub(super) fn limits(spec: &ContainerSpec) -> StoreLimits {
    let bytes = spec.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
    let size = |b: u64| usize::try_from(b).unwrap_or(usize::MAX);
    StoreLimitsBuilder::new()
        .trap_on_grow_failure(true)
        .memory_size(size(bytes))
        .table_elements(size(bytes / TABLE_ELEMENT_BYTES))
        .instances(1000)
        .tables(1000)
        .memories(100)
        .build()
}

/// Stops the guest when asked, and holds it to its CPU share: after running for a slice, it
/// sleeps long enough that its share of one core matches `cpu_limit_millis`.
pub(super) fn install_epoch_callback<T: 'static>(
    store: &mut Store<T>,
    stop: Arc<AtomicBool>,
    cpu_millis: Option<u64>,
) {
    let mut last = Instant::now();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if stop.load(Ordering::Relaxed) {
            return Ok(UpdateDeadline::Interrupt);
        }
        if let Some(millis) = cpu_millis.filter(|m| *m > 0 && *m < 1000) {
            let ran = last.elapsed();
            let pause = ran
                .mul_f64((1000 - millis) as f64 / millis as f64)
                .min(Duration::from_millis(500));
            let until = Instant::now() + pause;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep((until - Instant::now()).min(super::EPOCH_TICK));
            }
        }
        last = Instant::now();
        Ok(UpdateDeadline::Continue(1))
    });
}

/// How a guest run ended, from what the call returned.
fn classify(result: wasmtime::Result<Result<(), ()>>, stopped: bool) -> Exit {
    match result {
        Ok(Ok(())) => Exit {
            code: 0,
            reason: ExitReason::Completed,
            message: None,
        },
        Ok(Err(())) => Exit {
            code: 1,
            reason: ExitReason::Error,
            message: None,
        },
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                let code = exit.0;
                let reason = if code == 0 {
                    ExitReason::Completed
                } else {
                    ExitReason::Error
                };
                return Exit {
                    code,
                    reason,
                    message: None,
                };
            }
            let text = format!("{e:#}");
            if stopped {
                Exit {
                    code: KILLED_EXIT,
                    reason: ExitReason::Killed,
                    message: Some("stopped".into()),
                }
            } else if text.contains("forcing trap when growing memory") {
                Exit {
                    code: KILLED_EXIT,
                    reason: ExitReason::OOMKilled,
                    message: Some("linear memory limit reached".into()),
                }
            } else if text.contains("forcing trap when growing table") {
                Exit {
                    code: KILLED_EXIT,
                    reason: ExitReason::OOMKilled,
                    message: Some(
                        "table limit reached (tables count against the memory limit)".into(),
                    ),
                }
            } else {
                Exit {
                    code: TRAP_EXIT,
                    reason: ExitReason::Error,
                    message: Some(format!("wasm trap: {}", text.lines().next().unwrap_or(""))),
                }
            }
        }
    }
}

fn run_module(
    engine: &Engine,
    module: &wasmtime::Module,
    spec: &ContainerSpec,
    stop: Arc<AtomicBool>,
) -> wasmtime::Result<Result<(), ()>> {
    let wasi = wasi_builder(spec)?.build_p1();
    let mut store = Store::new(
        engine,
        P1 {
            wasi,
            limits: limits(spec),
        },
    );
    store.limiter(|s| &mut s.limits);
    install_epoch_callback(&mut store, stop, spec.cpu_limit_millis);
    let mut linker: Linker<P1> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| &mut s.wasi)?;
    let instance = linker.instantiate(&mut store, module)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    start.call(&mut store, ()).map(Ok)
}

fn run_component(
    engine: &Engine,
    component: &wasmtime::component::Component,
    spec: &ContainerSpec,
    stop: Arc<AtomicBool>,
) -> wasmtime::Result<Result<(), ()>> {
    let ctx = wasi_builder(spec)?.build();
    let mut store = Store::new(
        engine,
        P2 {
            ctx,
            table: ResourceTable::new(),
            limits: limits(spec),
            resolver: spec.resolver.clone(),
        },
    );
    store.limiter(|s| &mut s.limits);
    install_epoch_callback(&mut store, stop, spec.cpu_limit_millis);
    let mut linker = wasmtime::component::Linker::<P2>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    super::lookup::add_to_linker(&mut linker)?;
    let command =
        wasmtime_wasi::p2::bindings::sync::Command::instantiate(&mut store, component, &linker)?;
    command.wasi_cli_run().call_run(&mut store)
}

pub fn start(engine: &Engine, compiled: Compiled, spec: ContainerSpec) -> Result<Handle> {
    if let Compiled::Component(c) = &compiled {
        if super::http::is_handler(engine, c) {
            return super::http::serve(engine, c, spec);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (handle, exit) = Handle::new(move |grace, exit| {
        flag.store(true, Ordering::Relaxed);
        // A guest in wasm code stops at the next epoch tick. One blocked in a host call (a long
        // sleep) sees the stop only when the call returns: after the grace period the
        // supervisor gets its answer anyway, and the thread ends on its own later.
        let exit = exit.clone();
        let _ = std::thread::Builder::new()
            .name("wasm-stop".into())
            .spawn(move || {
                std::thread::sleep(grace);
                exit.send(Exit {
                    code: KILLED_EXIT,
                    reason: ExitReason::Killed,
                    message: Some("did not stop within its grace period".into()),
                });
            });
    });
    let engine = engine.clone();
    let id = spec.id.clone();
    std::thread::Builder::new()
        .name(format!("wasm:{id}"))
        .stack_size(8 << 20)
        .spawn(move || {
            let result = match &compiled {
                Compiled::Module(m) => run_module(&engine, m, &spec, stop.clone()),
                Compiled::Component(c) => run_component(&engine, c, &spec, stop.clone()),
            };
            exit.send(classify(result, stop.load(Ordering::Relaxed)));
        })
        .map_err(|e| Error::Start {
            id,
            message: format!("cannot start a thread: {e}"),
        })?;
    Ok(handle)
}
