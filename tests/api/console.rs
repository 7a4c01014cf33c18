//! The console on the admin listener and `/docs` on the public one, in a
//! real browser (Debian's chromium, headless): each works with no request
//! leaving the machine, and the console's retry makes a dead task run.

use std::sync::atomic::Ordering;

use crate::admin::{Job, app_with_jobs, enqueue_jobs};
use crate::helpers::{ADMIN_TOKEN, Browser, PATIENCE, TempDir, eventually, spawn_app};

/// Where the console's screenshot is written: the README shows it.
const SCREENSHOT: &str = "target/console.png";

#[actix_web::test]
async fn the_console_shows_a_dead_task_and_its_retry_makes_it_run() {
    let dir = TempDir::new("console");
    let job = Job::default();
    job.broken.store(true, Ordering::SeqCst);
    let app = app_with_jobs(&dir, &job).await;
    let user = app.new_user("grace").await;
    enqueue_jobs(&app, &user, 1).await;
    let died = eventually(PATIENCE, || async {
        app.queue_counts(&user.token).await["dead"] == 1
    })
    .await;
    assert!(died);
    let dead = app.admin_json("/admin/api/v1/tasks?status=dead").await;
    let id = dead["items"][0]["id"].as_str().unwrap().to_owned();
    let admin = app.admin_address.clone().unwrap();
    let browser = Browser::start().await;

    browser.open(&format!("{admin}/")).await;
    browser.type_into("#token", ADMIN_TOKEN).await;
    browser.click("#open").await;
    let row = format!("tr[data-task-id=\"{id}\"]");
    let shown = browser.text(&row).await;
    let user_row = browser
        .text(&format!("tr[data-user-id=\"{}\"]", user.id))
        .await;
    let pools = browser.text("#pools").await;
    let screenshot = browser.screenshot().await;
    job.broken.store(false, Ordering::SeqCst);
    browser.click(&format!("{row} button.retry")).await;
    let ran = eventually(PATIENCE, || async {
        app.queue_counts(&user.token).await["succeeded"] == 1
    })
    .await;
    let status = browser.text("#status").await;
    let requests = browser.requests().await;

    assert!(
        shown.contains("job") && shown.contains("the job is broken"),
        "{shown}"
    );
    assert!(
        user_row.contains("grace") && user_row.contains("active"),
        "{user_row}"
    );
    assert!(
        pools.contains("workers") && pools.contains("hashers"),
        "{pools}"
    );
    assert!(ran, "the task the console retried ran");
    assert!(status.contains("queued again"), "{status}");
    assert!(
        requests.iter().any(|url| url.ends_with("/console.js")),
        "{requests:?}"
    );
    let elsewhere: Vec<&String> = requests
        .iter()
        .filter(|url| !url.starts_with(&admin))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests left the machine: {elsewhere:?}"
    );
    assert!(screenshot.starts_with(b"\x89PNG"));
    std::fs::write(SCREENSHOT, screenshot).unwrap();
}

#[actix_web::test]
async fn the_docs_page_shows_every_operation_with_nothing_loaded_from_elsewhere() {
    let app = spawn_app().await;
    let browser = Browser::start().await;

    browser.open(&app.url("/docs")).await;
    let title = browser.text("h1").await;
    let page = browser.text("main").await;
    let requests = browser.requests().await;

    assert_eq!(title, "Tollgate");
    for operation in [
        "POST /api/v1/auth/signin",
        "GET /api/v1/tasks/{id}",
        "DELETE /api/v1/users/me",
        "POST /api/v1/auth/introspect",
    ] {
        assert!(page.contains(operation), "{operation} is not shown");
    }
    assert!(page.contains("invalid_credentials"), "answers are shown");
    assert_eq!(requests, [app.url("/docs")], "the page loaded nothing more");
}
