//! Lists in pages (`limit`, `continue`) from one snapshot: the list of the first page is kept,
//! and the next pages are cut from it, so a list read in pages is the list as it was at the
//! first page's resourceVersion, as kube-apiserver gives it (from etcd's history). A snapshot
//! is kept for [`TTL`] (how long etcd keeps a revision by default), at most [`PER_CALLER`] for
//! one identity and [`MAX_BYTES`] in all, the oldest going first; a token whose snapshot is gone
//! is answered 410 Expired, as kube-apiserver answers a compacted one, and the client lists
//! again from the start.

use shoal_api::Object;
use shoal_transport::proto::{ErrorCode, WireError};
use shoal_transport::Identity;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the rest of a list waits for its next page.
const TTL: Duration = Duration::from_secs(5 * 60);
/// Lists one caller may be paging through at once.
const PER_CALLER: usize = 8;
/// What the snapshots of every caller hold, at most (their objects' JSON).
const MAX_BYTES: usize = 64 << 20;

/// One page of a list, and the token of the next when there is more.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Object>,
    pub revision: u64,
    pub next: Option<String>,
}

#[derive(Default)]
pub struct Pages {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Oldest first.
    kept: VecDeque<Kept>,
    bytes: usize,
}

struct Kept {
    id: u64,
    owner: Identity,
    /// What was listed (kind, namespace, selectors): a token is good for that list only.
    list: String,
    revision: u64,
    items: Arc<Vec<Object>>,
    bytes: usize,
    at: Instant,
}

impl Pages {
    /// The first page of `items` (`limit` of them; all when `None`). When more are left, the
    /// whole list is kept for the next pages.
    pub fn first(
        &self,
        owner: &Identity,
        list: &str,
        mut items: Vec<Object>,
        revision: u64,
        limit: Option<usize>,
    ) -> Page {
        items.sort_by(|a, b| key(a).cmp(&key(b)));
        let Some(limit) = limit.filter(|l| *l < items.len()) else {
            return Page {
                items,
                revision,
                next: None,
            };
        };
        let bytes = items
            .iter()
            .map(|o| serde_json::to_vec(o).map_or(0, |v| v.len()))
            .sum();
        let first = items[..limit].to_vec();
        let mut inner = self.lock();
        inner.expire(Instant::now());
        let id = inner.next_id;
        inner.next_id += 1;
        inner.keep(Kept {
            id,
            owner: owner.clone(),
            list: list.to_string(),
            revision,
            items: Arc::new(items),
            bytes,
            at: Instant::now(),
        });
        Page {
            items: first,
            revision,
            next: Some(token(revision, id, limit)),
        }
    }

