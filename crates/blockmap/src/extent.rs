//! Byte ranges of a disk, and sets of them.

/// A byte range: `offset .. offset + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// The `len` bytes from `offset`.
    pub fn new(offset: u64, len: u64) -> Self {
        Self { offset, len }
    }

    /// One past the last byte (saturating, so a hostile length cannot wrap).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// A set of bytes, kept as sorted, non-overlapping, non-adjacent extents.
///
/// Inserting in increasing order (what parsers walking an allocation bitmap do) is O(1)
/// amortized; other orders are O(n) per insert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtentSet {
    extents: Vec<Extent>,
}

impl ExtentSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set of one range.
    pub fn range(offset: u64, len: u64) -> Self {
        let mut s = Self::new();
        s.insert(offset, len);
        s
    }

    /// Adds `offset .. offset + len` (clamped at `u64::MAX`); empty ranges are ignored.
    pub fn insert(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        if end <= offset {
            return;
        }
        if let Some(last) = self.extents.last_mut() {
            if offset >= last.offset {
                if offset <= last.end() {
                    last.len = last.len.max(end - last.offset);
                } else {
                    self.extents.push(Extent::new(offset, end - offset));
                }
                return;
            }
        } else {
            self.extents.push(Extent::new(offset, end - offset));
            return;
        }
        // Out of order: find the extents that touch [offset, end) and merge them.
        let first = self.extents.partition_point(|e| e.end() < offset);
        let last = self.extents.partition_point(|e| e.offset <= end);
        if first == last {
            self.extents
                .insert(first, Extent::new(offset, end - offset));
            return;
        }
        let start = self.extents[first].offset.min(offset);
        let stop = self.extents[last - 1].end().max(end);
        self.extents
            .splice(first..last, [Extent::new(start, stop - start)]);
    }

    /// Adds every extent of `other`.
    pub fn union(&mut self, other: &ExtentSet) {
        if other.extents.is_empty() {
            return;
        }
        let mut all = Vec::with_capacity(self.extents.len() + other.extents.len());
        let (mut a, mut b) = (
            self.extents.iter().peekable(),
            other.extents.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.offset <= y.offset => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            if let Some(&e) = next {
                all.push(e);
            }
        }
        let mut merged = ExtentSet::new();
        for e in all {
            merged.insert(e.offset, e.len);
        }
        *self = merged;
    }

    /// The bytes of `self` that are not in `other`.
    pub fn subtract(&self, other: &ExtentSet) -> ExtentSet {
        let mut out = ExtentSet::new();
        let mut j = 0;
        for e in &self.extents {
            let mut at = e.offset;
            let end = e.end();
            while j < other.extents.len() && other.extents[j].end() <= at {
                j += 1;
            }
            let mut k = j;
            while at < end && k < other.extents.len() && other.extents[k].offset < end {
                let o = other.extents[k];
                if o.offset > at {
                    out.insert(at, o.offset - at);
                }
                at = at.max(o.end());
                k += 1;
            }
            if at < end {
                out.insert(at, end - at);
            }
        }
        out
    }

    /// The bytes in both sets.
    pub fn intersect(&self, other: &ExtentSet) -> ExtentSet {
        let mut out = ExtentSet::new();
        let (mut i, mut j) = (0, 0);
        while i < self.extents.len() && j < other.extents.len() {
            let (a, b) = (self.extents[i], other.extents[j]);
            let start = a.offset.max(b.offset);
            let end = a.end().min(b.end());
            if start < end {
                out.insert(start, end - start);
            }
            if a.end() <= b.end() {
                i += 1;
            } else {
                j += 1;
            }
        }
        out
    }

    /// Only the bytes inside `start .. end`.
    pub fn clip(&self, start: u64, end: u64) -> ExtentSet {
        self.intersect(&ExtentSet::range(start, end.saturating_sub(start)))
    }

    /// Moves every extent by `delta` bytes (relative to absolute positions).
    pub fn shifted(&self, delta: u64) -> ExtentSet {
        ExtentSet {
            extents: self
                .extents
                .iter()
                .map(|e| Extent::new(e.offset.saturating_add(delta), e.len))
                .collect(),
        }
    }

    /// Rounds every extent outward to multiples of `align` (a power of two), merging what
    /// then touches. Used to send whole sectors or blocks.
    pub fn aligned(&self, align: u64) -> ExtentSet {
        debug_assert!(align.is_power_of_two());
        let mut out = ExtentSet::new();
        for e in &self.extents {
            let start = e.offset & !(align - 1);
            let end = e.end().saturating_add(align - 1) & !(align - 1);
            out.insert(start, end - start);
        }
        out
    }

    /// Total bytes in the set.
    pub fn total(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// Number of extents.
    pub fn len(&self) -> usize {
        self.extents.len()
    }

    /// True when the set holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// True when `offset .. offset + len` is entirely in the set.
    pub fn contains(&self, offset: u64, len: u64) -> bool {
        let i = self.extents.partition_point(|e| e.end() <= offset);
        self.extents
            .get(i)
            .is_some_and(|e| e.offset <= offset && offset.saturating_add(len) <= e.end())
    }

    /// The extents, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Extent> + '_ {
        self.extents.iter()
    }

    /// The extents, in order, as a slice.
    pub fn as_slice(&self) -> &[Extent] {
        &self.extents
    }
}

