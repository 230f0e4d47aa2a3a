//! TLS 1.3 session tickets that survive a server restart.
//!
//! rustls's own ticketer keeps its key in memory, so after a restart every agent
//! would need a full handshake at once. This one derives its keys from the server
//! secret, the CA certificate and the current period, so the tickets agents hold
//! stay valid across a restart and a reconnect storm resumes instead of paying
//! for full handshakes; and a new CA ends every ticket, so that a session
//! resumed without a certificate check cannot outlive the CA that vouched for it.
//! Keys roll every [`PERIOD`]; a ticket is accepted in its own period and the next.
//! Resumption in rustls always runs a fresh (EC)DHE exchange, so a leaked key
//! opens no recorded traffic.
//!
//! ```text
//! +--------------+-----------+-----------------------------------+
//! | period u64 BE| nonce (12)| ChaCha20-Poly1305(session) + tag  |
//! +--------------+-----------+-----------------------------------+
//! ```

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use rustls::server::ProducesTickets;
use zeroize::Zeroizing;

use crate::tls::pki::ServerSecret;

/// How long one ticket key is used for issuing, in seconds.
pub const PERIOD: u64 = 6 * 60 * 60;

const PERIOD_LEN: usize = 8;

/// Issues and opens session tickets with keys derived from the server secret
/// and the CA.
pub struct Tickets {
    /// The HMAC key that derives each period's ticket key from the server secret.
    root: hmac::Key,
    /// The SHA-256 of the CA certificate, in every key's label.
    ca: [u8; 32],
}

impl Tickets {
    /// Tickets whose keys come from `secret` and the CA certificate `ca`.
    pub fn new(secret: &ServerSecret, ca: &[u8]) -> Self {
        Self {
            root: hmac::Key::new(hmac::HMAC_SHA256, secret.expose()),
            ca: otpgate_actors::digest::sha256(ca),
        }
    }

    fn key(&self, period: u64) -> Option<LessSafeKey> {
        let mut label = Zeroizing::new(b"otpgate tls ticket key v2 ".to_vec());
        label.extend_from_slice(&self.ca);
        label.extend_from_slice(&period.to_be_bytes());
        let tag = hmac::sign(&self.root, &label);
        let key = UnboundKey::new(&CHACHA20_POLY1305, tag.as_ref()).ok()?;
        Some(LessSafeKey::new(key))
    }

    fn seal(&self, period: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&period.to_be_bytes());
        ticket.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key(period)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(period.to_be_bytes()),
                &mut body,
            )
            .ok()?;
        ticket.extend_from_slice(&body);
        Some(ticket)
    }

    fn open(&self, now_period: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        let (period, rest) = ticket.split_first_chunk::<PERIOD_LEN>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let period = u64::from_be_bytes(*period);
        if period != now_period && period.checked_add(1) != Some(now_period) {
            return None;
        }
        let mut body = sealed.to_vec();
        let plain = self
            .key(period)?
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(period.to_be_bytes()),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

fn current_period() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    now / PERIOD
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        // Issued in one period, accepted until the end of the next: at least PERIOD.
        PERIOD as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(current_period(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(current_period(), cipher)
    }
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tickets(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tickets(dir: &std::path::Path) -> Tickets {
        let pki = crate::tls::pki::ensure_server(dir, &[]).unwrap();
        Tickets::new(&pki.secret, &pki.ca)
    }

    #[test]
    fn tickets_open_in_their_period_and_the_next_only() {
        let dir = tempfile::tempdir().unwrap();
        let tickets = tickets(dir.path());
        let ticket = tickets.seal(100, b"session").unwrap();
        assert_eq!(tickets.open(100, &ticket).unwrap(), b"session");
        assert_eq!(tickets.open(101, &ticket).unwrap(), b"session");
        assert_eq!(tickets.open(102, &ticket), None);
        assert_eq!(tickets.open(99, &ticket), None);
    }

    #[test]
    fn tickets_survive_a_restart_but_not_another_secret() {
        let dir = tempfile::tempdir().unwrap();
        let ticket = tickets(dir.path()).encrypt(b"session").unwrap();
        assert_eq!(tickets(dir.path()).decrypt(&ticket).unwrap(), b"session");
        let other = tempfile::tempdir().unwrap();
        assert_eq!(tickets(other.path()).decrypt(&ticket), None);
    }

    #[test]
    fn a_new_ca_ends_every_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let ticket = tickets(dir.path()).encrypt(b"session").unwrap();
        // The CA is rotated as certs/README.md says: pki/ moved aside.
        std::fs::rename(dir.path().join("pki"), dir.path().join("old-pki")).unwrap();
        assert_eq!(tickets(dir.path()).decrypt(&ticket), None);
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tickets = tickets(dir.path());
        let mut ticket = tickets.seal(7, b"session").unwrap();
        let last = ticket.len() - 1;
        ticket[last] ^= 1;
        assert_eq!(tickets.open(7, &ticket), None);
        for len in 0..PERIOD_LEN + NONCE_LEN + 1 {
            assert_eq!(tickets.open(7, &ticket[..len]), None);
        }
    }
}
