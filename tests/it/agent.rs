//! An agent with a valid certificate connects, says Hello, stays connected across
//! heartbeats, reconnects by itself after a server restart (resuming its TLS
//! session), and keeps being served when its computer's actor panics.

use std::time::Duration;

use crate::common::agent::Agent;
use crate::common::server::{ServerProcess, TestServer, issue, open_store};
use crate::common::wait_until;
use otpgate_actors::{ComputerMsg, Store};
use otpgate_protocol::local::{LocalRequest, LocalResponse};
use otpgate_protocol::login::{LoginRequest, LoginResponse};
use otpgate_protocol::{ErrorCode, Request, Response};
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_connects_and_stays_connected_across_heartbeats() {
    let server = TestServer::start().await;
    let agent = server.agent(&server.identity("ws-1"));
    agent.welcomed(1, WITHIN).await;
    assert_eq!(agent.link.status().client_id.as_deref(), Some("ws-1"));

    // Twenty heartbeat intervals on one connection.
    let mut watch = agent.link.watch();
    tokio::time::timeout(WITHIN, watch.wait_for(|s| s.heartbeats >= 20))
        .await
        .unwrap()
        .unwrap();
    let status = agent.link.status();
    assert!(status.connected);
    assert_eq!(status.welcomes, 1, "never reconnected: {status:?}");
    assert_eq!(
        agent.link.call(Request::Heartbeat).await,
        Ok(Response::Heartbeat)
    );

    // The computer's connection and last-seen times are in the database.
    drop(agent);
    let data = server.data_dir();
    let _kept = server.stop().await;
    let store = open_store(&data).await;
    let record = store
        .computer(&"ws-1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(record.last_seen > record.first_seen);
    assert_eq!(record.connected_since, None, "disconnection recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reconnects_after_a_restart_and_resumes_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &crate::common::restartable_listen());
    let addr = server.addr;
    let agent = Agent::start(&issue(&server.data_dir(), dir.path(), "ws-2"), addr);
    agent.welcomed(1, WITHIN).await;
    assert!(!agent.link.status().resumed);

    assert!(server.stop().success(), "SIGTERM stops the server cleanly");
    let mut watch = agent.link.watch();
    tokio::time::timeout(WITHIN, watch.wait_for(|s| !s.connected))
        .await
        .unwrap()
        .unwrap();

    let server = ServerProcess::start(dir.path(), &addr.to_string());
    agent.welcomed(2, WITHIN).await;
    assert!(
        agent.link.status().resumed,
        "the ticket from before the restart was accepted"
    );
    assert_eq!(
        agent.link.call(Request::Heartbeat).await,
        Ok(Response::Heartbeat)
    );

    // And once more after SIGKILL: the server comes back on the same data.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _server = ServerProcess::start(dir.path(), &addr.to_string());
    agent.welcomed(3, WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_computer_actor_is_respawned_and_the_next_request_served() {
    let server = TestServer::start().await;
    let agent = server.agent(&server.identity("ws-3"));
    agent.welcomed(1, WITHIN).await;

    let id = "ws-3".parse().unwrap();
    let first = server.computers.actor(&id).await.unwrap();
    first.cast(ComputerMsg::Panic).unwrap();
    wait_until(WITHIN, "the panicked actor has stopped", || async {
        first.get_status() == ractor::ActorStatus::Stopped
    })
    .await;

    let status = Request::Login {
        os_user: "alice".into(),
        request: LoginRequest::Status,
    };
    assert!(
        matches!(
            agent.link.call(status).await,
            Ok(Response::Login(LoginResponse::Status(_)))
        ),
        "the first request after the panic is served by the new actor"
    );
    let second = server.computers.actor(&id).await.unwrap();
    assert_ne!(first.get_id(), second.get_id());
    assert_eq!(agent.link.status().welcomes, 1, "the connection survived");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_prompt_is_known_by_its_peer_credentials() {
    let server = TestServer::start().await;
    let identity = server.identity("ws-4");
    let socket = server.data.path().join("agent.sock");
    let cancel = CancellationToken::new();
    let config = otpgate::agent::AgentConfig {
        servers: vec![format!("localhost:{}", server.addr.port()).parse().unwrap()],
        identity,
        socket: socket.clone(),
        limits: crate::common::agent::unlimited(),
        spool: socket.with_extension("spool"),
        spool_limit: 64 << 20,
        metrics: None,
        offline_max_away: otpgate::agent::offline::max_away(
            otpgate::agent::offline::DEFAULT_MAX_DAYS,
        ),
    };
    let agent = tokio::spawn(otpgate::agent::run(config, cancel.clone()));

    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    let deadline = tokio::time::Instant::now() + WITHIN;
    let status = loop {
        match otpgate::unix::ask(&socket, &LocalRequest::Status).await {
            Ok(LocalResponse::Status(status)) if status.connected => break status,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "agent never connected"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status.os_user, me);
    assert_eq!(status.client_id.as_deref(), Some("ws-4"));
    assert!(status.server_rtt_us.is_some());

    cancel.cancel();
    agent.await.unwrap().unwrap();
    assert!(!socket.exists(), "the agent removes its socket");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_floods_requests_is_slowed_down_not_cut_off() {
    let server = TestServer::start_with_config("requests_per_second = 5\n").await;
    let agent = server.agent(&server.identity("ws-9"));
    agent.welcomed(1, WITHIN).await;
    let status = || Request::Login {
        os_user: "alice".into(),
        request: LoginRequest::Status,
    };
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let (link, request) = (agent.link.clone(), status());
        calls.spawn(async move { link.call(request).await });
    }
    let (mut served, mut refused) = (0, 0);
    while let Some(answer) = calls.join_next().await {
        match answer.unwrap() {
            Ok(Response::Login(LoginResponse::Status(_))) => served += 1,
            Ok(Response::Fail(ErrorCode::TooManyRequests)) => refused += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // A burst of twice the rate passes; the rest is refused.
    assert!(
        served >= 10 && refused >= 1,
        "{served} served, {refused} refused"
    );
    // Heartbeats are not counted, and the connection stays: once the limiter
    // refills, the agent is served again on the same connection.
    agent.still_served(WITHIN).await;
    wait_until(WITHIN, "the agent is served again", || {
        let (link, request) = (agent.link.clone(), status());
        async move {
            matches!(
                link.call(request).await,
                Ok(Response::Login(LoginResponse::Status(_)))
            )
        }
    })
    .await;
    assert_eq!(agent.link.status().welcomes, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_for_a_free_slot() {
    let server = TestServer::start_with_config("max_connections = 2\n").await;
    let identities: Vec<_> = (1..=3)
        .map(|n| server.identity(&format!("ws-{n}")))
        .collect();
    let first = server.agent(&identities[0]);
    let second = server.agent(&identities[1]);
    first.welcomed(1, Duration::from_secs(20)).await;
    second.welcomed(1, Duration::from_secs(20)).await;

    // A third waits, unanswered, while the two keep being served.
    let third = server.agent(&identities[2]);
    let heartbeats = [&first, &second].map(|agent| agent.link.status().heartbeats);
    first
        .still_served_since(heartbeats[0], Duration::from_secs(20))
        .await;
    second
        .still_served_since(heartbeats[1], Duration::from_secs(20))
        .await;
    assert_eq!(third.link.status().welcomes, 0, "no slot for a third");

    // One leaves: the third gets its slot.
    drop(first);
    third.welcomed(1, Duration::from_secs(20)).await;
    second.still_served(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_given_several_servers_takes_the_next_when_one_goes() {
    let first = TestServer::start().await;
    let second = TestServer::start_node_of(&first).await;
    let identity = first.identity("ws-1");
    let nobody = std::net::SocketAddr::from(([127, 0, 0, 1], crate::common::free_port()));
    let on = |server: &TestServer| Some(format!("localhost:{}", server.addr.port()));

    // The first five listed are down: the next is taken at once, not after
    // a backoff each (which would take 3.9 s at least).
    let mut servers = vec![nobody; 5];
    servers.extend([first.addr, second.addr]);
    let agent = Agent::start_many(&identity, &servers);
    agent.welcomed(1, Duration::from_secs(2)).await;
    let status = agent.link.status();
    assert_eq!(status.server, on(&first), "{status:?}");
    assert_eq!(status.failures.refused, 5, "{status:?}");

    // The one it holds goes: it moves on to the next, and is served there.
    drop(first.stop().await);
    agent.welcomed(2, WITHIN).await;
    let status = agent.link.status();
    assert_eq!(status.server, on(&second), "{status:?}");
    assert_eq!(
        agent.link.call(Request::Heartbeat).await,
        Ok(Response::Heartbeat)
    );
    let desk = LoginRequest::Status;
    let answer = agent.link.call(Request::Login {
        os_user: "alice".into(),
        request: desk,
    });
    assert!(
        matches!(answer.await, Ok(Response::Login(LoginResponse::Status(_)))),
        "the second server serves the computer"
    );
}
