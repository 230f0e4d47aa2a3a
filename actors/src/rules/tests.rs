//! Unit tests of the login rules: no store, no actor, no clock.

use std::time::Duration;

use super::*;
use crate::clock::Timestamp;
use crate::directory::{DirectoryPerson, Recipient, Role, UserRecord};
use crate::id::ComputerId;
use crate::login::{RequestMode, Requested, Verdict};
use crate::metrics::{LoginOutcome, Tally};
use crate::otp::{Binding, Code, Origin, Otp, OtpKeys};
use crate::request::{Choice, Decision, Refusal};
use crate::settings::{Effective, SystemSettings};

const MINUTE: Duration = Duration::from_secs(60);

fn keys() -> OtpKeys {
    OtpKeys::derive(&[3; 32])
}

fn ws() -> ComputerId {
    "ws-1".parse().unwrap()
}

fn t0() -> Timestamp {
    Timestamp::from_unix_millis(1_800_000_000_000)
}

fn auto() -> Effective {
    Effective {
        auto_directory: true,
        ..Effective::default()
    }
}

fn user(login: &str, role: Role) -> UserRecord {
    UserRecord {
        login: login.into(),
        email: format!("{login}@example.com"),
        role,
        password_hash: String::new(),
        password_change_due: false,
        disabled: false,
    }
}

/// Issues an OTP the person asked for; returns its code.
fn issue(logins: &mut Logins, policy: Policy<'_>, now: Timestamp) -> Code {
    let code = Code::generate(policy.settings.otp_length);
    logins.issue(
        &turn(&keys(), &ws(), policy, now),
        "alice",
        "alice@example.com",
        &code,
        Origin::AutoSend,
        &mut Vec::new(),
    );
    code
}

fn verify(logins: &mut Logins, policy: Policy<'_>, code: &Code, now: Timestamp) -> Verdict {
    verify_into(logins, policy, code, now, &mut Vec::new())
}

/// [`verify`], its effects added to `effects`.
fn verify_into(
    logins: &mut Logins,
    policy: Policy<'_>,
    code: &Code,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Verdict {
    logins.verify(
        &turn(&keys(), &ws(), policy, now),
        &[],
        7,
        Typed {
            os_user: "alice",
            email: "alice@example.com",
            code,
        },
        effects,
    )
}

/// A turn on `computer` with `keys`, `policy`, at `now`.
fn turn<'a>(
    keys: &'a OtpKeys,
    computer: &'a ComputerId,
    policy: Policy<'a>,
    now: Timestamp,
) -> Turn<'a> {
    Turn {
        computer,
        policy,
        keys,
        now,
    }
}

fn mails(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::QueueMail { .. }))
        .count()
}

#[test]
fn an_otp_works_once_and_not_after_it_expires() {
    let settings = SystemSettings::default();
    let options = auto();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let mut logins = Logins::default();
    let code = issue(&mut logins, policy, t0());
    assert_eq!(
        verify(&mut logins, policy, &code, t0()),
        Verdict::Allow { session: 7 }
    );
    assert_eq!(verify(&mut logins, policy, &code, t0()), Verdict::Deny);

    let code = issue(&mut logins, policy, t0());
    let late = t0().after(settings.expiration);
    let mut effects = Vec::new();
    assert!(logins.expire_due(&ws(), "alice", late, &mut effects));
    assert!(effects.contains(&Effect::SaveSlot("alice".into())));
    assert_eq!(verify(&mut logins, policy, &code, late), Verdict::Deny);
    assert_eq!(logins.next_expiry(), None, "nothing left to expire");
}

#[test]
fn wrong_codes_are_counted_against_person_computer_and_email_and_lock_the_otp() {
    let settings = SystemSettings {
        max_attempts: 2,
        ..SystemSettings::default()
    };
    let options = auto();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let mut logins = Logins::default();
    let code = issue(&mut logins, policy, t0());
    let wrong = Code::from_typed("00000000");
    let mut effects = Vec::new();
    for _ in 0..2 {
        let verdict = verify_into(&mut logins, policy, &wrong, t0(), &mut effects);
        assert_eq!(verdict, Verdict::Deny);
    }
    let counted: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Count(key) => Some(key.key()),
            _ => None,
        })
        .collect();
    assert_eq!(
        counted,
        [
            "person:ws-1\0alice",
            "computer:ws-1",
            "email:alice@example.com"
        ]
        .repeat(2)
    );
    assert!(effects.contains(&Effect::audit(
        &crate::audit::Who::os_user("alice", &"ws-1"),
        Action::Lock,
        "locked after too many wrong attempts"
    )));
    let mut effects_after = Vec::new();
    let verdict = verify_into(&mut logins, policy, &code, t0(), &mut effects_after);
    assert_eq!(
        verdict,
        Verdict::Deny,
        "locked: the right code no longer works"
    );
    // The operators' counts say why each was denied.
    let tallied: Vec<_> = effects
        .iter()
        .chain(&effects_after)
        .filter_map(|e| match e {
            Effect::Tally(Tally::Login(outcome)) => Some(*outcome),
            _ => None,
        })
        .collect();
    assert_eq!(
        tallied,
        [
            LoginOutcome::DenyWrongCode,
            LoginOutcome::DenyLocked,
            LoginOutcome::DenyNoLiveOtp
        ]
    );
}

