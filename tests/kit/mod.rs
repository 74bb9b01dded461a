//! The test kit: starts real `shoal` processes, each with its own data dir, and runs the CLI
//! against them. Every end-to-end test goes through it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn shoal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// A `shoal controller` process.
pub struct Controller {
    child: Option<Child>,
    pub dir: PathBuf,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Controller {
    /// Starts a controller on `dir`, on a free loopback port, and waits until it serves.
    pub fn start(dir: &Path) -> Controller {
        let mut child = Command::new(shoal_bin())
            .args(["controller", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("SHOAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal controller");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("shoal controller listening on ") {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("controller did not start:\n{}", log.lock().unwrap());
            }
        };
        Controller {
            child: Some(child),
            dir: dir.to_path_buf(),
            addr,
            log,
        }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("admin.conf")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Runs the CLI against this controller.
    pub fn shoal(&self, args: &[&str]) -> Run {
        self.shoal_stdin(args, None)
    }

    pub fn shoal_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(shoal_bin());
        cmd.args(args)
            .env("SHOAL_CONFIG", self.config())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn shoal");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        Run(child.wait_with_output().expect("wait for shoal"))
    }

    /// SIGKILL, as a power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn credentials(&self) -> shoal_transport::Credentials {
        shoal_transport::Credentials::load(&self.config()).expect("admin.conf")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The outcome of one CLI run, with helpers that say what went wrong when a test fails.
pub struct Run(pub Output);

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(
            self.0.status.success(),
            "shoal failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.0.status,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn fails(&self) -> String {
        assert!(
            !self.0.status.success(),
            "shoal should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
