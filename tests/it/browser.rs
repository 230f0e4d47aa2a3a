//! The web Management Tool in a real headless Chromium: what an approver does
//! in a day, and a terminal recording played back and searched. Screenshots
//! of the main pages go to `target/tmp/screenshots/`.

use std::time::Duration;

use crate::common::browser::Browser;
use crate::common::server::TestServer;
use crate::common::web::base;
use otpgate::cli::prompt::Prompt;
use otpgate_protocol::login::{LoginRequest, LoginResponse, RequestMode, Secret, Verdict};
use thirtyfour::prelude::*;

/// Waits until `condition` holds on `driver`'s page, checking every 100 ms;
/// shows the page if it never does.
async fn wait_for<F, Fut>(driver: &WebDriver, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..150 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = driver
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    let page = driver.source().await.unwrap_or_default();
    panic!("timed out waiting until {what} at {url}:\n{page}");
}

/// Waits until the element `by` finds shows `text`, as [`wait_for`].
async fn wait_for_text(driver: &WebDriver, what: &str, by: By, text: &str) {
    wait_for(driver, what, || async {
        text_of(driver, by.clone()).await.contains(text)
    })
    .await;
}

async fn text_of(driver: &WebDriver, by: By) -> String {
    match driver.find(by).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Clicks the element `css` finds.
async fn click(driver: &WebDriver, css: &str) {
    driver
        .find(By::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn sign_in(driver: &WebDriver, password: &str) {
    driver
        .find(By::Id("login"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    driver
        .find(By::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click(driver, "form button[type=submit]").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_signs_in_decides_and_follows_a_mail_link() {
    let Some(browser) =
        Browser::start("an_approver_signs_in_decides_and_follows_a_mail_link").await
    else {
        return;
    };
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let password = server.admin_password().await;
    let site = base(server.web);
    let driver = browser.driver();
    // The person at ws-1 is alice (the agent takes root's word for whom it acts).
    let alice = Prompt {
        socket: desk.socket.clone(),
        os_user: Some("alice".into()),
    };

    // Signing in lands where the person was going.
    driver.goto(format!("{site}/requests")).await.unwrap();
    browser.shot("signin").await;
    sign_in(driver, &password).await;
    wait_for(driver, "the requests page", || async {
        text_of(driver, By::Tag("h1")).await == "Access Requests"
    })
    .await;
    assert_eq!(text_of(driver, By::Id("pending")).await, "0");

    // An agent asks: the badge and the request appear without a reload.
    let asked = alice
        .ask(LoginRequest::Request(RequestMode::Email(
            "alice@example.com".into(),
        )))
        .await
        .unwrap();
    assert!(matches!(asked, LoginResponse::Requested(_)), "{asked:?}");
    wait_for(driver, "the live badge", || async {
        text_of(driver, By::Id("pending")).await == "1"
    })
    .await;
    wait_for_text(
        driver,
        "the live list",
        By::Id("pending-list"),
        "alice@example.com",
    )
    .await;
    browser.shot("requests-pending").await;

    // Approved with a comment: the person's OTP mail is queued.
    driver
        .find(By::Css("#pending-list input[name=comment]"))
        .await
        .unwrap()
        .send_keys("welcome back")
        .await
        .unwrap();
    click(driver, "#pending-list button.approve").await;
    wait_for_text(
        driver,
        "the approval's notice",
        By::Css("p.notice"),
        "approved",
    )
    .await;
    let code = server.codes_for("alice@example.com", 1).await.remove(0);
    browser.shot("requests-decided").await;

    // Another request, denied.
    let other = Prompt {
        socket: desk.socket.clone(),
        os_user: Some("root".into()),
    };
    other
        .ask(LoginRequest::Request(RequestMode::Email(
            "mallory@example.com".into(),
        )))
        .await
        .unwrap();
    wait_for_text(
        driver,
        "the second request",
        By::Id("pending-list"),
        "mallory@example.com",
    )
    .await;
    click(driver, "#pending-list button.deny").await;
    wait_for_text(driver, "the denial's notice", By::Css("p.notice"), "denied").await;

    // Alice logs in: Client Sessions shows her as `alice (alice@example.com)`.
    let verified = alice
        .ask(LoginRequest::Verify {
            email: "alice@example.com".into(),
            code: Secret(code),
        })
        .await
        .unwrap();
    assert!(
        matches!(verified, LoginResponse::Verified(Verdict::Allow { .. })),
        "{verified:?}"
    );
    driver.goto(format!("{site}/sessions")).await.unwrap();
    wait_for_text(
        driver,
        "the session",
        By::Tag("tbody"),
        "alice (alice@example.com)",
    )
    .await;
    browser.shot("sessions").await;

    // The administrators' pages, and the requests on a phone's screen.
    for page in ["clients", "users", "audit"] {
        driver.goto(format!("{site}/{page}")).await.unwrap();
        browser.shot(page).await;
    }
    driver.set_window_rect(0, 0, 390, 844).await.unwrap();
    driver.goto(format!("{site}/requests")).await.unwrap();
    browser.shot("requests-phone").await;
    driver.set_window_rect(0, 0, 1280, 900).await.unwrap();

    // A setting changed on its page is in force for the next request.
    driver.goto(format!("{site}/settings")).await.unwrap();
    let expiration = driver.find(By::Id("expiration_minutes")).await.unwrap();
    expiration.clear().await.unwrap();
    expiration.send_keys("10").await.unwrap();
    browser.shot("settings").await;
    click(driver, "main form button[type=submit]").await;
    wait_for_text(driver, "the settings saved", By::Css("p.notice"), "saved").await;

    // Signed out, an Approve link from the mail goes through sign-in to the
    // confirmation, and the confirmation decides.
    click(driver, "form.signout button").await;
    wait_for(driver, "the sign-in page", || async {
        text_of(driver, By::Tag("h1")).await == "Sign in"
    })
    .await;
    let mallory = Prompt {
        socket: desk.socket.clone(),
        os_user: Some("bin".into()),
    };
    mallory
        .ask(LoginRequest::Request(RequestMode::Email(
            "bin@example.com".into(),
        )))
        .await
        .unwrap();
    let request = server.requests(false).await.remove(0);
    assert_eq!(
        request.expires - request.created,
        10 * 60 * 1000,
        "the new expiry"
    );
    let outbox = server.data_dir().join("outbox");
    let mut mail = None;
    wait_for(driver, "the approver's mail", || {
        let found = crate::common::mail::messages_to(&outbox, "admin@example.com")
            .into_iter()
            .find(|m| m.contains("bin@example.com"));
        let done = found.is_some();
        mail = found.or(mail.take());
        async move { done }
    })
    .await;
    let token = crate::common::mail::token_after(&mail.unwrap(), "Approve:");
    driver
        .goto(format!("{site}/requests/decide?token={token}"))
        .await
        .unwrap();
    wait_for(driver, "the sign-in page", || async {
        text_of(driver, By::Tag("h1")).await == "Sign in"
    })
    .await;
    sign_in(driver, &password).await;
    wait_for(driver, "the confirmation", || async {
        text_of(driver, By::Tag("h1"))
            .await
            .starts_with("Approve access request")
    })
    .await;
    browser.shot("link-confirm").await;
    click(driver, "button.approve").await;
    wait_for_text(
        driver,
        "the link's approval",
        By::Css("p.notice"),
        "approved",
    )
    .await;
    assert!(server.requests(false).await.is_empty());
    browser.quit().await;
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_plays_in_the_browser_and_its_text_is_found() {
    let Some(browser) = Browser::start("a_recording_plays_in_the_browser").await else {
        return;
    };
    let server = TestServer::start().await;
    let desk = server.desk("ws-1").await;
    let password = server.admin_password().await;
    let site = base(server.web);
    let driver = browser.driver();
    let socket = desk.socket.clone();
    let (_, status) = tokio::task::spawn_blocking(move || {
        crate::common::recorder::record(
            &socket,
            &["/bin/sh", "-c", "echo shown in the browser; sleep 1"],
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 0);
    let id = server.ended_recording().await.id;

    // Its page plays it: the terminal shows what the person saw.
    driver
        .goto(format!("{site}/recordings/{id}"))
        .await
        .unwrap();
    sign_in(driver, &password).await;
    wait_for_text(
        driver,
        "the player shows the recording",
        By::Id("player"),
        "shown in the browser",
    )
    .await;
    browser.shot("recording").await;

    // The search finds the moment, and leads to it.
    driver
        .goto(format!("{site}/recordings?q=IN+THE+BROWSER"))
        .await
        .unwrap();
    wait_for_text(
        driver,
        "the search result",
        By::Css("main table"),
        "shown in the browser",
    )
    .await;
    browser.shot("recordings-search").await;
    click(driver, "main table a").await;
    wait_for_text(
        driver,
        "the player at the moment",
        By::Id("player"),
        "shown in the browser",
    )
    .await;
    desk.stop().await;
    browser.quit().await;
}
