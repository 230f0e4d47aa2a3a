//! Enrollment on the wire: a client computer that holds a join token and no
//! certificate yet asks the server for one, for a key pair it made itself
//! (the key never leaves the computer; only a certificate signing request
//! does). It connects to the agents' port with TLS, ALPN
//! [`ALPN`](crate::enroll::ALPN) and no client certificate, checking the
//! server against the CA fingerprint its token carries before it sends
//! anything; sends one [`EnrollRequest`]; reads one [`EnrollResponse`]; and
//! the server closes.
//!
//! A wire of its own, with versions of its own ([`crate::version::ENROLL`]),
//! grown by the same rules as the others.

use serde::{Deserialize, Serialize};

use crate::login::Secret;
use crate::version::{self, same_in_every_version};

/// The application protocol (ALPN) of an enrollment connection.
pub const ALPN: &[u8] = b"otpgate-enroll/1";

/// A computer asks to enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The join token, as `otpgate certs token create` printed it.
    pub token: Secret,
    /// The name it asks for (its host name unless told another).
    pub name: String,
    /// A PKCS #10 certificate signing request (DER) for its public key,
    /// signed with its private key.
    pub csr: Vec<u8>,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    /// Enrolled: its certificate and the CA's, both DER.
    Enrolled {
        /// The name it is enrolled as (its identity from now on).
        name: String,
        /// Its certificate.
        certificate: Vec<u8>,
        /// The CA certificate, to check the server against from now on.
        ca: Vec<u8>,
        /// When its certificate ends, in milliseconds since the Unix epoch.
        expires_ms: u64,
    },
    /// Refused, with why.
    Refused(EnrollError),
}

/// Why an enrollment was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollError {
    /// What kind of refusal.
    pub code: EnrollErrorCode,
    /// Words for the operator.
    pub message: String,
}

/// Kinds of refusal. Only a token whose secret is right is told apart
/// (expired, used up, revoked); any other is [`EnrollErrorCode::BadToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollErrorCode {
    /// Not a token of this site.
    BadToken,
    /// The token's time is over.
    Expired,
    /// Every use of the token is spent.
    UsedUp,
    /// The token was revoked.
    Revoked,
    /// The name breaks the naming rule or the token's pattern.
    NameRefused,
    /// Another enrolled computer holds the name (and the token does not
    /// replace).
    NameTaken,
    /// The request cannot be read, or its CSR is not one we sign.
    BadRequest,
    /// Too many enrollments from this address lately; try again later.
    Throttled,
    /// The server cannot enroll now (its database is away); try again.
    Unavailable,
    /// A request this server does not know (a newer agent's).
    Unsupported,
}

same_in_every_version!(EnrollRequest, version::ENROLL);
same_in_every_version!(EnrollResponse, version::ENROLL);
