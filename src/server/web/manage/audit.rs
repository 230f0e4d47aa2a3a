//! The audit log: filtered, paged, exported as CSV or JSON.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};
use serde::Deserialize;

use otpgate_protocol::admin::{AuditView, ListFilter, PageRequest};

use super::{Admin, unavailable};
use crate::server::web::App;
use crate::server::web::views::{Nav, nav, non_empty, render, time};

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    computer: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// The viewer's time zone, in minutes east of UTC (the page's script
    /// fills it in; without it, times are read as UTC).
    #[serde(default)]
    tz: i32,
    #[serde(default)]
    after: String,
    #[serde(default)]
    format: String,
}

impl AuditQuery {
    /// The query again, without the cursor and format.
    fn query(&self) -> String {
        [
            ("computer", &self.computer),
            ("user", &self.user),
            ("kind", &self.kind),
            ("since", &self.since),
            ("until", &self.until),
            ("tz", &self.tz.to_string()),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", crate::server::web::query_escape(value)))
        .collect::<Vec<_>>()
        .join("&")
    }

    fn filter(&self) -> ListFilter {
        ListFilter {
            computer: non_empty(self.computer.clone()),
            user: non_empty(self.user.clone()),
            since: minute(&self.since, self.tz),
            until: minute(&self.until, self.tz),
        }
    }
}

/// A `datetime-local` value, in the zone `tz` minutes east of UTC (at most
/// 14 hours either way), in milliseconds since the epoch.
fn minute(text: &str, tz: i32) -> Option<u64> {
    let format =
        time::format_description::parse_borrowed::<2>("[year]-[month]-[day]T[hour]:[minute]")
            .ok()?;
    let at = time::PrimitiveDateTime::parse(text.trim(), &format).ok()?;
    let offset = time::UtcOffset::from_whole_seconds(tz.clamp(-14 * 60, 14 * 60) * 60).ok()?;
    u64::try_from(at.assume_offset(offset).unix_timestamp())
        .ok()
        .map(|s| s * 1000)
}

fn hex(bytes: &[u8]) -> String {
    HEXLOWER.encode(bytes)
}

/// A cursor from the URL; `None` (the first page) for nothing or nonsense.
fn unhex(text: &str) -> Option<Vec<u8>> {
    HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
        .filter(|cursor| !cursor.is_empty())
}

struct AuditRow {
    at: String,
    who: String,
    computer: String,
    action: String,
    outcome: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    title: &'static str,
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    computer: String,
    user: String,
    kind: String,
    since: String,
    until: String,
    tz: i32,
    query: String,
    entries: Vec<AuditRow>,
    next: Option<String>,
}

/// The most entries an export holds.
const MAX_EXPORT: usize = 10_000;

pub async fn audit(
    State(app): State<App>,
    Admin(signed): Admin,
    Query(query): Query<AuditQuery>,
) -> Response {
    let kind = query.kind.trim().to_owned();
    let keep = |e: &AuditView| kind.is_empty() || e.action == kind;
    if query.format == "csv" || query.format == "json" {
        let mut entries = Vec::new();
        let mut after = None;
        while entries.len() < MAX_EXPORT {
            let page = PageRequest { limit: 1000, after };
            let page = match app
                .service
                .audit_log(&signed.principal, &query.filter(), &page)
                .await
            {
                Ok(page) => page,
                Err(err) => return unavailable(err),
            };
            entries.extend(page.items.into_iter().filter(keep));
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        entries.truncate(MAX_EXPORT);
        return export(&entries, &query.format);
    }
    let page = PageRequest {
        limit: 100,
        after: unhex(&query.after),
    };
    let page = match app
        .service
        .audit_log(&signed.principal, &query.filter(), &page)
        .await
    {
        Ok(page) => page,
        Err(err) => return unavailable(err),
    };
    let entries = page
        .items
        .iter()
        .filter(|e| keep(e))
        .map(|e| AuditRow {
            at: time(e.at),
            who: e.who.clone(),
            computer: e.computer.clone().unwrap_or_default(),
            action: e.action.clone(),
            outcome: e.outcome.clone(),
        })
        .collect();
    render(
        StatusCode::OK,
        &AuditPage {
            title: "Audit log",
            nav: Some(nav(&app, &signed).await),
            notice: None,
            error: None,
            query: query.query(),
            computer: query.computer,
            user: query.user,
            kind: query.kind,
            since: query.since,
            until: query.until,
            tz: query.tz,
            entries,
            next: page.next.as_deref().map(hex),
        },
    )
}

/// One CSV field: quoted, and never read as a formula by a spreadsheet.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn export(entries: &[AuditView], format: &str) -> Response {
    if format == "json" {
        return match serde_json::to_string(entries) {
            Ok(body) => (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"audit.json\"",
                    ),
                ],
                body,
            )
                .into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    let mut body = String::from("at,who,computer,action,outcome\r\n");
    for e in entries {
        let fields = [
            time(e.at),
            e.who.clone(),
            e.computer.clone().unwrap_or_default(),
            e.action.clone(),
            e.outcome.clone(),
        ];
        body.push_str(
            &fields
                .iter()
                .map(|f| csv_field(f))
                .collect::<Vec<_>>()
                .join(","),
        );
        body.push_str("\r\n");
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("a \"b\", c"), "\"a \"\"b\"\", c\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn cursors_survive_the_url() {
        let cursor = vec![0, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&cursor)), Some(cursor));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex(""), None, "the first page");
        assert_eq!(unhex("zz"), None);
        assert_eq!(minute("2026-11-30T10:15", 0), Some(1_796_033_700_000));
    }

    #[test]
    fn times_are_read_in_the_viewers_zone() {
        // 11:15 in Paris (UTC+1 in November) is 10:15 UTC.
        assert_eq!(minute("2026-11-30T11:15", 60), Some(1_796_033_700_000));
        assert_eq!(minute("2026-11-30T05:15", -300), Some(1_796_033_700_000));
        assert_eq!(
            minute("2026-11-30T10:15", 100_000),
            minute("2026-11-30T10:15", 14 * 60),
            "at most 14 hours"
        );
    }
}
