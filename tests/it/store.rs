//! A site moved from sled to PostgreSQL with `otpgate admin store copy`, and
//! served from there.

use std::time::Duration;

use crate::common::auto_directory;
use crate::common::recorder::record;
use crate::common::release::{run, this_otpgate};
use crate::common::server::{HANDSHAKE_MS, SLED, TestServer, recordings, write_config};
use crate::common::{HEARTBEAT_MS, my_email};
use otpgate::cli::prompt::LoginError;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, PageRequest, RoleView, SettingsPatch};
use otpgate_protocol::local::LocalError;
use otpgate_protocol::login::{
    LoginRequest, LoginResponse, RequestMode, Requested, Secret, Verdict,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_moves_to_postgres_whole_and_is_served_from_there() {
    let Some(cluster) = otpgate_actors::test_postgres::postgres() else {
        return;
    };
    let server = TestServer::start_with_config(SLED).await;
    server.add_user("carol", RoleView::User).await;
    let desk = server.desk("ws-1").await;
    let socket = desk.socket.clone();
    let recorded = |text: &'static str| {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || record(&socket, &["/bin/echo", text]))
    };
    assert_eq!(recorded("recorded on sled").await.unwrap().1, 0);
    let before = server.ended_recording().await;
    desk.stop().await;
    let data = server.stop().await;
    let folder = data.path().join("data");
    let folder = folder.to_str().unwrap();
    let url = cluster.database().url;
    let args = [
        "admin",
        "--data-dir",
        folder,
        "store",
        "copy",
        "--from",
        folder,
        "--to",
        &url,
    ];
    // A computer revoked while no server runs (in the folder's list).
    let revoke = ["certs", "revoke", "ws-9", "--data-dir", folder];
    assert!(run(this_otpgate(), &revoke, "").await.status.success());
    let copy = || run(this_otpgate(), &args, "");
    let out = copy().await;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let records = |table: &str| -> u64 {
        let line = said
            .lines()
            .find(|line| line.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no {table} in {said}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(records("users"), 2, "the first administrator and carol");
    assert_eq!(records("computers"), 1);
    assert!(records("audit") >= 2, "{said}");
    assert_eq!(records("recordings"), 1, "{said}");
    assert!(records("recording_chunks") >= 1, "{said}");
    assert!(said.contains("copied and checked"), "{said}");

    // Run on PostgreSQL, the server has the site as it was.
    let server = TestServer::start_on(
        data,
        &format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\n"),
    )
    .await;
    let AdminResponse::Users(users) = server
        .admin(AdminRequest::UsersList {
            page: PageRequest::default(),
        })
        .await
    else {
        panic!("no users")
    };
    assert!(users.items.iter().any(|user| user.login == "carol"));
    let AdminResponse::Clients(clients) = server
        .admin(AdminRequest::ClientsList {
            page: PageRequest::default(),
        })
        .await
    else {
        panic!("no clients")
    };
    assert_eq!(clients.items.len(), 1);
    // The recording came along, found and whole; the next one is numbered
    // above it.
    let search = AdminRequest::RecordingsSearch {
        text: "recorded on sled".into(),
    };
    let AdminResponse::Hits(hits) = server.admin(search).await else {
        panic!("no hits")
    };
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].recording.id, before.id);
    let desk = server.desk("ws-1").await;
    let socket = desk.socket.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        record(&socket, &["/bin/echo", "recorded in PostgreSQL"])
    });
    assert_eq!(recorded.await.unwrap().1, 0);
    let data = server.data_dir();
    let newer = || async {
        let listed = recordings(&data).await;
        listed
            .into_iter()
            .find(|r| r.id != before.id && r.ended.is_some())
    };
    crate::common::wait_until(Duration::from_secs(30), "the new recording", || async {
        newer().await.is_some()
    })
    .await;
    let after = newer().await.unwrap();
    assert!(after.id > before.id, "{} after {}", after.id, before.id);
    let AdminResponse::Verified(verified) = server
        .admin(AdminRequest::RecordingsVerify { id: None })
        .await
    else {
        panic!("not verified")
    };
    assert_eq!(verified.len(), 2, "{verified:?}");
    assert!(verified.iter().all(|v| v.problem.is_none()), "{verified:?}");
    desk.stop().await;
    // A database in use is not copied into.
    let _stopped = server.stop().await;
    // The revocation moved into the database at the server's start.
    let config = otpgate_actors::PgConfig {
        url: url.clone(),
        password: None,
        ca_file: None,
        pool_size: 1,
        statement_timeout: Duration::from_secs(10),
    };
    let db = otpgate_actors::KvStore::connect(&config)
        .await
        .unwrap()
        .side()
        .unwrap();
    let revoked = tokio::task::spawn_blocking(move || {
        let table = db.table(otpgate_actors::store::REVOCATIONS).unwrap();
        table.get(b"ws-9").unwrap()
    });
    assert!(
        revoked.await.unwrap().is_some(),
        "ws-9 is revoked in the database"
    );
    let again = copy().await;
    assert!(!again.status.success());
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(why.contains("not empty"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_of_one_site_share_a_database_and_a_server_of_another_site_is_refused() {
    let Some(cluster) = otpgate_actors::test_postgres::postgres() else {
        return;
    };
    let url = cluster.database().url;
    let store = format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\n");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), HEARTBEAT_MS, HANDSHAKE_MS, &store);
    let data = dir.path().join("data");
    // The doctor asks the database, changing nothing.
    let doctor = || async {
        let out = run(
            this_otpgate(),
            &[
                "doctor",
                "--config",
                config.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
            "",
        )
        .await;
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        said.lines()
            .find(|line| line.contains("PostgreSQL store"))
            .unwrap_or_else(|| panic!("no store check in {said}"))
            .to_owned()
    };
    let before = doctor().await;
    assert!(
        before.starts_with("WARN") && before.contains("no otpgate tables yet"),
        "{before}"
    );
    assert!(
        doctor().await.contains("no otpgate tables yet"),
        "still none"
    );
    let first = TestServer::start_with_config(&store).await;
    let held = doctor().await;
    assert!(
        held.starts_with("OK")
            && held.contains("schema version ")
            && held.contains("; 1 server serves it"),
        "{held}"
    );
    // A node of the site (its secret and CA) serves it too.
    let second = TestServer::start_node_of(&first).await;
    let held = doctor().await;
    assert!(held.contains("; 2 servers serve it"), "{held}");
    // One with a secret of its own (a data folder made afresh) is refused.
    let out = run(
        this_otpgate(),
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "",
    )
    .await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("secret.key is not the site's"), "{said}");
    // A restart serves it again at once; a user added on one node is seen
    // on the other.
    let first = first.restart().await;
    first.add_user("dora", RoleView::User).await;
    let seen = async {
        loop {
            let users = second
                .admin(AdminRequest::UsersList {
                    page: PageRequest::default(),
                })
                .await;
            if format!("{users:?}").contains("\"dora\"") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), seen)
        .await
        .expect("in force on the other node within a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_logins_are_unavailable_and_they_work_again_after() {
    let Some(cluster) = otpgate_actors::test_postgres::PgCluster::start() else {
        return;
    };
    let url = cluster.database().url;
    let server =
        TestServer::start_with_config(&format!("[store]\nbackend = \"postgres\"\nurl = {url:?}\n"))
            .await;
    server
        .set_settings(SettingsPatch {
            new_otp_interval_secs: Some(0),
            ..SettingsPatch::default()
        })
        .await;
    let desk = server.desk("ws-1").await;
    server.set_client("ws-1", auto_directory()).await;
    let email = my_email();
    let request = LoginRequest::Request(RequestMode::Directory);
    let verify = |code: String| LoginRequest::Verify {
        email: email.clone(),
        code: Secret(code),
    };
    let sent = desk.login(request.clone()).await;
    assert!(
        matches!(sent, LoginResponse::Requested(Requested::Send { .. })),
        "{sent:?}"
    );
    let first = server.codes_for(&email, 1).await.remove(0);

    cluster.halt();
    // Neither allowed nor denied: unavailable, said as such.
    let unavailable = |answer: &Result<LoginResponse, LoginError>| {
        matches!(answer, Err(LoginError::Local(LocalError::Unavailable)))
    };
    let during = desk.ask(verify(first.clone())).await;
    assert!(unavailable(&during), "{during:?}");

    cluster.resume();
    // The same server, not restarted, serves again: a new OTP, and it opens
    // the login. The first one was used (or is void): it opens nothing.
    crate::common::wait_until(Duration::from_secs(20), "served again", || async {
        matches!(
            desk.ask(request.clone()).await,
            Ok(LoginResponse::Requested(Requested::Send { .. }))
        )
    })
    .await;
    let codes = server.codes_for(&email, 2).await;
    let newest = codes.last().unwrap().clone();
    assert_ne!(newest, first);
    let allowed = desk.login(verify(newest)).await;
    assert!(
        matches!(allowed, LoginResponse::Verified(Verdict::Allow { .. })),
        "{allowed:?}"
    );
}
