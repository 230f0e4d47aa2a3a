//! A real OpenLDAP server (Debian's `slapd`) on 127.0.0.1 ports of its own,
//! from a temporary configuration: an Active Directory-like schema, LDAPS
//! with a private CA, a bind account and a few people. Stopped on drop.
//! Without `slapd` and `ldap-utils` installed the LDAP tests say so and pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The directory's base.
pub const BASE: &str = "dc=corp,dc=example,dc=com";
/// The account otpgate binds as, and its password.
pub const BIND_DN: &str = "cn=otpgate,dc=corp,dc=example,dc=com";
pub const BIND_PASSWORD: &str = "otpgate's bind password";
const ROOT_DN: &str = "cn=admin,dc=corp,dc=example,dc=com";
const ROOT_PASSWORD: &str = "root password of the test directory";

/// Attributes Active Directory has and OpenLDAP does not.
const AD_SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.3 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.4 NAME 'memberOf' EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
attributetype ( 1.3.6.1.4.1.99999.1.5 NAME 'lockoutTime' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.6 NAME 'accountExpires' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'user' SUP inetOrgPerson STRUCTURAL MAY ( sAMAccountName $ userPrincipalName $ userAccountControl $ memberOf $ lockoutTime $ accountExpires ) )
";

/// The directory password of person `name`.
pub fn password(name: &str) -> String {
    format!("{name}'s directory password")
}

/// A person of the directory: account name, and its mail and flags.
fn person(name: &str, mail: Option<&str>, flags: u32) -> String {
    let mail = mail.map(|m| format!("mail: {m}\n")).unwrap_or_default();
    format!(
        "dn: cn={name},{BASE}\nobjectClass: user\ncn: {name}\nsn: {name}\n\
         sAMAccountName: {name}\nuserPrincipalName: {name}@corp.example.com\n\
         userAccountControl: {flags}\nuserPassword: {password}\n{mail}\n",
        password = password(name)
    )
}

/// A group of the directory (`groupOfNames`) and its members' common names.
fn group(name: &str, members: &[&str]) -> String {
    let members: String = members
        .iter()
        .map(|member| format!("member: cn={member},{BASE}\n"))
        .collect();
    format!("dn: cn={name},{BASE}\nobjectClass: groupOfNames\ncn: {name}\n{members}\n")
}

/// A running slapd.
pub struct Slapd {
    dir: PathBuf,
    /// The LDAPS port.
    pub port: u16,
    plain_port: u16,
}

