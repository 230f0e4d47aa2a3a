//! Flood control's one shape of quota, shared by the server's connections
//! and the agent's socket: so many a second, in bursts of twice that.

use std::num::NonZeroU32;

use governor::Quota;

/// `per_second`, in bursts of twice that.
pub const fn twice_in_bursts(per_second: NonZeroU32) -> Quota {
    let two = NonZeroU32::new(2).expect("2 is not 0");
    Quota::per_second(per_second).allow_burst(per_second.saturating_mul(two))
}
