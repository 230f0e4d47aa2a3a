//! otpgate's actors and domain rules, with their persistence.
//!
//! Every client computer is served by one [`ComputerActor`], spawned and restarted
//! by the [`ComputerSupervisor`]; callers reach it through [`Computers`]. The actors
//! own the rules and the state, and keep it in a [`Store`]. This crate knows
//! nothing of the wire format or of sockets: the daemon translates between them.

#![forbid(unsafe_code)]

pub mod clock;
pub mod computer;
pub mod id;
pub mod store;
pub mod supervisor;

pub use clock::{Clock, SystemClock, Timestamp};
pub use computer::{AgentInfo, ComputerActor, ComputerError, ComputerMsg, ConnectionId};
pub use id::{ComputerId, InvalidComputerId};
pub use store::{ComputerRecord, SledStore, Store, StoreError};
pub use supervisor::{CallError, ComputerSupervisor, Computers};
