//! Container probes, as the kubelet runs them: `startupProbe`, `livenessProbe` and
//! `readinessProbe`, each `httpGet`, `tcpSocket` or (OCI containers) `exec`, every
//! `periodSeconds` after `initialDelaySeconds`, each try given `timeoutSeconds`. A probe's
//! result changes after `failureThreshold` failures or `successThreshold` successes in a row
//! ([`Tracker`], no I/O); the supervisor acts on the changes: readiness gates the pod's Ready
//! condition (and so its endpoints), a failed liveness or startup probe restarts the container.

use shoal_api::{IntOrString, Probe};
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe: they differ in what they start as and what a failure does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// A probe's settings with the kubelet's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Settings {
    pub fn of(p: &Probe, kind: Kind) -> Settings {
        let secs = |v: Option<i32>, d: u64| Duration::from_secs(v.map_or(d, |n| n.max(0) as u64));
        let count = |v: Option<i32>, d: u32| v.map_or(d, |n| n.max(1) as u32);
        Settings {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            // Liveness and startup probes must succeed once to count as succeeding.
            success_threshold: match kind {
                Kind::Readiness => count(p.success_threshold, 1),
                _ => 1,
            },
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// Consecutive results, and the probe's current verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    settings: Settings,
    kind: Kind,
    successes: u32,
    failures: u32,
    /// Readiness and startup start failing (not yet known good); liveness starts passing.
    pub passing: bool,
}

impl Tracker {
    pub fn new(settings: Settings, kind: Kind) -> Tracker {
        Tracker {
            settings,
            kind,
            successes: 0,
            failures: 0,
            passing: kind == Kind::Liveness,
        }
    }

    /// Records one try; returns the new verdict when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if !self.passing && self.successes >= self.settings.success_threshold {
                self.passing = true;
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.passing && self.failures >= self.settings.failure_threshold {
                self.passing = false;
                return Some(false);
            }
            // A startup probe that never passed fails for good at the threshold too.
            if self.kind == Kind::Startup
                && !self.passing
                && self.failures == self.settings.failure_threshold
            {
                return Some(false);
            }
        }
        None
    }
}

/// What one try of a probe came to, for the caller to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The try failed, saying why (an Unhealthy event).
    Failed(String),
    /// The probe's verdict changed.
    Verdict(bool),
}

/// Runs `attempt` on the probe's timing (once after the initial delay, then every period),
/// hands each step to `on_step`, and stops when `on_step` says so or `cancel` fires. The
/// timing lives here, apart from any I/O, so it is tested with paused time.
pub async fn schedule<A, AFut, S, SFut>(
    settings: &Settings,
    kind: Kind,
    cancel: &tokio_util::sync::CancellationToken,
    mut attempt: A,
    mut on_step: S,
) where
    A: FnMut() -> AFut,
    AFut: std::future::Future<Output = Result<(), String>>,
    S: FnMut(Step) -> SFut,
    SFut: std::future::Future<Output = std::ops::ControlFlow<()>>,
{
    let mut tracker = Tracker::new(settings.clone(), kind);
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(settings.initial_delay) => {}
    }
    loop {
        let outcome = attempt().await;
        let ok = outcome.is_ok();
        if let Err(why) = outcome {
            if on_step(Step::Failed(why)).await.is_break() {
                return;
            }
        }
        if let Some(verdict) = tracker.observe(ok) {
            if on_step(Step::Verdict(verdict)).await.is_break() {
                return;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(settings.period) => {}
        }
    }
}

/// The port a probe names, resolved against the container's ports.
fn port(p: &IntOrString, c: &shoal_api::Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("the container has no port named {name:?}")),
    }
}

