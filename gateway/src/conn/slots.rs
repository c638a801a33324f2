//! [`Slots`]: a slab whose entries live in fixed chunks that never move.
//!
//! A slab in one `Vec` doubles as it grows: each growth copies every connection into a new
//! buffer twice the size and frees the old one, and the allocator keeps the pages of the freed
//! buffers until the worker next allocates (an idle worker does not). Ten thousand connections
//! held about 3 MB of such buffers, 300 bytes per connection beside the 192 of the entry
//! itself. Here the slab grows by one chunk of [`CHUNK`] entries at a time: nothing is copied,
//! nothing is left behind, and at most one chunk is partly used.

/// Entries per chunk: 256 connections of about 200 bytes, some 50 KiB.
pub(crate) const CHUNK: usize = 256;

#[derive(Debug)]
enum Entry<T> {
    Occupied(T),
    /// The next vacant slot after this one (`usize::MAX`: none).
    Vacant(usize),
}

/// A slab of `T` in chunks of [`CHUNK`]: keys are stable, the most recently freed slot is
/// reused first, and a key's entry never moves while it is occupied.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    chunks: Vec<Box<[Entry<T>]>>,
    /// The first vacant slot (`usize::MAX`: every chunk is full).
    free: usize,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            chunks: Vec::new(),
            free: usize::MAX,
            len: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Occupied entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The key the next [`insert`](Self::insert) will use.
    pub(crate) fn vacant_key(&mut self) -> usize {
        if self.free == usize::MAX {
            self.grow();
        }
        self.free
    }

    /// Stores `value` and returns its key.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        let key = self.vacant_key();
        let entry = self.entry_mut(key).expect("a vacant key is in a chunk");
        let Entry::Vacant(next) = *entry else {
            unreachable!("the free list holds vacant slots only")
        };
        *entry = Entry::Occupied(value);
        self.free = next;
        self.len += 1;
        key
    }

    /// The entry at `key`, if occupied.
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        match self.chunks.get(key / CHUNK)?.get(key % CHUNK)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// The entry at `key`, if occupied.
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entry_mut(key)? {
            Entry::Occupied(value) => Some(value),
            Entry::Vacant(_) => None,
        }
    }

    /// Takes the entry at `key` out, if occupied; its slot is the next one reused.
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let free = self.free;
        let entry = self.entry_mut(key)?;
        if matches!(entry, Entry::Vacant(_)) {
            return None;
        }
        let Entry::Occupied(value) = std::mem::replace(entry, Entry::Vacant(free)) else {
            unreachable!("checked above")
        };
        self.free = key;
        self.len -= 1;
        Some(value)
    }

    /// The occupied entries with their keys, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter_map(move |(i, entry)| match entry {
                    Entry::Occupied(value) => Some((c * CHUNK + i, value)),
                    Entry::Vacant(_) => None,
                })
        })
    }

    fn entry_mut(&mut self, key: usize) -> Option<&mut Entry<T>> {
        self.chunks.get_mut(key / CHUNK)?.get_mut(key % CHUNK)
    }

    /// Adds a chunk of vacant slots, chained in key order in front of the free list.
    fn grow(&mut self) {
        let base = self.chunks.len() * CHUNK;
        let free = self.free;
        let chunk: Box<[Entry<T>]> = (0..CHUNK)
            .map(|i| Entry::Vacant(if i + 1 < CHUNK { base + i + 1 } else { free }))
            .collect();
        self.chunks.push(chunk);
        self.free = base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_entries_never_move_as_it_grows() {
        let mut s = Slots::default();
        let keys: Vec<usize> = (0..3 * CHUNK + 5)
            .map(|i| s.insert(i.to_string()))
            .collect();
        assert_eq!(
            keys,
            (0..3 * CHUNK + 5).collect::<Vec<_>>(),
            "filled in key order"
        );
        assert_eq!(s.len(), 3 * CHUNK + 5);
        let first: *const String = s.get(0).unwrap();
        for i in 0..10 * CHUNK {
            s.insert(format!("more {i}"));
        }
        assert!(
            std::ptr::eq(first, s.get(0).unwrap()),
            "the first entry did not move"
        );
        for &k in &keys {
            assert_eq!(s.get(k).unwrap(), &k.to_string());
        }
        assert_eq!(s.chunks.len(), 14, "one chunk per {CHUNK} entries");
    }

    #[test]
    fn the_last_freed_slot_is_reused_first_and_vacant_slots_read_as_none() {
        let mut s = Slots::default();
        for i in 0..10 {
            s.insert(i);
        }
        assert_eq!(s.remove(3), Some(3));
        assert_eq!(s.remove(7), Some(7));
        assert_eq!(s.remove(7), None, "twice");
        assert_eq!(s.get(7), None);
        assert_eq!(s.get_mut(3), None);
        assert_eq!(s.get(CHUNK * 9), None, "past every chunk");
        assert_eq!(s.remove(CHUNK * 9), None);
        assert_eq!(s.len(), 8);
        assert_eq!(s.vacant_key(), 7);
        assert_eq!(s.insert(70), 7);
        assert_eq!(s.insert(30), 3);
        assert_eq!(s.insert(10), 10, "then the chunk's untouched slots");
        assert_eq!(
            s.iter().map(|(k, v)| (k, *v)).collect::<Vec<_>>(),
            vec![
                (0, 0),
                (1, 1),
                (2, 2),
                (3, 30),
                (4, 4),
                (5, 5),
                (6, 6),
                (7, 70),
                (8, 8),
                (9, 9),
                (10, 10)
            ]
        );
    }

    #[test]
    fn emptied_and_refilled_it_keeps_its_chunks() {
        let mut s = Slots::default();
        let keys: Vec<usize> = (0..CHUNK + 1).map(|i| s.insert(i)).collect();
        for k in keys {
            s.remove(k);
        }
        assert_eq!((s.len(), s.iter().count()), (0, 0));
        for i in 0..2 * CHUNK {
            s.insert(i);
        }
        assert_eq!(s.chunks.len(), 2);
    }
}
