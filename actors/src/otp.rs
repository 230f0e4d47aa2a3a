//! One-time passwords: generation, storage and checking.
//!
//! An OTP is kept as a keyed hash (HMAC-SHA256 over the computer, the OS user,
//! the email and the code) for checking, and, only while it is live, as an
//! AEAD-sealed copy (ChaCha20-Poly1305) so that it can be emailed again. Both are
//! wiped the moment it is used, expires or is locked. Both keys are derived from
//! the server secret.
//!
//! ```text
//! tag    = HMAC-SHA256(mac key, "computer\0os user\0email (lower case)\0code")
//! sealed = nonce (12) || ChaCha20-Poly1305(seal key, nonce, code, aad = "computer\0os user")
//! ```

use std::fmt;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{constant_time, hmac};
use data_encoding::HEXLOWER;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::id::ComputerId;
use crate::request::Choice;

/// The keys that protect stored OTPs, and sign the Approve and Deny links of
/// approvers' mail.
pub struct OtpKeys {
    mac: hmac::Key,
    seal: LessSafeKey,
    decide: hmac::Key,
    recording: hmac::Key,
    backup: hmac::Key,
    site: [u8; 32],
}

impl fmt::Debug for OtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpKeys(..)")
    }
}

impl OtpKeys {
    /// Derives the keys from the server secret.
    pub fn derive(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mac = hmac::sign(&root, b"otpgate otp mac key v1");
        let seal = hmac::sign(&root, b"otpgate otp seal key v1");
        let decide = hmac::sign(&root, b"otpgate decision token key v1");
        let recording = hmac::sign(&root, b"otpgate recording seal key v1");
        let backup = hmac::sign(&root, b"otpgate backup seal key v1");
        let site = hmac::sign(&root, b"otpgate site mark v1");
        Self {
            site: site
                .as_ref()
                .try_into()
                .expect("an HMAC-SHA256 tag is 32 bytes"),
            backup: hmac::Key::new(hmac::HMAC_SHA256, backup.as_ref()),
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac.as_ref()),
            decide: hmac::Key::new(hmac::HMAC_SHA256, decide.as_ref()),
            recording: hmac::Key::new(hmac::HMAC_SHA256, recording.as_ref()),
            seal: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, seal.as_ref())
                    .expect("an HMAC-SHA256 tag is a valid 32-byte ChaCha20 key"),
            ),
        }
    }

    /// What tells this secret's site from another's, revealing nothing of
    /// the secret: every node of a site must have the same.
    pub fn site_mark(&self) -> [u8; 32] {
        self.site
    }

    /// The key that seals backups: only a holder of the server secret can
    /// make a backup that [`hmac::verify`] takes.
    pub fn backup_key(&self) -> &hmac::Key {
        &self.backup
    }

    /// The seal of a stored recording's summary `body` (its chain head and
    /// counts): only this server can make one, so a recording altered and
    /// re-chained without the secret is caught.
    pub fn seal_recording(&self, body: &[u8]) -> Vec<u8> {
        hmac::sign(&self.recording, body).as_ref().to_vec()
    }

    /// Whether `seal` is [`Self::seal_recording`] of `body` (in constant time).
    pub fn recording_sealed(&self, body: &[u8], seal: &[u8]) -> bool {
        hmac::verify(&self.recording, body, seal).is_ok()
    }

    fn tag(&self, binding: Binding<'_>, code: &str) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        let email = binding.email.to_lowercase();
        for part in [binding.computer.as_str(), binding.os_user, &email] {
            ctx.update(part.as_bytes());
            ctx.update(b"\0");
        }
        ctx.update(code.as_bytes());
        let mut tag = [0u8; 32];
        tag.copy_from_slice(ctx.sign().as_ref());
        Tag(tag)
    }

    /// Seals `code` for computer `computer` and OS user `os_user`.
    pub fn seal(&self, computer: &ComputerId, os_user: &str, code: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system random generator works");
        let mut sealed = nonce.to_vec();
        let mut body = code.as_bytes().to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(computer, os_user)),
                &mut body,
            )
            .expect("sealing a short code cannot fail");
        sealed.extend_from_slice(&body);
        sealed
    }

    /// Opens what [`OtpKeys::seal`] sealed for the same computer and OS user.
    pub fn open(&self, computer: &ComputerId, os_user: &str, sealed: &[u8]) -> Option<Code> {
        let (nonce, body) = sealed.split_first_chunk::<NONCE_LEN>()?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain = self
            .seal
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad(computer, os_user)),
                &mut body,
            )
            .ok()?;
        Some(Code(Zeroizing::new(
            String::from_utf8(plain.to_vec()).ok()?,
        )))
    }
}

