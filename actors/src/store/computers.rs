//! What the server remembers of one client computer, and the schemas it was
//! stored in before.

use serde::{Deserialize, Serialize};

use super::Result;
use super::record::{Body, Record, SCHEMA_V1};
use crate::clock::Timestamp;
use crate::settings::{Options, OptionsV1};

/// The schema version of computers when their options gained `record_input`;
/// read and upgraded.
const COMPUTERS_V2: u8 = 2;
/// The schema version of computers since they hold their agent's protocol
/// version.
const COMPUTERS_V3: u8 = 3;

/// What the server remembers of one client computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerRecord {
    /// When this computer's agent first connected.
    pub first_seen: Timestamp,
    /// When the current run of connections began; `None` while no agent is connected.
    pub connected_since: Option<Timestamp>,
    /// When the agent was last heard from.
    pub last_seen: Timestamp,
    /// The host name the agent reported, for the operator's eyes.
    pub host_name: String,
    /// The agent's software version, for the operator's eyes.
    pub agent_version: String,
    /// The client group it belongs to, if any.
    pub group: Option<String>,
    /// Its own options, over its group's.
    pub options: Options,
    /// The agent link version its agent last spoke, for the operator's eyes
    /// (`None` before a connection recorded it).
    pub protocol: Option<u8>,
}

/// A computer as stored before [`ComputerRecord::protocol`]; read and upgraded.
#[derive(Deserialize)]
struct ComputerRecordV2 {
    first_seen: Timestamp,
    connected_since: Option<Timestamp>,
    last_seen: Timestamp,
    host_name: String,
    agent_version: String,
    group: Option<String>,
    options: Options,
}

impl From<ComputerRecordV2> for ComputerRecord {
    fn from(old: ComputerRecordV2) -> Self {
        Self {
            first_seen: old.first_seen,
            connected_since: old.connected_since,
            last_seen: old.last_seen,
            host_name: old.host_name,
            agent_version: old.agent_version,
            group: old.group,
            options: old.options,
            protocol: None,
        }
    }
}

/// A computer as stored before [`Options::record_input`]; read and upgraded.
#[derive(Deserialize)]
struct ComputerRecordV1 {
    first_seen: Timestamp,
    connected_since: Option<Timestamp>,
    last_seen: Timestamp,
    host_name: String,
    agent_version: String,
    group: Option<String>,
    options: OptionsV1,
}

impl From<ComputerRecordV1> for ComputerRecord {
    fn from(old: ComputerRecordV1) -> Self {
        ComputerRecordV2 {
            first_seen: old.first_seen,
            connected_since: old.connected_since,
            last_seen: old.last_seen,
            host_name: old.host_name,
            agent_version: old.agent_version,
            group: old.group,
            options: old.options.into(),
        }
        .into()
    }
}

impl Record for ComputerRecord {
    const VERSION: u8 = COMPUTERS_V3;

    fn upgrade(body: Body<'_>) -> Result<Self> {
        match body.version {
            COMPUTERS_V2 => Ok(body.decode::<ComputerRecordV2>()?.into()),
            SCHEMA_V1 => Ok(body.decode::<ComputerRecordV1>()?.into()),
            _ => Err(body.unknown()),
        }
    }
}