/// `key`'s bucket after `count` failures at `at`.
fn failed(
    key: LimitKey,
    settings: &SystemSettings,
    count: u32,
    at: Timestamp,
) -> (LimitKey, Bucket) {
    let limit = key.limit(settings);
    let bucket = (0..count).fold(Bucket::default(), |bucket, _| {
        bucket.fail(at, limit, settings.failure_window)
    });
    (key, bucket)
}

#[test]
fn a_person_is_throttled_long_before_their_computer_or_account() {
    let settings = SystemSettings::default();
    let person = LimitKey::Person(ws(), "alice".into());
    let email = LimitKey::Email("alice@example.com".into());
    assert_eq!(
        person.limit(&settings),
        settings.max_failures / PERSON_SHARE
    );
    assert_eq!(email.limit(&settings), settings.max_failures);
    assert_eq!(
        LimitKey::Computer(ws()).limit(&settings),
        settings.max_failures
    );
    let limit = person.limit(&settings);
    let below = [failed(person.clone(), &settings, limit - 1, t0())];
    assert_eq!(throttled(&below, &settings, t0()), None);
    let full = [
        failed(person.clone(), &settings, limit, t0()),
        failed(email, &settings, limit, t0()),
    ];
    let (wait, key) = throttled(&full, &settings, t0()).unwrap();
    assert_eq!(*key, person, "the person's own budget, not the address's");
    assert_eq!(wait, settings.failure_window / limit);
}

#[test]
fn a_bucket_drains_steadily_so_no_window_edge_lets_twice_the_limit_through() {
    let settings = SystemSettings {
        max_failures: 4,
        ..SystemSettings::default()
    };
    let window = settings.failure_window;
    let key = LimitKey::Computer(ws());
    // The limit at the very end of one hour...
    let late = t0().after(window - MINUTE);
    let (_, bucket) = failed(key.clone(), &settings, 4, late);
    let failures = [(key.clone(), bucket)];
    // ...is not forgiven at the start of the next: a fixed window would be.
    let next_hour = t0().after(window + MINUTE);
    let (wait, _) = throttled(&failures, &settings, next_hour).unwrap();
    assert_eq!(wait, window / 4 - 2 * MINUTE);
    // One failure drains in a quarter of the window: then one more is taken.
    let drained = late.after(window / 4);
    assert_eq!(throttled(&failures, &settings, drained), None);
    let again = [(key.clone(), bucket.fail(drained, 4, window))];
    assert!(throttled(&again, &settings, drained).is_some());
    // So at most 4 + 4 fail within any one window's length, never 8 at once.
    let options = auto();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let mut logins = Logins::default();
    let mut effects = Vec::new();
    let verdict = logins.verify(
        &turn(&keys(), &ws(), policy, late),
        &failures,
        7,
        Typed {
            os_user: "alice",
            email: "alice@example.com",
            code: &Code::from_typed("1"),
        },
        &mut effects,
    );
    assert!(matches!(verdict, Verdict::Throttle { .. }));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Audit { outcome, .. } if outcome == "throttled: too many failures for this computer"
    )));
}