/// Runs one try of `probe` against a container reached at `ip`; `exec` runs a command in it
/// (OCI) and gives its exit code. `Err` says why the try failed.
pub async fn run<F, Fut>(
    probe: &Probe,
    container: &shoal_api::Container,
    ip: IpAddr,
    timeout: Duration,
    exec: F,
) -> Result<(), String>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(i32, String), String>>,
{
    let attempt = async {
        if let Some(h) = &probe.http_get {
            let port = port(&h.port, container)?;
            let host: IpAddr = match &h.host {
                Some(host) => host
                    .parse()
                    .map_err(|_| format!("httpGet.host {host:?} is not an IP address"))?,
                None => ip,
            };
            if h.scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
            {
                return Err("httpGet with scheme HTTPS is not supported".to_string());
            }
            http_get(host, port, h.path.as_deref().unwrap_or("/")).await
        } else if let Some(t) = &probe.tcp_socket {
            let port = port(&t.port, container)?;
            let host: IpAddr = match &t.host {
                Some(host) => host
                    .parse()
                    .map_err(|_| format!("tcpSocket.host {host:?} is not an IP address"))?,
                None => ip,
            };
            tokio::net::TcpStream::connect((host, port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else if let Some(x) = &probe.exec {
            match exec(x.command.clone()).await? {
                (0, _) => Ok(()),
                (code, out) => Err(format!(
                    "command {:?} exited with {code}: {}",
                    x.command,
                    out.trim()
                )),
            }
        } else {
            Err("the probe has no handler".to_string())
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

/// An HTTP/1.1 GET: a status from 200 to 399 succeeds, as for the kubelet.
async fn http_get(host: IpAddr, port: u16, path: &str) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: shoal-probe/1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("Get \"http://{host}:{port}{path}\": {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: Option<u16> = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok());
    match status {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        None => Err(format!(
            "Get \"http://{host}:{port}{path}\": not an HTTP answer"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(success: u32, failure: u32) -> Settings {
        Settings {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn verdicts_change_after_thresholds_in_a_row() {
        let mut r = Tracker::new(settings(2, 3), Kind::Readiness);
        assert!(!r.passing);
        assert_eq!(r.observe(true), None);
        assert_eq!(r.observe(true), Some(true));
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(true), None, "a success resets the failures");
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(false), None);
        assert_eq!(r.observe(false), Some(false));
        assert_eq!(r.observe(true), None);
        assert_eq!(r.observe(true), Some(true));

        let mut l = Tracker::new(settings(1, 2), Kind::Liveness);
        assert!(l.passing, "liveness starts passing");
        assert_eq!(l.observe(false), None);
        assert_eq!(l.observe(false), Some(false));

        let mut s = Tracker::new(settings(1, 2), Kind::Startup);
        assert_eq!(s.observe(false), None);
        assert_eq!(
            s.observe(false),
            Some(false),
            "a startup probe that never passed fails"
        );
        let mut s = Tracker::new(settings(1, 2), Kind::Startup);
        assert_eq!(s.observe(true), Some(true));
    }

    #[test]
    fn defaults_are_the_kubelets() {
        let p = Probe::default();
        let s = Settings::of(&p, Kind::Readiness);
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        let p = Probe {
            success_threshold: Some(4),
            ..Default::default()
        };
        assert_eq!(Settings::of(&p, Kind::Liveness).success_threshold, 1);
    }

    #[tokio::test]
    async fn http_and_tcp_probes_against_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let answer: &[u8] = if req.starts_with("GET /healthz ") {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                };
                let _ = s.write_all(answer).await;
            }
        });
        let container = shoal_api::Container {
            ports: vec![shoal_api::ContainerPort {
                container_port: i32::from(port),
                name: Some("http".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let http = |path: &str| Probe {
            http_get: Some(shoal_api::HttpGetAction {
                path: Some(path.into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let no_exec = |_| async { Err::<(i32, String), _>("no exec".to_string()) };
        let t = Duration::from_secs(2);
        run(&http("/healthz"), &container, ip, t, no_exec)
            .await
            .expect("200");
        let e = run(&http("/other"), &container, ip, t, no_exec)
            .await
            .unwrap_err();
        assert!(e.contains("statuscode: 503"), "{e}");
        let tcp = |p: i32| Probe {
            tcp_socket: Some(shoal_api::TcpSocketAction {
                port: IntOrString::Int(p),
                host: None,
            }),
            ..Default::default()
        };
        run(&tcp(i32::from(port)), &container, ip, t, no_exec)
            .await
            .expect("tcp");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let e = run(&tcp(i32::from(closed_port)), &container, ip, t, no_exec)
            .await
            .unwrap_err();
        assert!(e.contains("refused"), "{e}");
        let missing = Probe {
            tcp_socket: Some(shoal_api::TcpSocketAction {
                port: IntOrString::String("grpc".into()),
                host: None,
            }),
            ..Default::default()
        };
        let e = run(&missing, &container, ip, t, no_exec).await.unwrap_err();
        assert!(e.contains("no port named \"grpc\""), "{e}");
        let exec = Probe {
            exec: Some(shoal_api::ExecAction {
                command: vec!["false".into()],
            }),
            ..Default::default()
        };
        let e = run(&exec, &container, ip, t, |_| async {
            Ok((1, "nope\n".to_string()))
        })
        .await
        .unwrap_err();
        assert!(e.contains("exited with 1: nope"), "{e}");
    }

    /// A probe's steps against a scripted sequence of outcomes, with the (paused) time each
    /// step came at since the container started.
    async fn steps(settings: Settings, kind: Kind, outcomes: Vec<bool>) -> Vec<(u64, Step)> {
        let start = tokio::time::Instant::now();
        let cancel = tokio_util::sync::CancellationToken::new();
        let outcomes = std::cell::RefCell::new(outcomes.into_iter());
        let seen = std::cell::RefCell::new(Vec::new());
        let attempt = || {
            let ok = outcomes.borrow_mut().next();
            async move {
                match ok {
                    Some(true) => Ok(()),
                    Some(false) => Err("refused".to_string()),
                    None => std::future::pending().await,
                }
            }
        };
        let on_step = |step: Step| {
            let stop = matches!(step, Step::Verdict(false)) && kind != Kind::Readiness;
            seen.borrow_mut().push((start.elapsed().as_secs(), step));
            async move {
                if stop {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            }
        };
        let run = schedule(&settings, kind, &cancel, attempt, on_step);
        // Ends when the probe stops, or when the script runs out (the attempt then never
        // ends, and the paused clock jumps the timeout).
        let _ = tokio::time::timeout(Duration::from_secs(3600), run).await;
        seen.into_inner()
    }

    fn timing(initial: u64, period: u64, success: u32, failure: u32) -> Settings {
        Settings {
            initial_delay: Duration::from_secs(initial),
            period: Duration::from_secs(period),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_fails_after_the_initial_delay_and_threshold_periods() {
        let failed = |t| (t, Step::Failed("refused".into()));
        // initialDelaySeconds 5, periodSeconds 2, failureThreshold 3: the first try at 5 s
        // passes; those at 7, 9 and 11 s fail, and the third failure in a row (at 11 s)
        // restarts the container.
        let got = steps(
            timing(5, 2, 1, 3),
            Kind::Liveness,
            vec![true, false, false, false],
        )
        .await;
        assert_eq!(
            got,
            vec![failed(7), failed(9), failed(11), (11, Step::Verdict(false))]
        );
        // A success between failures starts the count over.
        let got = steps(
            timing(0, 10, 1, 2),
            Kind::Liveness,
            vec![false, true, false, false],
        )
        .await;
        assert_eq!(got.last(), Some(&(30, Step::Verdict(false))));
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_comes_and_goes_with_its_thresholds() {
        // successThreshold 2: ready after the second success in a row; not ready after
        // failureThreshold (1) failures; ready again after two more successes.
        let got = steps(
            timing(0, 1, 2, 1),
            Kind::Readiness,
            vec![true, true, false, true, true],
        )
        .await;
        assert_eq!(
            got,
            vec![
                (1, Step::Verdict(true)),
                (2, Step::Failed("refused".into())),
                (2, Step::Verdict(false)),
                (4, Step::Verdict(true)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_startup_probe_that_never_passes_fails_at_its_threshold() {
        let got = steps(timing(0, 5, 1, 2), Kind::Startup, vec![false, false, true]).await;
        assert_eq!(got.last(), Some(&(5, Step::Verdict(false))));
        assert_eq!(got.len(), 3, "two failures, then the verdict: {got:?}");
    }
}
