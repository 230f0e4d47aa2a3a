//! Enrollment: a client computer holding a join token, and no certificate
//! yet, asks on the agents' port (ALPN `otpgate-enroll/1`, no client
//! certificate) for a certificate for the key pair it made; the server checks
//! the token and the name, signs the request with the site's CA, puts the
//! computer in the token's group, and answers with the certificate and the
//! CA's. The computer's private key never reaches the server.
//!
//! One enrollment at a time per site ([`Enroller::turn`]: a lock of this
//! process and, over PostgreSQL, the site's enrollment lock), so that a
//! token's uses are counted exactly and one name goes to one computer. The
//! token's use, the enrollment record and the audit entry are one commit;
//! the answer goes out only after it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::MutexGuard;
use tracing::{info, warn};

use otpgate_actors::audit::{Action, AuditEntry, Who};
use otpgate_actors::enroll::{Enrollment, JoinToken, Refusal};
use otpgate_actors::settings::OptionsPatch;
use otpgate_actors::store::{Alone, Exclusive};
use otpgate_actors::{Clock, ComputerId, Computers, Store, StoreError, Timestamp};
use otpgate_protocol::enroll::{EnrollError, EnrollErrorCode, EnrollRequest, EnrollResponse};
use otpgate_protocol::version::{ENROLL, Message};
use otpgate_protocol::{ErrorCode, Response};

use super::live::Live;
use crate::frames::{FrameReader, FrameWriter};
use crate::tls::pki::{Ca, Issued, PkiError};
use crate::tls::revoked::Revocations;
use crate::tls::token::JoinTokenText;

/// How long a computer has to send its request once connected.
const REQUEST_WITHIN: Duration = Duration::from_secs(10);
/// Enrollments one address may ask for per minute (bursts of this): a
/// building of computers started at once, not a flood.
const PER_SOURCE_PER_MINUTE: u32 = 600;

/// What enrolls computers, and makes and revokes join tokens.
pub struct Enroller {
    store: Arc<dyn Store>,
    computers: Computers,
    revocations: Arc<Revocations>,
    live: Arc<Live>,
    clock: Arc<dyn Clock>,
    /// The site's CA, which signs computers' certificates.
    pub(crate) ca: Ca,
    /// How long an enrolled computer's certificate lasts.
    lifetime: time::Duration,
    /// Held by the enrollment (or token change) under way in this process.
    turn: tokio::sync::Mutex<()>,
    per_source: DefaultKeyedRateLimiter<IpAddr>,
}

/// Why a computer was refused: the code and words it is told.
type Refused = (EnrollErrorCode, String);

