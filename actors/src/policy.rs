//! Policy held in memory with one owner: the System Settings, the client groups
//! and the internal users. Readers (every computer's actor, the admin handler)
//! take an immutable [`Snapshot`] and never re-read the store; every change goes
//! through the [`Owner`], which writes it through to the store with its audit
//! entry, makes it durable, and only then swaps in the new snapshot. A
//! computer's own options stay with that computer's actor.
//!
//! With several servers over one database, a change is made in the site's
//! policy turn ([`Alone::Policy`]) and starts from the policy as the database
//! holds it then, not from this node's snapshot (which may be a second
//! behind another node's change): no change of one node overwrites another's.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{Mutex, MutexGuard};

use crate::audit::AuditEntry;
use crate::directory::UserRecord;
use crate::settings::{Effective, GroupRecord, Options, SystemSettings};
use crate::store::{Alone, ComputerRecord, Exclusive, Store, StoreError};

/// The policy at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The System Settings.
    pub settings: SystemSettings,
    /// The client groups, by name.
    pub groups: BTreeMap<String, GroupRecord>,
    /// The internal users, by login name.
    pub users: BTreeMap<String, UserRecord>,
}

impl Snapshot {
    /// The options in force on the computer `record` describes: its own over its
    /// group's over the defaults.
    pub fn effective(&self, record: &ComputerRecord) -> Effective {
        let group = record
            .group
            .as_ref()
            .and_then(|name| self.groups.get(name))
            .map_or_else(Options::default, |group| group.options.clone());
        record.options.over(&group.over(&Effective::default()))
    }

    /// Internal user `login`.
    pub fn user(&self, login: &str) -> Option<&UserRecord> {
        self.users.get(login)
    }

    /// The policy as `store` keeps it.
    async fn read(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(Self {
            settings: store.settings().await?,
            groups: store.groups().await?.into_iter().collect(),
            users: store
                .users()
                .await?
                .into_iter()
                .map(|user| (user.login.clone(), user))
                .collect(),
        })
    }
}

/// The one owner of the policy; cheap to clone, every clone the same owner.
#[derive(Clone)]
pub struct Owner {
    store: Arc<dyn Store>,
    current: Arc<RwLock<Arc<Snapshot>>>,
    /// Held while a change is made, so that changes never interleave.
    writer: Arc<Mutex<()>>,
}

impl Owner {
    /// Loads the policy from `store`.
    pub async fn load(store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let snapshot = Snapshot::read(store.as_ref()).await?;
        Ok(Self {
            store,
            current: Arc::new(RwLock::new(Arc::new(snapshot))),
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Reads the policy again (another node changed it), between changes
    /// made here.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _guard = self.writer.lock().await;
        let snapshot = Snapshot::read(self.store.as_ref()).await?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        Ok(())
    }

    /// The policy now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        // A writer that panicked left the last good snapshot in place.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts a change, from the policy as the store holds it now: the edits
    /// made through the [`Edit`] take effect together when it is committed.
    /// Changes are made one at a time, on this node and across the site.
    pub async fn edit(&self) -> Result<Edit<'_>, StoreError> {
        let guard = self.writer.lock().await;
        let turn = self.store.alone(Alone::Policy).await?;
        let next = Snapshot::read(self.store.as_ref()).await?;
        Ok(Edit {
            owner: self,
            _guard: guard,
            _turn: turn,
            next,
            writes: Vec::new(),
        })
    }
}

/// One write an [`Edit`] will make.
enum Write {
    Settings,
    Group(String),
    User(String),
}

/// A change in progress; nothing is written or seen until [`Edit::commit`].
pub struct Edit<'a> {
    owner: &'a Owner,
    _guard: MutexGuard<'a, ()>,
    _turn: Exclusive,
    next: Snapshot,
    writes: Vec<Write>,
}

impl Edit<'_> {
    /// The policy as this change has it so far.
    pub fn current(&self) -> &Snapshot {
        &self.next
    }

    /// Replaces the System Settings (the caller has validated them).
    pub fn set_settings(&mut self, settings: SystemSettings) {
        self.next.settings = settings;
        self.writes.push(Write::Settings);
    }

    /// Adds or replaces client group `name`.
    pub fn put_group(&mut self, name: &str, group: GroupRecord) {
        self.next.groups.insert(name.to_owned(), group);
        self.writes.push(Write::Group(name.to_owned()));
    }

    /// Adds or replaces an internal user.
    pub fn put_user(&mut self, user: UserRecord) {
        self.writes.push(Write::User(user.login.clone()));
        self.next.users.insert(user.login.clone(), user);
    }

    /// Writes the change and `audit` through to the store, makes them durable,
    /// then lets readers see the new policy.
    pub async fn commit(self, audit: &AuditEntry) -> Result<(), StoreError> {
        let store = self.owner.store.as_ref();
        for write in &self.writes {
            match write {
                Write::Settings => store.put_settings(&self.next.settings)?,
                Write::Group(name) => {
                    if let Some(group) = self.next.groups.get(name) {
                        store.put_group(name, group)?;
                    }
                }
                Write::User(login) => {
                    if let Some(user) = self.next.users.get(login) {
                        store.put_user(user)?;
                    }
                }
            }
        }
        store.append_audit(audit)?;
        store.flush().await?;
        *self
            .owner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(self.next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::Action;
    use crate::clock::Timestamp;
    use crate::directory::Role;
    use crate::store::KvStore;

    fn audit() -> AuditEntry {
        AuditEntry {
            at: Timestamp::from_unix_millis(0),
            who: crate::audit::Who::Server,
            computer: None,
            action: Action::Configure,
            outcome: "changed".into(),
        }
    }

    #[tokio::test]
    async fn changes_are_seen_once_committed_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(KvStore::open(dir.path()).unwrap());
        let owner = Owner::load(Arc::clone(&store)).await.unwrap();
        let before = owner.snapshot();

        let mut edit = owner.edit().await.unwrap();
        edit.set_settings(SystemSettings {
            expiration: Duration::from_secs(120),
            ..SystemSettings::default()
        });
        edit.put_group(
            "finance",
            GroupRecord {
                options: Options {
                    approvers: Some(vec!["bob".into()]),
                    ..Options::default()
                },
            },
        );
        edit.put_user(UserRecord {
            login: "bob".into(),
            email: "bob@example.com".into(),
            password_hash: String::new(),
            role: Role::User,
            password_change_due: false,
            disabled: false,
        });
        assert_eq!(owner.snapshot(), before, "not seen before the commit");
        edit.commit(&audit()).await.unwrap();

        let now = owner.snapshot();
        assert_eq!(now.settings.expiration, Duration::from_secs(120));
        assert!(now.user("bob").is_some());
        let record = ComputerRecord {
            first_seen: Timestamp::from_unix_millis(0),
            connected_since: None,
            last_seen: Timestamp::from_unix_millis(0),
            host_name: String::new(),
            agent_version: String::new(),
            group: Some("finance".into()),
            options: Options::default(),
            protocol: None,
        };
        assert_eq!(now.effective(&record).approvers, ["bob"]);

        let reloaded = Owner::load(store).await.unwrap().snapshot();
        assert_eq!(*reloaded, *now);
        assert_eq!(reloaded.settings.expiration, Duration::from_secs(120));
    }
}
