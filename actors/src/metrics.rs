//! What the server counts for its operators, exposed to Prometheus by the
//! daemon's `[metrics]` endpoint.
//!
//! One set per process ([`metrics`]), as a tracing subscriber is one per
//! process: counts are made where things happen (a computer's actor, the
//! mailer, the store's flusher, the connection, the directory, the web), and
//! threading a handle through each of them would say nothing more. Each
//! metric is an atomic or a few (a labelled one found first in a small map
//! behind a read lock); a label is one of a fixed set of words, never a
//! person's name, an email address or an OS user, so that the series stay few
//! and say nothing about anyone.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A label's values: an enum whose every variant is one fixed word, so a
/// label can never carry anything else.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident = $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$doc])* $variant,)*
        }

        impl $name {
            /// The word the label says.
            const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)*
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

words! {
    /// How an OTP login (a typed OTP checked) came out.
    LoginOutcome {
        /// Right: the person is in.
        Allow = "allow",
        /// Wrong for a live OTP.
        DenyWrongCode = "deny_wrong_code",
        /// Wrong, and that was the last attempt: the OTP is now locked.
        DenyLocked = "deny_locked",
        /// No live OTP to match (none, used, expired or locked).
        DenyNoLiveOtp = "deny_no_live_otp",
        /// What was typed as the address is not one.
        DenyNotAnEmail = "deny_not_an_email",
        /// The agent named an OS user that cannot be one.
        DenyInvalidOsUser = "deny_invalid_os_user",
        /// Too many failures: not checked.
        Throttled = "throttled",
        /// The computer does not ask for OTPs.
        NotRequired = "not_required",
        /// The server could not serve it (a computer's actor or the store down).
        Unavailable = "unavailable",
    }
}

words! {
    /// How a person asked for an OTP.
    RequestKind {
        /// An address typed, for the approvers.
        Email = "email",
        /// An Active Directory account, sent at once.
        Directory = "directory",
        /// An internal user, sent at once.
        Internal = "internal",
        /// Emergency access, for the approvers.
        Emergency = "emergency",
        /// The live OTP again.
        Resend = "resend",
    }
}

words! {
    /// What a request for an OTP came to.
    RequestOutcome {
        /// A new OTP sent.
        Sent = "sent",
        /// The live OTP sent again.
        Resent = "resent",
        /// Sent to the approvers.
        AwaitingApproval = "awaiting_approval",
        /// Refused (not enabled, no such person, a wrong password, too soon...).
        Refused = "refused",
        /// Too many failures.
        Throttled = "throttled",
        /// The directory could not be reached.
        DirectoryUnavailable = "directory_unavailable",
    }
}

words! {
    /// How an access request ended.
    Decision {
        /// An approver let the person in.
        Approved = "approved",
        /// An approver refused.
        Denied = "denied",
        /// Nobody decided in time.
        Expired = "expired",
    }
}

words! {
    /// Where an OTP came from.
    Issued {
        /// Sent at once.
        AutoSend = "auto_send",
        /// After an approval.
        Approval = "approval",
        /// Made by an administrator.
        Generated = "generated",
    }
}

words! {
    /// Why an agent's TLS connection was refused before it was served.
    TlsRefusal {
        /// Too many handshakes in flight, overall or from its address.
        Gate = "gate",
        /// The handshake failed (no or an unknown certificate, bad TLS).
        Handshake = "handshake",
        /// The handshake took too long.
        Timeout = "timeout",
        /// The certificate is revoked.
        Revoked = "revoked",
        /// The certificate has expired.
        Expired = "expired",
    }
}

words! {
    /// How a sign-in to the web Management Tool came out.
    SignIn {
        /// In.
        Ok = "ok",
        /// A wrong name or password, or an account that may not sign in.
        Refused = "refused",
        /// Too many failures for the account or the address.
        Throttled = "throttled",
        /// The directory could not be reached.
        DirectoryUnavailable = "directory_unavailable",
        /// Something failed on the server.
        Error = "error",
    }
}

words! {
    /// How a directory lookup failed.
    LdapFailure {
        /// No answer in time.
        Timeout = "timeout",
        /// No domain controller could be reached, or one answered with an error.
        Error = "error",
    }
}

/// Something a rule decided that is counted: an effect, applied with the
/// others of its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// A typed OTP checked.
    Login(LoginOutcome),
    /// A request for an OTP answered.
    Request(RequestKind, RequestOutcome),
    /// An OTP issued.
    Issued(Issued),
    /// An access request ended, after waiting this long.
    Decided(Decision, Duration),
}

