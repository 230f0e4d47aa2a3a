//! Client sessions: each principal sees those of the computers they approve,
//! administrators all.

use otpgate_protocol::admin::{ListFilter, Page, PageRequest, SessionView};

use otpgate_actors::store::BATCH;

use super::{AdminService, Answer, Principal};
use crate::server::convert;
use crate::server::pages::{self, Matches};

/// Which client sessions a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Those still open.
    Only,
    /// Every one, ended or not.
    AndEnded,
}

impl AdminService {
    /// Client sessions `who` may see (`open` says which, `filter` of whom), by
    /// computer then age.
    pub async fn sessions(
        &self,
        who: &Principal,
        open: Open,
        filter: &ListFilter,
        page: &PageRequest,
    ) -> Answer<Page<SessionView>> {
        let visible = self.visibility(who).await?;
        Ok(pages::page_of(
            |after| self.store.sessions_from(after, BATCH),
            page,
            |s| {
                (open == Open::AndEnded || s.ended.is_none())
                    && s.matches(filter)
                    && visible.covers(s.computer.as_str())
            },
            convert::session_view,
        )
        .await?)
    }
}
