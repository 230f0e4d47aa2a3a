//! The shapes of version 1 of the admin wire that differ from today's.

use serde::{Deserialize, Serialize};

use super::OptionsView;

/// A client computer as version 1 shows it: without its agent's versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientView {
    /// Its name.
    pub computer: String,
    /// Its group.
    pub group: Option<String>,
    /// Since when its agent is connected, if it is.
    pub connected_since: Option<u64>,
    /// When its agent was last heard from.
    pub last_seen: u64,
    /// The host name its agent reported.
    pub host_name: String,
    /// Its own options.
    pub options: OptionsView,
    /// The options in force, inheritance resolved (every field set).
    pub effective: OptionsView,
}

impl From<super::ClientView> for ClientView {
    fn from(client: super::ClientView) -> Self {
        Self {
            computer: client.computer,
            group: client.group,
            connected_since: client.connected_since,
            last_seen: client.last_seen,
            host_name: client.host_name,
            options: client.options,
            effective: client.effective,
        }
    }
}

impl From<ClientView> for super::ClientView {
    fn from(client: ClientView) -> Self {
        Self {
            computer: client.computer,
            group: client.group,
            connected_since: client.connected_since,
            last_seen: client.last_seen,
            host_name: client.host_name,
            options: client.options,
            effective: client.effective,
            agent_version: String::new(),
            protocol: None,
        }
    }
}
