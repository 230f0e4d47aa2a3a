//! Who is signed in to the web Management Tool: internal users with their
//! password, directory people with theirs (checked by the directory; their
//! groups read at sign-in); sessions behind a random cookie (`Secure`,
//! `HttpOnly`, `SameSite=Strict`) with idle and absolute timeouts, a CSRF
//! token per session, and sign-in throttled per account and per address.
//! Sessions are kept under the SHA-256 of their cookie: in this process over
//! sled, in the store's PostgreSQL database otherwise, where every server of
//! the site shares them (a session outlives the server it began on, and a
//! sign-out on one ends it on all).
//!
//! A signed-in internal user is checked against the current users on every
//! request (by the admin service): a removed, disabled or demoted user loses
//! what they had at once. A directory person approves only, and where the
//! approver entries name them (checked on every decision); disabled in the
//! directory, they keep their session until it times out. Every change comes
//! as a [`Posted`] form, which checks the session's CSRF token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;

use otpgate_actors::clock::{Clock, Timestamp};
use otpgate_actors::store::record::{self, Record};
use otpgate_actors::store::{Order, SideDb, SideTable, SideWrite, StoreError, WEB_SESSIONS};

use super::App;
use crate::server::service::{Credential, Identity, Principal, Via};

/// The session cookie's name.
pub const COOKIE: &str = "otpgate_session";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, busy or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// How stale a session's last request may be written: a request within this
/// of the one written is not written (one write a minute per busy session,
/// not one per page).
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// One signed-in browser, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Who signed in.
    identity: Identity,
    /// The password they signed in with, for an internal user.
    credential: Option<Credential>,
    csrf: String,
    started: Timestamp,
    last_seen: Timestamp,
}

impl Record for Session {}

impl Session {
    fn alive(&self, now: Timestamp) -> bool {
        now.since(self.last_seen) < IDLE && now.since(self.started) < ABSOLUTE
    }
}

/// What one session may hold at once of what costs the server while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// An event stream (`/events`): one per open page, a few tabs' worth.
    Stream,
    /// Reading recordings whole (a search, or checking one before it is
    /// handed out), which inflates them.
    Reading,
}

impl Held {
    /// How many one session may hold at once.
    fn most(self) -> usize {
        match self {
            Self::Stream => 4,
            Self::Reading => 2,
        }
    }
}

/// One of what a session holds, given back when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one session holds on this server now, by [`Held`].
#[derive(Default)]
struct Holding {
    streams: Arc<AtomicUsize>,
    readings: Arc<AtomicUsize>,
}

impl Holding {
    fn idle(&self) -> bool {
        self.streams.load(Ordering::Acquire) == 0 && self.readings.load(Ordering::Acquire) == 0
    }
}

/// Where sessions are kept, by the SHA-256 of their cookie (a reader of the
/// database learns no cookie).
enum Kept {
    /// In this process: one server over its own store.
    Here(Mutex<HashMap<[u8; 32], Session>>),
    /// In the store's PostgreSQL database ([`WEB_SESSIONS`]), for every
    /// server of the site: a session opened on one is open on all, and ends
    /// on all at once.
    Shared(SideDb, SideTable),
}

/// Why a session could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the sessions could not be read or written: {0}")]
pub struct Unavailable(String);

impl From<StoreError> for Unavailable {
    fn from(err: StoreError) -> Self {
        Self(err.to_string())
    }
}

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        warn!(error = %self, "a web session could not be checked");
        super::views::message(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "Unavailable",
            Some("Sign-in cannot be checked now; try again in a moment.".into()),
        )
    }
}

/// The open sessions, what they hold on this server, and the sign-in
/// throttles (of this server).
pub struct Sessions {
    kept: Arc<Kept>,
    clock: Arc<dyn Clock>,
    holding: Mutex<HashMap<[u8; 32], Holding>>,
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
}

/// 32 random bytes, hex.
fn token() -> String {
    let bytes: [u8; 32] = rand::random();
    data_encoding::HEXLOWER.encode(&bytes)
}