impl Enroller {
    /// An enroller signing with `ca` certificates that last `lifetime`.
    pub fn new(
        store: Arc<dyn Store>,
        computers: Computers,
        revocations: Arc<Revocations>,
        live: Arc<Live>,
        clock: Arc<dyn Clock>,
        ca: Ca,
        lifetime: Duration,
    ) -> Self {
        let per_minute = NonZeroU32::new(PER_SOURCE_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Self {
            store,
            computers,
            revocations,
            live,
            clock,
            ca,
            lifetime: time::Duration::try_from(lifetime).unwrap_or(time::Duration::DAY),
            turn: tokio::sync::Mutex::new(()),
            per_source: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// This node's turn at enrolling and changing tokens, once no other
    /// node of the site has it: held until dropped.
    pub async fn turn(&self) -> Result<(MutexGuard<'_, ()>, Exclusive), StoreError> {
        let local = self.turn.lock().await;
        let site = self.store.alone(Alone::Enroll).await?;
        Ok((local, site))
    }

    /// Serves one enrollment connection from `peer`: one request, one
    /// answer.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, peer: IpAddr) {
        let (read, write) = tokio::io::split(stream);
        let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
        let response = match tokio::time::timeout(REQUEST_WITHIN, reader.read_frame()).await {
            Err(_) | Ok(Ok(None)) => return,
            Ok(Ok(Some(frame))) => match EnrollRequest::decode(&frame) {
                Ok(request) => self.enroll(request, peer).await,
                Err(err) => refused(
                    EnrollErrorCode::BadRequest,
                    format!("the request cannot be read: {err}"),
                ),
            },
            Ok(Err(err)) => refused(
                EnrollErrorCode::BadRequest,
                format!("the request cannot be read: {err}"),
            ),
        };
        let _ = writer.write(&response, ENROLL.newest).await;
        let _ = writer.shutdown().await;
    }

    /// Enrolls the computer of `request`, from `peer`, if its token and name
    /// allow.
    pub async fn enroll(&self, request: EnrollRequest, peer: IpAddr) -> EnrollResponse {
        if self.per_source.check_key(&peer).is_err() {
            return refused(
                EnrollErrorCode::Throttled,
                "too many enrollments from this address; try again in a minute",
            );
        }
        match self.try_enroll(&request, peer).await {
            Ok(response) => response,
            Err((code, message)) => {
                info!(%peer, name = %request.name, ?code, "enrollment refused");
                refused(code, message)
            }
        }
    }

    async fn try_enroll(
        &self,
        request: &EnrollRequest,
        peer: IpAddr,
    ) -> Result<EnrollResponse, Refused> {
        let bad_token = || {
            (
                EnrollErrorCode::BadToken,
                "not a join token of this server".to_owned(),
            )
        };
        let text = JoinTokenText::parse(&request.token.0).ok_or_else(bad_token)?;
        let name: ComputerId = request.name.parse().map_err(|_| {
            (
                EnrollErrorCode::NameRefused,
                format!(
                    "{:?} is not a computer name: 1 to 128 letters, digits, '.', '-' and '_'",
                    request.name
                ),
            )
        })?;
        let _turn = self.turn().await.map_err(unavailable)?;
        let mut token = self
            .store
            .token(text.id)
            .await
            .map_err(unavailable)?
            .ok_or_else(bad_token)?;
        let now = self.clock.now();
        let held = self.store.enrollment(&name).await.map_err(unavailable)?;
        let admitted = token
            .admits(&text.secret, &name, now)
            .map_err(|refusal| told(&token, refusal, &name))
            .and_then(|()| match &held {
                Some(_) if !token.replace => Err((
                    EnrollErrorCode::NameTaken,
                    format!(
                        "another computer is enrolled as {name}; only a token made with \
                         --replace may take its name"
                    ),
                )),
                _ => Ok(()),
            });
        if let Err((code, message)) = admitted {
            // The secret was right: whoever holds it is told, and the
            // refusal is audited. A wrong one learns nothing, and costs no
            // write.
            if code != EnrollErrorCode::BadToken {
                self.record(&name, format!("refused from {peer}: {message}"))
                    .await
                    .map_err(unavailable)?;
            }
            return Err((code, message));
        }
        // A computer that takes a held name makes every certificate of the
        // old one void (those issued up to this second), and its own is
        // issued the second after.
        let mut issued_at = now.unix_seconds();
        if held.is_some() {
            let (revocations, revoked) = (Arc::clone(&self.revocations), name.clone());
            tokio::task::spawn_blocking(move || revocations.revoke(&revoked, issued_at))
                .await
                .map_err(|err| unavailable(StoreError::Unavailable(err.to_string())))?
                .map_err(|err| {
                    warn!(error = %err, "cannot write the revocation list");
                    unavailable(StoreError::Unavailable(err.to_string()))
                })?;
            self.live.close_all(&name);
            issued_at += 1;
        }
        let issued = self
            .ca
            .sign(&name, &request.csr, issued_at, self.lifetime)
            .map_err(|err| match err {
                PkiError::Request => (
                    EnrollErrorCode::BadRequest,
                    "the certificate signing request is not one this server signs: a PKCS #10 \
                     request signed with its key, with no extension but key and name ones"
                        .to_owned(),
                ),
                other => {
                    warn!(error = %other, "cannot sign an enrolled computer's certificate");
                    unavailable(StoreError::Unavailable(other.to_string()))
                }
            })?;
        if let Some(group) = &token.group {
            let by = Who::Server;
            self.computers
                .configure(
                    &name,
                    Some(Some(group.clone())),
                    &OptionsPatch::default(),
                    &by,
                )
                .await
                .map_err(|err| unavailable(StoreError::Unavailable(err.to_string())))?;
        }
        let expires_at =
            Timestamp::from_unix_millis(u64::try_from(issued.expires).unwrap_or(0) * 1000);
        token.used += 1;
        self.store.put_token(&token).map_err(unavailable)?;
        self.store
            .put_enrollment(
                &name,
                &Enrollment {
                    enrolled_at: now,
                    token: token.id,
                    serial: issued.serial.clone(),
                    expires_at,
                },
            )
            .map_err(unavailable)?;
        let replaced = if held.is_some() {
            ", replacing the computer of that name"
        } else {
            ""
        };
        self.record(
            &name,
            format!(
                "enrolled from {peer} with join token {} ({} of {} uses){replaced}; \
                 certificate {} until {}",
                token.id,
                token.used,
                token.uses,
                issued.serial,
                expires_at.rfc3339()
            ),
        )
        .await
        .map_err(unavailable)?;
        info!(%peer, computer = %name, token = token.id, "computer enrolled");
        Ok(EnrollResponse::Enrolled {
            name: name.to_string(),
            certificate: issued.cert.to_vec(),
            ca: self.ca.cert.to_vec(),
            expires_ms: expires_at.unix_millis(),
        })
    }

    /// A new certificate for enrolled computer `computer` (whose connection
    /// showed a valid, unrevoked certificate), for the key of `csr`; a
    /// computer that did not enroll is refused.
    pub async fn renew(&self, computer: &ComputerId, csr: &[u8]) -> Response {
        let renewed = async {
            let _turn = self.turn().await?;
            let Some(mut enrollment) = self.store.enrollment(computer).await? else {
                info!(%computer, "a computer that did not enroll asked to renew");
                return Ok(Response::Fail(ErrorCode::CertificateRefused));
            };
            let now = self.clock.now();
            let issued = match self
                .ca
                .sign(computer, csr, now.unix_seconds(), self.lifetime)
            {
                Ok(issued) => issued,
                Err(PkiError::Request) => return Ok(Response::Fail(ErrorCode::Malformed)),
                Err(other) => return Err(StoreError::Unavailable(other.to_string())),
            };
            let expires_at = ends(&issued);
            enrollment.serial = issued.serial.clone();
            enrollment.expires_at = expires_at;
            self.store.put_enrollment(computer, &enrollment)?;
            self.record(
                computer,
                format!(
                    "certificate renewed: {} until {}",
                    issued.serial,
                    expires_at.rfc3339()
                ),
            )
            .await?;
            Ok(Response::Renewed {
                certificate: issued.cert.to_vec(),
                expires_ms: expires_at.unix_millis(),
            })
        };
        renewed.await.unwrap_or_else(|err: StoreError| {
            warn!(error = %err, %computer, "a certificate could not be renewed");
            Response::Fail(ErrorCode::Unavailable)
        })
    }

    /// Writes the audit entry of an enrollment of `name` with `outcome`, with
    /// the writes made before it, and makes them durable.
    async fn record(&self, name: &ComputerId, outcome: String) -> Result<(), StoreError> {
        self.store.append_audit(&AuditEntry {
            at: self.clock.now(),
            who: Who::Server,
            computer: Some(name.to_string()),
            action: Action::Enroll,
            outcome,
        })?;
        self.store.flush().await
    }
}

/// What a computer whose token's secret is right is told when `token` does
/// not admit it as `name`.
fn told(token: &JoinToken, refusal: Refusal, name: &ComputerId) -> Refused {
    match refusal {
        Refusal::Unknown => (
            EnrollErrorCode::BadToken,
            "not a join token of this server".to_owned(),
        ),
        Refusal::Expired => (
            EnrollErrorCode::Expired,
            format!(
                "join token {} expired at {}; ask for a new one",
                token.id,
                token.expires_at.rfc3339()
            ),
        ),
        Refusal::UsedUp => (
            EnrollErrorCode::UsedUp,
            format!(
                "join token {} is used up ({} of {} computers enrolled with it); ask for a new one",
                token.id, token.used, token.uses
            ),
        ),
        Refusal::Revoked => (
            EnrollErrorCode::Revoked,
            format!("join token {} was revoked; ask for a new one", token.id),
        ),
        Refusal::Pattern => (
            EnrollErrorCode::NameRefused,
            format!(
                "join token {} does not allow the name {name} (it allows {})",
                token.id,
                token.name_pattern.as_deref().unwrap_or("*")
            ),
        ),
    }
}

/// When certificate `issued` ends.
fn ends(issued: &Issued) -> Timestamp {
    Timestamp::from_unix_millis(
        u64::try_from(issued.expires)
            .unwrap_or(0)
            .saturating_mul(1000),
    )
}

fn unavailable(err: StoreError) -> Refused {
    warn!(error = %err, "an enrollment could not be made");
    (
        EnrollErrorCode::Unavailable,
        "the server cannot enroll now; try again in a moment".to_owned(),
    )
}

fn refused(code: EnrollErrorCode, message: impl Into<String>) -> EnrollResponse {
    EnrollResponse::Refused(EnrollError {
        code,
        message: message.into(),
    })
}
