//! The web Management Tool over real HTTPS: sign-in and sessions, CSRF and
//! origin checks, security headers, roles, escaping, decisions from the page
//! and from a mail link.

use std::time::Duration;

use crate::common::agent::Desk;
use crate::common::server::TestServer;
use crate::common::web::WebClient;
use otpgate_protocol::admin::{AdminRequest, AdminResponse, OptionsView, RoleView};
use otpgate_protocol::login::{LoginRequest, RequestMode};

/// An access request from the desk's person; its id.
async fn request_access(server: &TestServer, desk: &Desk, email: &str) -> u64 {
    desk.login(LoginRequest::Request(RequestMode::Email(email.into())))
        .await;
    crate::common::wait_until(Duration::from_secs(20), "the request", || async {
        server
            .requests(false)
            .await
            .iter()
            .any(|r| r.email == email)
    })
    .await;
    server
        .requests(false)
        .await
        .into_iter()
        .find(|r| r.email == email)
        .unwrap()
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_need_a_session_and_changes_need_its_token_from_this_site() {
    let server = TestServer::start().await;
    let web = WebClient::new(&server);

    // Not signed in: to the sign-in page, and back after.
    let answer = web.get("/requests").await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/signin?next=/requests");
    for header in [
        "content-security-policy",
        "strict-transport-security",
        "referrer-policy",
        "x-content-type-options",
    ] {
        assert!(answer.headers().contains_key(header), "{header}");
    }
    let csp = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));

    // Generic refusals: an unknown login and a wrong password read the same.
    for (login, password) in [("nobody", "whatever password"), ("admin", "wrong password")] {
        let answer = web.sign_in(login, password).await;
        assert_eq!(answer.status(), 401);
        assert!(
            answer
                .text()
                .await
                .unwrap()
                .contains("Wrong login name or password.")
        );
    }
    // The password made at the first start opens nothing, and the refusal is
    // in the audit log like the others.
    let refusals = || async {
        let audit = server.audit(100).await;
        audit
            .iter()
            .filter(|e| e.action == "sign_in" && e.who.starts_with("web(admin)"))
            .filter(|e| e.outcome == "refused")
            .count()
    };
    let before = refusals().await;
    let answer = web.sign_in("admin", &server.initial_password()).await;
    assert_eq!(answer.status(), 403);
    assert_eq!(refusals().await, before + 1);

    let password = server.admin_password().await;
    // A `next` a browser would read as another site (a tab or a newline in
    // it, which browsers drop), or that no header may carry: the usual page.
    // (The sign-in throttle allows 5 tries of one account a minute.)
    for next in ["/\t/evil.example", "/\n/evil.example"] {
        let outside = WebClient::new(&server);
        let form = [("login", "admin"), ("password", &password), ("next", next)];
        let answer = outside.post("/signin", &form).await;
        assert_eq!(answer.status(), 303, "{next:?}");
        assert_eq!(answer.headers()["location"], "/requests", "{next:?}");
        // Nor is such a `next` put in the form of the sign-in page.
        let page = outside
            .get(&format!(
                "/signin?next={}",
                otpgate::server::web::query_escape(next)
            ))
            .await;
        assert!(
            !page.text().await.unwrap().contains("evil.example"),
            "{next:?}"
        );
    }
    let answer = web.sign_in("admin", &password).await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()["location"], "/requests");
    let cookie = answer.headers()["set-cookie"].to_str().unwrap();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let (page, csrf) = web.page("/requests").await;
    assert!(page.contains("Access Requests"));
    assert_eq!(csrf.len(), 64);

    // A form without the session's token, or from another site, changes nothing.
    let answer = web
        .post(
            "/requests/1/decide",
            &[("csrf", "forged"), ("choice", "approve")],
        )
        .await;
    assert_eq!(answer.status(), 403);
    // Under no-referrer a browser's own form says `Origin: null`: only its
    // Sec-Fetch-Site vouches for it. 404: through the guard (no request 1).
    let origins: [(&[(&str, &str)], u16); 3] = [
        (&[("origin", "https://evil.example")], 403),
        (&[("origin", "null")], 403),
        (
            &[("origin", "null"), ("sec-fetch-site", "same-origin")],
            404,
        ),
    ];
    for (headers, status) in origins {
        let answer = web
            .post_with(
                "/requests/1/decide",
                &[("csrf", &csrf), ("choice", "approve")],
                headers,
            )
            .await;
        assert_eq!(answer.status(), status, "{headers:?}");
    }

    // The live count streams while signed in, and stops at sign-out; a
    // session holds a few streams, not any number.
    let mut events = web.get("/events").await;
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: pending"));
    let mut more = Vec::new();
    for _ in 0..3 {
        let stream = web.get("/events").await;
        assert_eq!(stream.status(), 200);
        more.push(stream);
    }
    assert_eq!(web.get("/events").await.status(), 429, "a fifth");
    drop(more.pop());
    crate::common::wait_until(
        Duration::from_secs(10),
        "a stream's place is free",
        || async { web.get("/events").await.status() == 200 },
    )
    .await;
    drop(more);

    // Signed out: the cookie no longer opens anything.
    let answer = web.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(answer.status(), 303);
    assert_eq!(web.get("/sessions").await.status(), 303);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while events.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends with the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_decide_what_is_theirs_and_text_stays_text() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    server.add_user("bob", RoleView::User).await;
    server.add_user("carol", RoleView::User).await;
    server
        .set_client(
            "ws-1",
            OptionsView {
                approvers: Some(vec!["bob".into()]),
                ..OptionsView::default()
            },
        )
        .await;
    let id = request_access(&server, &desk, "alice@example.com").await;

    // Carol approves nothing here: she does not see the request, and cannot
    // decide it by posting anyway.
    let carol = WebClient::new(&server);
    assert_eq!(
        carol
            .sign_in("carol", "carol's long password")
            .await
            .status(),
        303
    );
    let (page, csrf) = carol.page("/requests").await;
    assert!(!page.contains("alice@example.com"), "{page}");
    let answer = carol
        .post(
            &format!("/requests/{id}/decide"),
            &[("csrf", &csrf), ("choice", "approve")],
        )
        .await;
    // Refused without a word of whose request it is.
    assert_eq!(answer.status(), 403);
    let page = answer.text().await.unwrap();
    assert!(page.contains("may not decide request"), "{page}");
    assert!(!page.contains("ws-1"), "{page}");

    // Bob sees it with the count, and denies it with a comment that is markup.
    let bob = WebClient::new(&server);
    assert_eq!(
        bob.sign_in("bob", "bob's long password").await.status(),
        303
    );
    let (page, csrf) = bob.page("/requests").await;
    assert!(page.contains("alice@example.com"), "{page}");
    assert!(
        page.contains(r#"id="pending" title="Pending requests">1<"#),
        "{page}"
    );
    let answer = bob
        .post(
            &format!("/requests/{id}/decide"),
            &[
                ("csrf", &csrf),
                ("choice", "deny"),
                ("comment", "<script>alert(1)</script>"),
            ],
        )
        .await;
    assert_eq!(answer.status(), 303);
    let (page, _) = bob.page("/requests").await;
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(
        server
            .audit(20)
            .await
            .iter()
            .any(|e| e.who == "web(bob)" && e.outcome == format!("request {id} denied by bob"))
    );
    // One decision, one entry.
    let entries = server.audit(20).await;
    let about =
        |e: &&otpgate_protocol::admin::AuditView| e.outcome.contains(&format!("request {id} "));
    assert_eq!(
        entries
            .iter()
            .filter(about)
            .filter(|e| e.action == "deny")
            .count(),
        1,
        "{entries:#?}"
    );
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_link_leads_through_sign_in_to_a_confirmation_and_works_once() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let password = server.admin_password().await;
    let id = request_access(&server, &desk, "alice@example.com").await;
    let outbox = server.data_dir().join("outbox");
    crate::common::wait_until(Duration::from_secs(20), "the approver's mail", || async {
        !crate::common::mail::messages_to(&outbox, "admin@example.com").is_empty()
    })
    .await;
    let mail = crate::common::mail::messages_to(&outbox, "admin@example.com").remove(0);
    let token = crate::common::mail::token_after(&mail, "Approve:");
    let link = format!("/requests/decide?token={token}");

    let web = WebClient::new(&server);
    let answer = web.get(&link).await;
    assert_eq!(answer.status(), 303);
    let signin = answer.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        signin.starts_with("/signin?next=/requests/decide%3Ftoken%3D"),
        "{signin}"
    );
    let (page, _) = web.page(&signin).await;
    let next = page
        .split("name=\"next\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&#x3d;", "=")
        .replace("&#61;", "=")
        .replace("&amp;", "&");
    assert_eq!(next, link);
    let answer = web
        .post(
            "/signin",
            &[("login", "admin"), ("password", &password), ("next", &next)],
        )
        .await;
    assert_eq!(answer.headers()["location"], link.as_str());

    // The GET only shows; the POST decides, once.
    let (page, csrf) = web.page(&link).await;
    assert!(
        page.contains(&format!("Approve access request #{id}")),
        "{page}"
    );
    assert_eq!(server.requests(false).await.len(), 1, "still pending");
    let form = [
        ("csrf", csrf.as_str()),
        ("token", token.as_str()),
        ("comment", "ok"),
    ];
    let answer = web.post("/requests/decide", &form).await;
    assert_eq!(answer.status(), 303);
    assert!(server.requests(false).await.is_empty(), "approved");
    let answer = web.post("/requests/decide", &form).await;
    assert_eq!(answer.status(), 409);
    assert!(answer.text().await.unwrap().contains("already"));
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_manage_settings_users_otps_audit_and_mail() {
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let password = server.admin_password().await;
    server.add_user("bob", RoleView::User).await;

    // Not for users.
    let bob = WebClient::new(&server);
    assert_eq!(
        bob.sign_in("bob", "bob's long password").await.status(),
        303
    );
    for page in ["/settings", "/clients", "/users", "/otp", "/audit", "/mail"] {
        assert_eq!(bob.get(page).await.status(), 403, "{page}");
    }

    let web = WebClient::new(&server);
    assert_eq!(web.sign_in("admin", &password).await.status(), 303);

    // Settings: the defaults shown, a bad value refused with its reason, a
    // good one saved and in force.
    let (page, csrf) = web.page("/settings").await;
    assert!(page.contains("Access Request Expiration Time") && page.contains("Default: 30"));
    let form = |otp_length: &'static str| {
        vec![
            ("expiration_minutes", "30"),
            ("new_otp_interval_minutes", "60"),
            ("otp_length", otp_length),
            ("max_attempts", "5"),
            ("max_failures", "100"),
            ("failure_window_minutes", "60"),
            ("resend_gap_secs", "30"),
            ("max_new_per_computer", "300"),
            ("session_timeout_minutes", "720"),
            ("retention_days", "365"),
        ]
    };
    let mut bad = form("99");
    bad.push(("csrf", &csrf));
    let answer = web.post("/settings", &bad).await;
    assert_eq!(answer.status(), 422);
    let page = answer.text().await.unwrap();
    assert!(
        page.contains("OTP length: must be between 6 and 12 digits."),
        "said with the page's label: {page}"
    );
    let mut good = form("6");
    good.push(("csrf", &csrf));
    // A user's change is refused by the service itself, whatever page posts it.
    let (_, bobs) = bob.page("/requests").await;
    let mut bobs_form = form("7");
    bobs_form.push(("csrf", &bobs));
    let answer = bob.post("/settings", &bobs_form).await;
    assert_eq!(answer.status(), 403);
    assert!(answer.text().await.unwrap().contains("for administrators"));
    assert_eq!(web.post("/settings", &good).await.status(), 303);
    assert_eq!(server.settings().await.otp_length, 6);

    // Clients: ws-1 online, its options inherited.
    let (page, _) = web.page("/clients").await;
    assert!(
        page.contains("ws-1") && page.contains("online") && page.contains("title=\"inherited\"")
    );

    // A group made from its page; ws-1 put in it with options of its own, an
    // unknown approver refused, then an option back to inherit.
    let answer = web.get("/groups?name=finance").await;
    assert_eq!(answer.headers()["location"], "/groups/finance");
    let group = [
        ("csrf", csrf.as_str()),
        ("allow_otp", "yes"),
        ("auto_directory", "yes"),
        ("auto_internal", "inherit"),
        ("approvers_inherit", "yes"),
    ];
    assert_eq!(web.post("/groups/finance", &group).await.status(), 303);
    let client = |allow_otp: &'static str, approvers: &'static str| {
        vec![
            ("group", "finance"),
            ("allow_otp", allow_otp),
            ("auto_directory", "inherit"),
            ("auto_internal", "inherit"),
            ("approvers", approvers),
        ]
    };
    let mut unknown = client("no", "bob, zed");
    unknown.push(("csrf", &csrf));
    let answer = web.post("/clients/ws-1", &unknown).await;
    assert_eq!(answer.status(), 422);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("no internal user, directory account or group zed")
    );
    let mut own = client("no", "bob");
    own.push(("csrf", &csrf));
    assert_eq!(web.post("/clients/ws-1", &own).await.status(), 303);
    let ws1 = || async {
        match server
            .admin(AdminRequest::ClientsList {
                page: otpgate_protocol::admin::PageRequest::default(),
            })
            .await
        {
            AdminResponse::Clients(page) => page.items.into_iter().next().unwrap(),
            other => panic!("{other:?}"),
        }
    };
    let now = ws1().await;
    assert_eq!(now.group.as_deref(), Some("finance"));
    assert_eq!(now.options.allow_otp, Some(false));
    assert_eq!(now.options.approvers, Some(vec!["bob".to_owned()]));
    assert_eq!(now.effective.auto_directory, Some(true), "from the group");
    let mut inherit = client("inherit", "bob");
    inherit.push(("csrf", &csrf));
    assert_eq!(web.post("/clients/ws-1", &inherit).await.status(), 303);
    let now = ws1().await;
    assert_eq!(now.options.allow_otp, None, "back to inherit");
    assert_eq!(now.effective.allow_otp, Some(true), "the group's");
    let (page, _) = web.page("/clients/ws-1").await;
    assert!(
        page.contains("Client ws-1") && page.contains("In force: yes"),
        "{page}"
    );

    // Users: added, promoted, password reset.
    let added = [
        ("csrf", csrf.as_str()),
        ("login", "dave"),
        ("email", "dave@example.com"),
        ("role", "user"),
        ("password", "dave's long password"),
    ];
    assert_eq!(web.post("/users", &added).await.status(), 303);
    let short = [
        ("csrf", csrf.as_str()),
        ("role", "administrator"),
        ("password", "short"),
    ];
    let answer = web.post("/users/dave", &short).await;
    assert_eq!(answer.status(), 422);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("at least 12 characters")
    );
    let reset = [
        ("csrf", csrf.as_str()),
        ("role", "administrator"),
        ("password", "dave's new long password"),
    ];
    assert_eq!(web.post("/users/dave", &reset).await.status(), 303);
    let dave = WebClient::new(&server);
    assert_eq!(
        dave.sign_in("dave", "dave's new long password")
            .await
            .status(),
        303
    );
    assert_eq!(
        dave.get("/settings").await.status(),
        200,
        "an administrator now"
    );
    // Disabled: his session and his password open nothing any more.
    let disable = [
        ("csrf", csrf.as_str()),
        ("role", "administrator"),
        ("disabled", "yes"),
    ];
    assert_eq!(web.post("/users/dave", &disable).await.status(), 303);
    assert_eq!(dave.get("/settings").await.status(), 303);
    assert_eq!(
        dave.sign_in("dave", "dave's new long password")
            .await
            .status(),
        401
    );
    // The last enabled administrator stays one.
    let answer = web.post("/users/admin", &disable).await;
    assert_eq!(answer.status(), 422);
    assert!(answer.text().await.unwrap().contains("last administrator"));

    // Generate OTP: the administrator's password again; the OTP has the new
    // length.
    let generate = [
        ("csrf", csrf.as_str()),
        ("computer", "ws-1"),
        ("os_user", "alice"),
        ("email", "alice@example.com"),
        ("comment", ""),
        ("password", password.as_str()),
    ];
    assert_eq!(web.post("/otp", &generate).await.status(), 303);
    let code = server.codes_for("alice@example.com", 1).await.remove(0);
    assert_eq!(code.len(), 6);

    // Audit: filtered by kind; exported as CSV and JSON.
    let (page, _) = web.page("/audit?kind=generate").await;
    assert!(page.contains("Generated without request."), "{page}");
    assert!(!page.contains(">sign_in<"), "{page}");
    let csv = web
        .get("/audit?kind=sign_in&format=csv")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        csv.starts_with("at,who,computer,action,outcome\r\n"),
        "{csv}"
    );
    assert!(csv.contains("\"web(admin) from 127.0.0.1\""), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&web.get("/audit?format=json").await.text().await.unwrap()).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "generate")
    );

    // Mail: a test message through the outbox.
    let answer = web
        .post("/mail/test", &[("csrf", &csrf), ("to", "ops@example.com")])
        .await;
    assert_eq!(answer.status(), 303);
    let (page, _) = web
        .page(answer.headers()["location"].to_str().unwrap())
        .await;
    assert!(page.contains("Sent to ops@example.com"), "{page}");

    // Profile: one's own password, the current one first.
    let wrong = [
        ("csrf", csrf.as_str()),
        ("current", "not it"),
        ("new", "an even longer password"),
    ];
    assert_eq!(web.post("/profile", &wrong).await.status(), 422);
    let right = [
        ("csrf", csrf.as_str()),
        ("current", password.as_str()),
        ("new", "an even longer password"),
    ];
    assert_eq!(web.post("/profile", &right).await.status(), 303);
    let again = WebClient::new(&server);
    assert_eq!(again.sign_in("admin", &password).await.status(), 401);
    assert_eq!(
        again
            .sign_in("admin", "an even longer password")
            .await
            .status(),
        303
    );
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_password_ends_the_sessions_and_streams_opened_with_the_old_one() {
    let server = TestServer::start().await;
    server.add_user("bob", RoleView::Administrator).await;
    let set_password = |password: &str| AdminRequest::UserSet {
        login: "bob".into(),
        email: None,
        role: None,
        password: Some(otpgate_protocol::login::Secret(password.into())),
        disabled: None,
    };
    let bob = WebClient::new(&server);
    assert_eq!(
        bob.sign_in("bob", "bob's long password").await.status(),
        303
    );
    assert_eq!(bob.get("/settings").await.status(), 200);
    let mut events = bob.get("/events").await;
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: pending"));

    // An administrator resets bob's password: what he opened with the old one
    // opens nothing, and his live count stops.
    let reset = server
        .admin(set_password("bob's reset long password"))
        .await;
    assert_eq!(reset, AdminResponse::Done);
    assert_eq!(bob.get("/settings").await.status(), 303);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while events.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream ends with the old password");

    // Signed in again with the new one, and demoted while his stream runs: it
    // goes on with the role he has now (requests he does not approve leave
    // his count), and the administrators' pages refuse him.
    assert_eq!(
        bob.sign_in("bob", "bob's reset long password")
            .await
            .status(),
        303
    );
    let desk = server.desk("ws-1").await;
    request_access(&server, &desk, "alice@example.com").await;
    let mut events = bob.get("/events").await;
    let first = String::from_utf8_lossy(&events.chunk().await.unwrap().unwrap()).into_owned();
    assert!(first.contains("data: 1"), "{first}");
    let demote = AdminRequest::UserSet {
        login: "bob".into(),
        email: None,
        role: Some(RoleView::User),
        password: None,
        disabled: None,
    };
    assert_eq!(server.admin(demote).await, AdminResponse::Done);
    let next = tokio::time::timeout(Duration::from_secs(10), events.chunk())
        .await
        .expect("the count changes with the role")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&next).contains("data: 0"));
    assert_eq!(bob.get("/settings").await.status(), 403);
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_issue_see_and_void_a_clients_offline_codes() {
    let server = TestServer::start().await;
    let _desk = server.desk("ws-1").await;
    let password = server.admin_password().await;
    let web = WebClient::new(&server);
    assert_eq!(web.sign_in("admin", &password).await.status(), 303);
    let (page, _) = web.page("/clients").await;
    assert!(page.contains("href=\"/clients/ws-1/offline\""), "{page}");
    let (page, csrf) = web.page("/clients/ws-1/offline").await;
    assert!(page.contains("Offline codes of ws-1"), "{page}");
    let form = |count: &'static str| {
        vec![
            ("os_user", "alice"),
            ("email", "alice@example.com"),
            ("count", count),
            ("valid_days", "30"),
        ]
    };
    let mut bad = form("0");
    bad.push(("csrf", &csrf));
    let answer = web.post("/clients/ws-1/offline", &bad).await;
    assert_eq!(answer.status(), 422);
    assert!(answer.text().await.unwrap().contains("1 to 20 codes"));

    // Issued: the codes shown on the answer, this once.
    let mut good = form("2");
    good.push(("csrf", &csrf));
    let answer = web.post("/clients/ws-1/offline", &good).await;
    assert_eq!(answer.status(), 200);
    let page = answer.text().await.unwrap();
    let code = |text: &str| -> Vec<String> {
        text.split("<code>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</code>").map(|(code, _)| code.to_owned()))
            .filter(|code| code.len() == 14 && code.matches('-').count() == 2)
            .collect()
    };
    let shown = code(&page);
    assert_eq!(shown.len(), 2, "{page}");
    assert!(page.contains("2 of 2"), "{page}");
    let (page, csrf) = web.page("/clients/ws-1/offline").await;
    assert!(code(&page).is_empty(), "shown once: {page}");
    assert!(page.contains("alice@example.com") && page.contains("2 of 2"));
    let audit = server.audit(10).await;
    assert!(
        audit
            .iter()
            .any(|e| e.action == "offline" && e.outcome.contains("2 offline codes for alice")),
        "{audit:?}"
    );

    // Voided: gone from the page.
    let answer = web
        .post(
            "/clients/ws-1/offline/void",
            &[("csrf", &csrf), ("os_user", "alice")],
        )
        .await;
    assert_eq!(answer.status(), 303);
    let (page, _) = web.page("/clients/ws-1/offline").await;
    assert!(!page.contains("alice@example.com"), "{page}");
}
