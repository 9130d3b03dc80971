//! The key index: every key in memory, by token hash and by id.
//!
//! Both maps hold the key itself (an `Arc<LiveKey>`, 8 bytes a slot) and
//! find it through the hash or id inside it: a lookup reads the map's
//! slot, then the key it needs anyway, where a map of `(hash, key)` pairs
//! kept a second copy of the 32-byte hash in every slot.

use std::borrow::Borrow;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use dashmap::mapref::multiple::RefMulti;
use keyward_core::KeyId;

use crate::engine::{DigestHasher, LiveKey};

/// Shards of the key maps, at least (a power of two). Many: two
/// verifications rarely share a shard lock's cache line.
const SHARDS: usize = 256;

/// Keys per shard an index is sized for at most: a shard's table (9 bytes a
/// slot) then fits a core's cache while an open fills it.
const KEYS_PER_SHARD: usize = 4_096;

/// A key, found by its token's hash.
struct ByHash(Arc<LiveKey>);

impl Hash for ByHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.policy().hash.0.hash(state);
    }
}

impl PartialEq for ByHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.policy().hash == other.0.policy().hash
    }
}

impl Eq for ByHash {}

impl Borrow<[u8; 32]> for ByHash {
    fn borrow(&self) -> &[u8; 32] {
        &self.0.policy().hash.0
    }
}

/// A key, found by its id.
struct ById(Arc<LiveKey>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.policy().id.hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.policy().id == other.0.policy().id
    }
}

impl Eq for ById {}

impl Borrow<KeyId> for ById {
    fn borrow(&self) -> &KeyId {
        &self.0.policy().id
    }
}

/// Every key in memory. A key is cloned out of a map: no map guard is held
/// while a caller uses it (lock order, see `writer`).
pub(crate) struct Keys {
    /// Token hashes are uniform: their first bytes are the hash (see
    /// [`DigestHasher`]).
    by_hash: DashMap<ByHash, (), BuildHasherDefault<DigestHasher>>,
    /// Key ids end with 80 random bits, drawn by the engine from the
    /// operating system's generator (no caller chooses the id of a key it
    /// adds, so none can pick ids that collide): [`DigestHasher`] folds
    /// the id's two words into one, uniform through its random half.
    by_id: DashMap<ById, (), BuildHasherDefault<DigestHasher>>,
}

impl Keys {
    /// An index sized for `n` keys (it grows past them).
    pub(crate) fn with_capacity(n: usize) -> Self {
        let shards = (n / KEYS_PER_SHARD).next_power_of_two().clamp(SHARDS, 1 << 16);
        Self {
            by_hash: DashMap::with_capacity_and_hasher_and_shard_amount(n, Default::default(), shards),
            by_id: DashMap::with_capacity_and_hasher_and_shard_amount(n, Default::default(), shards),
        }
    }

    /// The key whose token hashes to `hash`.
    pub(crate) fn by_hash(&self, hash: &[u8; 32]) -> Option<Arc<LiveKey>> {
        self.by_hash.get(hash).map(|k| Arc::clone(&k.key().0))
    }

    /// Whether a key's token hashes to `hash`.
    pub(crate) fn contains_hash(&self, hash: &[u8; 32]) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// The key `id`.
    pub(crate) fn get(&self, id: &KeyId) -> Option<Arc<LiveKey>> {
        self.by_id.get(id).map(|k| Arc::clone(&k.key().0))
    }

    /// Adds a key, or replaces the one with its id (and token) in one step
    /// per map: a verification finds the old version or the new one.
    pub(crate) fn insert(&self, live: Arc<LiveKey>) {
        match self.by_hash.entry(ByHash(Arc::clone(&live))) {
            Entry::Occupied(e) => drop(e.replace_entry(())),
            Entry::Vacant(e) => drop(e.insert(())),
        }
        match self.by_id.entry(ById(live)) {
            Entry::Occupied(e) => drop(e.replace_entry(())),
            Entry::Vacant(e) => drop(e.insert(())),
        }
    }

    /// Adds keys not in the index yet, at open: into each map in the order
    /// of its shards, so the inserts fill one shard's table after another
    /// (each small enough to stay in cache meanwhile) instead of touching
    /// the whole index at random. Run `part` of `parts` running at once
    /// starts at its own share of the shards, so they rarely meet in one.
    pub(crate) fn insert_new(&self, keys: &mut [(usize, Arc<LiveKey>)], part: usize, parts: usize) {
        let offset = keys.len() * part / parts.max(1);
        // A shard is chosen by the bits below the hash's top 7 (dashmap
        // leaves those to hashbrown): rotated to the top, they sort first.
        for (order, k) in keys.iter_mut() {
            *order = self.by_id.hash_usize(&k.policy().id).rotate_left(7);
        }
        keys.sort_unstable_by_key(|(order, _)| *order);
        keys.rotate_left(offset);
        for (_, k) in keys.iter() {
            self.by_id.insert(ById(Arc::clone(k)), ());
        }
        for (order, k) in keys.iter_mut() {
            *order = self.by_hash.hash_usize(&k.policy().hash.0).rotate_left(7);
        }
        keys.sort_unstable_by_key(|(order, _)| *order);
        keys.rotate_left(offset);
        for (_, k) in keys.iter() {
            self.by_hash.insert(ByHash(Arc::clone(k)), ());
        }
    }

    /// Removes key `id`.
    pub(crate) fn remove(&self, id: &KeyId) {
        if let Some((ById(live), ())) = self.by_id.remove(id) {
            self.by_hash.remove(&live.policy().hash.0);
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Every key, in no order. Each item holds a read lock of its shard.
    pub(crate) fn iter(&self) -> impl Iterator<Item = KeyRef<'_>> {
        self.by_id.iter().map(KeyRef)
    }
}

/// A key met by [`Keys::iter`].
pub(crate) struct KeyRef<'a>(RefMulti<'a, ById, ()>);

impl Deref for KeyRef<'_> {
    type Target = Arc<LiveKey>;
    fn deref(&self) -> &Arc<LiveKey> {
        &self.0.key().0
    }
}
