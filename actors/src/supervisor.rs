//! The supervisor of the [`ComputerActor`]s, and [`Computers`], the handle through
//! which the daemon reaches them.
//!
//! Children are named `computer#{scope}:{id}` in ractor's registry, so a caller
//! finds a running actor without asking the supervisor; only a computer with no
//! actor yet goes through the supervisor's mailbox, which serialises spawning. The
//! scope keeps two servers in one process (as in tests) apart.
//!
//! ractor's default supervisor stops when a child fails; this one respawns the
//! child instead, unless it keeps failing ([`MAX_RESTARTS`] within
//! [`RESTART_WINDOW`]), in which case it is left down until it is next needed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorId, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::audit::Who;
use crate::computer::{
    AgentInfo, ComputerActor, ComputerArgs, ComputerError, ComputerMsg, ConnectionId, Decided,
    Generated, OfflineLogin, Services,
};
use crate::id::ComputerId;
use crate::login::{LoginRequest, LoginResponse};
use crate::mailbox::Waiting;
use crate::metrics::metrics;
use crate::offline::OfflineSet;
use crate::request::Choice;
use crate::rules::Decider;
use crate::settings::OptionsPatch;
use crate::store::ComputerRecord;

/// How long a caller waits for a computer's actor to answer.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a failing child is respawned within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: u32 = 5;

/// The window over which [`MAX_RESTARTS`] is counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Tells the supervisors of several servers in one process apart.
static NEXT_SCOPE: AtomicU64 = AtomicU64::new(0);

/// Why a call to a computer's actor did not produce an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The actor could not be reached or started, or died while handling the call.
    #[error("computer actor unavailable")]
    Unavailable,
    /// The actor did not answer in time.
    #[error("computer actor did not answer in time")]
    Timeout,
    /// The actor answered with an error.
    #[error(transparent)]
    Failed(#[from] ComputerError),
}

/// What the [`ComputerSupervisor`] is asked to do.
pub enum SupervisorMsg {
    /// Find the actor of computer `id`, spawning it if there is none.
    Spawn {
        /// Which computer.
        id: ComputerId,
        /// The actor, or why it could not be started.
        reply: RpcReplyPort<Result<ActorRef<ComputerMsg>, SpawnErr>>,
    },
}

/// Spawns and restarts the [`ComputerActor`]s.
pub struct ComputerSupervisor;

/// What the [`ComputerSupervisor`] is started with.
pub struct SupervisorArgs {
    scope: u64,
    services: Arc<Services>,
}

/// The [`ComputerSupervisor`]'s state.
pub struct SupervisorState {
    args: SupervisorArgs,
    /// Which computer each live child serves.
    children: HashMap<ActorId, ComputerId>,
    /// Recent failures per computer: how many, and when the window began.
    restarts: HashMap<ComputerId, (u32, Instant)>,
}

impl Actor for ComputerSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            children: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Spawn { id, reply } => {
                let _ = reply.send(state.find_or_spawn(&myself, id).await);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(id) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                metrics().computer_actors.dec();
                tracing::error!(computer = %id, error = %err, "computer actor failed");
                if state.may_restart(&id) {
                    if let Err(err) = state.find_or_spawn(&myself, id.clone()).await {
                        tracing::error!(computer = %id, error = %err, "cannot respawn computer actor");
                    }
                } else {
                    tracing::error!(computer = %id, "computer actor keeps failing; left down until needed");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _)
                if state.children.remove(&cell.get_id()).is_some() =>
            {
                metrics().computer_actors.dec();
            }
            _ => {}
        }
        Ok(())
    }
}

