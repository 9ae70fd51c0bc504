//! A small shared map of the most recently used entries, for the plans a node keeps.

use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

/// At most `capacity` entries, the least recently used dropped first; safe to share.
#[derive(Debug)]
pub(crate) struct Recent<K: Hash + Eq, V> {
    entries: Mutex<LruCache<K, V>>,
}

impl<K: Hash + Eq, V: Clone> Recent<K, V> {
    /// Empty, holding at most `capacity` entries (at least one).
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The value kept for `key`, if any (now the most recently used).
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.lock().get(key).cloned()
    }

    /// Keeps `value` for `key`.
    pub(crate) fn put(&self, key: K, value: V) {
        self.lock().put(key, value);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, V>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
