//! The server's `.eml` outbox, read as a person reads their mail.

use super::wait_until;
use std::path::Path;
use std::time::Duration;

/// The OTPs mailed to `to` in the outbox of data folder `data_dir`, oldest
/// first, waiting until there are at least `count`.
pub async fn codes_for(data_dir: &Path, to: &str, count: usize) -> Vec<String> {
    let mut codes = Vec::new();
    wait_until(
        Duration::from_secs(20),
        &format!("{count} OTPs mailed to {to}"),
        || {
            codes = read_codes(&data_dir.join("outbox"), to);
            let enough = codes.len() >= count;
            async move { enough }
        },
    )
    .await;
    codes
}

/// The messages in outbox folder `outbox` addressed to `to`, oldest first.
pub fn messages_to(outbox: &Path, to: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(outbox) else {
        return Vec::new();
    };
    let mut messages: Vec<(u64, String)> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            // A message is renamed into place whole: its `.tmp` may be half
            // written, or gone by the time it is read.
            if path.extension()? != "eml" {
                return None;
            }
            let id = path
                .file_name()?
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            let text = std::fs::read_to_string(&path).ok()?;
            let message = mail_parser::MessageParser::default().parse(text.as_bytes())?;
            let addressed = message.to()?.first()?.address()? == to;
            addressed.then_some((id, text))
        })
        .collect();
    messages.sort();
    messages.into_iter().map(|(_, text)| text).collect()
}

pub fn read_codes(outbox: &Path, to: &str) -> Vec<String> {
    messages_to(outbox, to)
        .iter()
        .filter_map(|text| otpgate::bench::read_otp_mail(text).map(|mail| mail.code))
        .collect()
}

/// The token of the link after `label` ("Approve:" or "Deny:") in a message.
pub fn token_after(message: &str, label: &str) -> String {
    // Undo quoted-printable soft breaks and escapes, should the part use them.
    let text = message.replace("=\r\n", "").replace("=3D", "=");
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} link in {message}"));
    line.split("token=").nth(1).unwrap().trim().to_owned()
}
