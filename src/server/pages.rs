//! Paging of the admin lists: every list answers one page at a time, as many
//! entries as asked for (up to `MAX_PAGE`) and as fit in one frame, with the
//! cursor of the next page. A filter is applied while reading, so a page holds
//! only matching entries and the cursor moves past the ones skipped.

use serde::Serialize;

use otpgate_actors::audit::AuditEntry;
use otpgate_actors::request::AccessRequest;
use otpgate_actors::session::ClientSession;
use otpgate_actors::store::{BATCH, Batch, Records, StoreFuture};
use otpgate_actors::{ComputerId, StoreError, Timestamp};
use otpgate_protocol::admin::{DEFAULT_PAGE, ListFilter, MAX_PAGE, Page, PageRequest};
use otpgate_protocol::{MAX_FRAME_LEN, encoded_len};

/// What the entries of one page may take, encoded and decoded: half a frame, so
/// that a page stays well inside both the frame and what decoding may reserve.
const PAGE_BUDGET: usize = MAX_FRAME_LEN / 2;

/// The page of `records` that `request` asks for, of those `keep` accepts, each
/// shown as `view` makes it. The first entry is always taken, so that a page
/// moves on; an answer too large even so is refused when it is sent.
pub fn page<T, V: Serialize>(
    records: Records<'_, T>,
    request: &PageRequest,
    keep: impl Fn(&T) -> bool,
    view: impl Fn(&T) -> V,
) -> Result<Page<V>, StoreError> {
    let mut pager = Pager::new(request);
    for record in records {
        let (key, record) = record?;
        if pager.take(key, &record, &keep, &view) {
            return Ok(pager.page());
        }
    }
    Ok(pager.last_page())
}

/// [`page`] of a list of the store, which `read` returns a batch at a time
/// after the cursor it is given.
pub async fn page_of<'a, T, V: Serialize>(
    read: impl Fn(Option<Vec<u8>>) -> StoreFuture<'a, Batch<T>>,
    request: &PageRequest,
    keep: impl Fn(&T) -> bool,
    view: impl Fn(&T) -> V,
) -> Result<Page<V>, StoreError> {
    let mut pager = Pager::new(request);
    let mut after = request.after.clone();
    loop {
        let batch = read(after.take()).await?;
        let full = batch.len() >= BATCH;
        for (key, record) in batch {
            after = Some(key.clone());
            if pager.take(key, &record, &keep, &view) {
                return Ok(pager.page());
            }
        }
        if !full {
            return Ok(pager.last_page());
        }
    }
}

/// A page being filled.
struct Pager<V> {
    limit: usize,
    items: Vec<V>,
    size: usize,
    /// The key of the last record read and done with: where the next page
    /// starts.
    last: Option<Vec<u8>>,
}

impl<V: Serialize> Pager<V> {
    fn new(request: &PageRequest) -> Self {
        let limit = match request.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        Self {
            limit,
            items: Vec::new(),
            size: 0,
            last: None,
        }
    }

    /// Takes the record at `key` if `keep` says so; whether the page was
    /// full before it (the record is then left for the next page).
    fn take<T>(
        &mut self,
        key: Vec<u8>,
        record: &T,
        keep: impl Fn(&T) -> bool,
        view: impl Fn(&T) -> V,
    ) -> bool {
        if keep(record) {
            let shown = view(record);
            // An entry costs its encoding plus its size in memory once decoded;
            // one that cannot be encoded is refused with the whole answer.
            let len = encoded_len(&shown).unwrap_or(PAGE_BUDGET) + size_of::<V>();
            if self.items.len() == self.limit
                || (!self.items.is_empty() && self.size + len > PAGE_BUDGET)
            {
                return true;
            }
            self.size += len;
            self.items.push(shown);
        }
        self.last = Some(key);
        false
    }

    /// The page, full: the next starts after the last record taken.
    fn page(self) -> Page<V> {
        Page {
            items: self.items,
            next: self.last,
        }
    }

