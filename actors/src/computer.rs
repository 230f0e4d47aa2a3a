//! The actor that owns one client computer: its connections and, as the product
//! grows, its OTPs, access requests, timers and rate limits. Every decision about
//! one computer goes through its mailbox, so they are serialised without locks.
//!
//! Its state is loaded from the [`Store`] in `pre_start`, so a restart by the
//! supervisor is just a respawn.

use std::collections::HashSet;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::clock::{Clock, Timestamp};
use crate::id::ComputerId;
use crate::store::{ComputerRecord, Store, StoreError};

/// What a [`ComputerActor`] is asked to do.
pub enum ComputerMsg {
    /// An agent connection for this computer was established.
    Connect {
        /// Which connection.
        conn: ConnectionId,
        /// What the agent said of itself.
        info: AgentInfo,
        /// Answered once the connection is recorded.
        reply: RpcReplyPort<Result<(), ComputerError>>,
    },
    /// The agent on connection `conn` is alive.
    Heartbeat {
        /// Which connection.
        conn: ConnectionId,
        /// Answered once the time is recorded.
        reply: RpcReplyPort<Result<(), ComputerError>>,
    },
    /// Connection `conn` has closed.
    Disconnect {
        /// Which connection.
        conn: ConnectionId,
    },
    /// What is known of this computer.
    Record(RpcReplyPort<ComputerRecord>),
    /// Panics in the handler, to prove that the supervisor respawns the actor.
    #[cfg(feature = "fault-injection")]
    Panic,
}

/// Tells one agent connection from another, within one server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

/// What an agent says of itself when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentInfo {
    /// The host name the agent reported.
    pub host_name: String,
    /// The agent's software version.
    pub agent_version: String,
}

/// Why a [`ComputerActor`] could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComputerError {
    /// The store failed.
    #[error("storage failed")]
    Store(#[from] StoreError),
}

/// The actor; stateless, as ractor wants: its state is [`ComputerState`].
pub struct ComputerActor;

/// What a [`ComputerActor`] is started with.
pub struct ComputerArgs {
    /// Which computer it serves.
    pub id: ComputerId,
    /// Where its state is kept.
    pub store: Arc<dyn Store>,
    /// Where wall-clock time comes from.
    pub clock: Arc<dyn Clock>,
}

/// A [`ComputerActor`]'s state.
pub struct ComputerState {
    args: ComputerArgs,
    record: ComputerRecord,
    /// The open connections of this computer's agent. More than one is normal for
    /// a moment: a reconnecting agent may arrive before its old connection has
    /// been noticed as dead.
    connections: HashSet<ConnectionId>,
}

impl Actor for ComputerActor {
    type Msg = ComputerMsg;
    type State = ComputerState;
    type Arguments = ComputerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ComputerArgs,
    ) -> Result<ComputerState, ActorProcessingErr> {
        let now = args.clock.now();
        let record = match args.store.computer(&args.id)? {
            // A restart forgets the connections, which re-register with their next
            // heartbeat; until then the computer is not connected.
            Some(record) => ComputerRecord {
                connected_since: None,
                ..record
            },
            None => ComputerRecord {
                first_seen: now,
                connected_since: None,
                last_seen: now,
                host_name: String::new(),
                agent_version: String::new(),
            },
        };
        Ok(ComputerState {
            args,
            record,
            connections: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: ComputerMsg,
        state: &mut ComputerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ComputerMsg::Connect { conn, info, reply } => {
                state.record.host_name = info.host_name;
                state.record.agent_version = info.agent_version;
                let _ = reply.send(state.seen(conn));
            }
            ComputerMsg::Heartbeat { conn, reply } => {
                let _ = reply.send(state.seen(conn));
            }
            ComputerMsg::Disconnect { conn } => {
                if state.connections.remove(&conn) && state.connections.is_empty() {
                    state.record.connected_since = None;
                    if let Err(err) = state.save() {
                        tracing::error!(computer = %state.args.id, error = %err, "cannot record disconnection");
                    }
                }
            }
            ComputerMsg::Record(reply) => {
                let _ = reply.send(state.record.clone());
            }
            #[cfg(feature = "fault-injection")]
            ComputerMsg::Panic => panic!("fault injected into computer {}", state.args.id),
        }
        Ok(())
    }
}

impl ComputerState {
    /// Records that connection `conn` is alive now.
    fn seen(&mut self, conn: ConnectionId) -> Result<(), ComputerError> {
        let now: Timestamp = self.args.clock.now();
        self.connections.insert(conn);
        self.record.connected_since.get_or_insert(now);
        self.record.last_seen = now;
        self.save()
    }

    fn save(&self) -> Result<(), ComputerError> {
        Ok(self.args.store.put_computer(&self.args.id, &self.record)?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::SledStore;

    const TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));

    async fn record(actor: &ActorRef<ComputerMsg>) -> ComputerRecord {
        actor
            .call(ComputerMsg::Record, TIMEOUT)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn connections_and_heartbeats_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
        let clock = ManualClock::new(Timestamp::from_unix_millis(1_000));
        let id: ComputerId = "ws-1".parse().unwrap();
        let args = ComputerArgs {
            id: id.clone(),
            store: store.clone(),
            clock: Arc::new(clock.clone()),
        };
        let (actor, handle) = Actor::spawn(None, ComputerActor, args).await.unwrap();
        let info = AgentInfo {
            host_name: "WS-1".into(),
            agent_version: "9".into(),
        };
        let connect = |conn, info| move |reply| ComputerMsg::Connect { conn, info, reply };
        actor
            .call(connect(ConnectionId(1), info.clone()), TIMEOUT)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        clock.advance(Duration::from_secs(10));
        actor
            .call(connect(ConnectionId(2), info), TIMEOUT)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        clock.advance(Duration::from_secs(10));
        actor
            .call(
                |reply| ComputerMsg::Heartbeat {
                    conn: ConnectionId(2),
                    reply,
                },
                TIMEOUT,
            )
            .await
            .unwrap()
            .unwrap()
            .unwrap();

        let seen = record(&actor).await;
        assert_eq!(
            seen.connected_since,
            Some(Timestamp::from_unix_millis(1_000))
        );
        assert_eq!(seen.last_seen, Timestamp::from_unix_millis(21_000));
        assert_eq!(seen.host_name, "WS-1");
        assert_eq!(store.computer(&id).unwrap(), Some(seen));

        // Still connected while one connection remains.
        actor
            .cast(ComputerMsg::Disconnect {
                conn: ConnectionId(1),
            })
            .unwrap();
        assert!(record(&actor).await.connected_since.is_some());
        actor
            .cast(ComputerMsg::Disconnect {
                conn: ConnectionId(2),
            })
            .unwrap();
        let gone = record(&actor).await;
        assert_eq!(gone.connected_since, None);
        assert_eq!(gone.first_seen, Timestamp::from_unix_millis(1_000));
        assert_eq!(store.computer(&id).unwrap(), Some(gone));

        actor.stop(None);
        handle.await.unwrap();
    }
}