/// The key a session is kept under: the SHA-256 of its cookie.
fn key_of(cookie: &str) -> [u8; 32] {
    otpgate_actors::digest::sha256(cookie.as_bytes())
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kept {
    /// The session kept under `key`. Blocks, in PostgreSQL.
    fn get(&self, key: &[u8; 32]) -> Result<Option<Session>, StoreError> {
        match self {
            Self::Here(open) => Ok(locked(open).get(key).cloned()),
            Self::Shared(_, table) => table
                .get(key)?
                .map(|bytes| record::decode(WEB_SESSIONS, &bytes))
                .transpose(),
        }
    }

    /// Keeps `session` under `key`, or (`None`) removes what is there, and
    /// (with `prune`) every session that is no longer alive at `now`.
    /// Blocks, in PostgreSQL; durable once [`Kept::flush`] has returned.
    fn put(
        &self,
        key: &[u8; 32],
        session: Option<&Session>,
        prune: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Here(open) => {
                let mut open = locked(open);
                if let Some(now) = prune {
                    open.retain(|_, session| session.alive(now));
                }
                match session {
                    Some(session) => open.insert(*key, session.clone()),
                    None => open.remove(key),
                };
                Ok(())
            }
            Self::Shared(db, table) => {
                let mut dead = Vec::new();
                if let Some(now) = prune {
                    let everything = (Bound::Unbounded, Bound::Unbounded);
                    for pair in table.range(everything, Order::Oldest) {
                        let (key, bytes) = pair?;
                        // One this build cannot read (a newer release's)
                        // is left to the release that wrote it.
                        let read = record::decode::<Session>(WEB_SESSIONS, &bytes);
                        if read.is_ok_and(|session| !session.alive(now)) {
                            dead.push(key);
                        }
                    }
                }
                let value = session.map(record::encode).transpose()?;
                let mut writes: Vec<SideWrite<'_>> = dead
                    .iter()
                    .map(|key| SideWrite::Remove(table, key))
                    .collect();
                writes.push(match &value {
                    Some(value) => SideWrite::Put(table, key, value),
                    None => SideWrite::Remove(table, key),
                });
                db.write(&writes)
            }
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Self::Here(_) => Ok(()),
            Self::Shared(db, _) => db.flush().await,
        }
    }
}

impl Sessions {
    /// Sessions kept in `db`'s [`WEB_SESSIONS`] table when the store is in
    /// PostgreSQL (shared by the site's servers), else in this process;
    /// their times read from `clock`.
    pub fn new(db: Option<SideDb>, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let kept = match db {
            Some(db) => {
                let table = db.table(WEB_SESSIONS)?;
                Kept::Shared(db, table)
            }
            None => Kept::Here(Mutex::default()),
        };
        let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Ok(Self {
            kept: Arc::new(kept),
            clock,
            holding: Mutex::default(),
            per_account: RateLimiter::keyed(per_minute(5)),
            per_address: RateLimiter::keyed(per_minute(20)),
        })
    }