    /// The page, the list read to its end.
    fn last_page(self) -> Page<V> {
        Page {
            items: self.items,
            next: None,
        }
    }
}

impl Matches for AccessRequest {
    fn matches(&self, filter: &ListFilter) -> bool {
        of_person(
            filter,
            &self.computer,
            &self.os_user,
            &self.email,
            self.created,
        )
    }
}

impl Matches for ClientSession {
    fn matches(&self, filter: &ListFilter) -> bool {
        of_person(
            filter,
            &self.computer,
            &self.os_user,
            &self.email,
            self.started,
        )
    }
}

/// Whether a person's record (on `computer`, as `os_user` with `email`, made
/// `at`) is one `filter` asks for.
fn of_person(
    filter: &ListFilter,
    computer: &ComputerId,
    os_user: &str,
    email: &str,
    at: Timestamp,
) -> bool {
    filter
        .computer
        .as_deref()
        .is_none_or(|c| computer.as_str() == c)
        && filter
            .user
            .as_deref()
            .is_none_or(|u| os_user.eq_ignore_ascii_case(u) || email.eq_ignore_ascii_case(u))
        && within(filter, at.unix_millis())
}

impl Matches for AuditEntry {
    fn matches(&self, filter: &ListFilter) -> bool {
        filter
            .computer
            .as_deref()
            .is_none_or(|c| self.computer.as_deref() == Some(c))
            && filter.user.as_deref().is_none_or(|u| self.who.names(u))
            && within(filter, self.at.unix_millis())
    }
}

/// Whether a record is one a [`ListFilter`] asks for.
pub trait Matches {
    /// Whether every part of `filter` holds for it.
    fn matches(&self, filter: &ListFilter) -> bool;
}

fn within(filter: &ListFilter, at: u64) -> bool {
    filter.since.is_none_or(|since| at >= since) && filter.until.is_none_or(|until| at < until)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(n: u64) -> Records<'static, u64> {
        Box::new((0..n).map(|i| Ok((i.to_be_bytes().to_vec(), i))))
    }

    fn all_pages(n: u64, limit: u32, keep: impl Fn(&u64) -> bool + Copy) -> Vec<Vec<u64>> {
        let mut pages = Vec::new();
        let mut request = PageRequest { limit, after: None };
        loop {
            let after = request.after.clone();
            let records: Records<'static, u64> = Box::new(
                (0..n)
                    .filter(move |i| {
                        after
                            .as_deref()
                            .is_none_or(|a| i.to_be_bytes().as_slice() > a)
                    })
                    .map(|i| Ok((i.to_be_bytes().to_vec(), i))),
            );
            let page = page(records, &request, keep, |i| *i).unwrap();
            pages.push(page.items);
            match page.next {
                Some(next) => request.after = Some(next),
                None => return pages,
            }
        }
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let pages = all_pages(25, 10, |_| true);
        assert_eq!(pages.len(), 3);
        assert_eq!(pages.concat(), (0..25).collect::<Vec<_>>());
        let odd = all_pages(25, 4, |i| i % 2 == 1);
        assert!(odd.iter().all(|page| page.len() <= 4));
        assert_eq!(
            odd.concat(),
            (0..25).filter(|i| i % 2 == 1).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_page_stops_before_it_outgrows_a_frame() {
        let big = |i: &u64| format!("{i}:{}", "x".repeat(1000));
        let page = page(
            numbers(1000),
            &PageRequest {
                limit: MAX_PAGE,
                after: None,
            },
            |_| true,
            big,
        )
        .unwrap();
        assert!(page.items.len() < 1000 && page.next.is_some());
        let size: usize = page
            .items
            .iter()
            .map(|v| encoded_len(v).unwrap() + size_of::<String>())
            .sum();
        assert!(size <= PAGE_BUDGET, "{size}");
    }
}
