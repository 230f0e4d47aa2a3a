//! The audit log, newest first (administrators).

use otpgate_protocol::admin::{AuditView, ListFilter, Page, PageRequest};

use otpgate_actors::store::BATCH;

use super::{AdminService, Answer, Principal};
use crate::server::convert;
use crate::server::pages::{self, Matches};

impl AdminService {
    /// Audit entries `filter` asks for, newest first.
    pub async fn audit_log(
        &self,
        who: &Principal,
        filter: &ListFilter,
        page: &PageRequest,
    ) -> Answer<Page<AuditView>> {
        self.require_admin(who)?;
        Ok(pages::page_of(
            |before| self.store.audit_from(before, BATCH),
            page,
            |entry| entry.matches(filter),
            convert::audit_view,
        )
        .await?)
    }
}