impl SupervisorState {
    /// The running actor of computer `id`, or a new one. A caller may have had it
    /// spawned already while its failure was on its way here.
    async fn find_or_spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: ComputerId,
    ) -> Result<ActorRef<ComputerMsg>, SpawnErr> {
        if let Some(actor) = ActorRef::where_is(child_name(self.args.scope, &id)) {
            return Ok(actor);
        }
        let args = ComputerArgs {
            id: id.clone(),
            services: self.args.services.clone(),
        };
        let name = child_name(self.args.scope, &id);
        let (actor, _) =
            Actor::spawn_linked(Some(name), ComputerActor, args, myself.get_cell()).await?;
        self.children.insert(actor.get_id(), id);
        metrics().computer_actors.inc();
        Ok(actor)
    }

    /// Counts a failure of computer `id`'s actor and says whether it may be
    /// respawned now.
    fn may_restart(&mut self, id: &ComputerId) -> bool {
        let now = Instant::now();
        let (count, since) = self.restarts.entry(id.clone()).or_insert((0, now));
        if now.duration_since(*since) > RESTART_WINDOW {
            (*count, *since) = (0, now);
        }
        *count += 1;
        *count <= MAX_RESTARTS
    }
}

fn child_name(scope: u64, id: &ComputerId) -> String {
    format!("computer#{scope}:{id}")
}

/// The daemon's handle on the computers' actors: finds or spawns the actor of a
/// computer and calls it with a timeout.
#[derive(Clone)]
pub struct Computers {
    scope: u64,
    supervisor: ActorRef<SupervisorMsg>,
    call_timeout: Duration,
}

impl Computers {
    /// Starts the supervisor. The returned handle resolves when it has stopped.
    pub async fn start(services: Arc<Services>) -> Result<(Self, JoinHandle<()>), SpawnErr> {
        let scope = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
        let args = SupervisorArgs { scope, services };
        let (supervisor, handle) = Actor::spawn(None, ComputerSupervisor, args).await?;
        let computers = Self {
            scope,
            supervisor,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        };
        Ok((computers, handle))
    }

