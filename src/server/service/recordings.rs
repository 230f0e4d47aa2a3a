//! Terminal recordings: listed, read, searched and checked one by one by
//! whoever may see their computer (administrators all), all checked at once
//! by administrators. The work reads
//! and inflates chunks, so it runs off the async runtime.

use std::sync::Arc;

use otpgate_actors::StoreError;
use otpgate_protocol::admin::{
    AdminErrorCode, HitView, Page, PageRequest, RecordingPartView, RecordingView, VerifiedView,
};

use super::{AdminService, Answer, Principal, ServiceError, refusal, refuse};
use crate::server::recordings::{Recording, Recordings, admin};

impl AdminService {
    /// Recordings `who` may see, newest first; of client session `session`
    /// when given.
    pub async fn recordings(
        &self,
        who: &Principal,
        session: Option<u64>,
        page: PageRequest,
    ) -> Answer<Page<RecordingView>> {
        let visible = self.visibility(who).await?;
        self.off_runtime(move |recordings| {
            admin::list(recordings, session, &page, |r| visible.covers(&r.computer))
        })
        .await
    }

    /// Recording `id`, if `who` may see it.
    pub async fn recording(&self, who: &Principal, id: u64) -> Answer<RecordingView> {
        let visible = self.visibility(who).await?;
        self.off_runtime(move |recordings| {
            let recording = recordings.get(id)?;
            Ok(recording
                .filter(|r| visible.covers(&r.computer))
                .map(|r| admin::view(&r)))
        })
        .await?
        .ok_or_else(|| not_found(id))
    }

    /// Part of recording `id` from chunk `from` on, if `who` may see it.
    pub async fn recording_part(
        &self,
        who: &Principal,
        id: u64,
        from: u64,
    ) -> Answer<RecordingPartView> {
        let visible = self.visibility(who).await?;
        self.off_runtime(move |recordings| {
            admin::part(recordings, id, from, |r| visible.covers(&r.computer))
        })
        .await?
        .ok_or_else(|| not_found(id))
    }

    /// What checking recording `id` found, if `who` may see it (so that
    /// whoever is handed a recording can be told it was altered), or every
    /// recording, for administrators.
    pub async fn verify_recordings(
        &self,
        who: &Principal,
        id: Option<u64>,
    ) -> Answer<Vec<VerifiedView>> {
        if id.is_none() {
            self.require_admin(who)?;
        }
        let visible = self.visibility(who).await?;
        self.off_runtime(move |recordings| {
            admin::verify(recordings, id, |r| visible.covers(&r.computer))
        })
        .await?
        .ok_or_else(|| not_found(id.unwrap_or_default()))
    }

    /// Where `text` shows in the recordings `who` may see.
    pub async fn search_recordings(&self, who: &Principal, text: String) -> Answer<Vec<HitView>> {
        let visible = self.visibility(who).await?;
        self.off_runtime(move |recordings| {
            admin::search(recordings, &text, |r: &Recording| {
                visible.covers(&r.computer)
            })
        })
        .await
    }

    /// Runs `work` on the recordings on a blocking thread.
    async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Recordings) -> Result<T, StoreError> + Send + 'static,
    ) -> Answer<T> {
        let recordings = match self.recordings.get() {
            Ok(recordings) => Arc::clone(recordings),
            Err(why) => return refuse(AdminErrorCode::Unavailable, why),
        };
        match tokio::task::spawn_blocking(move || work(&recordings)).await {
            Ok(done) => Ok(done?),
            Err(_) => refuse(AdminErrorCode::Internal, "the recordings could not be read"),
        }
    }
}

fn not_found(id: u64) -> ServiceError {
    refusal(AdminErrorCode::NotFound, format!("no recording {id}"))
}
