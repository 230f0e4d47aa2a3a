//! otpgate's actors and domain rules, with their persistence.
//!
//! Every client computer is served by one [`ComputerActor`], spawned and restarted
//! by the [`ComputerSupervisor`]; callers reach it through [`Computers`]. The actors
//! own the rules and the state, and keep it in a [`Store`]. This crate knows
//! nothing of the wire format or of sockets: the daemon translates between them.

#![forbid(unsafe_code)]

pub mod audit;
pub mod backoff;
pub mod clock;
pub mod computer;
pub mod digest;
pub mod directory;
pub mod enroll;
pub mod id;
pub mod login;
pub mod mail;
pub mod mailbox;
pub mod metrics;
pub mod names;
pub mod offline;
pub mod otp;
pub mod policy;
pub mod request;
pub mod rules;
pub mod session;
pub mod settings;
pub mod store;
pub mod supervisor;
#[cfg(feature = "testing")]
pub mod test_postgres;
#[cfg(test)]
mod testing;
pub mod timer;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use computer::{
    AgentInfo, ComputerActor, ComputerError, ComputerMsg, ConnectionId, Decided, Generated,
    Services,
};
pub use id::{ComputerId, InvalidComputerId};
pub use mailbox::Waiting;
pub use store::{ComputerRecord, KvStore, PgConfig, Store, StoreError};
pub use supervisor::{CallError, ComputerSupervisor, Computers};
