//! Several servers of one site over one PostgreSQL database, in this process
//! (each test skipped where PostgreSQL is missing): an OTP used once whichever
//! node it is checked on, the hour rule across nodes, a request decided on
//! another node than the person's, the settings and revocations of one node
//! in force on the others within a second (changes made at once on two
//! nodes both kept; a group made on one node named at once on another), an
//! agent's TLS session resumed
//! on another node, and a web session open on every node and outliving the
//! one it began on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::agent::Agent;
use crate::common::auto_directory;
use crate::common::mail::read_codes;
use crate::common::my_email;
use crate::common::server::TestServer;
use crate::common::web::WebClient;
use otpgate_protocol::admin::{
    AdminRequest, AdminResponse, Choice, OptionsView, RoleView, SettingsPatch,
};
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, RequestState, Requested, Secret, Verdict,
};

/// `count` nodes of one new site over a database of their own; `None`
/// without PostgreSQL.
async fn site(count: usize) -> Option<Vec<TestServer>> {
    let cluster = otpgate_actors::test_postgres::postgres()?;
    let url = cluster.database().url;
    let store = format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\npool_size = 4\n");
    let first = TestServer::start_with_config(&store).await;
    let mut nodes = Vec::with_capacity(count);
    for _ in 1..count {
        nodes.push(TestServer::start_node_of(&first).await);
    }
    nodes.insert(0, first);
    Some(nodes)
}

