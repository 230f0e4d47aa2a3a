//! The black-box tests, in one binary: each module starts the real server (in
//! this process or as the built binary), agents, and the real components a flow
//! needs (SMTP, OpenLDAP, sshd with PAM, Chromium, the previous release), and
//! talks to them over real sockets on 127.0.0.1. What they share is in
//! [`common`].

mod common;

mod abuse;
mod agent;
mod approvers;
mod backup;
mod bad_frames;
mod bench;
mod browser;
mod chaos;
mod cli;
mod crash;
mod doctor;
mod enroll;
mod ldap;
mod limits;
mod lists;
mod local;
mod login;
mod metrics;
mod nodes;
mod offline;
mod package;
mod pam;
mod record;
mod refusals;
mod releases;
mod scale;
mod smtp;
mod sshd;
mod store;
mod versions;
mod web;