impl OtpKeys {
    /// A link token that lets `token.approver` make `token.choice` on access
    /// request `token.request` until `token.expires`. It works once: a decided
    /// or expired request takes no decision. A random nonce makes every token
    /// unique, even two for the same decision.
    ///
    /// ```text
    /// token = hex(request u64 BE || expires u64 BE (Unix ms) || nonce (16)
    ///             || choice u8 (1 approve, 0 deny) || approver)
    ///         "." hex(HMAC-SHA256(decide key, same))
    /// ```
    pub fn decision_token(&self, token: &DecisionToken) -> String {
        let mut body = token.request.to_be_bytes().to_vec();
        body.extend_from_slice(&token.expires.unix_millis().to_be_bytes());
        body.extend_from_slice(&rand::rng().random::<[u8; TOKEN_NONCE_LEN]>());
        body.push(u8::from(token.choice == Choice::Approve));
        body.extend_from_slice(token.approver.as_bytes());
        let tag = hmac::sign(&self.decide, &body);
        format!(
            "{}.{}",
            HEXLOWER.encode(&body),
            HEXLOWER.encode(tag.as_ref())
        )
    }

    /// What a token from [`OtpKeys::decision_token`] says, if it is genuine and
    /// has not expired at `now`.
    pub fn open_decision_token(&self, token: &str, now: Timestamp) -> Option<DecisionToken> {
        let (body, tag) = token.trim().split_once('.')?;
        if body.len() > MAX_TOKEN_HEX || tag.len() != 64 {
            return None;
        }
        let body = HEXLOWER.decode(body.as_bytes()).ok()?;
        let tag = HEXLOWER.decode(tag.as_bytes()).ok()?;
        hmac::verify(&self.decide, &body, &tag).ok()?;
        let (request, rest) = body.split_first_chunk::<8>()?;
        let (expires, rest) = rest.split_first_chunk::<8>()?;
        let (_nonce, rest) = rest.split_first_chunk::<TOKEN_NONCE_LEN>()?;
        let (&choice, approver) = rest.split_first()?;
        let choice = match choice {
            1 => Choice::Approve,
            0 => Choice::Deny,
            _ => return None,
        };
        let expires = Timestamp::from_unix_millis(u64::from_be_bytes(*expires));
        (now < expires).then_some(())?;
        Some(DecisionToken {
            request: u64::from_be_bytes(*request),
            choice,
            approver: String::from_utf8(approver.to_vec()).ok()?,
            expires,
        })
    }
}

/// The random bytes in every decision token.
const TOKEN_NONCE_LEN: usize = 16;

/// The longest token body read, in hex digits: a request id, an expiry, a
/// nonce, a choice and a login name of at most 247 bytes. The tag is always 64
/// hex digits.
const MAX_TOKEN_HEX: usize = 2 * (8 + 8 + TOKEN_NONCE_LEN + 1 + 247);

/// What an approver's link decides: who makes which choice on which request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionToken {
    /// The access request.
    pub request: u64,
    /// Approve or deny.
    pub choice: Choice,
    /// The approver's login name.
    pub approver: String,
    /// When the link stops working (the request's own expiry).
    pub expires: Timestamp,
}

fn aad(computer: &ComputerId, os_user: &str) -> Vec<u8> {
    format!("{computer}\0{os_user}").into_bytes()
}

/// An OTP in the clear: wiped from memory when dropped, never printed.
#[derive(Clone)]
pub struct Code(Zeroizing<String>);

