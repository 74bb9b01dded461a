//! A container's probes while it runs, on the timing [`crate::probe`] decides.

use super::events::event;
use super::status::report;
use super::{Inner, PodRun, Slot};
use crate::sync::lock;
use shoal_api::RuntimeClass;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Runs a container's probes while it runs: the startup probe until it passes, then liveness
/// and readiness side by side. Readiness changes the container's ready state and reports it;
/// a liveness (or startup) failure sends why on `unhealthy`, and the container is restarted.
pub(super) async fn probe_container(
    inner: Arc<Inner>,
    state: Arc<Mutex<PodRun>>,
    slot: Slot,
    key: String,
    cancel: CancellationToken,
    unhealthy: tokio::sync::mpsc::Sender<String>,
) {
    use crate::probe::{Kind, Settings, Step};
    let Some((pod, container, ip)) = target(&lock(&state), slot) else {
        return;
    };
    if container.startup_probe.is_none()
        && container.liveness_probe.is_none()
        && container.readiness_probe.is_none()
    {
        return;
    }
    let runc = inner
        .runc
        .clone()
        .filter(|_| pod.runtime_class() == RuntimeClass::Runc);
    let exec = |argv: Vec<String>| {
        let runc = runc.clone();
        let key = key.clone();
        async move {
            let Some(runc) = runc else {
                return Err(
                    "exec probes run in OCI containers; a wasm pod has no processes to exec into"
                        .to_string(),
                );
            };
            let mut cmd = tokio::process::Command::from(runc.exec_command(&key, &argv, false));
            cmd.kill_on_drop(true);
            let out = cmd.output().await.map_err(|e| format!("runc exec: {e}"))?;
            let mut text = String::from_utf8_lossy(&out.stdout).to_string();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok((out.status.code().unwrap_or(-1), text))
        }
    };
    // One probe's loop: failures become events, verdicts change the container's state.
    let probe_loop = |kind: Kind, probe: shoal_api::Probe| {
        let (inner, state, pod, container) =
            (inner.clone(), state.clone(), pod.clone(), container.clone());
        let (cancel, unhealthy) = (cancel.clone(), unhealthy.clone());
        async move {
            let settings = Settings::of(&probe, kind);
            let attempt = || crate::probe::run(&probe, &container, ip, settings.timeout, exec);
            let on_step = |step: Step| {
                let (inner, state, pod, unhealthy) =
                    (inner.clone(), state.clone(), pod.clone(), unhealthy.clone());
                async move {
                    match (kind, step) {
                        (_, Step::Failed(why)) => {
                            let message = format!("{} probe failed: {why}", kind.name());
                            event(&inner, &pod, "Warning", "Unhealthy", message).await;
                        }
                        (Kind::Startup, Step::Verdict(true)) => {
                            lock(&state).slot(slot).startup_passed = true;
                            report(&inner, &state).await;
                            return ControlFlow::Break(());
                        }
                        (Kind::Readiness, Step::Verdict(ready)) => {
                            lock(&state).slot(slot).probe_ready = ready;
                            report(&inner, &state).await;
                        }
                        (Kind::Startup, Step::Verdict(false)) => {
                            let _ = unhealthy.send("failed startup probe".into()).await;
                            return ControlFlow::Break(());
                        }
                        (Kind::Liveness, Step::Verdict(false)) => {
                            let _ = unhealthy.send("failed liveness probe".into()).await;
                            return ControlFlow::Break(());
                        }
                        (Kind::Liveness, Step::Verdict(true)) => {}
                    }
                    ControlFlow::Continue(())
                }
            };
            crate::probe::schedule(&settings, kind, &cancel, attempt, on_step).await;
        }
    };
    if let Some(p) = container.startup_probe.clone() {
        probe_loop(Kind::Startup, p).await;
        let passed = lock(&state).slot(slot).startup_passed;
        if !passed || cancel.is_cancelled() {
            return;
        }
    }
    let liveness = container.liveness_probe.clone();
    let readiness = container.readiness_probe.clone();
    tokio::join!(
        async {
            if let Some(p) = liveness {
                probe_loop(Kind::Liveness, p).await
            }
        },
        async {
            if let Some(p) = readiness {
                probe_loop(Kind::Readiness, p).await
            }
        },
    );
}

/// The pod, the container and the address its probes go to: a pod with a network of its own
/// at its address; the rest (wasm, hostNetwork) on the node's loopback.
fn target(s: &PodRun, slot: Slot) -> Option<(shoal_api::Pod, shoal_api::Container, IpAddr)> {
    let c = s.spec_of(slot)?.clone();
    let ip = s
        .pod_ip
        .as_deref()
        .filter(|_| !s.pod.spec.host_network)
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    Some((s.pod.clone(), c, ip))
}