    /// The page a `continue` token names: `limit` more items of the same snapshot.
    pub fn next(
        &self,
        owner: &Identity,
        list: &str,
        token: &str,
        limit: Option<usize>,
    ) -> Result<Page, WireError> {
        let bad = || {
            WireError::new(
                ErrorCode::BadRequest,
                format!("continue: {token:?} is not a token this server gave"),
            )
        };
        let mut parts = token.splitn(3, '/').map(str::parse::<u64>);
        let (Some(Ok(revision)), Some(Ok(id)), Some(Ok(offset))) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (items, revision) = {
            let mut inner = self.lock();
            inner.expire(Instant::now());
            let kept = inner.kept.iter().find(|k| k.id == id);
            match kept {
                Some(k) if k.revision != revision || k.owner != *owner || k.list != list => {
                    return Err(bad())
                }
                Some(k) => (k.items.clone(), k.revision),
                None => return Err(WireError::new(
                    ErrorCode::Compacted,
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                )),
            }
        };
        let from = usize::try_from(offset)
            .ok()
            .filter(|o| *o <= items.len())
            .ok_or_else(bad)?;
        let to = limit.map_or(items.len(), |l| from.saturating_add(l).min(items.len()));
        Ok(Page {
            items: items[from..to].to_vec(),
            revision,
            next: (to < items.len()).then(|| self::token(revision, id, to)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while self
            .kept
            .front()
            .is_some_and(|k| now.duration_since(k.at) > TTL)
        {
            self.drop_oldest(|_| true);
        }
    }

    /// Keeps `new`, first letting go of the oldest of its owner's past [`PER_CALLER`] and the
    /// oldest of all past [`MAX_BYTES`].
    fn keep(&mut self, new: Kept) {
        while self.kept.iter().filter(|k| k.owner == new.owner).count() >= PER_CALLER {
            self.drop_oldest(|k| k.owner == new.owner);
        }
        while !self.kept.is_empty() && self.bytes + new.bytes > MAX_BYTES {
            self.drop_oldest(|_| true);
        }
        self.bytes += new.bytes;
        self.kept.push_back(new);
    }

    fn drop_oldest(&mut self, which: impl Fn(&Kept) -> bool) {
        if let Some(i) = self.kept.iter().position(which) {
            if let Some(k) = self.kept.remove(i) {
                self.bytes -= k.bytes;
            }
        }
    }
}

fn key(o: &Object) -> (&str, &str) {
    (o.namespace().unwrap_or(""), o.name())
}

fn token(revision: u64, id: u64, offset: usize) -> String {
    format!("{revision}/{id}/{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(names: &[&str]) -> Vec<Object> {
        names
            .iter()
            .map(|n| {
                let json = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{n}","namespace":"default"}}}}"#);
                Object::from_json(json.as_bytes()).expect("object")
            })
            .collect()
    }

    fn names(p: &Page) -> Vec<&str> {
        p.items.iter().map(Object::name).collect()
    }

    #[test]
    fn pages_come_from_the_list_as_it_was_at_the_first() {
        let pages = Pages::default();
        let admin = Identity::Admin("admin".into());
        let first = pages.first(&admin, "cm", objects(&["c", "a", "b"]), 9, Some(2));
        assert_eq!(names(&first), ["a", "b"]);
        let token = first.next.expect("more");
        // Whatever changes meanwhile, the next page is the rest of that list, at its revision;
        // asked again (a retry), it is the same page.
        for _ in 0..2 {
            let rest = pages.next(&admin, "cm", &token, Some(2)).expect("next");
            assert_eq!(
                (names(&rest), rest.revision, rest.next.clone()),
                (vec!["c"], 9, None)
            );
        }
        // A token is the caller's, for the list it was given for.
        let other = Identity::Admin("other".into());
        assert!(pages.next(&other, "cm", &token, Some(2)).is_err());
        assert!(pages.next(&admin, "pods", &token, Some(2)).is_err());
        assert!(pages.next(&admin, "cm", "garbage", Some(2)).is_err());
        // All in one page: nothing is kept.
        let all = pages.first(&admin, "cm", objects(&["a"]), 9, Some(5));
        assert_eq!(all.next, None);
    }

    #[test]
    fn a_snapshot_past_the_bounds_is_gone_and_its_token_expired() {
        let pages = Pages::default();
        let admin = Identity::Admin("admin".into());
        let tokens: Vec<String> = (0..=PER_CALLER)
            .map(|_| {
                let p = pages.first(&admin, "cm", objects(&["a", "b"]), 1, Some(1));
                p.next.expect("more")
            })
            .collect();
        let e = pages.next(&admin, "cm", &tokens[0], None).unwrap_err();
        assert_eq!(e.code, ErrorCode::Compacted, "{e:?}");
        assert!(pages.next(&admin, "cm", &tokens[PER_CALLER], None).is_ok());
        // Time runs out too.
        let mut inner = pages.lock();
        let later = Instant::now() + TTL + Duration::from_secs(1);
        inner.expire(later);
        assert!(inner.kept.is_empty() && inner.bytes == 0);
    }
}
