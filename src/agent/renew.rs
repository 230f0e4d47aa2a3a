//! Keeping an enrolled computer's certificate fresh: once two thirds of its
//! lifetime have passed, the agent makes a new key pair and asks for a new
//! certificate over its mutual-TLS connection ([`Request::Renew`]), writes
//! both in place of the old ones (crash-safe, see
//! [`ClientPaths::replace`]), and connects with them from its next
//! connection on; the connection open now is kept.
//!
//! A computer that did not enroll (a hand-issued certificate) is refused
//! renewal and is not asked again until its agent restarts; one whose
//! certificate expired while it was off cannot connect at all, and must
//! enroll again with a new token (its log says so).

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use otpgate_protocol::{ErrorCode, Request, Response};

use super::link::Link;
use crate::tls::pki::{self, ClientPaths, cert_pem};

/// How long to wait before asking again after a renewal failed (the server
/// unreachable, its database away).
const RETRY: Duration = Duration::from_secs(60);

/// Renews the certificate in identity folder `identity` over `link` when it
/// is due, until `cancel` fires.
pub async fn keep_renewed(identity: PathBuf, link: Link, cancel: CancellationToken) {
    let paths = ClientPaths::new(&identity);
    loop {
        let cert = match pki::read_cert(&paths.cert).and_then(|der| pki::client_cert(&der)) {
            Ok(cert) => cert,
            Err(err) => {
                warn!(error = %err, "cannot read this computer's certificate; not renewing it");
                return;
            }
        };
        let now = otpgate_actors::Clock::now(&otpgate_actors::SystemClock).unix_seconds();
        if cert.expires <= now {
            error!(
                "this computer's certificate has expired: it cannot connect until it enrolls \
                 again with a new join token (otpgate agent enroll)"
            );
            return;
        }
        let due = cert.issued + (cert.expires - cert.issued) * 2 / 3;
        let wait = Duration::from_secs(u64::try_from(due - now).unwrap_or(0));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match renew(&paths, &cert.id.to_string(), &link).await {
            Ok(Renewed::Done) => {}
            Ok(Renewed::Refused) => return,
            Err(why) => {
                warn!(error = %why, "the certificate could not be renewed; trying again later");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// How one renewal ended.
enum Renewed {
    /// A new certificate is in place.
    Done,
    /// The server will not renew it.
    Refused,
}

/// Asks for a certificate for a new key of computer `name`, and puts both in
/// place.
async fn renew(paths: &ClientPaths, name: &str, link: &Link) -> Result<Renewed, String> {
    let (key, csr) = pki::key_and_request(name).map_err(|err| err.to_string())?;
    match link.call(Request::Renew { csr }).await {
        Ok(Response::Renewed {
            certificate,
            expires_ms,
        }) if pki::certifies(&certificate, &key) => {
            let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
            paths
                .replace(&cert_pem(&certificate), &key_pem)
                .map_err(|err| format!("cannot write the renewed certificate: {err}"))?;
            let dir = paths.cert.parent().unwrap_or(&paths.cert);
            let tls = crate::tls::client_config(dir).map_err(|err| err.to_string())?;
            link.use_tls(tls);
            info!(
                until = %otpgate_actors::Timestamp::from_unix_millis(expires_ms).rfc3339(),
                "certificate renewed; used from the next connection on"
            );
            Ok(Renewed::Done)
        }
        Ok(Response::Fail(ErrorCode::CertificateRefused | ErrorCode::Unsupported)) => {
            warn!(
                "the server does not renew this computer's certificate (it did not enroll with \
                 a join token, or the server is older); renew it by hand before it expires"
            );
            Ok(Renewed::Refused)
        }
        Ok(Response::Renewed { .. }) => {
            Err("the server's certificate is not for the key this computer made".into())
        }
        Ok(Response::Fail(code)) => Err(format!("the server answered {code:?}")),
        Ok(_) => Err("the server answered something else than a certificate".into()),
        Err(err) => Err(err.to_string()),
    }
}
