//! Join tokens: made, listed and revoked by administrators (`otpgate certs
//! token`), used by computers that enroll (see [`crate::server::enroll`]).
//! The token's text is shown once, when it is made; the store keeps only a
//! hash of its secret. And what the enrolled computers hold (`otpgate certs
//! list`).

use std::time::Duration;

use otpgate_actors::audit::Action;
use otpgate_actors::enroll::{JoinToken, secret_hash};
use otpgate_actors::store::{self, BATCH};
use otpgate_protocol::admin::{AdminErrorCode, CertView, TokenSpec, TokenView};
use otpgate_protocol::login::Secret;

use super::{AdminService, Answer, Principal, refuse};
use crate::tls::token::JoinTokenText;

/// The longest a token may be used for.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The most computers one token may enroll.
const MOST_USES: u32 = 1_000_000;

impl AdminService {
    /// Makes a join token as `spec` says; its text (shown this once) and
    /// what it allows.
    pub async fn create_token(
        &self,
        who: &Principal,
        spec: TokenSpec,
    ) -> Answer<(Secret, TokenView)> {
        self.require_admin(who)?;
        if !(60..=LONGEST.as_secs()).contains(&spec.ttl_secs) {
            return refuse(
                AdminErrorCode::Invalid,
                "a token lasts from a minute to a year",
            );
        }
        if !(1..=MOST_USES).contains(&spec.uses) {
            return refuse(
                AdminErrorCode::Invalid,
                format!("a token enrolls 1 to {MOST_USES} computers"),
            );
        }
        if let Some(pattern) = &spec.name_pattern {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "._-*?".contains(c);
            if pattern.is_empty() || pattern.len() > 128 || !pattern.chars().all(allowed) {
                return refuse(
                    AdminErrorCode::Invalid,
                    "a name pattern is 1 to 128 letters, digits, '.', '-', '_', '*' and '?'",
                );
            }
        }
        if let Some(group) = &spec.group {
            let policy = self
                .policy_naming(|policy| !policy.groups.contains_key(group))
                .await?;
            if !policy.groups.contains_key(group) {
                return refuse(AdminErrorCode::NotFound, format!("no group {group:?}"));
            }
        }
        let id = self.store.next_id().await?;
        let text = JoinTokenText::new(id, &self.enroller.ca.cert);
        let now = self.clock.now();
        let token = JoinToken {
            id,
            secret_hash: secret_hash(&text.secret),
            created_at: now,
            expires_at: now.after(Duration::from_secs(spec.ttl_secs)),
            uses: spec.uses,
            used: 0,
            group: spec.group,
            name_pattern: spec.name_pattern,
            replace: spec.replace,
            revoked_at: None,
            created_by: who.who().to_string(),
        };
        self.store.put_token(&token)?;
        let view = token_view(&token);
        self.audit(
            who,
            Action::Token,
            None,
            format!("join token {id} made: {}", allows(&view)),
        )
        .await?;
        Ok((Secret(text.text().to_string()), view))
    }

    /// Every join token, newest first.
    pub async fn tokens(&self, who: &Principal) -> Answer<Vec<TokenView>> {
        self.require_admin(who)?;
        let tokens = store::all(|before| self.store.tokens_from(before, BATCH)).await?;
        Ok(tokens.iter().map(token_view).collect())
    }

    /// The certificates of the enrolled computers, by computer.
    pub async fn certificates(&self, who: &Principal) -> Answer<Vec<CertView>> {
        self.require_admin(who)?;
        let enrolled = store::all_keyed(|after| self.store.enrollments_from(after, BATCH)).await?;
        Ok(enrolled
            .into_iter()
            .map(|(key, enrollment)| CertView {
                computer: String::from_utf8_lossy(&key).into_owned(),
                serial: enrollment.serial,
                enrolled_at: enrollment.enrolled_at.unix_millis(),
                expires_at: enrollment.expires_at.unix_millis(),
                token: enrollment.token,
            })
            .collect())
    }

    /// Revokes join token `id`: no computer enrolls with it from now on.
    pub async fn revoke_token(&self, who: &Principal, id: u64) -> Answer<()> {
        self.require_admin(who)?;
        // In the enrollments' turn: a use being counted is not undone.
        let _turn = self.enroller.turn().await?;
        let Some(mut token) = self.store.token(id).await? else {
            return refuse(AdminErrorCode::NotFound, format!("no join token {id}"));
        };
        if token.revoked_at.is_none() {
            token.revoked_at = Some(self.clock.now());
            self.store.put_token(&token)?;
        }
        self.audit(who, Action::Token, None, format!("join token {id} revoked"))
            .await
    }
}

/// Token `token` as the lists show it.
fn token_view(token: &JoinToken) -> TokenView {
    TokenView {
        id: token.id,
        spec: TokenSpec {
            ttl_secs: token.expires_at.since(token.created_at).as_secs(),
            uses: token.uses,
            group: token.group.clone(),
            name_pattern: token.name_pattern.clone(),
            replace: token.replace,
        },
        created_at: token.created_at.unix_millis(),
        expires_at: token.expires_at.unix_millis(),
        used: token.used,
        revoked_at: token.revoked_at.map(|at| at.unix_millis()),
        created_by: token.created_by.clone(),
    }
}

/// What a token allows, in words.
fn allows(view: &TokenView) -> String {
    format!(
        "{} uses for {} s, names {}, group {}{}",
        view.spec.uses,
        view.spec.ttl_secs,
        view.spec.name_pattern.as_deref().unwrap_or("*"),
        view.spec.group.as_deref().unwrap_or("none"),
        if view.spec.replace { ", replacing" } else { "" }
    )
}
