//! The LDAP directory's unit tests: filters, names, the cache.

use std::time::Duration;

use super::*;

fn directory(filter: &str) -> LdapDirectory {
    LdapDirectory::new(LdapConfig {
        urls: vec![crate::server::config::LdapUrl {
            url: "ldaps://127.0.0.1".into(),
            starttls: false,
        }],
        bind_dn: "cn=otpgate".into(),
        bind_password: "x".to_owned().into(),
        ca_file: None,
        base_dn: "dc=corp,dc=example,dc=com".into(),
        filter: filter.into(),
        mail_attribute: "mail".into(),
        timeout: Duration::from_secs(1),
        cache: Duration::from_secs(60),
        pool_size: 2,
        domains: [("CORP".to_owned(), "corp.example.com".to_owned())].into(),
    })
    .unwrap()
}

#[test]
fn both_forms_of_an_account_find_the_same_entry() {
    let d = directory(crate::server::config::DEFAULT_LDAP_FILTER);
    let expected =
        "(&(objectClass=user)(|(sAMAccountName=alice)(userPrincipalName=alice@corp.example.com)))";
    assert_eq!(d.filter("CORP\\alice").as_deref(), Some(expected));
    assert_eq!(
        d.filter("Alice@Corp.Example.com").as_deref(),
        Some(expected)
    );
}

#[test]
fn an_account_of_an_unknown_domain_is_nobody_here() {
    let d = directory(crate::server::config::DEFAULT_LDAP_FILTER);
    assert_eq!(d.filter("OTHER\\alice"), None, "never CORP's alice");
    assert_ne!(d.canonical("OTHER\\alice"), d.canonical("CORP\\alice"));
    // A principal name of another realm matches by principal name only.
    let other = "(&(objectClass=user)(|(sAMAccountName=alice@other.example)(userPrincipalName=alice@other.example)))";
    assert_eq!(d.filter("alice@other.example").as_deref(), Some(other));
}

#[test]
fn values_are_escaped_and_never_widen_the_search() {
    let d = directory("(uid={name})");
    let filter = |account| d.filter(account).unwrap();
    assert_eq!(filter("a*"), "(uid=a\\2a)");
    assert_eq!(filter("x)(uid=*"), "(uid=x\\29\\28uid=\\2a)");
    assert_eq!(filter("corp\\slash"), "(uid=slash)", "a domain part");
    assert_eq!(filter("n\0ul"), "(uid=n\\00ul)");
    // A value cannot bring a placeholder of its own.
    let d = directory("(|(uid={name})(upn={upn}))");
    assert_eq!(d.filter("{upn}").unwrap(), "(|(uid={upn})(upn={upn}))");
}

#[test]
fn answers_are_kept_for_their_time_to_live_only() {
    let cache = Cache::new(Duration::from_secs(60));
    assert_eq!(cache.get("corp\\bob"), None);
    cache.keep("corp\\bob".into(), &Some(1));
    assert_eq!(cache.get("corp\\bob"), Some(Some(1)));
    cache
        .entries
        .lock()
        .unwrap()
        .get_mut("corp\\bob")
        .unwrap()
        .0 -= Duration::from_secs(61);
    assert_eq!(cache.get("corp\\bob"), None, "expired");
    let none = Cache::new(Duration::ZERO);
    none.keep("corp\\bob".into(), &1);
    assert_eq!(
        none.get("corp\\bob"),
        None,
        "a time to live of zero keeps none"
    );
}
