//! Enrollment: a client computer holding a join token, and no certificate
//! yet, asks on the agents' port (ALPN `otpgate-enroll/1`, no client
//! certificate) for a certificate for the key pair it made; the server checks
//! the token and the name, signs the request with the site's CA, puts the
//! computer in the token's group, and answers with the certificate and the
//! CA's. The computer's private key never reaches the server.
//!
//! Everything a computer sends is checked before anything is changed: the
//! request's signature, then the token (a wrong one never takes the site's
//! turn), then, one enrollment at a time per site ([`Enroller::turn`]: a
//! lock of this process and, over PostgreSQL, the site's enrollment lock),
//! the token again and the name's holder, so that a token's uses are
//! counted exactly and one name goes to one computer. Only then is the old
//! holder of a name revoked (a `--replace` token) and the computer put in
//! the token's group; the token's use, the enrollment record and the audit
//! entry are one commit, and the answer goes out only after it. A computer
//! whose answer was lost asks again with the same token and key and gets its
//! certificate again, for no further use.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{MutexGuard, Semaphore};
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
use crate::tls::pki::{Ca, ClientCert, Issued, Request};
use crate::tls::revoked::Revocations;
use crate::tls::token::JoinTokenText;

/// How long a computer has to send its request once connected.
const REQUEST_WITHIN: Duration = Duration::from_secs(5);
/// How long an enrollment waits for the site's turn before it is told to
/// try again.
const TURN_WITHIN: Duration = Duration::from_secs(10);
/// Enrollment connections served at once; one more is closed at once (they
/// come without a certificate: they must not take the agents' room).
const AT_ONCE: usize = 64;
/// Enrollments one address (an IPv6 /64) may ask for per minute, in bursts
/// of this: a building of computers started at once, not a flood.
const PER_SOURCE_PER_MINUTE: u32 = 600;
/// Addresses the per-source limiter remembers before it forgets the idle.
const SOURCES_HELD: usize = 10_000;

