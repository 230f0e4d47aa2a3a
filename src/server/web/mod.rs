//! The web Management Tool: `otpgate serve` also serves it over HTTPS (TLS 1.2
//! and 1.3, rustls), server-rendered pages that work without JavaScript (a
//! small script only converts times and keeps the pending count live): the
//! approvers' pages ([`views`]) and the administrators' ([`manage`]), behind
//! sign-in ([`signin`], sessions in [`auth`]).
//!
//! A thin adapter over the admin service ([`crate::server::service`]), as the
//! admin socket is: the pages call its typed operations as the signed-in
//! [`crate::server::service::Principal`], which decides what they may see and
//! do and writes the audit log; the web holds no store. Every change is a POST
//! carrying the session's CSRF token ([`auth::Posted`]), from our own origin;
//! every answer carries the security headers (CSP without inline script,
//! `frame-ancestors 'none'`, no referrer, HSTS).

mod auth;
mod manage;
mod recordings;
mod signin;
mod views;

pub use auth::Sessions;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::server::config::WebConfig;
use crate::server::service::AdminService;

/// What every handler works with.
#[derive(Clone)]
pub struct App {
    /// The Management Tool's operations, shared with the socket.
    service: Arc<AdminService>,
    /// Who is signed in.
    sessions: Arc<auth::Sessions>,
}

/// The Management Tool's port, bound, with its own certificate and key if the
/// configuration names them (read now, before anything is written).
pub struct Listener {
    listener: std::net::TcpListener,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl Listener {
    /// Reads the certificate and key `config` names, if any, and binds
    /// `config.listen`.
    pub fn bind(config: &WebConfig) -> Result<Self, WebError> {
        let identity = match &config.identity {
            Some((cert, key)) => Some((read_chain(cert)?, read_key(key)?)),
            None => None,
        };
        let bind_error = |source| WebError::Bind {
            addr: config.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        Ok(Self { listener, identity })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The Management Tool, bound and ready to serve.
pub struct Web {
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
}

/// Why the Management Tool could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Its certificate or key could not be read.
    #[error("web certificate {}: {reason}", path.display())]
    Identity {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("web TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl Web {
    /// Serves on `listener` with its own certificate, or with `chain` and
    /// `key` (the server's own) when the configuration names none.
    pub fn new(
        listener: Listener,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, WebError> {
        let (chain, key) = listener.identity.unwrap_or((chain, key));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            listener: listener.listener,
            tls: Arc::new(tls),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires, then lets requests in flight finish for a
    /// few seconds; who is signed in is kept in `sessions`.
    pub async fn serve(
        self,
        service: Arc<AdminService>,
        sessions: auth::Sessions,
        cancel: CancellationToken,
    ) {
        let app = App {
            service,
            sessions: Arc::new(sessions),
        };
        let addr = self.local_addr().ok();
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            stopper.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        let config = axum_server::tls_rustls::RustlsConfig::from_config(self.tls);
        let server = match axum_server::from_tcp_rustls(self.listener, config) {
            Ok(server) => server,
            Err(err) => {
                warn!(error = %err, "the Management Tool cannot serve");
                return;
            }
        };
        info!(?addr, "Management Tool listening");
        let service = router(app).into_make_service_with_connect_info::<SocketAddr>();
        if let Err(err) = server.handle(handle).serve(service).await {
            warn!(error = %err, "the Management Tool stopped");
        }
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, WebError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|err| WebError::Identity {
            path: path.to_owned(),
            reason: err.to_string(),
        })
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, WebError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_file(path).map_err(|err| WebError::Identity {
        path: path.to_owned(),
        reason: err.to_string(),
    })
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(views::home))
        .route("/signin", get(signin::signin_page).post(signin::signin))
        .route("/signout", post(signin::signout))
        .route("/requests", get(views::requests))
        .route("/requests/{id}/decide", post(views::decide))
        .route(
            "/requests/decide",
            get(views::link_page).post(views::link_decide),
        )
        .route("/sessions", get(views::sessions))
        .route(
            "/settings",
            get(manage::settings).post(manage::settings_set),
        )
        .route("/clients", get(manage::clients))
        .route(
            "/clients/{name}",
            get(manage::client).post(manage::client_set),
        )
        .route(
            "/clients/{name}/offline",
            get(manage::offline).post(manage::offline_issue),
        )
        .route("/clients/{name}/offline/void", post(manage::offline_void))
        .route("/groups", get(manage::group_open))
        .route("/groups/{name}", get(manage::group).post(manage::group_set))
        .route("/users", get(manage::users).post(manage::user_add))
        .route("/users/{login}", post(manage::user_set))
        .route("/otp", get(manage::otp).post(manage::otp_generate))
        .route("/audit", get(manage::audit))
        .route("/mail", get(manage::mail))
        .route("/mail/test", post(manage::mail_test))
        .route(
            "/profile",
            get(manage::profile).post(manage::profile_password),
        )
        .route("/events", get(views::events))
        .route(
            "/static/app.css",
            get(|| asset(CSS, include_str!("../../../static/app.css"))),
        )
        .route(
            "/static/app.js",
            get(|| asset(JS, include_str!("../../../static/app.js"))),
        )
        .route("/recordings", get(recordings::search))
        .route("/recordings/{id}", get(recordings::play))
        .route("/recordings/{id}/cast", get(recordings::cast))
        .route(
            "/static/asciinema-player.js",
            get(|| {
                asset(
                    JS,
                    include_str!("../../../static/vendor/asciinema-player/asciinema-player.min.js"),
                )
            }),
        )
        .route(
            "/static/asciinema-player.css",
            get(|| {
                asset(
                    CSS,
                    include_str!("../../../static/vendor/asciinema-player/asciinema-player.css"),
                )
            }),
        )
        .layer(middleware::from_fn(guard))
        .with_state(app)
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// A file of ours built into the binary, as `content_type`.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Refuses state changes from other origins, and puts the security headers
/// on every answer.
async fn guard(request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let headers = request.headers();
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let host = host.or_else(|| request.uri().authority().map(|a| a.as_str()));
        let site = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok());
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let refused = match (site, origin) {
            (Some(site), _) if site != "same-origin" && site != "none" => true,
            // Under `Referrer-Policy: no-referrer` browsers send `Origin: null`
            // with forms; their Sec-Fetch-Site says where the form was.
            (_, Some("null")) => site != Some("same-origin"),
            (_, Some(origin)) => Some(origin.trim_start_matches("https://")) != host,
            (_, None) => false,
        };
        if refused {
            return (StatusCode::FORBIDDEN, "refused: not from this site").into_response();
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    // A page that needs more (the recording player) says so itself.
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ));
    for (name, value) in [
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// What a query's value keeps as it is: RFC 3986's unreserved characters and
/// `/` (a path carried in `next=` stays readable).
const QUERY_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// `text` escaped for a URL's query.
pub fn query_escape(text: &str) -> String {
    utf8_percent_encode(text, QUERY_KEEPS).to_string()
}
