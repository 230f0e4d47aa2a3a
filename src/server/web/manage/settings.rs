//! The System Settings page: every setting with its default, validated.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use otpgate_actors::settings::SystemSettings;
use otpgate_protocol::admin::{SettingsPatch, SettingsView};

use super::{Admin, Done, done, not_done, unavailable};
use crate::server::convert;
use crate::server::web::App;
use crate::server::web::auth::{Posted, SignedIn};
use crate::server::web::views::{Nav, nav, render};

/// One setting as the form shows it.
struct SettingRow {
    name: &'static str,
    label: &'static str,
    unit: &'static str,
    value: u64,
    default: u64,
}

/// The settings form's fields: name, label, unit, divisor from the view's
/// unit, and the view's field.
type SettingField = (
    &'static str,
    &'static str,
    &'static str,
    u64,
    fn(&SettingsView) -> u64,
);

const SETTINGS: [SettingField; 10] = [
    (
        "expiration_minutes",
        "Access Request Expiration Time",
        "minutes",
        60,
        |s| s.expiration_secs,
    ),
    (
        "new_otp_interval_minutes",
        "Time between two new OTPs",
        "minutes",
        60,
        |s| s.new_otp_interval_secs,
    ),
    ("otp_length", "OTP length", "digits", 1, |s| {
        u64::from(s.otp_length)
    }),
    (
        "max_attempts",
        "Wrong attempts before an OTP locks",
        "attempts",
        1,
        |s| u64::from(s.max_attempts),
    ),
    (
        "max_failures",
        "Failures per computer and per account within the window",
        "failures",
        1,
        |s| u64::from(s.max_failures),
    ),
    (
        "failure_window_minutes",
        "Failure window",
        "minutes",
        60,
        |s| s.failure_window_secs,
    ),
    (
        "resend_gap_secs",
        "Shortest time between two emails of one OTP",
        "seconds",
        1,
        |s| s.resend_gap_secs,
    ),
    (
        "max_new_per_computer",
        "New OTPs and requests per computer within the window",
        "per window",
        1,
        |s| u64::from(s.max_new_per_computer),
    ),
    (
        "session_timeout_minutes",
        "Client session timeout without its agent",
        "minutes",
        60,
        |s| s.session_timeout_secs,
    ),
    (
        "retention_days",
        "Keep the audit log and finished records",
        "days",
        1,
        |s| s.retention_days,
    ),
];

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    rows: Vec<SettingRow>,
}

async fn settings_page(
    app: &App,
    signed: &SignedIn,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let current = match app.service.settings(&signed.principal) {
        Ok(current) => current,
        Err(err) => return unavailable(err),
    };
    let defaults = convert::settings_view(&SystemSettings::default());
    let rows = SETTINGS
        .iter()
        .map(|(name, label, unit, divisor, field)| SettingRow {
            name,
            label,
            unit,
            value: field(&current) / divisor,
            default: field(&defaults) / divisor,
        })
        .collect();
    render(
        status,
        &SettingsPage {
            title: "System Settings",
            nav: Some(nav(app, signed).await),
            notice,
            error,
            csrf: signed.csrf.clone(),
            rows,
        },
    )
}

pub async fn settings(
    State(app): State<App>,
    Admin(signed): Admin,
    Query(query): Query<Done>,
) -> Response {
    settings_page(&app, &signed, StatusCode::OK, query.done, None).await
}

pub async fn settings_set(
    State(app): State<App>,
    Posted { signed, form }: Posted<HashMap<String, String>>,
) -> Response {
    let mut values = HashMap::new();
    for (name, label, _, factor, _) in SETTINGS {
        match form.get(name).map(|v| v.trim().parse::<u64>()) {
            Some(Ok(value)) => {
                values.insert(name, value.saturating_mul(factor));
            }
            _ => {
                let error = format!("{label}: give a whole number.");
                return settings_page(
                    &app,
                    &signed,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    None,
                    Some(error),
                )
                .await;
            }
        }
    }
    let narrow = |name| u32::try_from(values[name]).unwrap_or(u32::MAX);
    let patch = SettingsPatch {
        expiration_secs: Some(values["expiration_minutes"]),
        new_otp_interval_secs: Some(values["new_otp_interval_minutes"]),
        otp_length: Some(u8::try_from(values["otp_length"]).unwrap_or(u8::MAX)),
        max_attempts: Some(narrow("max_attempts")),
        max_failures: Some(narrow("max_failures")),
        failure_window_secs: Some(values["failure_window_minutes"]),
        resend_gap_secs: Some(values["resend_gap_secs"]),
        max_new_per_computer: Some(narrow("max_new_per_computer")),
        session_timeout_secs: Some(values["session_timeout_minutes"]),
        retention_days: Some(values["retention_days"]),
    };
    match app.service.set_settings(&signed.principal, &patch).await {
        Ok(_) => done("/settings", "Settings saved."),
        Err(err) => {
            not_done(err, |status, reason| async move {
                settings_page(&app, &signed, status, None, Some(reason)).await
            })
            .await
        }
    }
}