#[test]
fn within_the_interval_the_live_otp_is_resent_spaced_by_the_gap() {
    let settings = SystemSettings::default();
    let options = auto();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let mut logins = Logins::default();
    issue(&mut logins, policy, t0());
    let admit = |logins: &mut Logins, now: Timestamp, effects: &mut Vec<Effect>| {
        logins.admit(
            &turn(&keys(), &ws(), policy, now),
            true,
            &[],
            "alice",
            effects,
        )
    };
    let soon = t0().after(settings.resend_gap / 2);
    let mut effects = Vec::new();
    let answer = admit(&mut logins, soon, &mut effects);
    assert_eq!(
        answer,
        Admit::Answer(Requested::ResendLater {
            to: "a***@example.com".into(),
            next_at: t0().after(settings.resend_gap),
        }),
        "inside the resend gap: not mailed again, and told when it can be"
    );
    assert_eq!(mails(&effects), 0);

    let after_gap = t0().after(settings.resend_gap);
    let answer = admit(&mut logins, after_gap, &mut effects);
    assert!(matches!(answer, Admit::Answer(Requested::Resend { .. })));
    assert_eq!(mails(&effects), 1);

    // Once the OTP is used, a new one must wait for the interval.
    let code = Code::generate(8);
    let binding = Binding {
        computer: &ws(),
        os_user: "alice",
        email: "alice@example.com",
    };
    logins.slots.get_mut("alice").unwrap().otp = Some(Otp::new(
        &keys(),
        binding,
        &code,
        t0(),
        t0().after(settings.expiration),
        Origin::AutoSend,
    ));
    verify(&mut logins, policy, &code, after_gap);
    let answer = admit(&mut logins, after_gap, &mut effects);
    assert_eq!(
        answer,
        Admit::Answer(Requested::TooSoon {
            next_at: t0().after(settings.new_otp_interval)
        })
    );
    let next = t0().after(settings.new_otp_interval);
    assert_eq!(admit(&mut logins, next, &mut effects), Admit::New);
}

#[test]
fn modes_follow_the_computers_options() {
    let email = RequestMode::Email("a@example.com".into());
    let emergency = RequestMode::Emergency("a@example.com".into());
    let plain = Effective::default();
    assert!(enabled(&email, &plain));
    assert!(!enabled(&RequestMode::Directory, &plain));
    assert!(enabled(&emergency, &plain));
    assert!(!enabled(&email, &auto()), "auto-send replaces plain email");
    assert!(enabled(&RequestMode::Directory, &auto()));
    assert!(enabled(&emergency, &auto()));

    let off = Effective {
        allow_otp: false,
        ..auto()
    };
    let settings = SystemSettings::default();
    let policy = Policy {
        settings: &settings,
        options: &off,
    };
    let answer = Logins::default().admit(
        &turn(&keys(), &ws(), policy, t0()),
        true,
        &[],
        "alice",
        &mut Vec::new(),
    );
    assert_eq!(answer, Admit::Answer(Requested::NotRequired));
    let mut logins = Logins::default();
    assert_eq!(
        verify(&mut logins, policy, &Code::from_typed("1"), t0()),
        Verdict::NotRequired,
        "nothing to check, nothing counted"
    );
    let on = Policy {
        settings: &settings,
        options: &auto(),
    };
    let answer = logins.admit(
        &turn(&keys(), &ws(), on, t0()),
        false,
        &[],
        "alice",
        &mut Vec::new(),
    );
    assert_eq!(
        answer,
        Admit::Answer(Requested::Disabled),
        "a mode that is off"
    );
}

#[test]
fn the_interval_starts_only_when_an_otp_is_issued() {
    let settings = SystemSettings::default();
    let options = Effective::default();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let mut logins = Logins::default();
    let mut effects = Vec::new();
    let open = |logins: &mut Logins, id: u64, now: Timestamp, effects: &mut Vec<Effect>| {
        logins.open_request(
            &turn(&keys(), &ws(), policy, now),
            &[],
            Ask {
                id,
                os_user: "alice",
                email: "alice@example.com",
                access: Access::Normal,
            },
            effects,
        )
    };
    open(&mut logins, 1, t0(), &mut effects);
    // While it is pending, asking again points at it.
    let later = t0().after(MINUTE);
    assert_eq!(
        logins.admit(
            &turn(&keys(), &ws(), policy, later),
            true,
            &[],
            "alice",
            &mut effects
        ),
        Admit::Answer(Requested::AwaitApproval {
            request: 1,
            expires: t0().after(settings.expiration),
        })
    );
    // Denied: no OTP was issued, so the person may ask again at once.
    let mut request = logins.latest["alice"].clone();
    let code = Code::generate(8);
    let denied = logins.decide(
        &turn(&keys(), &ws(), policy, later),
        &mut request,
        Ruling {
            by: "root",
            seen_as: &Who::User {
                login: "root".into(),
            },
            choice: Choice::Deny,
            comment: None,
        },
        &code,
        &mut effects,
    );
    assert!(denied);
    assert_eq!(
        logins.admit(
            &turn(&keys(), &ws(), policy, later),
            true,
            &[],
            "alice",
            &mut effects
        ),
        Admit::New
    );
}

