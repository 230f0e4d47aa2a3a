//! Versions of otpgate's three wires, and the rules that let releases mix.
//!
//! The agent link (agent and server, over mutual TLS), the local socket (PAM
//! module, `otpgate login` and the recorder, to their agent) and the admin
//! socket (`otpgate admin`, to the server) each have versions of their own.
//! Every frame carries, in its version byte, the version its message is written
//! in. A build speaks a range of versions of each wire ([`AGENT`], [`LOCAL`],
//! [`ADMIN`]):
//!
//! - on the agent link, the agent's Hello names its range and the server's
//!   Welcome the version both use from then on (Hello and Welcome never change
//!   and travel in version 1 frames);
//! - on the two sockets, a client writes each request in the newest version it
//!   speaks and the server answers in the same version, or in its own newest
//!   when the request's is newer: a client that gets its answer in an older
//!   version than it asked in knows the server's newest, connects again and
//!   asks again in it. (A server of the first release answers a frame of a
//!   version it does not know with a version 1 refusal, or, on the admin
//!   socket, by closing without a word; clients treat both the same way.)
//!
//! # Rules for growing a wire
//!
//! The encoding is bincode, which is positional: a value is its fields in
//! order and an enum variant is its index. So:
//!
//! 1. **A released version never changes.** `tests/golden/` holds every message
//!    of every released version as bytes, and `tests/golden.rs` checks that
//!    today's build reads each into the same value and writes that value back
//!    into the same bytes. A variant moved, a field inserted or a type changed
//!    fails there.
//! 2. **Enum variants are only appended**, never inserted, removed or
//!    reordered. A request the receiver does not know is answered with
//!    `Unsupported` (the id it carries is read from the envelope,
//!    [`crate::message::Unreadable`]); a response or a push the receiver does
//!    not know fails that one request, or is let pass. The connection stays up:
//!    every frame says how long it is.
//! 3. **Struct fields are only appended, and only by a new version.** bincode
//!    cannot tell a missing trailing field from the next value, so a struct
//!    that grows gets its old shape frozen as a type of the older version (the
//!    admin wire's `admin::v1`), and the message's [`Message`] impl converts
//!    between them. Types that are the same in every version are shared.
//! 4. **Each side writes only what the version in use can say.** A value the
//!    older version cannot carry is said as the nearest thing it can (a newer
//!    error code as an older one, a newer field left out); a request it cannot
//!    carry is not sent ([`crate::FrameError::NotInVersion`]), and the caller
//!    does without.
//! 5. **An old version is served for two releases** after the one that
//!    replaced it, so that servers, agents and PAM modules may be upgraded in
//!    any order within that time.

use bytes::BytesMut;

use crate::frame::{Frame, FrameError, split};

/// The versions of one wire that a build speaks: every one from `oldest` to
/// `newest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// The oldest.
    pub oldest: u8,
    /// The newest.
    pub newest: u8,
}

impl Versions {
    /// Whether `version` is one of them.
    pub const fn contains(self, version: u8) -> bool {
        self.oldest <= version && version <= self.newest
    }

    /// `version`, if it is one of them.
    pub fn check(self, version: u8) -> Result<u8, FrameError> {
        if self.contains(version) {
            Ok(version)
        } else {
            Err(FrameError::UnsupportedVersion { version })
        }
    }

    /// The version to answer a request written in `version` in: the same, or
    /// our newest when `version` is newer (the client then asks again in it).
    pub fn answering(self, version: u8) -> u8 {
        version.clamp(self.oldest, self.newest)
    }

    /// For a client that asked in version `asked` and got an answer written in
    /// `answered` (`None`: the connection closed without one), the older
    /// version to ask again in, if the server showed that it speaks only that:
    /// an answer in an older version we speak, or, from a server of the first
    /// release, a close without a word.
    pub fn fall_back(self, asked: u8, answered: Option<u8>) -> Option<u8> {
        match answered {
            Some(answered) => (answered < asked && self.contains(answered)).then_some(answered),
            None => (asked > self.oldest).then_some(self.oldest),
        }
    }
}

