//! The text of a join token, as `otpgate certs token create` prints it and
//! `otpgate agent enroll --token` takes it:
//!
//! ```text
//! otpgate-join-1:<base64url of id (8 bytes, big-endian) ‖ secret (32) ‖ CA fingerprint (32)>
//! ```
//!
//! The CA fingerprint (SHA-256 of the CA certificate, DER) lets a computer
//! that trusts nothing yet check that it talks to the real server before it
//! sends anything; the secret is what the server checks (it keeps only its
//! hash, see `otpgate_actors::enroll`); the id finds the token.

use std::fmt;

use rustls::pki_types::CertificateDer;
use zeroize::Zeroizing;

/// What every token's text starts with (its format's version).
const PREFIX: &str = "otpgate-join-1:";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;
const FINGERPRINT_LEN: usize = 32;

/// A join token, read from its text.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokenText {
    /// The token's id on the server.
    pub id: u64,
    /// Its secret.
    pub secret: Zeroizing<[u8; SECRET_LEN]>,
    /// The SHA-256 of the site's CA certificate.
    pub ca_fingerprint: [u8; FINGERPRINT_LEN],
}

impl fmt::Debug for JoinTokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenText")
            .field("id", &self.id)
            .field("secret", &"..")
            .finish_non_exhaustive()
    }
}

impl JoinTokenText {
    /// A new token of id `id` for the CA `ca`, with a random secret.
    pub fn new(id: u64, ca: &CertificateDer<'_>) -> Self {
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        secret.copy_from_slice(&rand::random::<[u8; SECRET_LEN]>());
        Self {
            id,
            secret,
            ca_fingerprint: fingerprint(ca),
        }
    }

    /// Its text.
    pub fn text(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(ID_LEN + SECRET_LEN + FINGERPRINT_LEN));
        bytes.extend_from_slice(&self.id.to_be_bytes());
        bytes.extend_from_slice(self.secret.as_slice());
        bytes.extend_from_slice(&self.ca_fingerprint);
        Zeroizing::new(format!(
            "{PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&bytes)
        ))
    }

    /// The token `text` holds, if it is one (surrounding blanks ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let encoded = text.trim().strip_prefix(PREFIX)?;
        let bytes = Zeroizing::new(
            data_encoding::BASE64URL_NOPAD
                .decode(encoded.as_bytes())
                .ok()?,
        );
        if bytes.len() != ID_LEN + SECRET_LEN + FINGERPRINT_LEN {
            return None;
        }
        let (id, rest) = bytes.split_at(ID_LEN);
        let (secret, ca) = rest.split_at(SECRET_LEN);
        let mut token = Self {
            id: u64::from_be_bytes(id.try_into().ok()?),
            secret: Zeroizing::new([0; SECRET_LEN]),
            ca_fingerprint: ca.try_into().ok()?,
        };
        token.secret.copy_from_slice(secret);
        Some(token)
    }
}

/// The SHA-256 of certificate `cert` (DER).
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; FINGERPRINT_LEN] {
    otpgate_actors::digest::sha256(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_from_its_text_and_nothing_else_reads_as_one() {
        let ca = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02, 0x03]);
        let token = JoinTokenText::new(42, &ca);
        let text = token.text();
        assert!(text.starts_with(PREFIX));
        assert_eq!(
            JoinTokenText::parse(&format!(" {}\n", text.as_str())),
            Some(token.clone())
        );
        assert_eq!(token.ca_fingerprint, fingerprint(&ca));
        assert!(!format!("{token:?}").contains(&format!("{:?}", token.secret.as_slice())));
        let short = &text[..text.len() - 4];
        for bad in [
            "",
            "otpgate-join-1:",
            "otpgate-join-2:AAAA",
            short,
            "otpgate-join-1:!!!!",
        ] {
            assert_eq!(JoinTokenText::parse(bad), None, "{bad}");
        }
    }
}
