//! The short-lived store behind `response_format: "url"`: generated PNGs kept in memory for
//! `ttl_secs` under an unguessable id, at most `max_images` of them (the oldest go first).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;

use crate::config::StoreConfig;

pub(crate) struct ImageStore {
    ttl: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    images: HashMap<String, (Instant, Bytes)>,
    /// Ids, oldest first.
    order: VecDeque<String>,
}

impl ImageStore {
    pub(crate) fn new(cfg: &StoreConfig) -> Self {
        Self {
            ttl: Duration::from_secs(cfg.ttl_secs),
            max: cfg.max_images,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Keeps a PNG; returns its id (32 hex digits, random).
    pub(crate) fn put(&self, png: Vec<u8>) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Self::expire(&mut inner, now, self.ttl);
        while inner.order.len() >= self.max {
            if let Some(old) = inner.order.pop_front() {
                inner.images.remove(&old);
            }
        }
        inner.images.insert(id.clone(), (now, Bytes::from(png)));
        inner.order.push_back(id.clone());
        id
    }

    /// The PNG of `id`, if it is still kept.
    pub(crate) fn get(&self, id: &str) -> Option<Bytes> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Self::expire(&mut inner, now, self.ttl);
        inner.images.get(id).map(|(_, b)| b.clone())
    }

    fn expire(inner: &mut Inner, now: Instant, ttl: Duration) {
        while let Some(id) = inner.order.front() {
            let old = inner
                .images
                .get(id)
                .is_none_or(|(at, _)| now.duration_since(*at) >= ttl);
            if !old {
                break;
            }
            if let Some(id) = inner.order.pop_front() {
                inner.images.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_max_and_forgets_the_oldest() {
        let store = ImageStore::new(&StoreConfig {
            ttl_secs: 60,
            max_images: 2,
        });
        let a = store.put(vec![1]);
        let b = store.put(vec![2]);
        let c = store.put(vec![3]);
        assert!(store.get(&a).is_none());
        assert_eq!(store.get(&b).as_deref(), Some(&[2u8][..]));
        assert_eq!(store.get(&c).as_deref(), Some(&[3u8][..]));
        assert_ne!(b, c);
        assert!(store.get("nope").is_none());
    }
}
