//! The agent's own few metrics (`otpgate agent --metrics-listen`): whether it
//! is connected to the server, the recording bytes waiting in its spool, and
//! the notices (logouts, exempt logins) waiting for the server; read when
//! scraped.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::link::Link;
use super::sessions::Sessions;
use super::spool::Spool;

/// What the agent's metrics are read from.
struct Agent {
    link: Link,
    spool: Arc<Spool>,
    sessions: Arc<Sessions>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("agent metrics")
    }
}

impl Collector for Agent {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "connected",
                "Whether the agent is connected to the server (1) or not (0)",
                None,
                i64::from(self.link.status().connected),
            ),
            (
                "spool",
                "Recording bytes waiting in the spool for the server",
                Some(Unit::Bytes),
                i64::try_from(self.spool.backlog()).unwrap_or(i64::MAX),
            ),
            (
                "queued_notices",
                "Notices (logouts, exempt logins) waiting for the server",
                None,
                i64::try_from(self.sessions.queued_notices()).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(value);
            let metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// The agent's metrics, named `otpgate_agent_…`.
pub(super) fn registry(link: Link, spool: Arc<Spool>, sessions: Arc<Sessions>) -> Registry {
    let mut registry = Registry::with_prefix("otpgate_agent");
    registry.register_collector(Box::new(Agent {
        link,
        spool,
        sessions,
    }));
    registry
}
