//! A real SMTP relay for the mail tests.

use super::wait_until;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A real SMTP server (Debian's aiosmtpd) on a loopback port, for as long as
/// this lives.
pub struct SmtpServer {
    pub port: u16,
    pub out: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl SmtpServer {
    /// A server writing into `out`, with `args` (`--tls-cert`, `--user`, `--drop`…);
    /// not started. Its first start takes a free port.
    pub fn new(out: PathBuf, args: &[&str]) -> Self {
        Self {
            port: 0,
            out,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Starts it and waits until it listens: on a free port the first time, on
    /// the port it had after that.
    pub fn start(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/common/smtp_server.py");
        // Debian's python3, which has python3-aiosmtpd (scripts/test installs it).
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--port", &self.port.to_string(), "--out"])
            .arg(&self.out)
            .args(&self.args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        self.port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP server did not start: {line:?}"));
        self.child = Some(child);
    }

    /// Stops it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The messages it accepted, in order of arrival.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.out) else {
            return Vec::new();
        };
        let mut messages: Vec<(u128, String)> = entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                (path.extension()? == "eml").then_some(())?;
                let arrival = path
                    .file_stem()?
                    .to_str()?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                Some((arrival, std::fs::read_to_string(&path).ok()?))
            })
            .collect();
        messages.sort();
        messages.into_iter().map(|(_, text)| text).collect()
    }

    /// Waits until it has accepted at least `count` messages, and returns them.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<String> {
        let mut messages = Vec::new();
        wait_until(
            within,
            &format!("{count} messages at the SMTP server"),
            || {
                messages = self.messages();
                let enough = messages.len() >= count;
                async move { enough }
            },
        )
        .await;
        messages
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