#[test]
fn only_approvers_and_administrators_decide_and_approvers_default_to_administrators() {
    let admin = user("root", Role::Administrator);
    let bob = user("bob", Role::User);
    let carol = user("carol", Role::User);
    let named = Effective {
        approvers: vec!["bob".into()],
        ..Effective::default()
    };
    assert!(may_decide(Some(&admin), &named));
    assert!(may_decide(Some(&bob), &named));
    assert!(!may_decide(Some(&carol), &named));
    assert!(!may_decide(None, &named));
    assert!(may_generate(Some(&admin)));
    assert!(!may_generate(Some(&bob)));

    let users = [admin.clone(), bob.clone(), carol];
    let logins: Vec<_> = approvers(&users, &named, Vec::new())
        .iter()
        .map(|u| u.name.clone())
        .collect();
    assert_eq!(logins, ["bob"]);
    let fallback: Vec<_> = approvers(&users, &Effective::default(), Vec::new())
        .iter()
        .map(|u| u.name.clone())
        .collect();
    assert_eq!(fallback, ["root"]);
    // Approvers that name nobody who exists: the administrators are told.
    let gone = Effective {
        approvers: vec!["nobody".into()],
        ..Effective::default()
    };
    let fallback: Vec<_> = approvers(&users, &gone, Vec::new())
        .iter()
        .map(|u| u.name.clone())
        .collect();
    assert_eq!(fallback, ["root"]);

    // Disabled: no longer an approver, nor an administrator.
    let disabled = |user: &UserRecord| UserRecord {
        disabled: true,
        ..user.clone()
    };
    assert!(!may_decide(Some(&disabled(&bob)), &named));
    assert!(!may_decide(Some(&disabled(&admin)), &named));
    assert!(!may_generate(Some(&disabled(&admin))));
    let users = [admin.clone(), disabled(&bob)];
    let logins: Vec<_> = approvers(&users, &named, Vec::new())
        .iter()
        .map(|u| u.name.clone())
        .collect();
    assert_eq!(
        logins,
        ["root"],
        "bob disabled: the administrators are told"
    );

    // Directory people the entries reach join the internal approvers, once
    // each; reaching somebody, they keep the administrators out.
    let users = [admin.clone(), bob.clone()];
    let frank = Recipient {
        name: "frank@corp.example.com".into(),
        email: "frank@example.com".into(),
    };
    let with_group = Effective {
        approvers: vec!["bob".into(), "CORP\\it-approvers".into()],
        ..Effective::default()
    };
    let told: Vec<_> = approvers(&users, &with_group, vec![frank.clone(), frank.clone()])
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(told, ["bob", "frank@corp.example.com"]);
    let only_group = Effective {
        approvers: vec!["CORP\\it-approvers".into()],
        ..Effective::default()
    };
    let told: Vec<_> = approvers(&users, &only_group, vec![frank])
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(told, ["frank@corp.example.com"]);
}

#[test]
fn directory_people_decide_where_an_entry_names_them_or_a_group_of_theirs() {
    let frank = DirectoryPerson {
        name: "CORP\\frank".into(),
        account: "frank@corp.example.com".into(),
        aliases: Vec::new(),
        email: Some("frank@example.com".into()),
        groups: vec![
            "helpdesk@corp.example.com".into(),
            "it-approvers@corp.example.com".into(),
        ],
    };
    let canonical =
        |entry: &str| entry.to_lowercase().replace("corp\\", "").to_owned() + "@corp.example.com";
    let options = |entries: &[&str]| Effective {
        approvers: entries.iter().map(|e| (*e).to_owned()).collect(),
        ..Effective::default()
    };
    assert!(person_may_decide(
        &frank,
        &options(&["CORP\\frank"]),
        canonical
    ));
    assert!(person_may_decide(
        &frank,
        &options(&["bob", "CORP\\IT-Approvers"]),
        canonical
    ));
    assert!(!person_may_decide(
        &frank,
        &options(&["CORP\\dave", "CORP\\other"]),
        canonical
    ));
    // A bare name is an internal user's, never a directory group's.
    assert!(!person_may_decide(
        &frank,
        &options(&["helpdesk", "frank"]),
        canonical
    ));
    assert!(!person_may_decide(&frank, &options(&[]), canonical));
}