/// The OTPs mailed to `to` by any of `nodes` (whichever sends the site's
/// mail), once there are at least `count`.
async fn codes_on(nodes: &[TestServer], to: &str, count: usize) -> Vec<String> {
    let mut codes = Vec::new();
    crate::common::wait_until(
        Duration::from_secs(20),
        &format!("{count} OTPs mailed to {to}"),
        || {
            codes = nodes
                .iter()
                .flat_map(|node| read_codes(&node.data_dir().join("outbox"), to))
                .collect();
            let enough = codes.len() >= count;
            async move { enough }
        },
    )
    .await;
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otp_is_used_once_whichever_of_three_nodes_checks_it_and_the_hour_rule_holds_across_them()
 {
    let Some(nodes) = site(3).await else {
        return;
    };
    nodes[0].set_client("ws-1", auto_directory()).await;
    let mut desks = Vec::new();
    for node in &nodes {
        desks.push(Arc::new(node.desk("ws-1").await));
    }
    let sent = desks[0].request(RequestMode::Directory).await;
    assert!(matches!(sent, Requested::Send { .. }), "{sent:?}");
    // Asked again on another node within the hour: no new one.
    let again = desks[1].request(RequestMode::Directory).await;
    assert!(
        matches!(
            again,
            Requested::Resend { .. } | Requested::ResendLater { .. }
        ),
        "{again:?}"
    );
    let code = codes_on(&nodes, &my_email(), 1).await[0].clone();

    // Thirty tries at once, spread over the three nodes: one is let in.
    let mut tries = tokio::task::JoinSet::new();
    for n in 0..30 {
        let (desk, code) = (Arc::clone(&desks[n % 3]), code.clone());
        tries.spawn(async move {
            desk.ask(LoginRequest::Verify {
                email: my_email(),
                code: Secret(code),
            })
            .await
        });
    }
    let answers = tries.join_all().await;
    let allowed = answers
        .iter()
        .filter(|answer| matches!(answer, Ok(LoginResponse::Verified(Verdict::Allow { .. }))))
        .count();
    assert_eq!(allowed, 1, "{answers:?}");
    for answer in &answers {
        assert!(
            matches!(
                answer,
                Ok(LoginResponse::Verified(
                    Verdict::Allow { .. } | Verdict::Deny | Verdict::Throttle { .. }
                )) | Err(_)
            ),
            "{answer:?}"
        );
    }
    // Used, on every node.
    for desk in &desks {
        let answer = desk
            .login(LoginRequest::Verify {
                email: my_email(),
                code: Secret(code.clone()),
            })
            .await;
        assert!(
            matches!(
                answer,
                LoginResponse::Verified(Verdict::Deny | Verdict::Throttle { .. })
            ),
            "{answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_approved_on_another_node_reaches_the_person_within_a_second_and_is_mailed_once()
{
    let Some(nodes) = site(2).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let desk = a.desk("ws-1").await;
    let asked = desk.request(RequestMode::Email(my_email())).await;
    let Requested::AwaitApproval { request: id, .. } = asked else {
        panic!("{asked:?}");
    };
    // The administrator's password, set on a, is b's within a second.
    let password = a.admin_password().await;
    let since = Instant::now();
    loop {
        let decided = b
            .admin(AdminRequest::RequestDecide {
                id,
                by: "admin".into(),
                password: Secret(password.clone()),
                choice: Choice::Approve,
                comment: None,
            })
            .await;
        if matches!(decided, AdminResponse::Decided(_)) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(1), "{decided:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let since = Instant::now();
    loop {
        let LoginResponse::Status(status) = desk.login(LoginRequest::Status).await else {
            panic!("no status");
        };
        if status.request == Some((id, RequestState::Approve)) {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "the person's prompt still says {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let code = codes_on(&nodes, &my_email(), 1).await.remove(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        codes_on(&nodes, &my_email(), 1).await,
        std::slice::from_ref(&code),
        "mailed once"
    );
    let verdict = desk
        .login(LoginRequest::Verify {
            email: my_email(),
            code: Secret(code),
        })
        .await;
    assert!(
        matches!(verdict, LoginResponse::Verified(Verdict::Allow { .. })),
        "{verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_revocations_made_on_one_node_are_in_force_on_another_within_a_second() {
    let Some(nodes) = site(2).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let identity = b.identity("ws-1");
    let agent = b.agent(&identity);
    agent.welcomed(1, Duration::from_secs(10)).await;

    a.set_settings(SettingsPatch {
        new_otp_interval_secs: Some(120),
        ..SettingsPatch::default()
    })
    .await;
    let since = Instant::now();
    while b.settings().await.new_otp_interval_secs != 120 {
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "not in force on b"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let revoked = a
        .admin(AdminRequest::CertRevoke {
            computer: "ws-1".into(),
        })
        .await;
    assert!(
        matches!(revoked, AdminResponse::Revoked { .. }),
        "{revoked:?}"
    );
    let since = Instant::now();
    while agent.link.status().connected {
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "b still serves ws-1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!agent.link.status().connected, "and refuses it after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_at_once_on_two_nodes_are_both_kept_and_a_new_group_is_named_at_once_elsewhere()
 {
    let Some(nodes) = site(2).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    // Ten rounds of two changes of the settings at once, one per node, each
    // to another field: neither overwrites the other with what it had.
    for round in 1..=10u64 {
        let (on_a, on_b) = tokio::join!(
            a.admin(AdminRequest::SettingsSet(SettingsPatch {
                resend_gap_secs: Some(60 + round),
                ..SettingsPatch::default()
            })),
            b.admin(AdminRequest::SettingsSet(SettingsPatch {
                session_timeout_secs: Some(600 + round),
                ..SettingsPatch::default()
            })),
        );
        assert!(matches!(on_a, AdminResponse::Settings(_)), "{on_a:?}");
        assert!(matches!(on_b, AdminResponse::Settings(_)), "{on_b:?}");
        // Both, on both nodes, once each has heard of the other's.
        for node in [a, b] {
            let since = Instant::now();
            loop {
                let seen = node.settings().await;
                let both = (seen.resend_gap_secs, seen.session_timeout_secs);
                if both == (60 + round, 600 + round) {
                    break;
                }
                assert!(
                    since.elapsed() < Duration::from_secs(3),
                    "round {round}: {both:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // A group made on a is named on b at once, before b hears of it.
    a.add_group("finance").await;
    let set = b
        .admin(AdminRequest::ClientSet {
            computer: "ws-1".into(),
            group: Some(Some("finance".into())),
            options: OptionsView::default(),
        })
        .await;
    assert_eq!(set, AdminResponse::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_resumes_its_tls_session_on_another_node() {
    let Some(mut nodes) = site(2).await else {
        return;
    };
    let (b, a) = (nodes.pop().unwrap(), nodes.pop().unwrap());
    let identity = a.identity("ws-1");
    let agent = Agent::start_many(&identity, &[a.addr, b.addr]);
    agent.welcomed(1, Duration::from_secs(10)).await;
    drop(a.stop().await);
    agent.welcomed(2, Duration::from_secs(20)).await;
    let status = agent.link.status();
    assert_eq!(status.server, Some(format!("localhost:{}", b.addr.port())));
    assert!(status.resumed, "a's ticket is b's too: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_session_is_open_on_every_node_outlives_the_one_it_began_on_and_ends_on_all() {
    let Some(mut nodes) = site(3).await else {
        return;
    };
    nodes[0].add_user("bob", RoleView::Administrator).await;
    let mut web = WebClient::new(&nodes[0]);
    assert_eq!(
        web.sign_in("bob", "bob's long password").await.status(),
        303
    );
    // The node behind the load balancer changes: still signed in.
    web.switch_to(&nodes[1]);
    let (page, _) = web.page("/requests").await;
    assert!(page.contains("bob"), "{page}");
    // The node that signed bob in goes away; another serves him.
    nodes.remove(0).stop().await;
    web.switch_to(&nodes[1]);
    let (_, csrf) = web.page("/settings").await;
    assert!(!csrf.is_empty());
    // Signed out there: out on the other node at once.
    assert_eq!(web.post("/signout", &[("csrf", &csrf)]).await.status(), 303);
    web.switch_to(&nodes[0]);
    let answer = web.get("/requests").await;
    assert_eq!(answer.status(), 303, "signed out on every node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_codes_issued_on_one_node_reach_the_agent_on_another_at_once() {
    use otpgate_protocol::admin::OfflineSpec;
    use otpgate_protocol::{Request, Response};
    let Some(nodes) = site(2).await else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let agent = b.agent(&b.identity("ws-1"));
    agent.welcomed(1, Duration::from_secs(10)).await;
    let ask = || agent.link.call(Request::Offline { used: vec![] });
    assert_eq!(ask().await.unwrap(), Response::Offline(vec![]));

    // Something b commits for ws-1 (an access request) makes what it
    // holds of ws-1 known to a as well.
    let asked = agent
        .link
        .call(Request::Login {
            os_user: "alice".into(),
            request: LoginRequest::Request(RequestMode::Email("alice@example.com".into())),
        })
        .await
        .unwrap();
    assert!(matches!(asked, Response::Login(_)), "{asked:?}");
    let issued = a
        .admin(AdminRequest::OfflineIssue(OfflineSpec {
            computer: "ws-1".into(),
            os_user: "alice".into(),
            email: "alice@example.com".into(),
            count: 2,
            valid_days: 1,
        }))
        .await;
    assert!(
        matches!(issued, AdminResponse::OfflineIssued { .. }),
        "{issued:?}"
    );
    let since = Instant::now();
    while agent.link.status().offline_changes == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "the agent on b is not told"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Response::Offline(sets) = ask().await.unwrap() else {
        panic!("no codes")
    };
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].os_user, "alice");
    assert_eq!(sets[0].verifiers.iter().flatten().count(), 2);
}