    /// The actor of computer `id`, spawned if it is not running.
    pub async fn actor(&self, id: &ComputerId) -> Result<ActorRef<ComputerMsg>, CallError> {
        if let Some(actor) = ActorRef::where_is(child_name(self.scope, id)) {
            return Ok(actor);
        }
        let spawned = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Spawn {
                    id: id.clone(),
                    reply,
                },
                Some(self.call_timeout),
            )
            .await;
        match spawned {
            Ok(CallResult::Success(Ok(actor))) => Ok(actor),
            Ok(CallResult::Success(Err(err))) => {
                tracing::error!(computer = %id, error = %err, "cannot spawn computer actor");
                Err(CallError::Unavailable)
            }
            Ok(CallResult::Timeout) => Err(CallError::Timeout),
            Ok(CallResult::SenderError) | Err(_) => Err(CallError::Unavailable),
        }
    }

    /// Registers agent connection `conn` of computer `id`, which says `info` of
    /// itself.
    pub async fn connect(
        &self,
        id: &ComputerId,
        conn: ConnectionId,
        info: AgentInfo,
    ) -> Result<(), CallError> {
        self.call(id, |reply| ComputerMsg::Connect {
            conn,
            info: info.clone(),
            reply,
        })
        .await
    }

    /// Tells computer `id` that its agent on `conn` is alive, unless the last
    /// heartbeat sent through `waiting` still waits in its mailbox.
    pub fn heartbeat(&self, id: &ComputerId, conn: ConnectionId, waiting: &Waiting) {
        if waiting.take() {
            let pending = waiting.clone();
            if !self.cast(id, ComputerMsg::Heartbeat { conn, pending }) {
                waiting.handled();
            }
        }
    }

    /// Tells computer `id` that connection `conn` has closed.
    pub fn disconnect(&self, id: &ComputerId, conn: ConnectionId) {
        self.cast(id, ComputerMsg::Disconnect { conn });
    }

    /// Asks computer `id` what the login prompt of `os_user` asks.
    pub async fn login(
        &self,
        id: &ComputerId,
        os_user: &str,
        call: LoginRequest,
    ) -> Result<LoginResponse, CallError> {
        self.call(id, |reply| ComputerMsg::Login {
            os_user: os_user.to_owned(),
            call: call.clone(),
            reply,
        })
        .await
    }

    /// Has `by` make `choice` on access request `request` of
    /// computer `id`.
    pub async fn decide(
        &self,
        id: &ComputerId,
        request: u64,
        (by, seen_as): (&Decider, &Who),
        choice: Choice,
        comment: Option<String>,
    ) -> Result<Decided, CallError> {
        self.call(id, |reply| ComputerMsg::Decide {
            request,
            by: by.clone(),
            seen_as: seen_as.clone(),
            choice,
            comment: comment.clone(),
            reply,
        })
        .await
    }

    /// Has administrator `by` generate an OTP without a request on computer `id`,
    /// for `os_user` and `email`.
    pub async fn generate(
        &self,
        id: &ComputerId,
        os_user: &str,
        email: &str,
        comment: &str,
        by: &str,
    ) -> Result<Generated, CallError> {
        self.call(id, |reply| ComputerMsg::Generate {
            os_user: os_user.to_owned(),
            email: email.to_owned(),
            comment: comment.to_owned(),
            by: by.to_owned(),
            reply,
        })
        .await
    }

    /// Changes computer `id`'s group (`Some(None)` leaves it) and options, as `by`.
    pub async fn configure(
        &self,
        id: &ComputerId,
        group: Option<Option<String>>,
        options: &OptionsPatch,
        by: &Who,
    ) -> Result<ComputerRecord, CallError> {
        self.call(id, |reply| ComputerMsg::Configure {
            group: group.clone(),
            options: options.clone(),
            by: by.clone(),
            reply,
        })
        .await
    }

    /// Keeps offline code set `set` on computer `id`, replacing its OS
    /// user's, as `by` issued it.
    pub async fn offline_issue(
        &self,
        id: &ComputerId,
        set: &OfflineSet,
        by: &Who,
    ) -> Result<(), CallError> {
        self.call(id, |reply| ComputerMsg::OfflineIssue {
            set: set.clone(),
            by: by.clone(),
            reply,
        })
        .await
    }

    /// Voids the offline codes of `os_user` on computer `id` (every OS
    /// user's with `None`), as `by`; how many sets went.
    pub async fn offline_void(
        &self,
        id: &ComputerId,
        os_user: Option<&str>,
        by: &Who,
    ) -> Result<usize, CallError> {
        self.call(id, |reply| ComputerMsg::OfflineVoid {
            os_user: os_user.map(str::to_owned),
            by: by.clone(),
            reply,
        })
        .await
    }

    /// Takes the offline logins computer `id`'s agent reports; the sets it
    /// is to keep.
    pub async fn offline_sync(
        &self,
        id: &ComputerId,
        logins: &[OfflineLogin],
    ) -> Result<Vec<OfflineSet>, CallError> {
        self.call(id, |reply| ComputerMsg::OfflineSync {
            logins: logins.to_vec(),
            reply,
        })
        .await
    }

    /// Asks computer `id`'s actor the message that `build` makes, and waits for its
    /// answer. A message that could not be delivered because the actor had just
    /// died is sent once more, to its successor; a message the actor received is
    /// never sent twice.
    async fn call<T, F>(&self, id: &ComputerId, build: F) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<Result<T, ComputerError>>) -> ComputerMsg,
    {
        for _ in 0..2 {
            let actor = self.actor(id).await?;
            match actor.call(&build, Some(self.call_timeout)).await {
                Ok(CallResult::Success(answer)) => return Ok(answer?),
                Ok(CallResult::Timeout) => return Err(CallError::Timeout),
                Ok(CallResult::SenderError) => return Err(CallError::Unavailable),
                Err(MessagingErr::SendErr(_)) => continue,
                Err(_) => return Err(CallError::Unavailable),
            }
        }
        Err(CallError::Unavailable)
    }

    /// Sends computer `id`'s actor a message without waiting, if it is running;
    /// whether it was sent. A dead actor has nothing left to be told.
    fn cast(&self, id: &ComputerId, message: ComputerMsg) -> bool {
        ActorRef::<ComputerMsg>::where_is(child_name(self.scope, id))
            .is_some_and(|actor| actor.cast(message).is_ok())
    }

    /// Stops every computer's actor once it has handled what is in its mailbox
    /// (the last disconnections, say), then the supervisor, waiting at most
    /// `grace` for each step.
    pub async fn stop(&self, grace: Duration) {
        self.supervisor.drain_children();
        let children = self.supervisor.get_children();
        let drained = async {
            for child in &children {
                let _ = child.wait(None).await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("computer actors did not drain in time");
        }
        if self
            .supervisor
            .stop_and_wait(None, Some(grace))
            .await
            .is_err()
        {
            tracing::warn!("computer supervisor did not stop in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "fault-injection")]
    #[tokio::test]
    async fn a_panicking_computer_actor_is_respawned() {
        use crate::computer::{AgentInfo, ConnectionId};
        use crate::testing::services;

        let dir = tempfile::tempdir().unwrap();
        let (services, _) = services(dir.path()).await;
        let (computers, handle) = Computers::start(services).await.unwrap();
        let id: ComputerId = "ws-1".parse().unwrap();
        let connect = |reply| ComputerMsg::Connect {
            conn: ConnectionId(1),
            info: AgentInfo::default(),
            reply,
        };
        computers.call(&id, connect).await.unwrap();
        let first = computers.actor(&id).await.unwrap();
        first.cast(ComputerMsg::Panic).unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        // Watch the registry, without asking for a spawn: the supervisor must do it.
        loop {
            let now = ActorRef::<ComputerMsg>::where_is(child_name(computers.scope, &id));
            if now.is_some_and(|now| now.get_id() != first.get_id()) {
                break;
            }
            assert!(Instant::now() < deadline, "actor was not respawned");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        computers.call(&id, connect).await.unwrap();

        computers.stop(Duration::from_secs(5)).await;
        handle.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_postgres_a_computer_another_node_took_is_not_taken_back_until_asked() {
        let Some(cluster) = crate::test_postgres::postgres() else {
            return;
        };
        let config = cluster.database();
        let node = || async {
            let store = crate::KvStore::connect(&config).await.unwrap();
            let directory = Arc::new(crate::testing::MapDirectory(Default::default()));
            let services = crate::testing::services_over(Arc::new(store), directory).await;
            Computers::start(services.0).await.unwrap().0
        };
        let (a, b) = (node().await, node().await);
        let id: ComputerId = "ws-1".parse().unwrap();
        let patch = |options: crate::settings::Options| OptionsPatch {
            set: options,
            inherit: vec![],
        };
        let record_input = |on: bool| {
            patch(crate::settings::Options {
                record_input: Some(on),
                ..Default::default()
            })
        };
        let by = Who::Server;
        a.configure(&id, None, &record_input(true), &by)
            .await
            .unwrap();
        // The work comes to node b, which takes the computer; a's actor
        // stays, and does not take it back unasked: b's later changes land.
        b.configure(&id, None, &record_input(false), &by)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let record = b.configure(&id, None, &record_input(false), &by).await;
        assert_eq!(record.unwrap().options.record_input, Some(false));
        // Asked again, a takes it back, loading b's state first.
        let allow_otp = patch(crate::settings::Options {
            allow_otp: Some(false),
            ..Default::default()
        });
        let record = a.configure(&id, None, &allow_otp, &by).await.unwrap();
        assert_eq!(
            (record.options.record_input, record.options.allow_otp),
            (Some(false), Some(false))
        );
        a.stop(Duration::from_secs(5)).await;
        b.stop(Duration::from_secs(5)).await;
    }
}
