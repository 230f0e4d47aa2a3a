//! Who is signed in to the web Management Tool: internal users with their
//! password, directory people with theirs (checked by the directory; their
//! groups read at sign-in); sessions held in memory behind a random cookie
//! (`Secure`, `HttpOnly`, `SameSite=Strict`) with idle and absolute timeouts,
//! a CSRF token per session, and sign-in throttled per account and per
//! address.
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::App;
use crate::server::service::{Principal, Via};

/// The session cookie's name.
pub const COOKIE: &str = "otpgate_session";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, busy or not.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);

/// One signed-in browser.
struct Session {
    /// Who signed in (with the credential they signed in with).
    principal: Principal,
    csrf: String,
    started: Instant,
    last_seen: Instant,
    /// Event streams open now.
    streams: Arc<AtomicUsize>,
    /// Readings of recordings running now.
    readings: Arc<AtomicUsize>,
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

/// The open sessions, by cookie value, and the sign-in throttles.
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    per_account: DefaultKeyedRateLimiter<String>,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for Sessions {
    fn default() -> Self {
        let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            open: Mutex::default(),
            per_account: RateLimiter::keyed(per_minute(5)),
            per_address: RateLimiter::keyed(per_minute(20)),
        }
    }
}

/// 32 random bytes, hex.
fn token() -> String {
    let bytes: [u8; 32] = rand::random();
    data_encoding::HEXLOWER.encode(&bytes)
}

impl Sessions {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a sign-in attempt for `login` from `address` may be checked now.
    pub fn may_try(&self, login: &str, address: IpAddr) -> bool {
        self.per_address.check_key(&address).is_ok()
            && self.per_account.check_key(&login.to_owned()).is_ok()
    }

    /// Opens a session for `principal`, who signed in; its cookie value.
    pub fn start(&self, principal: Principal) -> String {
        let now = Instant::now();
        let id = token();
        let mut open = self.open();
        open.retain(|_, s| alive(s, now));
        open.insert(
            id.clone(),
            Session {
                principal,
                csrf: token(),
                started: now,
                last_seen: now,
                streams: Arc::default(),
                readings: Arc::default(),
            },
        );
        id
    }

    /// Ends session `id`.
    pub fn end(&self, id: &str) {
        self.open().remove(id);
    }

    /// Whether session `id` is still alive, without counting as activity.
    pub fn is_open(&self, id: &str) -> bool {
        self.open()
            .get(id)
            .is_some_and(|session| alive(session, Instant::now()))
    }

    /// One more `held` for session `id`, or `None` when it holds as many as
    /// it may (or has ended).
    pub fn hold(&self, id: &str, held: Held) -> Option<Slot> {
        let open = self.open();
        let session = open.get(id)?;
        let count = match held {
            Held::Stream => &session.streams,
            Held::Reading => &session.readings,
        };
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < held.most()).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(Arc::clone(count)))
    }

    /// The session behind cookie `id`, if it is still alive: who signed in,
    /// and the CSRF token. Counts as activity.
    fn touch(&self, id: &str) -> Option<(Principal, String)> {
        let now = Instant::now();
        let mut open = self.open();
        match open.get_mut(id) {
            Some(session) if alive(session, now) => {
                session.last_seen = now;
                Some((session.principal.clone(), session.csrf.clone()))
            }
            Some(_) => {
                open.remove(id);
                None
            }
            None => None,
        }
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.duration_since(session.last_seen) < IDLE && now.duration_since(session.started) < ABSOLUTE
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
        let session = cookie(&parts.headers, COOKIE).map(str::to_owned);
        // Who signed in, as long as they still stand (an internal user still
        // enabled, with the password they signed in with).
        let found = session
            .as_deref()
            .and_then(|id| app.sessions.touch(id))
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

    #[test]
    fn a_session_lives_until_idle_or_too_old() {
        let sessions = Sessions::default();
        let alice = || Principal {
            identity: crate::server::service::Identity::User("alice".into()),
            via: Via::Web { address: None },
            credential: None,
        };
        let id = sessions.start(alice());
        assert_eq!(sessions.touch(&id).map(|(p, _)| p), Some(alice()));
        sessions.open().get_mut(&id).unwrap().last_seen -= IDLE;
        assert!(sessions.touch(&id).is_none(), "idle too long");
        let id = sessions.start(alice());
        sessions.open().get_mut(&id).unwrap().started -= ABSOLUTE;
        assert!(sessions.touch(&id).is_none(), "too old");
        let id = sessions.start(alice());
        assert!(sessions.is_open(&id));
        sessions.end(&id);
        assert!(!sessions.is_open(&id));
        assert!(sessions.touch(&id).is_none(), "signed out");
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