impl Slapd {
    /// Starts a directory in `dir` with alice, bob, carol, frank, ivan and
    /// kate (mail; kate's principal name `kate@corp-alt.example`), dave (disabled), erin (no mail), gina (locked out) and hank
    /// (expired), each with the password
    /// [`password`] gives; group it-approvers holds alice and group helpdesk,
    /// which holds frank and dave. `None` (said) without slapd installed.
    pub fn start(dir: &Path, test: &str) -> Option<Self> {
        if !Path::new("/usr/sbin/slapd").exists() || !Path::new("/usr/bin/ldapadd").exists() {
            super::skip(test, "it needs Debian's slapd and ldap-utils");
            return None;
        }
        otpgate::tls::pki::ensure_server(dir, &[]).unwrap();
        std::fs::write(dir.join("ad.schema"), AD_SCHEMA).unwrap();
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\ninclude {d}/ad.schema\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {d}/slapd.pid\n\
                 TLSCACertificateFile {d}/pki/ca.pem\nTLSCertificateFile {d}/pki/server.pem\n\
                 TLSCertificateKeyFile {d}/pki/server.key\n\
                 database mdb\nsuffix \"{BASE}\"\nrootdn \"{ROOT_DN}\"\nrootpw \"{ROOT_PASSWORD}\"\n\
                 directory {d}/db\n\
                 # As Active Directory caps a search (at 1,000), smaller: more\n\
                 # needs paged results.\n\
                 limits * size.soft=2 size.hard=2 size.prtotal=unlimited\n"
            ),
        )
        .unwrap();
        let slapd = super::retry_start("slapd", || {
            let slapd = Self {
                dir: dir.to_owned(),
                port: super::free_port(),
                plain_port: super::free_port(),
            };
            slapd.try_run().map(|()| slapd)
        });
        let entries = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: corp\ndc: corp\n\n\
             dn: {BIND_DN}\nobjectClass: inetOrgPerson\ncn: otpgate\nsn: otpgate\n\
             userPassword: {BIND_PASSWORD}\n\n{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}{}",
            person("alice", Some("alice@example.com"), 512)
                .replace("\n\n", &format!("\nmemberOf: cn=it-approvers,{BASE}\n\n")),
            person("bob", Some("bob@example.com"), 512),
            person("carol", Some("carol@example.com"), 512),
            person("dave", Some("dave@example.com"), 514),
            person("erin", None, 512),
            person("frank", Some("frank@example.com"), 512),
            // Locked out (as AD records it), expired (2001), and one whose
            // expiry is far off.
            person("gina", Some("gina@example.com"), 512)
                .replace("\n\n", "\nlockoutTime: 133500000000000000\n\n"),
            person("hank", Some("hank@example.com"), 512)
                .replace("\n\n", "\naccountExpires: 126000000000000000\n\n"),
            person("ivan", Some("ivan@example.com"), 512)
                .replace("\n\n", "\naccountExpires: 9000000000000000000\n\n"),
            // Her principal name has an alternate suffix.
            person("kate", Some("kate@example.com"), 512)
                .replace("kate@corp.example.com", "kate@corp-alt.example"),
            // In more groups than one search answers without paging.
            person("lena", Some("lena@example.com"), 512),
            group("g1", &["lena"]),
            group("g2", &["lena"]),
            group("g3", &["lena"]),
            group("it-approvers", &["alice", "helpdesk"]),
            group("helpdesk", &["frank", "dave"]),
        );
        std::fs::write(dir.join("people.ldif"), entries).unwrap();
        let added = Command::new("ldapadd")
            .args(["-x", "-H"])
            .arg(format!("ldap://127.0.0.1:{}/", slapd.plain_port))
            .args(["-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f"])
            .arg(dir.join("people.ldif"))
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "ldapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        Some(slapd)
    }

    /// Starts slapd again on this directory's ports, and waits until it answers.
    pub fn run(&self) {
        self.try_run().unwrap();
    }

    /// Starts slapd on this directory's ports, and waits until it answers; why
    /// not, if it does not (it could not bind, say).
    fn try_run(&self) -> Result<(), String> {
        let urls = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/",
            self.plain_port, self.port
        );
        let mut command = Command::new("/usr/sbin/slapd");
        command
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .args(["-h", &urls]);
        if nix::unistd::Uid::effective().is_root() {
            command.args(["-u", "root", "-g", "root"]);
        }
        let started = command.output().unwrap();
        if !started.status.success() {
            return Err(format!(
                "slapd: {}",
                String::from_utf8_lossy(&started.stderr)
            ));
        }
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("slapd did not listen".into())
    }

    /// Stops slapd (it forks: by the pid in its file), and waits until it is gone.
    pub fn stop(&self) {
        let pidfile = self.dir.join("slapd.pid");
        let Ok(pid) = std::fs::read_to_string(&pidfile) else {
            return;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if nix::sys::signal::kill(pid, None).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = std::fs::remove_file(pidfile);
    }

    /// The `[ldap]` section that points otpgate at this directory.
    pub fn config(&self) -> String {
        self.config_with_url(&format!("\"ldaps://127.0.0.1:{}\"", self.port))
    }

    /// [`Slapd::config`] with two domain controllers listed before this
    /// one: one that refuses connections, and one that takes them and never
    /// answers (a switched-off host behind a firewall looks so), which must
    /// be kept open as long as the configuration is used.
    pub fn config_behind_dead_ones(&self) -> (String, std::net::TcpListener) {
        let refusing = super::free_port();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = self.config_with_url(&format!(
            "[\"ldaps://127.0.0.1:{refusing}\", \"ldaps://127.0.0.1:{}\", \
             \"ldaps://127.0.0.1:{}\"]",
            silent.local_addr().unwrap().port(),
            self.port
        ));
        (config, silent)
    }

    fn config_with_url(&self, url: &str) -> String {
        let password = self.dir.join("bind-password");
        std::fs::write(&password, format!("{BIND_PASSWORD}\n")).unwrap();
        format!(
            "[ldap]\nurl = {url}\nbind_dn = \"{BIND_DN}\"\n\
             password_file = \"{password}\"\nca_file = \"{ca}\"\n\
             base_dn = \"{BASE}\"\ntimeout_secs = 2\ncache_secs = 60\n\
             [ldap.domains]\nCORP = \"corp.example.com\"\n",
            password = password.display(),
            ca = self.dir.join("pki/ca.pem").display(),
        )
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
