//! Backups, made by administrators with `otpgate admin backup` on the
//! server's own host (never from the web: a backup may hold every key of the
//! site).

use otpgate_actors::audit::Action;
use otpgate_protocol::admin::{AdminErrorCode, BackupView};
use tracing::warn;

use super::{AdminService, Answer, Principal, Via, refusal, refuse};
use crate::backup::BackupError;

impl AdminService {
    /// Makes a backup of the data folder (with the keys or without) while
    /// the server serves; where it waits to be taken away, and what it holds.
    pub async fn backup(&self, who: &Principal, keys: bool) -> Answer<BackupView> {
        self.require_admin(who)?;
        if !matches!(who.via, Via::Socket { .. }) {
            return refuse(
                AdminErrorCode::Forbidden,
                "backups are made with `otpgate admin backup` on the server's host",
            );
        }
        let now = self.clock.now();
        let made = self
            .backups
            .make(now, keys)
            .await
            .map_err(|err| match err {
                BackupError::Refused(why) => refusal(AdminErrorCode::Conflict, why),
                failed => {
                    warn!(error = %failed, "a backup failed");
                    refusal(
                        AdminErrorCode::Internal,
                        format!("the backup could not be made: {failed}"),
                    )
                }
            })?;
        let what = if keys { "with" } else { "without" };
        self.audit(
            who,
            Action::Backup,
            None,
            format!(
                "made, {what} keys: {} bytes, SHA-256 {}",
                made.bytes, made.sum
            ),
        )
        .await?;
        Ok(BackupView {
            path: made.path.display().to_string(),
            bytes: made.bytes,
            sha256: made.sum,
            made_at: now.unix_millis(),
            keys,
            files: made.contents.files,
            trees: made.contents.trees,
            store_paused_us: micros(made.store_paused),
            recordings_paused_us: micros(made.recordings_paused),
        })
    }
}

fn micros(pause: std::time::Duration) -> u64 {
    u64::try_from(pause.as_micros()).unwrap_or(u64::MAX)
}
