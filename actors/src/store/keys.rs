//! How the store's keys are laid out: a computer's records under its name
//! and a zero byte, numbers as digits that sort as the numbers do.

use super::{Result, StoreError};
use crate::id::ComputerId;

/// The key of a computer's record `rest`: `computer \0 rest`.
pub(super) fn scoped(computer: &ComputerId, rest: &str) -> Vec<u8> {
    let mut key = prefix(computer);
    key.extend_from_slice(rest.as_bytes());
    key
}

/// The computer and the OS user of key `key` of table `tree`, made by
/// [`scoped`].
pub(super) fn unscoped(tree: &'static str, key: &[u8]) -> Result<(ComputerId, String)> {
    let bad = || StoreError::BadKey { tree };
    let split = key.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let computer = std::str::from_utf8(&key[..split])
        .ok()
        .and_then(|name| name.parse().ok())
        .ok_or_else(bad)?;
    Ok((
        computer,
        String::from_utf8_lossy(&key[split + 1..]).into_owned(),
    ))
}

pub(super) fn prefix(computer: &ComputerId) -> Vec<u8> {
    let mut key = computer.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

/// A numeric id as a key part that sorts in numeric order.
pub(super) fn ordered(id: u64) -> String {
    format!("{id:020}")
}
