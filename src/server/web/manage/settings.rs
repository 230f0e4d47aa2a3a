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

/// One field of the settings form.
struct SettingField {
    /// The form's name for it.
    name: &'static str,
    /// What the page calls it.
    label: &'static str,
    /// The unit it is typed in.
    unit: &'static str,
    /// How many of the view's unit one of the form's is.
    factor: u64,
    /// The setting's own name, as validation names it.
    setting: &'static str,
    /// Its value in the view.
    view: fn(&SettingsView) -> u64,
}

const SETTINGS: [SettingField; 10] = [
    SettingField {
        name: "expiration_minutes",
        label: "Access Request Expiration Time",
        unit: "minutes",
        factor: 60,
        setting: "expiration",
        view: |s| s.expiration_secs,
    },
    SettingField {
        name: "new_otp_interval_minutes",
        label: "Time between two new OTPs",
        unit: "minutes",
        factor: 60,
        setting: "new_otp_interval",
        view: |s| s.new_otp_interval_secs,
    },
    SettingField {
        name: "otp_length",
        label: "OTP length",
        unit: "digits",
        factor: 1,
        setting: "otp_length",
        view: |s| u64::from(s.otp_length),
    },
    SettingField {
        name: "max_attempts",
        label: "Wrong attempts before an OTP locks",
        unit: "attempts",
        factor: 1,
        setting: "max_attempts",
        view: |s| u64::from(s.max_attempts),
    },
    SettingField {
        name: "max_failures",
        label: "Failures per computer and per account within the window",
        unit: "failures",
        factor: 1,
        setting: "max_failures",
        view: |s| u64::from(s.max_failures),
    },
    SettingField {
        name: "failure_window_minutes",
        label: "Failure window",
        unit: "minutes",
        factor: 60,
        setting: "failure_window",
        view: |s| s.failure_window_secs,
    },
    SettingField {
        name: "resend_gap_secs",
        label: "Shortest time between two emails of one OTP",
        unit: "seconds",
        factor: 1,
        setting: "resend_gap",
        view: |s| s.resend_gap_secs,
    },
    SettingField {
        name: "max_new_per_computer",
        label: "New OTPs and requests per computer within the window",
        unit: "per window",
        factor: 1,
        setting: "max_new_per_computer",
        view: |s| u64::from(s.max_new_per_computer),
    },
    SettingField {
        name: "session_timeout_minutes",
        label: "Client session timeout without its agent",
        unit: "minutes",
        factor: 60,
        setting: "session_timeout",
        view: |s| s.session_timeout_secs,
    },
    SettingField {
        name: "retention_days",
        label: "Keep the audit log and finished records",
        unit: "days",
        factor: 1,
        setting: "retention",
        view: |s| s.retention_days,
    },
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
        .map(|field| SettingRow {
            name: field.name,
            label: field.label,
            unit: field.unit,
            value: (field.view)(&current) / field.factor,
            default: (field.view)(&defaults) / field.factor,
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
    for SettingField {
        name,
        label,
        factor,
        ..
    } in SETTINGS
    {
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
    // Every validated setting is in the form: for an administrator, a value
    // out of its range is said with the label the page shows (the service
    // checks again, and refuses anyone else first).
    let checked = convert::patch_settings(SystemSettings::default(), &patch).validate();
    if let (true, Err(invalid)) = (signed.is_admin(), checked) {
        let label = SETTINGS
            .iter()
            .find(|field| field.setting == invalid.field)
            .map_or(invalid.field, |field| field.label);
        let error = format!("{label}: {}.", invalid.reason);
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return settings_page(&app, &signed, status, None, Some(error)).await;
    }
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