impl FromIterator<Extent> for ExtentSet {
    fn from_iter<I: IntoIterator<Item = Extent>>(iter: I) -> Self {
        let mut v: Vec<Extent> = iter.into_iter().collect();
        v.sort_unstable();
        let mut s = ExtentSet::new();
        for e in v {
            s.insert(e.offset, e.len);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(v: &[(u64, u64)]) -> ExtentSet {
        v.iter().map(|&(o, l)| Extent::new(o, l)).collect()
    }

    fn bits(s: &ExtentSet, n: u64) -> Vec<bool> {
        (0..n).map(|i| s.contains(i, 1)).collect()
    }

    #[test]
    fn merges_adjacent_and_overlapping() {
        let mut s = ExtentSet::new();
        s.insert(0, 10);
        s.insert(10, 5);
        s.insert(30, 5);
        s.insert(12, 20);
        assert_eq!(s.as_slice(), &[Extent::new(0, 35)]);
        s.insert(50, 0);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn set_operations() {
        let a = set(&[(0, 10), (20, 10)]);
        let b = set(&[(5, 20)]);
        assert_eq!(a.subtract(&b), set(&[(0, 5), (25, 5)]));
        assert_eq!(a.intersect(&b), set(&[(5, 5), (20, 5)]));
        let mut u = a.clone();
        u.union(&b);
        assert_eq!(u, set(&[(0, 30)]));
        assert_eq!(a.clip(8, 22), set(&[(8, 2), (20, 2)]));
        assert_eq!(set(&[(5, 1), (4097, 10)]).aligned(4096), set(&[(0, 8192)]));
        assert_eq!(a.shifted(100), set(&[(100, 10), (120, 10)]));
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let mut s = ExtentSet::new();
        s.insert(u64::MAX - 5, 100);
        assert_eq!(s.total(), 5);
    }

    proptest! {
        #[test]
        fn behaves_like_a_bit_set(ops in proptest::collection::vec((0u64..200, 0u64..40), 0..40),
                                  other in proptest::collection::vec((0u64..200, 0u64..40), 0..10)) {
            let mut s = ExtentSet::new();
            let mut model = vec![false; 256];
            for &(o, l) in &ops {
                s.insert(o, l);
                for i in o..o + l { model[i as usize] = true; }
            }
            prop_assert_eq!(bits(&s, 256), model.clone());
            let w = s.as_slice().windows(2).all(|w| w[0].end() < w[1].offset);
            prop_assert!(w, "sorted, disjoint, not adjacent");
            let t: ExtentSet = other.iter().map(|&(o, l)| Extent::new(o, l)).collect();
            let tb = bits(&t, 256);
            let sub: Vec<bool> = model.iter().zip(&tb).map(|(a, b)| *a && !b).collect();
            let int: Vec<bool> = model.iter().zip(&tb).map(|(a, b)| *a && *b).collect();
            let uni: Vec<bool> = model.iter().zip(&tb).map(|(a, b)| *a || *b).collect();
            prop_assert_eq!(bits(&s.subtract(&t), 256), sub);
            prop_assert_eq!(bits(&s.intersect(&t), 256), int);
            let mut u = s.clone();
            u.union(&t);
            prop_assert_eq!(bits(&u, 256), uni);
            prop_assert_eq!(s.total(), model.iter().filter(|b| **b).count() as u64);
        }
    }
}
