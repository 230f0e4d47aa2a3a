//! Reading what an entry says: attributes, whether an account may be used
//! now, whether an entry is a group and its canonical name.

use ldap3::SearchEntry;

use super::SAM;

/// `userAccountControl`'s bit of a disabled account.
const ACCOUNT_DISABLED: u32 = 2;
/// `msDS-User-Account-Control-Computed`'s bit of a locked-out account.
const LOCKED_OUT: u32 = 0x10;
/// Active Directory's attributes for account flags (as set, and as computed
/// now: a lockout that has run its time is not one), lockout, expiry,
/// principal name and account name.
pub(super) const ACCOUNT_CONTROL: &str = "userAccountControl";
const ACCOUNT_CONTROL_NOW: &str = "msDS-User-Account-Control-Computed";
const LOCKOUT_TIME: &str = "lockoutTime";
const ACCOUNT_EXPIRES: &str = "accountExpires";
/// What is read to know whether an account may be used now.
pub(super) const STANDING: [&str; 4] = [
    ACCOUNT_CONTROL,
    ACCOUNT_CONTROL_NOW,
    LOCKOUT_TIME,
    ACCOUNT_EXPIRES,
];

/// The values of attribute `name` of `entry` (none if it has none).
pub(super) fn values<'e>(entry: &'e SearchEntry, name: &str) -> &'e [String] {
    entry
        .attrs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map_or(&[][..], |(_, values)| values.as_slice())
}

/// The number attribute `name` of `entry` holds, if it holds one.
fn number(entry: &SearchEntry, name: &str) -> Option<u64> {
    values(entry, name).first()?.trim().parse().ok()
}

/// Whether account entry `entry` may not be used now: disabled
/// (`userAccountControl` bit 2), locked out (by the computed flags where the
/// directory gives them, else by `lockoutTime`), or expired (`accountExpires`
/// in the past; 0 and the largest value mean never).
pub(super) fn is_closed(entry: &SearchEntry) -> bool {
    let flags = |name| number(entry, name).unwrap_or(0);
    let disabled = flags(ACCOUNT_CONTROL) & u64::from(ACCOUNT_DISABLED) != 0;
    let locked = match number(entry, ACCOUNT_CONTROL_NOW) {
        Some(now) => now & u64::from(LOCKED_OUT) != 0,
        None => flags(LOCKOUT_TIME) != 0,
    };
    let expires = flags(ACCOUNT_EXPIRES);
    let expired = expires != 0 && expires != i64::MAX as u64 && expires <= filetime_now();
    disabled || locked || expired
}

/// Now, as Active Directory counts time: 100 ns intervals since 1601.
fn filetime_now() -> u64 {
    /// Seconds from 1601-01-01 to 1970-01-01.
    const EPOCHS_APART: u64 = 11_644_473_600;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since_unix.as_secs() + EPOCHS_APART) * 10_000_000 + u64::from(since_unix.subsec_nanos() / 100)
}

/// Whether `entry` is a group (AD's `group`, or `groupOfNames`).
pub(super) fn is_group(entry: &SearchEntry) -> bool {
    values(entry, "objectClass").iter().any(|class| {
        class.eq_ignore_ascii_case("group") || class.eq_ignore_ascii_case("groupOfNames")
    })
}

/// An entry's canonical name by its DN: its account name (or common name) at
/// the realm its DN's domain components spell (`cn=it-approvers,dc=corp,dc=example,dc=com`
/// is `it-approvers@corp.example.com`, which `CORP\it-approvers` comes to).
pub(super) fn name_by_dn(entry: &SearchEntry) -> Option<String> {
    let name = values(entry, SAM).first().or(values(entry, "cn").first())?;
    let realm: Vec<&str> = entry
        .dn
        .split(',')
        .filter_map(|rdn| {
            let (key, value) = rdn.trim().split_once('=')?;
            key.trim().eq_ignore_ascii_case("dc").then(|| value.trim())
        })
        .collect();
    let name = name.trim().to_lowercase();
    Some(if realm.is_empty() {
        name
    } else {
        format!("{name}@{}", realm.join(".").to_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: &[(&str, &str)]) -> SearchEntry {
        SearchEntry {
            dn: "cn=x,dc=corp".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
            bin_attrs: Default::default(),
        }
    }

    #[test]
    fn an_account_is_closed_while_disabled_locked_out_or_expired() {
        assert!(!is_closed(&entry(&[(ACCOUNT_CONTROL, "512")])));
        assert!(is_closed(&entry(&[(ACCOUNT_CONTROL, "514")])));
        assert!(is_closed(&entry(&[(LOCKOUT_TIME, "133500000000000000")])));
        // AD's computed flags know when a lockout has run its time.
        let ran_out = [
            (LOCKOUT_TIME, "133500000000000000"),
            (ACCOUNT_CONTROL_NOW, "0"),
        ];
        assert!(!is_closed(&entry(&ran_out)));
        assert!(is_closed(&entry(&[(ACCOUNT_CONTROL_NOW, "16")])));
        assert!(is_closed(&entry(&[(
            ACCOUNT_EXPIRES,
            "126000000000000000"
        )])));
        for never in ["0", "9223372036854775807"] {
            assert!(!is_closed(&entry(&[(ACCOUNT_EXPIRES, never)])), "{never}");
        }
        let later = (filetime_now() + 10_000_000 * 3600).to_string();
        assert!(!is_closed(&entry(&[(ACCOUNT_EXPIRES, later.as_str())])));
    }
}
