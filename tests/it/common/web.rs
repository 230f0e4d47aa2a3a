//! A browser-like HTTPS client of the web Management Tool: trusts the
//! server's CA, keeps cookies, and does not follow redirects (the tests look
//! at them).

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::redirect::Policy;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::server::TestServer;

/// One browser: its own cookies.
pub struct WebClient {
    client: reqwest::Client,
    base: String,
}

impl WebClient {
    /// A client of `server`'s Management Tool.
    pub fn new(server: &TestServer) -> Self {
        let ca = CertificateDer::from_pem_file(server.data_dir().join("pki/ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .cookie_store(true)
            .redirect(Policy::none())
            .resolve("localhost", server.web)
            .build()
            .unwrap();
        Self {
            client,
            base: base(server.web),
        }
    }

    /// Sends what comes next to `server`'s Management Tool, with the same
    /// cookies (as a load balancer in front of a site's servers would).
    pub fn switch_to(&mut self, server: &TestServer) {
        self.base = base(server.web);
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// POST `form` to `path`, from this site (as a browser's form would).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("origin", &self.base)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// POST `form` to `path` with headers `headers`.
    pub async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.post(format!("{}{path}", self.base)).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Signs in as `login` with `password`; the answer.
    pub async fn sign_in(&self, login: &str, password: &str) -> reqwest::Response {
        self.post(
            "/signin",
            &[
                ("login", login),
                ("password", password),
                ("next", "/requests"),
            ],
        )
        .await
    }

    /// The page at `path`, as text, and the CSRF token its forms carry.
    pub async fn page(&self, path: &str) -> (String, String) {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let html = response.text().await.unwrap();
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        (html, csrf)
    }
}

/// The Management Tool's address as a browser sees it.
pub fn base(web: SocketAddr) -> String {
    format!("https://localhost:{}", web.port())
}