#[test]
fn a_request_notifies_each_approver_and_an_approval_sends_the_otp() {
    let settings = SystemSettings::default();
    let options = Effective::default();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let approvers: Vec<Recipient> = ["bob", "dave"]
        .into_iter()
        .map(|login| Recipient {
            name: login.into(),
            email: user(login, Role::User).email,
        })
        .collect();
    let mut logins = Logins::default();
    let mut effects = Vec::new();
    let answer = logins.open_request(
        &turn(&keys(), &ws(), policy, t0()),
        &approvers,
        Ask {
            id: 11,
            os_user: "alice",
            email: "alice@example.com",
            access: Access::Emergency,
        },
        &mut effects,
    );
    assert_eq!(
        answer,
        Requested::AwaitApproval {
            request: 11,
            expires: t0().after(settings.expiration)
        }
    );
    assert_eq!(mails(&effects), 2, "one mail per approver");
    assert_eq!(logins.next_expiry(), Some(t0().after(settings.expiration)));

    let mut request = logins.latest["alice"].clone();
    let mut effects = Vec::new();
    let code = Code::generate(8);
    assert!(logins.decide(
        &turn(&keys(), &ws(), policy, t0().after(MINUTE)),
        &mut request,
        Ruling {
            by: "bob",
            seen_as: &Who::User {
                login: "bob".into(),
            },
            choice: Choice::Approve,
            comment: None
        },
        &code,
        &mut effects
    ));
    assert!(matches!(request.decision, Decision::Approve(_)));
    assert_eq!(mails(&effects), 1, "the OTP");
    let tallied: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Tally(tally) => Some(*tally),
            _ => None,
        })
        .collect();
    assert_eq!(
        tallied,
        [
            Tally::Decided(crate::metrics::Decision::Approved, MINUTE),
            Tally::Issued(crate::metrics::Issued::Approval)
        ],
        "a decision a minute after the request, and the OTP it issued"
    );
    assert_eq!(
        verify(&mut logins, policy, &code, t0().after(MINUTE)),
        Verdict::Allow { session: 7 }
    );
    assert!(
        !logins.decide(
            &turn(&keys(), &ws(), policy, t0().after(MINUTE)),
            &mut request,
            Ruling {
                by: "bob",
                seen_as: &Who::User {
                    login: "bob".into(),
                },
                choice: Choice::Deny,
                comment: None
            },
            &code,
            &mut Vec::new()
        ),
        "decided once"
    );
}

#[test]
fn an_undecided_request_expires_and_its_requester_is_told() {
    let settings = SystemSettings::default();
    let options = Effective::default();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let mut logins = Logins::default();
    logins.open_request(
        &turn(&keys(), &ws(), policy, t0()),
        &[],
        Ask {
            id: 11,
            os_user: "alice",
            email: "alice@example.com",
            access: Access::Normal,
        },
        &mut Vec::new(),
    );
    let mut effects = Vec::new();
    assert!(!logins.expire_all_due(&ws(), t0().after(MINUTE), &mut effects));
    assert!(logins.expire_all_due(&ws(), t0().after(settings.expiration), &mut effects));
    assert_eq!(logins.latest["alice"].decision, Decision::Expire);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::QueueMail {
            kind: MailKind::Outcome {
                refusal: Refusal::Expire,
                ..
            },
            ..
        }
    )));
    assert_eq!(logins.next_expiry(), None);
}

#[test]
fn a_request_with_no_address_is_refused_and_counted() {
    let settings = SystemSettings::default();
    let options = Effective::default();
    let policy = Policy {
        settings: &settings,
        options: &options,
    };
    let mut effects = Vec::new();
    let answer = Logins::default().open_request(
        &turn(&keys(), &ws(), policy, t0()),
        &[],
        Ask {
            id: 1,
            os_user: "alice",
            email: "not an address",
            access: Access::Normal,
        },
        &mut effects,
    );
    assert_eq!(answer, Requested::Refuse);
    assert_eq!(
        effects,
        [
            Effect::Count(LimitKey::Person(ws(), "alice".into())),
            Effect::Count(LimitKey::Computer(ws())),
        ],
        "counted, and nothing saved or mailed"
    );
}

#[test]
fn a_verify_for_an_impossible_os_user_is_denied_and_counted_as_such() {
    let code = Code::from_typed("00000000");
    let (answer, effects) = invalid_caller(
        &ws(),
        &LoginRequest::Verify {
            email: "alice@example.com".into(),
            code,
        },
    );
    assert_eq!(answer, LoginResponse::Verified(Verdict::Deny));
    assert!(effects.contains(&Effect::Tally(Tally::Login(
        LoginOutcome::DenyInvalidOsUser
    ))));
    let (_, effects) = invalid_caller(&ws(), &LoginRequest::Status);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Tally(_))));
}