/// What enrolls computers, renews their certificates, and makes and revokes
/// join tokens.
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
    at_once: Arc<Semaphore>,
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
            at_once: Arc::new(Semaphore::new(AT_ONCE)),
            per_source: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// This node's turn at enrolling and changing tokens, once no other
    /// node of the site has it: held until dropped.
    pub async fn turn(&self) -> Result<(MutexGuard<'_, ()>, Exclusive), StoreError> {
        let waited = tokio::time::timeout(TURN_WITHIN, async {
            let local = self.turn.lock().await;
            let site = self.store.alone(Alone::Enroll).await?;
            Ok((local, site))
        });
        waited.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "another enrollment held the site's turn too long".into(),
            ))
        })
    }

    /// Serves one enrollment connection from `peer`: one request, one
    /// answer. Too many at once, or too many from one address lately, are
    /// closed before anything is read.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, peer: IpAddr) {
        let (read, write) = tokio::io::split(stream);
        let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
        let Ok(_place) = Arc::clone(&self.at_once).try_acquire_owned() else {
            return;
        };
        if self.per_source.len() > SOURCES_HELD {
            self.per_source.retain_recent();
        }
        let response = if self.per_source.check_key(&source(peer)).is_err() {
            refused(
                EnrollErrorCode::Throttled,
                "too many enrollments from this address; try again in a minute",
            )
        } else {
            match tokio::time::timeout(REQUEST_WITHIN, reader.read_frame()).await {
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
            }
        };
        let _ = writer.write(&response, ENROLL.newest).await;
        let _ = writer.shutdown().await;
    }

    /// Enrolls the computer of `request`, from `peer`, if its token and name
    /// allow.
    pub async fn enroll(&self, request: EnrollRequest, peer: IpAddr) -> EnrollResponse {
        match self.try_enroll(&request, peer).await {
            Ok(response) => response,
            Err((code, message)) => {
                // The name as asked may be anything: shown as text, cut short.
                let name: String = request.name.chars().take(128).collect();
                info!(%peer, name = ?name, ?code, "enrollment refused");
                refused(code, message)
            }
        }
    }

    async fn try_enroll(
        &self,
        request: &EnrollRequest,
        peer: IpAddr,
    ) -> Result<EnrollResponse, Refused> {
        let text = JoinTokenText::parse(&request.token.0).ok_or_else(told_unknown)?;
        let name: ComputerId = request.name.parse().map_err(|_| {
            (
                EnrollErrorCode::NameRefused,
                "not a computer name: 1 to 128 letters, digits, '.', '-' and '_'".to_owned(),
            )
        })?;
        let csr = Request::read(&request.csr).map_err(|_| {
            (
                EnrollErrorCode::BadRequest,
                "the certificate signing request is not one this server signs: a PKCS #10 \
                 request signed with the key it names"
                    .to_owned(),
            )
        })?;
        // A token that does not admit the computer is refused before the
        // site's turn is taken: a flood of wrong tokens holds up nobody.
        self.admitted(&text, &name, &csr, peer).await?;
        let _turn = self.turn().await.map_err(unavailable)?;
        // Again in the turn: another enrollment may have spent it since.
        let (mut token, held) = self.admitted(&text, &name, &csr, peer).await?;
        let now = self.clock.now();
        if let Some(held) = held.as_ref().filter(|held| retries(held, &token, &csr)) {
            // This very computer again (its answer was lost): its
            // certificate again, for no further use.
            let again = "enrolled again (a retry)";
            return self
                .issue(&name, &csr, now.unix_seconds(), held.clone(), again)
                .await;
        }
        // Held by another: enrolled, or connected with a certificate issued
        // by hand.
        let known = self
            .store
            .computer(&name)
            .await
            .map_err(unavailable)?
            .is_some_and(|record| {
                record.connected_since.is_some() || !record.agent_version.is_empty()
            });
        let taken = held.is_some() || known;
        if taken && !token.replace {
            return Err(self
                .refuse(
                    &name,
                    peer,
                    (
                        EnrollErrorCode::NameTaken,
                        format!(
                            "another computer holds the name {name}; only a token made with \
                             --replace may take it"
                        ),
                    ),
                )
                .await);
        }
        // Taking a held name makes every certificate of the old holder void
        // (those issued up to this second); the new one is issued the
        // second after.
        let issued_at = now.unix_seconds() + i64::from(taken);
        let issued = self.sign(&name, &csr, issued_at)?;
        if let Some(group) = &token.group
            && let Err(err) = self
                .computers
                .configure(
                    &name,
                    Some(Some(group.clone())),
                    &OptionsPatch::default(),
                    &Who::Server,
                )
                .await
        {
            let failed = unavailable(StoreError::Unavailable(err.to_string()));
            return Err(self.refuse(&name, peer, failed).await);
        }
        if taken {
            let written = self
                .revocations
                .revoke_off_runtime(&name, now.unix_seconds())
                .await;
            if let Err(err) = written {
                let failed = unavailable(StoreError::Unavailable(err.to_string()));
                return Err(self.refuse(&name, peer, failed).await);
            }
            self.live.close_all(&name);
        }
        token.used += 1;
        self.store.put_token(&token).map_err(unavailable)?;
        let enrollment = Enrollment {
            enrolled_at: now,
            token: token.id,
            serial: issued.serial.clone(),
            expires_at: ends(&issued),
            key_hash: csr.key_hash,
        };
        let replaced = if taken {
            ", taking the name from the computer that held it"
        } else {
            ""
        };
        let outcome = format!(
            "enrolled from {peer} with join token {} ({} of {} uses){replaced}",
            token.id, token.used, token.uses
        );
        self.commit(&name, &issued, enrollment, outcome).await
    }

    /// The token `text` names, if it admits computer `name` with the key of
    /// `csr` now (a retry of an enrollment it made admits it spent or
    /// expired), and what `name` holds; a refusal of a token whose secret
    /// was right is audited.
    async fn admitted(
        &self,
        text: &JoinTokenText,
        name: &ComputerId,
        csr: &Request,
        peer: IpAddr,
    ) -> Result<(JoinToken, Option<Enrollment>), Refused> {
        let token = self
            .store
            .token(text.id)
            .await
            .map_err(unavailable)?
            .ok_or_else(told_unknown)?;
        let held = self.store.enrollment(name).await.map_err(unavailable)?;
        let retry = held.as_ref().is_some_and(|held| retries(held, &token, csr));
        match token.admits(&text.secret, name, self.clock.now()) {
            Ok(()) => Ok((token, held)),
            Err(Refusal::Unknown) => Err(told_unknown()),
            Err(Refusal::UsedUp | Refusal::Expired) if retry => Ok((token, held)),
            Err(refusal) => Err(self.refuse(name, peer, told(&token, refusal, name)).await),
        }
    }

    /// `refused`, audited (best effort: the store may be what failed).
    async fn refuse(&self, name: &ComputerId, peer: IpAddr, refused: Refused) -> Refused {
        let outcome = format!("refused from {peer}: {}", refused.1);
        if let Err(err) = self.record(name, outcome).await {
            warn!(error = %err, "an enrollment's refusal could not be audited");
        }
        refused
    }

    fn sign(&self, name: &ComputerId, csr: &Request, issued_at: i64) -> Result<Issued, Refused> {
        self.ca
            .sign(name, csr, issued_at, self.lifetime)
            .map_err(|err| {
                warn!(error = %err, "cannot sign a computer's certificate");
                unavailable(StoreError::Unavailable(err.to_string()))
            })
    }

    /// Signs `csr` for `name` again (a retry), its enrollment record `held`
    /// brought up to date.
    async fn issue(
        &self,
        name: &ComputerId,
        csr: &Request,
        issued_at: i64,
        held: Enrollment,
        outcome: &str,
    ) -> Result<EnrollResponse, Refused> {
        let issued = self.sign(name, csr, issued_at)?;
        let enrollment = Enrollment {
            serial: issued.serial.clone(),
            expires_at: ends(&issued),
            ..held
        };
        self.commit(name, &issued, enrollment, outcome.to_owned())
            .await
    }

    /// Records `enrollment` of `name` with the audit entry `outcome` (the
    /// certificate's serial and end added), durably, and answers with
    /// `issued`.
    async fn commit(
        &self,
        name: &ComputerId,
        issued: &Issued,
        enrollment: Enrollment,
        outcome: String,
    ) -> Result<EnrollResponse, Refused> {
        self.store
            .put_enrollment(name, &enrollment)
            .map_err(unavailable)?;
        let outcome = format!(
            "{outcome}; certificate {} until {}",
            issued.serial,
            enrollment.expires_at.rfc3339()
        );
        self.record(name, outcome).await.map_err(unavailable)?;
        info!(computer = %name, token = enrollment.token, "computer enrolled");
        Ok(EnrollResponse::Enrolled {
            name: name.to_string(),
            certificate: issued.cert.to_vec(),
            ca: self.ca.cert.to_vec(),
            expires_ms: enrollment.expires_at.unix_millis(),
        })
    }

    /// A new certificate for enrolled computer `cert.id`, whose connection
    /// showed certificate `cert` (valid, unrevoked), for the key of `csr`.
    /// Refused to a computer that did not enroll, or whose certificate is not
    /// the one last issued to its name (another took the name), or revoked
    /// meanwhile; and before half its certificate's time has passed.
    pub async fn renew(&self, cert: &ClientCert, csr: &[u8]) -> Response {
        let computer = &cert.id;
        let Ok(csr) = Request::read(csr) else {
            return Response::Fail(ErrorCode::Malformed);
        };
        let now = self.clock.now();
        let holds = |held: Option<Enrollment>| held.filter(|held| held.serial == cert.serial);
        let renewed = async {
            // Its certificate must be the one last issued to its name: looked
            // at first outside the turn, then again in it.
            if holds(self.store.enrollment(computer).await?).is_none() {
                info!(%computer, "a computer that did not enroll (or no longer holds its name) asked to renew");
                return Ok(Response::Fail(ErrorCode::CertificateRefused));
            }
            if now.unix_seconds() < cert.issued + (cert.expires - cert.issued) / 2 {
                return Ok(Response::Fail(ErrorCode::TooManyRequests));
            }
            let _turn = self.turn().await?;
            let Some(held) = holds(self.store.enrollment(computer).await?) else {
                return Ok(Response::Fail(ErrorCode::CertificateRefused));
            };
            if self.revocations.refuses(cert) {
                return Ok(Response::Fail(ErrorCode::CertificateRefused));
            }
            let issued = self
                .ca
                .sign(computer, &csr, now.unix_seconds(), self.lifetime)
                .map_err(|err| StoreError::Unavailable(err.to_string()))?;
            let enrollment = Enrollment {
                serial: issued.serial.clone(),
                expires_at: ends(&issued),
                key_hash: csr.key_hash,
                ..held
            };
            self.store.put_enrollment(computer, &enrollment)?;
            self.record(
                computer,
                format!(
                    "certificate renewed: {} until {}",
                    issued.serial,
                    enrollment.expires_at.rfc3339()
                ),
            )
            .await?;
            Ok(Response::Renewed {
                certificate: issued.cert.to_vec(),
                expires_ms: enrollment.expires_at.unix_millis(),
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

/// Whether `csr` is a retry of enrollment `held`: the same token, the same
/// key.
fn retries(held: &Enrollment, token: &JoinToken, csr: &Request) -> bool {
    held.token == token.id && held.key_hash == csr.key_hash
}

/// Whom the per-source limit counts `peer` as: its address, or its /64.
fn source(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
    }
}

fn told_unknown() -> Refused {
    (
        EnrollErrorCode::BadToken,
        "not a join token of this server".to_owned(),
    )
}

/// What a computer whose token's secret is right is told when `token` does
/// not admit it as `name`.
fn told(token: &JoinToken, refusal: Refusal, name: &ComputerId) -> Refused {
    match refusal {
        Refusal::Unknown => told_unknown(),
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