    /// Runs `work` on the kept sessions, on a blocking thread (PostgreSQL's
    /// reads and writes block).
    async fn on_kept<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Kept) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Unavailable> {
        let kept = Arc::clone(&self.kept);
        tokio::task::spawn_blocking(move || work(&kept))
            .await
            .map_err(|err| Unavailable(err.to_string()))?
            .map_err(Unavailable::from)
    }

    /// Whether a sign-in attempt for `login` from `address` may be checked now.
    pub fn may_try(&self, login: &str, address: IpAddr) -> bool {
        self.per_address.check_key(&address).is_ok()
            && self.per_account.check_key(&login.to_owned()).is_ok()
    }

    /// Opens a session for `principal`, who signed in; its cookie value,
    /// once the session is kept (durably, in PostgreSQL).
    pub async fn start(&self, principal: Principal) -> Result<String, Unavailable> {
        let now = self.clock.now();
        let cookie = token();
        let key = key_of(&cookie);
        let session = Session {
            identity: principal.identity,
            credential: principal.credential,
            csrf: token(),
            started: now,
            last_seen: now,
        };
        locked(&self.holding).retain(|_, holding| !holding.idle());
        self.on_kept(move |kept| kept.put(&key, Some(&session), Some(now)))
            .await?;
        self.kept.flush().await?;
        Ok(cookie)
    }

    /// Ends session `cookie`, on every server that shares it.
    pub async fn end(&self, cookie: &str) -> Result<(), Unavailable> {
        let key = key_of(cookie);
        self.on_kept(move |kept| kept.put(&key, None, None)).await?;
        self.kept.flush().await?;
        Ok(())
    }

    /// Whether session `cookie` is still alive, without counting as
    /// activity; a session that cannot be read counts as alive.
    pub async fn is_open(&self, cookie: &str) -> bool {
        let key = key_of(cookie);
        let now = self.clock.now();
        match self.on_kept(move |kept| kept.get(&key)).await {
            Ok(found) => found.is_some_and(|session| session.alive(now)),
            Err(_) => true,
        }
    }

    /// One more `held` for session `cookie` on this server, or `None` when it
    /// holds as many as it may.
    pub fn hold(&self, cookie: &str, held: Held) -> Option<Slot> {
        let mut holding = locked(&self.holding);
        let holds = holding.entry(key_of(cookie)).or_default();
        let count = match held {
            Held::Stream => &holds.streams,
            Held::Reading => &holds.readings,
        };
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < held.most()).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(Arc::clone(count)))
    }

    /// The session behind cookie `cookie`, if it is still alive: who signed
    /// in (without where from), and the CSRF token. Counts as activity.
    async fn touch(&self, cookie: &str) -> Result<Option<(Principal, String)>, Unavailable> {
        let key = key_of(cookie);
        let now = self.clock.now();
        let (session, written) = self
            .on_kept(move |kept| {
                let Some(mut session) = kept.get(&key)? else {
                    return Ok((None, false));
                };
                if !session.alive(now) {
                    kept.put(&key, None, None)?;
                    return Ok((None, true));
                }
                let seen = now.since(session.last_seen) >= SEEN_EVERY;
                if seen {
                    session.last_seen = now;
                    kept.put(&key, Some(&session), None)?;
                }
                Ok((Some(session), seen))
            })
            .await?;
        if written {
            self.kept.flush().await?;
        }
        Ok(session.map(|session| {
            let principal = Principal {
                identity: session.identity,
                via: Via::Web { address: None },
                credential: session.credential,
            };
            (principal, session.csrf)
        }))
    }
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that holds session `id`.
pub fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A signed-in person, as the request's handler sees them.
pub struct SignedIn {
    /// Who they are to the admin service.
    pub principal: Principal,
    /// Whether they are an administrator now.
    admin: bool,
    /// The token every form of theirs must carry back.
    pub csrf: String,
    /// The cookie value, for sign-out.
    pub session: String,
}

impl SignedIn {
    /// Whether they are an administrator.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The name they signed in with: an internal user's login, a directory
    /// person's canonical account.
    pub fn login(&self) -> &str {
        self.principal.name()
    }

    /// Whether `sent` is their CSRF token (compared in constant time).
    fn csrf_ok(&self, sent: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.csrf.len() == sent.len() && bool::from(self.csrf.as_bytes().ct_eq(sent.as_bytes()))
    }
}

impl FromRequestParts<App> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        // Only what we hand out is looked for: 64 hex digits.
        let session = cookie(&parts.headers, COOKIE)
            .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned);
        let touched = match &session {
            Some(cookie) => app
                .sessions
                .touch(cookie)
                .await
                .map_err(IntoResponse::into_response)?,
            None => None,
        };
        // Who signed in, as long as they still stand (an internal user still
        // enabled, with the password they signed in with).
        let found = touched
            .map(|(principal, csrf)| {
                let via = Via::Web { address };
                (Principal { via, ..principal }, csrf)
            })
            .filter(|(principal, _)| app.service.stands(principal));
        match (found, session) {
            (Some((principal, csrf)), Some(session)) => Ok(Self {
                admin: app.service.is_admin(&principal),
                principal,
                csrf,
                session,
            }),
            _ => {
                // Back here once signed in: only a path of ours.
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let target = format!("/signin?next={}", super::query_escape(&next));
                Err(Redirect::to(&target).into_response())
            }
        }
    }
}