impl Code {
    /// `len` random decimal digits, each uniform, from a CSPRNG (rand's
    /// thread-local ChaCha generator, seeded and reseeded from the OS).
    pub fn generate(len: u8) -> Self {
        let mut rng = rand::rng();
        let mut code = Zeroizing::new(String::with_capacity(len.into()));
        for _ in 0..len {
            code.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
        Self(code)
    }

    /// Wraps a code typed in by a person.
    pub fn from_typed(code: &str) -> Self {
        Self(Zeroizing::new(code.trim().to_owned()))
    }

    /// The digits.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(..)")
    }
}

/// A keyed hash of an OTP. Compared in constant time only.
#[derive(Clone, Serialize, Deserialize)]
pub struct Tag([u8; 32]);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tag(..)")
    }
}

impl PartialEq for Tag {
    fn eq(&self, other: &Self) -> bool {
        constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl Eq for Tag {}

/// Where an OTP came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Sent at once: Active Directory or internal user auto-send.
    AutoSend,
    /// Sent after approval of access request `id`.
    Approval {
        /// The access request.
        request: u64,
    },
    /// Generated by administrator `by` without a request.
    Generated {
        /// The administrator's login name.
        by: String,
        /// Why.
        comment: String,
    },
}

impl Origin {
    /// The access request it was sent for, if any.
    pub fn request(&self) -> Option<u64> {
        match self {
            Self::Approval { request } => Some(*request),
            Self::AutoSend | Self::Generated { .. } => None,
        }
    }
}

/// Where an OTP is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtpState {
    /// It may be used.
    Live,
    /// It has been used to log in.
    Used,
    /// Its time ran out.
    Expired,
    /// Too many wrong attempts.
    Locked,
}

/// One OTP of one computer and OS user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Otp {
    /// The address it was sent to; the only one it is valid with.
    pub email: String,
    /// When it was generated.
    pub created: Timestamp,
    /// Until when it may be used.
    pub valid_until: Timestamp,
    /// Wrong attempts so far.
    pub attempts: u32,
    /// Where it is in its life.
    pub state: OtpState,
    /// Where it came from.
    pub origin: Origin,
    /// The keyed hash, while live.
    tag: Option<Tag>,
    /// The sealed copy, while live.
    sealed: Option<Vec<u8>>,
}

/// What checking a typed OTP found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Right: it is now used.
    Allow,
    /// Wrong; `locked` when that was the last attempt allowed.
    Wrong {
        /// Whether the OTP is now locked.
        locked: bool,
    },
    /// The OTP is not live (used, expired or locked): nothing can match it.
    NotLive,
}

/// What an OTP is bound to: the computer and OS user it was made for, and
/// the address it went to. Its hash covers all three with the code, so a code
/// typed on another computer, by another user or with another address never
/// matches.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The client computer.
    pub computer: &'a ComputerId,
    /// The OS user.
    pub os_user: &'a str,
    /// The email address.
    pub email: &'a str,
}

impl Otp {
    /// A new live OTP with `code`, bound to `binding`, valid from `now` until
    /// `valid_until`.
    pub fn new(
        keys: &OtpKeys,
        binding: Binding<'_>,
        code: &Code,
        now: Timestamp,
        valid_until: Timestamp,
        origin: Origin,
    ) -> Self {
        Self {
            email: binding.email.to_owned(),
            created: now,
            valid_until,
            attempts: 0,
            state: OtpState::Live,
            origin,
            tag: Some(keys.tag(binding, code.expose())),
            sealed: Some(keys.seal(binding.computer, binding.os_user, code.expose())),
        }
    }

