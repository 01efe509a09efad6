//! Symbol tables with reference counts: each distinct value (a namespace, an
//! endpoint's identity, a policy list...) is kept once per store and rows
//! hold a 4-byte [`Sym`] for it. Every row holding a symbol holds one
//! reference; when the last row holding it is evicted the value is freed and
//! its slot reused, so a long-running store whose pod names churn holds only
//! the values its stored rows use.
//!
//! Values live in a `slab::Slab` (slots reused after a value is freed); a
//! `hashbrown::HashTable` of slot numbers, hashed by the caller's hash of the
//! value, finds a value's slot. A lookup takes a borrowed probe (a `&str`,
//! the incoming flow's `pb::Endpoint`) and clones it into the table only when
//! it is new.

use std::num::NonZeroU32;

use hashbrown::HashTable;
use slab::Slab;

/// A value's slot in a [`Table`], plus one (so that `Option<Sym>` takes 4
/// bytes; None stands for the absent or empty value, which takes no slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Sym(NonZeroU32);

impl Sym {
    /// The value's slot: slots are numbered densely from 0 (a table's
    /// [`Table::slots`] bounds them), so per-query caches can be vectors.
    pub(super) fn slot(self) -> usize {
        (self.0.get() - 1) as usize
    }

    fn of_slot(slot: usize) -> Option<Sym> {
        u32::try_from(slot + 1)
            .ok()
            .and_then(NonZeroU32::new)
            .map(Sym)
    }
}

/// A value a table can hold: how many heap bytes it owns beyond its own size.
pub(super) trait Value {
    /// The heap bytes the value owns (an estimate for nested messages).
    fn heap_bytes(&self) -> usize;
}

struct Entry<T> {
    value: T,
    hash: u64,
    refs: u32,
}

/// Values by symbol, with reference counts.
pub(super) struct Table<T> {
    entries: Slab<Entry<T>>,
    lookup: HashTable<u32>,
    heap: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            entries: Slab::new(),
            lookup: HashTable::new(),
            heap: 0,
        }
    }
}

impl<T: Value> Table<T> {
    /// The symbol of the value `eq` finds equal to `probe` (whose hash is
    /// `hash`), without taking a reference; None when the table has none.
    pub(super) fn find<Q: ?Sized>(
        &self,
        probe: &Q,
        hash: u64,
        eq: impl Fn(&T, &Q) -> bool,
    ) -> Option<Sym> {
        let slot = *self.lookup.find(hash, |&slot| {
            self.entries
                .get(slot as usize)
                .is_some_and(|e| e.hash == hash && eq(&e.value, probe))
        })?;
        Sym::of_slot(slot as usize)
    }

    /// The symbol of `probe`'s value, taking one reference; a value not yet
    /// held is made with `make`. None only if the table has 4 billion values
    /// (nothing is taken then).
    pub(super) fn intern<Q: ?Sized>(
        &mut self,
        probe: &Q,
        hash: u64,
        eq: impl Fn(&T, &Q) -> bool,
        make: impl FnOnce(&Q) -> T,
    ) -> Option<Sym> {
        if let Some(sym) = self.find(probe, hash, &eq) {
            self.retain(sym);
            return Some(sym);
        }
        let value = make(probe);
        let heap = value.heap_bytes();
        let slot = self.entries.vacant_key();
        let sym = Sym::of_slot(slot)?;
        let slot32 = u32::try_from(slot).ok()?;
        self.entries.insert(Entry {
            value,
            hash,
            refs: 1,
        });
        let entries = &self.entries;
        self.lookup.insert_unique(hash, slot32, |&s| {
            entries.get(s as usize).map_or(0, |e| e.hash)
        });
        self.heap += heap;
        Some(sym)
    }

    /// Takes one more reference to `sym` (a count that would overflow
    /// saturates: the value is then kept for good).
    pub(super) fn retain(&mut self, sym: Sym) {
        if let Some(e) = self.entries.get_mut(sym.slot()) {
            e.refs = e.refs.saturating_add(1);
        }
    }

    /// Drops one reference to `sym`, freeing the value with its last.
    pub(super) fn release(&mut self, sym: Sym) {
        let slot = sym.slot();
        let Some(e) = self.entries.get_mut(slot) else {
            return;
        };
        if e.refs == u32::MAX {
            return;
        }
        e.refs -= 1;
        if e.refs > 0 {
            return;
        }
        let hash = e.hash;
        if let Ok(found) = self.lookup.find_entry(hash, |&s| s as usize == slot) {
            found.remove();
        }
        let entry = self.entries.remove(slot);
        self.heap -= entry.value.heap_bytes();
    }

    /// The value of `sym`. A symbol always comes from this table and stays
    /// valid while referenced, so a miss is a bug: it panics.
    pub(super) fn get(&self, sym: Sym) -> &T {
        &self.entries[sym.slot()].value
    }

    /// The number of slots (every symbol's slot is below it).
    pub(super) fn slots(&self) -> usize {
        self.entries.capacity()
    }

    /// How many distinct values are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The bytes the table takes: its slots (free ones included), the hash
    /// table's buckets and control bytes, and the values' heap bytes.
    pub(super) fn bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry<T>>()
            + hash_table_bytes(self.lookup.capacity(), size_of::<u32>())
            + self.heap
    }

    /// The number of references to `sym` (tests check the counts).
    #[cfg(test)]
    pub(super) fn refs(&self, sym: Sym) -> u32 {
        self.entries.get(sym.slot()).map_or(0, |e| e.refs)
    }
}

/// The bytes of a hashbrown table holding up to `capacity` elements of
/// `element` bytes: its buckets (capacity is 7/8 of them) with one control
/// byte each.
pub(super) fn hash_table_bytes(capacity: usize, element: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (element + 1)
}

impl Value for Box<str> {
    fn heap_bytes(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(s: &str) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(s)
    }

    fn intern(t: &mut Table<Box<str>>, s: &str) -> Sym {
        t.intern(s, hash(s), |v, p| &**v == p, |p: &str| Box::from(p))
            .unwrap()
    }

    #[test]
    fn values_are_shared_counted_and_freed_with_their_last_reference() {
        let mut t = Table::<Box<str>>::default();
        let a = intern(&mut t, "shop");
        let b = intern(&mut t, "default");
        assert_eq!(intern(&mut t, "shop"), a);
        assert_eq!((t.len(), t.refs(a), t.refs(b)), (2, 2, 1));
        assert_eq!(&**t.get(a), "shop");
        t.release(a);
        assert_eq!(t.find("shop", hash("shop"), |v, p| &**v == p), Some(a));
        t.release(a);
        assert_eq!(t.find("shop", hash("shop"), |v, p| &**v == p), None);
        assert_eq!(t.len(), 1);
        // The freed slot is reused by the next new value.
        let c = intern(&mut t, "web");
        assert_eq!(c, a);
        assert_eq!(&**t.get(b), "default");
        assert_eq!(&**t.get(c), "web");
    }

    #[test]
    fn churning_values_do_not_grow_the_table() {
        let mut t = Table::<Box<str>>::default();
        let mut held = std::collections::VecDeque::new();
        for i in 0..10_000 {
            held.push_back(intern(&mut t, &format!("pod-{i}")));
            if held.len() > 100 {
                let old = held.pop_front().unwrap();
                t.release(old);
            }
        }
        assert_eq!(t.len(), 100);
        assert!(t.bytes() < 20_000, "{} bytes", t.bytes());
    }
}