/// A form posted by a signed-in person, its CSRF token checked: the one place
/// it is. Every change the pages make comes as one.
pub struct Posted<T> {
    /// Who posted it.
    pub signed: SignedIn,
    /// The form's fields.
    pub form: T,
}

/// The CSRF token every form carries, whatever else it holds.
#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    csrf: String,
}

impl<T: DeserializeOwned> FromRequest<App> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &App) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let signed = SignedIn::from_request_parts(&mut parts, app).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(IntoResponse::into_response)?;
        let token: Token = serde_urlencoded::from_bytes(&bytes).unwrap_or(Token {
            csrf: String::new(),
        });
        if !signed.csrf_ok(&token.csrf) {
            return Err(super::views::csrf_refused());
        }
        match serde_urlencoded::from_bytes(&bytes) {
            Ok(form) => Ok(Self { signed, form }),
            Err(err) => Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the form could not be read: {err}"),
            )
                .into_response()),
        }
    }
}

/// Whether `next` is a path on this site to go back to after sign-in: made
/// only of characters a path and query carry as they are (letters, digits,
/// `-._~/?=&%+`: no space, tab, newline or backslash, which browsers drop or
/// turn into a slash), one `/` first, and read as a URI of a path and query
/// only (no scheme, no host).
pub fn local_path(next: &str) -> bool {
    let safe = next
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/?=&%+".contains(&b));
    safe && next.starts_with('/')
        && !next.starts_with("//")
        && next
            .parse::<axum::http::Uri>()
            .is_ok_and(|uri| uri.scheme().is_none() && uri.authority().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert!(local_path("/requests/decide?token=abc"));
        assert!(local_path("/recordings?q=needle%20x&t=3"));
        for outside in [
            "//evil.example",
            "https://evil.example/",
            "/\\evil",
            "evil",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "",
        ] {
            assert!(!local_path(outside), "{outside}");
        }
    }

    #[tokio::test]
    async fn a_session_lives_until_idle_or_too_old_or_signed_out() {
        use otpgate_actors::clock::ManualClock;
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_800_000_000_000));
        let sessions = Sessions::new(None, Arc::new(clock.clone())).unwrap();
        let alice = || Principal {
            identity: Identity::User("alice".into()),
            via: Via::Web { address: None },
            credential: None,
        };
        async fn signed(sessions: &Sessions, id: &str) -> Option<Principal> {
            sessions
                .touch(id)
                .await
                .unwrap()
                .map(|(principal, _)| principal)
        }
        let id = sessions.start(alice()).await.unwrap();
        assert_eq!(signed(&sessions, &id).await, Some(alice()));
        // Busy: each request within the idle time keeps it.
        for _ in 0..3 {
            clock.advance(IDLE - SEEN_EVERY);
            assert_eq!(signed(&sessions, &id).await, Some(alice()), "busy");
        }
        clock.advance(IDLE);
        assert!(signed(&sessions, &id).await.is_none(), "idle too long");

        // In use all along: no longer than the absolute time.
        let id = sessions.start(alice()).await.unwrap();
        let step = IDLE - SEEN_EVERY;
        let mut elapsed = Duration::ZERO;
        while elapsed + step < ABSOLUTE {
            clock.advance(step);
            elapsed += step;
            assert!(signed(&sessions, &id).await.is_some(), "kept by use");
        }
        clock.advance(step);
        assert!(signed(&sessions, &id).await.is_none(), "too old");

        let id = sessions.start(alice()).await.unwrap();
        assert!(sessions.is_open(&id).await);
        sessions.end(&id).await.unwrap();
        assert!(!sessions.is_open(&id).await);
        assert!(signed(&sessions, &id).await.is_none(), "signed out");
        // Kept under the cookie's hash, and dead ones pruned by a sign-in.
        let Kept::Here(open) = &*sessions.kept else {
            unreachable!("no database given")
        };
        sessions.start(alice()).await.unwrap();
        clock.advance(ABSOLUTE);
        let id = sessions.start(alice()).await.unwrap();
        assert_eq!(locked(open).keys().collect::<Vec<_>>(), [&key_of(&id)]);
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; otpgate_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