    /// Whether it may still be used at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.state == OtpState::Live && now < self.valid_until
    }

    /// Marks it expired (and wipes it) if its time is up at `now`; says whether it
    /// just expired.
    pub fn expire_if_due(&mut self, now: Timestamp) -> bool {
        if self.state == OtpState::Live && now >= self.valid_until {
            self.end(OtpState::Expired);
            true
        } else {
            false
        }
    }

    /// Checks `code` typed with the computer, user and address of `binding` at
    /// `now`. Every way of being wrong (code, email, computer, user) looks the
    /// same.
    pub fn check(
        &mut self,
        keys: &OtpKeys,
        binding: Binding<'_>,
        code: &Code,
        now: Timestamp,
        max_attempts: u32,
    ) -> Check {
        self.expire_if_due(now);
        let Some(tag) = &self.tag else {
            return Check::NotLive;
        };
        if *tag == keys.tag(binding, code.expose()) {
            self.end(OtpState::Used);
            return Check::Allow;
        }
        self.attempts += 1;
        let locked = self.attempts >= max_attempts;
        if locked {
            self.end(OtpState::Locked);
        }
        Check::Wrong { locked }
    }

    /// The code in the clear, for emailing it again, while live.
    pub fn code(&self, keys: &OtpKeys, computer: &ComputerId, os_user: &str) -> Option<Code> {
        keys.open(computer, os_user, self.sealed.as_deref()?)
    }

    /// The sealed copy, while live, for the outbox.
    pub fn sealed(&self) -> Option<&[u8]> {
        self.sealed.as_deref()
    }

    /// Ends its life in `state`, wiping the hash and the sealed copy.
    pub fn end(&mut self, state: OtpState) {
        self.state = state;
        self.tag = None;
        self.sealed = None;
    }
}

