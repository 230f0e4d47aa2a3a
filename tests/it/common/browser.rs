//! A real Chromium, headless, driven over WebDriver by Debian's chromedriver,
//! which the fixture starts on a 127.0.0.1 port of its own and stops (with the
//! browsers it started) on drop. Without Debian's `chromium` and
//! `chromium-driver` installed the browser tests say so and pass.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use thirtyfour::prelude::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver and one browser session.
pub struct Browser {
    pub driver: Option<WebDriver>,
    chromedriver: Child,
    /// Where screenshots go.
    pub shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (said) when they are
    /// not installed.
    pub async fn start(test: &str) -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            super::skip(test, "it needs Debian's chromium and chromium-driver");
            return None;
        }
        let (port, chromedriver) = super::retry_start("chromedriver", || {
            let port = super::free_port();
            let mut chromedriver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group: dropped, it goes with every browser it began.
                .process_group(0)
                .spawn()
                .unwrap();
            for _ in 0..100 {
                if let Ok(Some(status)) = chromedriver.try_wait() {
                    return Err(format!("chromedriver exited ({status})"));
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok((port, chromedriver));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = chromedriver.kill();
            let _ = chromedriver.wait();
            Err("chromedriver did not listen".into())
        });
        // thirtyfour's HTTP client takes the process's default TLS provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary(CHROMIUM).unwrap();
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ] {
            caps.add_arg(arg).unwrap();
        }
        caps.accept_insecure_certs(true).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut driver = None;
        for _ in 0..100 {
            match WebDriver::new(&url, caps.clone()).await {
                Ok(started) => {
                    driver = Some(started);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Some(Self {
            driver: Some(driver.expect("chromedriver did not start a browser")),
            chromedriver,
            shots,
        })
    }

    pub fn driver(&self) -> &WebDriver {
        self.driver.as_ref().unwrap()
    }

    /// Saves a screenshot of the page as `name`.png.
    pub async fn shot(&self, name: &str) {
        self.driver()
            .screenshot(&self.shots.join(format!("{name}.png")))
            .await
            .unwrap();
    }

    /// Ends the browser session, then chromedriver.
    pub async fn quit(mut self) {
        if let Some(driver) = self.driver.take() {
            let _ = driver.quit().await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-i32::try_from(self.chromedriver.id()).unwrap());
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.chromedriver.wait();
    }
}
