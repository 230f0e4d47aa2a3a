//! The server's data folder: what in it is the owner's only (tightened at
//! every start), and the first administrator, made on the first start.

use tracing::warn;
use zeroize::Zeroizing;

use otpgate_actors::audit::{Action, AuditEntry, Who};
use otpgate_actors::directory::{Role, UserRecord};
use otpgate_actors::otp::OtpKeys;
use otpgate_actors::store::{Alone, Exclusive};
use otpgate_actors::{Clock, KvStore, Store, policy};
use rand::RngExt;

use super::OpenError;
use super::config::ServerConfig;
use super::service;

/// The owner's only parts of a data folder, and the modes they must not exceed.
const PRIVATE: [(&str, u32); 9] = [
    ("", 0o700),
    ("db", 0o700),
    ("pki", 0o700),
    (RECORDINGS, 0o700),
    ("secret.key", 0o600),
    ("pki/ca.key", 0o600),
    ("pki/server.key", 0o600),
    ("pki/revoked.txt", 0o600),
    (INITIAL_PASSWORD_FILE, 0o600),
];

/// Takes away any permission others were given on the private parts of data
/// folder `data` (a copy or a restore may have widened them), and says so.
pub(super) fn tighten_data_dir(data: &std::path::Path) -> Result<(), OpenError> {
    for (part, mode) in PRIVATE {
        let path = data.join(part);
        match crate::files::tighten(&path, mode) {
            Ok(Some(had)) => warn!(
                path = %path.display(),
                had = format_args!("{had:o}"),
                now = format_args!("{:o}", had & mode),
                "others could read this; tightened"
            ),
            Ok(None) => {}
            Err(source) => return Err(OpenError::DataDir { path, source }),
        }
    }
    Ok(())
}

/// The recordings' database folder, in the data folder.
pub const RECORDINGS: &str = "recordings";

/// The login name of the administrator created on first start.
pub const INITIAL_ADMIN: &str = "admin";

/// Where the first administrator's password is kept, in the data folder.
pub const INITIAL_PASSWORD_FILE: &str = "admin-password";

/// The first thing a server does once its store is open, one node at a
/// time: checks that its secret is the site's (refused otherwise, before it
/// writes anything there: its OTPs, seals and tickets would not be the other
/// nodes'). The turn is held until [`first_admin`].
pub(super) async fn same_site(store: &KvStore, keys: &OtpKeys) -> Result<Exclusive, OpenError> {
    let turn = store.alone(Alone::FirstStart).await?;
    if !store.same_site(keys.site_mark()).await? {
        return Err(OpenError::OtherSite);
    }
    Ok(turn)
}

/// Creates the first administrator if there are no internal users yet, in
/// the first start's `turn` (see [`same_site`]: nodes starting together
/// over one new database make one), with a random password that is returned
/// once and kept in a 0600 file.
pub(super) async fn first_admin(
    policy: &policy::Owner,
    config: &ServerConfig,
    clock: &dyn Clock,
    turn: Exclusive,
) -> Result<Option<Zeroizing<String>>, OpenError> {
    // As the node before this one left them.
    policy.reload().await?;
    let mut edit = policy.edit().await?;
    if !edit.current().users.is_empty() {
        return Ok(None);
    }
    let password = random_password();
    let path = config.data_dir.join(INITIAL_PASSWORD_FILE);
    crate::files::write_private(&path, format!("{}\n", password.as_str()).as_bytes()).map_err(
        |source| OpenError::DataDir {
            path: path.clone(),
            source,
        },
    )?;
    let password_hash = service::hash_off_runtime(password.clone()).await;
    edit.put_user(UserRecord {
        login: INITIAL_ADMIN.to_owned(),
        email: config.admin_email.clone(),
        password_hash,
        role: Role::Administrator,
        password_change_due: true,
        disabled: false,
    });
    edit.commit(&AuditEntry {
        at: clock.now(),
        who: Who::Server,
        computer: None,
        action: Action::Configure,
        outcome: format!("administrator {INITIAL_ADMIN} created"),
    })
    .await?;
    drop(turn);
    Ok(Some(password))
}

/// 20 characters from a 57-letter alphabet without look-alikes: about 116 bits.
fn random_password() -> Zeroizing<String> {
    // No 0/O, 1/l/I: read off a screen and typed in.
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    const LENGTH: usize = 20;
    let mut rng = rand::rng();
    let mut password = Zeroizing::new(String::with_capacity(LENGTH));
    for _ in 0..LENGTH {
        password.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    password
}