/// The OTP state of one computer and OS user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The latest OTP, live or not.
    pub otp: Option<Otp>,
    /// When a person last asked for a new OTP (directly or by access request);
    /// the once-per-interval rule counts from here.
    pub last_new: Option<Timestamp>,
    /// When the live OTP was last emailed, to space out resends.
    pub last_sent: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const SECRET: [u8; 32] = [7; 32];

    fn setup() -> (OtpKeys, ComputerId, Timestamp) {
        (
            OtpKeys::derive(&SECRET),
            "ws-1".parse().unwrap(),
            Timestamp::from_unix_millis(1_000_000),
        )
    }

    fn bound<'a>(computer: &'a ComputerId, os_user: &'a str, email: &'a str) -> Binding<'a> {
        Binding {
            computer,
            os_user,
            email,
        }
    }

    fn otp(keys: &OtpKeys, computer: &ComputerId, now: Timestamp, code: &Code) -> Otp {
        let until = now.after(Duration::from_secs(1800));
        let binding = Binding {
            computer,
            os_user: "alice",
            email: "Alice@Example.com",
        };
        Otp::new(keys, binding, code, now, until, Origin::AutoSend)
    }

    #[test]
    fn codes_are_digits_of_the_asked_length_and_vary() {
        for len in 6..=12 {
            let code = Code::generate(len);
            assert_eq!(code.expose().len(), usize::from(len));
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }
        let codes: std::collections::HashSet<String> = (0..100)
            .map(|_| Code::generate(8).expose().to_owned())
            .collect();
        assert!(codes.len() > 95);
    }

    #[test]
    fn digits_are_roughly_uniform() {
        let mut counts = [0u32; 10];
        for _ in 0..2_000 {
            for b in Code::generate(10).expose().bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        // 2,000 expected per digit; a biased generator would be far off.
        assert!(
            counts.iter().all(|&n| (1_700..2_300).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_right_code_is_allowed_once_and_wiped() {
        let (keys, computer, now) = setup();
        let code = Code::generate(8);
        let mut otp = otp(&keys, &computer, now, &code);
        assert_eq!(
            otp.code(&keys, &computer, "alice").unwrap().expose(),
            code.expose()
        );
        let check = |otp: &mut Otp| {
            otp.check(
                &keys,
                bound(&computer, "alice", "alice@example.COM"),
                &code,
                now,
                5,
            )
        };
        assert_eq!(check(&mut otp), Check::Allow, "email case does not matter");
        assert_eq!(otp.state, OtpState::Used);
        assert!(otp.tag.is_none() && otp.sealed.is_none());
        assert_eq!(check(&mut otp), Check::NotLive);
    }

    #[test]
    fn another_computer_user_or_email_is_just_wrong() {
        let (keys, computer, now) = setup();
        let code = Code::generate(8);
        let mut otp = otp(&keys, &computer, now, &code);
        let other: ComputerId = "ws-2".parse().unwrap();
        let wrong = Check::Wrong { locked: false };
        assert_eq!(
            otp.check(
                &keys,
                bound(&other, "alice", "alice@example.com"),
                &code,
                now,
                5
            ),
            wrong
        );
        assert_eq!(
            otp.check(
                &keys,
                bound(&computer, "bob", "alice@example.com"),
                &code,
                now,
                5
            ),
            wrong
        );
        assert_eq!(
            otp.check(
                &keys,
                bound(&computer, "alice", "bob@example.com"),
                &code,
                now,
                5
            ),
            wrong
        );
        assert_eq!(otp.attempts, 3);
        assert_eq!(
            otp.code(&keys, &other, "alice")
                .map(|c| c.expose().to_owned()),
            None
        );
    }

    #[test]
    fn the_fifth_wrong_attempt_locks_and_four_do_not() {
        let (keys, computer, now) = setup();
        let code = Code::generate(8);
        let wrong = Code::from_typed("00000000");
        let mut otp = otp(&keys, &computer, now, &code);
        let type_in = |otp: &mut Otp, typed: &Code| {
            otp.check(
                &keys,
                bound(&computer, "alice", "alice@example.com"),
                typed,
                now,
                5,
            )
        };
        for _ in 0..4 {
            assert_eq!(type_in(&mut otp, &wrong), Check::Wrong { locked: false });
        }
        let mut after_four = otp.clone();
        assert_eq!(type_in(&mut after_four, &code), Check::Allow);
        assert_eq!(type_in(&mut otp, &wrong), Check::Wrong { locked: true });
        assert_eq!(otp.state, OtpState::Locked);
        assert!(otp.sealed().is_none());
        assert_eq!(type_in(&mut otp, &code), Check::NotLive);
    }

    #[test]
    fn an_expired_code_is_wiped_and_refused() {
        let (keys, computer, now) = setup();
        let code = Code::generate(8);
        let mut otp = otp(&keys, &computer, now, &code);
        let later = now.after(Duration::from_secs(1800));
        assert!(otp.is_live(now.after(Duration::from_secs(1799))));
        assert!(!otp.is_live(later));
        assert_eq!(
            otp.check(
                &keys,
                bound(&computer, "alice", "alice@example.com"),
                &code,
                later,
                5
            ),
            Check::NotLive
        );
        assert_eq!(otp.state, OtpState::Expired);
        assert!(otp.sealed().is_none());
    }

    #[test]
    fn decision_tokens_say_what_they_were_made_for_and_resist_tampering() {
        let keys = OtpKeys::derive(&SECRET);
        let now = Timestamp::from_unix_millis(1_000_000);
        let approve = DecisionToken {
            request: 42,
            choice: Choice::Approve,
            approver: "alice".into(),
            expires: now.after(std::time::Duration::from_secs(60)),
        };
        let token = keys.decision_token(&approve);
        assert_eq!(keys.open_decision_token(&token, now), Some(approve.clone()));
        assert_eq!(
            keys.open_decision_token(&token, approve.expires),
            None,
            "expired"
        );
        assert_ne!(keys.decision_token(&approve), token, "a nonce in each");
        let deny = DecisionToken {
            choice: Choice::Deny,
            ..approve
        };
        let deny_token = keys.decision_token(&deny);
        assert_ne!(token, deny_token);
        assert_eq!(keys.open_decision_token(&deny_token, now), Some(deny));
        let mut forged = token.clone().into_bytes();
        forged[1] ^= 1;
        assert_eq!(
            keys.open_decision_token(&String::from_utf8(forged).unwrap(), now),
            None
        );
        assert_eq!(
            OtpKeys::derive(&[9; 32]).open_decision_token(&token, now),
            None
        );
        for junk in ["", ".", "zz.zz", "abc", "00.00"] {
            assert_eq!(keys.open_decision_token(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn keys_differ_per_secret() {
        let (keys, computer, now) = setup();
        let code = Code::generate(8);
        let otp = otp(&keys, &computer, now, &code);
        let other = OtpKeys::derive(&[8; 32]);
        assert!(otp.code(&other, &computer, "alice").is_none());
    }
}