macro_rules! label {
    ($name:ident, $field:ident: $ty:ty) => {
        #[doc = concat!("The `", stringify!($field), "` label.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
        pub struct $name {
            #[doc = concat!("The ", stringify!($field), ".")]
            pub $field: $ty,
        }
    };
}

label!(OutcomeLabel, outcome: LoginOutcome);
label!(OriginLabel, origin: Issued);
label!(DecisionLabel, decision: Decision);
label!(ReasonLabel, reason: TlsRefusal);
label!(SignInLabel, outcome: SignIn);
label!(FailureLabel, kind: LdapFailure);

/// A request's kind and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// How it was asked.
    pub mode: RequestKind,
    /// What it came to.
    pub outcome: RequestOutcome,
}

/// A histogram of seconds, from `start` up by doubling, `buckets` long.
fn seconds(start: f64, buckets: u16) -> Histogram {
    Histogram::new(exponential_buckets(start, 2.0, buckets))
}

/// How a family of histograms makes a new one.
type Histograms = fn() -> Histogram;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Agents connected (welcomed, not yet gone).
    pub agents_connected: Gauge,
    /// Computers' actors running.
    pub computer_actors: Gauge,
    /// OTP logins, by outcome.
    pub logins: Family<OutcomeLabel, Counter>,
    /// Requests for an OTP, by kind and outcome.
    pub otp_requests: Family<RequestLabels, Counter>,
    /// OTPs issued, by where they came from.
    pub otps_issued: Family<OriginLabel, Counter>,
    /// Access requests decided or expired.
    pub access_requests: Family<DecisionLabel, Counter>,
    /// From an access request to its decision, in seconds.
    pub decision_seconds: Family<DecisionLabel, Histogram, Histograms>,
    /// Messages waiting in the outbox.
    pub mail_queue: Gauge,
    /// Messages the relay (or the outbox folder) took.
    pub mail_sent: Counter,
    /// Tries that failed and will be made again.
    pub mail_retried: Counter,
    /// Messages given up on.
    pub mail_given_up: Counter,
    /// One message's delivery, in seconds (a batch's, for each of its
    /// messages, where the transport takes them together).
    pub mail_send_seconds: Histogram,
    /// One commit of the store (a flush many turns may share), in seconds.
    pub store_commit_seconds: Histogram,
    /// One directory lookup, in seconds.
    pub ldap_seconds: Histogram,
    /// Directory lookups that failed.
    pub ldap_failures: Family<FailureLabel, Counter>,
    /// Bytes of terminal recordings stored.
    pub recording_bytes: Counter,
    /// Recording bytes waiting in the spools of the agents connected here,
    /// as each last said.
    pub agents_spooled: Gauge,
    /// Agents' TLS connections refused before they were served.
    pub tls_refused: Family<ReasonLabel, Counter>,
    /// Sign-ins to the web Management Tool.
    pub web_sign_ins: Family<SignInLabel, Counter>,
}

impl Metrics {
    fn new() -> Self {
        Self {
            agents_connected: Gauge::default(),
            computer_actors: Gauge::default(),
            logins: Family::default(),
            otp_requests: Family::default(),
            otps_issued: Family::default(),
            access_requests: Family::default(),
            // A second to four and a half hours.
            decision_seconds: Family::new_with_constructor(|| seconds(1.0, 15)),
            mail_queue: Gauge::default(),
            mail_sent: Counter::default(),
            mail_retried: Counter::default(),
            mail_given_up: Counter::default(),
            // A millisecond to a minute.
            mail_send_seconds: seconds(0.001, 17),
            // A tenth of a millisecond to six seconds.
            store_commit_seconds: seconds(0.000_1, 17),
            ldap_seconds: seconds(0.001, 14),
            ldap_failures: Family::default(),
            recording_bytes: Counter::default(),
            agents_spooled: Gauge::default(),
            tls_refused: Family::default(),
            web_sign_ins: Family::default(),
        }
    }

    /// Counts what `tally` says.
    pub fn tally(&self, tally: Tally) {
        match tally {
            Tally::Login(outcome) => {
                self.logins.get_or_create(&OutcomeLabel { outcome }).inc();
            }
            Tally::Request(mode, outcome) => {
                let labels = RequestLabels { mode, outcome };
                self.otp_requests.get_or_create(&labels).inc();
            }
            Tally::Issued(origin) => {
                self.otps_issued
                    .get_or_create(&OriginLabel { origin })
                    .inc();
            }
            Tally::Decided(decision, waited) => {
                let label = DecisionLabel { decision };
                self.access_requests.get_or_create(&label).inc();
                self.decision_seconds
                    .get_or_create(&label)
                    .observe(waited.as_secs_f64());
            }
        }
    }