/// The agent link's versions: 1 is the first release's; 2 adds
/// `ErrorCode::Unsupported`, with unknown requests answered instead of closing
/// the connection.
pub const AGENT: Versions = Versions {
    oldest: 1,
    newest: 2,
};

/// The local socket's versions: 1 is the first release's; 2 adds
/// `LocalError::Unsupported`, with unknown requests answered instead of closing
/// the connection.
pub const LOCAL: Versions = Versions {
    oldest: 1,
    newest: 2,
};

/// The admin socket's versions: 1 is the first release's; 2 adds
/// `AdminErrorCode::Unsupported` and each client's software and protocol
/// versions in `ClientView`.
pub const ADMIN: Versions = Versions {
    oldest: 1,
    newest: 2,
};

/// The enrollment wire's versions (a computer asking for its first
/// certificate with a join token, see [`crate::enroll`]): 1 is the first.
pub const ENROLL: Versions = Versions {
    oldest: 1,
    newest: 1,
};

/// A message of one of the wires, written and read in every version of it that
/// this build speaks.
pub trait Message: Sized {
    /// The versions of its wire.
    const VERSIONS: Versions;

    /// Appends `self` to `dst` as one frame of `version`, in that version's
    /// shapes.
    fn encode(&self, version: u8, dst: &mut BytesMut) -> Result<(), FrameError>;

    /// The message `frame` holds, read in the frame's version.
    fn decode(frame: &Frame) -> Result<Self, FrameError>;
}

/// Implements [`Message`] for a type written the same in every version of
/// `$versions` (its wire's): nothing to convert.
macro_rules! same_in_every_version {
    ($message:ty, $versions:expr) => {
        impl $crate::version::Message for $message {
            const VERSIONS: $crate::version::Versions = $versions;

            fn encode(
                &self,
                version: u8,
                dst: &mut bytes::BytesMut,
            ) -> Result<(), $crate::frame::FrameError> {
                $crate::frame::encode_as(self, Self::VERSIONS.check(version)?, dst)
            }

            fn decode(frame: &$crate::frame::Frame) -> Result<Self, $crate::frame::FrameError> {
                Self::VERSIONS.check(frame.version)?;
                frame.decode()
            }
        }
    };
}
pub(crate) use same_in_every_version;

/// Takes one message off the front of `src`: `Ok(None)` until a whole frame is
/// there. On `Err` the frame is consumed; what it held could not be read.
pub fn decode<M: Message>(src: &mut BytesMut) -> Result<Option<M>, FrameError> {
    match split(src)? {
        Some(frame) => M::decode(&frame).map(Some),
        None => Ok(None),
    }
}

/// Appends `msg` to `dst` as one frame of `version`.
pub fn encode<M: Message>(msg: &M, version: u8, dst: &mut BytesMut) -> Result<(), FrameError> {
    msg.encode(version, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_newer_than_us_is_answered_in_our_newest() {
        let versions = Versions {
            oldest: 1,
            newest: 3,
        };
        assert_eq!(versions.answering(2), 2);
        assert_eq!(versions.answering(9), 3);
        assert_eq!(versions.answering(0), 1);
        assert!(versions.check(4).is_err());
        assert_eq!(versions.check(1).unwrap(), 1);
    }

    #[test]
    fn a_client_falls_back_to_what_an_older_server_answers_in() {
        let versions = Versions {
            oldest: 1,
            newest: 3,
        };
        assert_eq!(versions.fall_back(3, Some(3)), None, "the same: no");
        assert_eq!(versions.fall_back(3, Some(2)), Some(2));
        assert_eq!(versions.fall_back(2, Some(3)), None, "newer: no");
        assert_eq!(versions.fall_back(3, Some(0)), None, "one we do not speak");
        assert_eq!(versions.fall_back(3, None), Some(1), "closed: the first");
        assert_eq!(versions.fall_back(1, None), None, "nothing older to try");
    }
}
