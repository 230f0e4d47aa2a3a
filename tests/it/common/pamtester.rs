//! `pamtester` driving a PAM service the test wrote, its conversation on
//! pipes, as a person at the prompts would.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::system::PamService;

/// `pamtester` running operations `ops` of service `service` for `user`, its
/// conversation on pipes. Its conversation reads an answer with one `read`, so
/// each line is typed only once its prompt is shown.
pub struct Pamtester {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Everything shown so far, stdout and stderr as they came.
    shown: Arc<Mutex<String>>,
    /// How much of `shown` prompts already answered.
    seen: usize,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Pamtester {
    pub fn start(service: &PamService, user: &str, ops: &[&str]) -> Self {
        // Unbuffered: its notes (stdout) show before the prompts that follow.
        let mut child = Command::new("stdbuf")
            .args(["-o0", "pamtester", service.name.as_str(), user])
            .args(ops)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let shown = Arc::new(Mutex::new(String::new()));
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [stdout, stderr]
            .into_iter()
            .map(|mut stream| {
                let shown = Arc::clone(&shown);
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(read) = stream.read(&mut chunk) {
                        if read == 0 {
                            return;
                        }
                        shown
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&chunk[..read]));
                    }
                })
            })
            .collect();
        Self {
            child,
            stdin,
            shown,
            seen: 0,
            readers,
        }
    }

    /// Waits for `prompt` to be shown, then types `line`.
    pub async fn answer(&mut self, prompt: &str, line: &str) {
        self.answer_first(&[(prompt, line)]).await;
    }

    /// Waits for the first of `prompts` to be shown, types its line, and
    /// says which it was.
    pub async fn answer_first(&mut self, prompts: &[(&str, &str)]) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (which, line) = loop {
            {
                let shown = self.shown.lock().unwrap();
                let first = prompts
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (prompt, line))| {
                        let at = shown[self.seen..].find(prompt)?;
                        Some((at, i, prompt.len(), *line))
                    })
                    .min();
                if let Some((at, which, len, line)) = first {
                    self.seen += at + len;
                    break (which, line);
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "none of {prompts:?} in {shown}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        which
    }

    /// Closes the conversation and waits: whether every operation succeeded,
    /// and all it showed.
    pub async fn finish(mut self) -> (bool, String) {
        drop(self.stdin.take());
        let (status, readers) = tokio::task::spawn_blocking(move || {
            let status = self.child.wait().unwrap();
            (status, self.readers)
        })
        .await
        .unwrap();
        for reader in readers {
            reader.join().unwrap();
        }
        let shown = self.shown.lock().unwrap().clone();
        (status.success(), shown)
    }
}

/// The first window after an OTP was sent: the address (typed if only its
/// masked form is known), then the OTP.
pub async fn otp_window(pam: &mut Pamtester, email: &str, code: &str) {
    let asked = pam
        .answer_first(&[("Email address (", email), ("One-time password", code)])
        .await;
    if asked == 0 {
        pam.answer("One-time password", code).await;
    }
}