    /// Counts an agent's connection refused for `reason`.
    pub fn tls_refused(&self, reason: TlsRefusal) {
        self.tls_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a web sign-in that came out as `outcome`.
    pub fn sign_in(&self, outcome: SignIn) {
        self.web_sign_ins
            .get_or_create(&SignInLabel { outcome })
            .inc();
    }

    /// Counts a directory lookup that failed as `kind`.
    pub fn ldap_failed(&self, kind: LdapFailure) {
        self.ldap_failures
            .get_or_create(&FailureLabel { kind })
            .inc();
    }

    /// Every metric, named `otpgate_…`, for the endpoint to encode.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("otpgate");
        registry.register(
            "agents_connected",
            "Agents connected (welcomed, not yet gone)",
            self.agents_connected.clone(),
        );
        registry.register(
            "computer_actors",
            "Computers' actors running",
            self.computer_actors.clone(),
        );
        registry.register(
            "logins",
            "OTP logins (a typed OTP checked), by outcome",
            self.logins.clone(),
        );
        registry.register(
            "otp_requests",
            "Requests for an OTP, by mode and outcome",
            self.otp_requests.clone(),
        );
        registry.register(
            "otps_issued",
            "OTPs issued, by origin",
            self.otps_issued.clone(),
        );
        registry.register(
            "access_requests_decided",
            "Access requests approved, denied or expired",
            self.access_requests.clone(),
        );
        registry.register_with_unit(
            "access_request_decision",
            "From an access request to its decision",
            Unit::Seconds,
            self.decision_seconds.clone(),
        );
        registry.register(
            "mail_queue",
            "Messages waiting in the outbox",
            self.mail_queue.clone(),
        );
        registry.register(
            "mail_sent",
            "Messages taken by the relay or the outbox folder",
            self.mail_sent.clone(),
        );
        registry.register(
            "mail_retried",
            "Deliveries that failed and will be tried again",
            self.mail_retried.clone(),
        );
        registry.register(
            "mail_given_up",
            "Messages given up on",
            self.mail_given_up.clone(),
        );
        registry.register_with_unit(
            "mail_send",
            "One message's delivery (a batch's, where the transport takes them together)",
            Unit::Seconds,
            self.mail_send_seconds.clone(),
        );
        registry.register_with_unit(
            "store_commit",
            "One commit of the store, shared by the turns that wait on it",
            Unit::Seconds,
            self.store_commit_seconds.clone(),
        );
        registry.register_with_unit(
            "ldap_lookup",
            "One directory lookup or sign-in (answers kept a while are not counted)",
            Unit::Seconds,
            self.ldap_seconds.clone(),
        );
        registry.register(
            "ldap_failures",
            "Directory lookups that failed",
            self.ldap_failures.clone(),
        );
        registry.register_with_unit(
            "recordings_stored",
            "Terminal recordings stored",
            Unit::Bytes,
            self.recording_bytes.clone(),
        );
        registry.register_with_unit(
            "agents_spooled",
            "Recording bytes waiting in the spools of the agents connected here, as each last said",
            Unit::Bytes,
            self.agents_spooled.clone(),
        );
        registry.register(
            "tls_refused",
            "Agents' connections refused before they were served, by reason",
            self.tls_refused.clone(),
        );
        registry.register(
            "web_sign_ins",
            "Sign-ins to the web Management Tool, by outcome",
            self.web_sign_ins.clone(),
        );
        registry
    }
}

/// One unit of a gauge (a connection, say), given back when dropped.
#[derive(Debug)]
pub struct Held(Gauge);

impl Held {
    /// Adds one to `gauge` until this is dropped.
    pub fn of(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One connection's part of a gauge summed over connections (the bytes in
/// agents' spools), taken back when dropped.
#[derive(Debug)]
pub struct Share {
    gauge: Gauge,
    value: i64,
}

impl Share {
    /// The most one part counts (a pebibyte of spool, say): what any number
    /// of parts add up to stays within the gauge.
    pub const MOST: u64 = 1 << 50;

    /// A part of `gauge`, nothing yet.
    pub fn of(gauge: &Gauge) -> Self {
        Self {
            gauge: gauge.clone(),
            value: 0,
        }
    }

    /// Makes this part `value` (at most [`Share::MOST`]).
    pub fn set(&mut self, value: u64) {
        let value = i64::try_from(value.min(Self::MOST)).unwrap_or(0);
        self.gauge.inc_by(value.saturating_sub(self.value));
        self.value = value;
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.gauge.dec_by(self.value);
    }
}

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}
