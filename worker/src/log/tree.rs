//! The tree's shape: where each perfect subtree's hash is stored, and which
//! stored hashes make a root or a proof (RFC 9162 section 2.1).
//!
//! Every perfect subtree's hash is stored once, when its last leaf arrives,
//! in the order they become known: leaf `n`'s hash, then one hash per level
//! its arrival completes (as many as `n` has trailing one bits). The hash
//! of the perfect subtree at `level` and `index` (leaves
//! `[index * 2^level, (index + 1) * 2^level)`) then has a position that
//! only arithmetic finds, the "stored hash index" of Russ Cox's
//! transparent-log design (research.swtch.com/tlog), and a tree of `n`
//! leaves stores `2n - popcount(n)` hashes. Roots and proofs of any size up
//! to `n` read O(log n) of them; nothing is recomputed from the leaves.
//!
//! The right border of the current tree (its perfect subtrees, largest
//! first, the "compact range" of transparency-dev) is kept in memory:
//! appending needs only those, and the current root is their fold.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use provenix_verifier::{EMPTY_ROOT, Hash, node_hash};

use super::Error;

/// A source of stored hashes.
pub(crate) trait Nodes {
    /// The hash of the perfect subtree at `level` and `index`.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Error>;
}

/// Hashes stored for a tree of `n` leaves: `sum over l >= 0 of n >> l`,
/// which is `2n - popcount(n)`. `None` past `u64`.
pub(crate) fn stored_count(n: u64) -> Option<u64> {
    n.checked_mul(2)?.checked_sub(u64::from(n.count_ones()))
}

/// The position of the hash of the perfect subtree at `level` and `index`:
/// after the hashes of every leaf before its last leaf, that leaf's hash,
/// then one per level up to `level`.
pub(crate) fn stored_index(level: u32, index: u64) -> Option<u64> {
    let span = 1u64.checked_shl(level)?;
    let last = index.checked_add(1)?.checked_mul(span)?.checked_sub(1)?;
    stored_count(last)?.checked_add(u64::from(level))
}

/// The perfect subtrees of the tree of `size` leaves, largest (leftmost)
/// first, as `(level, index)`: one per set bit of `size`.
fn border_nodes(size: u64) -> impl Iterator<Item = (u32, u64)> {
    let mut start = 0u64;
    (0..u64::BITS).rev().filter_map(move |level| {
        let span = 1u64.checked_shl(level)?;
        if size & span == 0 {
            return None;
        }
        let index = start.checked_shr(level).unwrap_or(0);
        start = start.checked_add(span)?;
        Some((level, index))
    })
}

/// Fold perfect subtree hashes, leftmost first, into the hash of the range
/// they cover: RFC 9162's `MTH` splits a range at its largest power of two,
/// so the range is the leftmost subtree joined with the fold of the rest.
fn fold(parts: &[Hash]) -> Hash {
    let mut rest = parts.iter().rev();
    let Some(last) = rest.next() else {
        return EMPTY_ROOT;
    };
    rest.fold(*last, |right, left| node_hash(left, &right))
}

/// The right border of the tree: the hashes of its perfect subtrees.
#[derive(Clone, Debug)]
pub(crate) struct Border {
    size: u64,
    /// One per set bit of `size`, largest subtree first.
    nodes: Vec<Hash>,
}

impl Border {
    /// The border of the tree of `size` leaves, from stored hashes.
    pub(crate) fn load(size: u64, nodes: &impl Nodes) -> Result<Self, Error> {
        let nodes = border_nodes(size)
            .map(|(level, index)| nodes.node(level, index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Border { size, nodes })
    }

    /// Append a leaf: push onto `stored` the hashes it completes, in stored
    /// order (the leaf's first). `None` when the tree is full.
    pub(crate) fn push(&mut self, leaf: Hash, stored: &mut Vec<Hash>) -> Option<()> {
        let next = self.size.checked_add(1)?;
        stored.push(leaf);
        let mut hash = leaf;
        // Each trailing one bit of the old size is a perfect subtree the new
        // leaf's subtree now joins as its right sibling.
        for _ in 0..self.size.trailing_ones() {
            let Some(left) = self.nodes.pop() else {
                unreachable!("a border holds one node per set bit of its size");
            };
            hash = node_hash(&left, &hash);
            stored.push(hash);
        }
        self.nodes.push(hash);
        self.size = next;
        Some(())
    }

    /// The root of the tree (RFC 9162 section 2.1.1).
    pub(crate) fn root(&self) -> Hash {
        fold(&self.nodes)
    }
}

/// The hash of `[start, end)`, where `start` is a multiple of the smallest
/// power of two not below `end - start`: the ranges RFC 9162's recursion
/// (and so every proof) uses. Reads one stored hash per set bit of
/// `end - start`.
fn range_hash(nodes: &impl Nodes, start: u64, end: u64) -> Result<Hash, Error> {
    let mut parts = Vec::new();
    let mut at = start;
    while let Some(remaining) = end.checked_sub(at).filter(|r| *r > 0) {
        // The largest power of two that fits; the alignment of `start`
        // makes it a perfect subtree.
        let level = u64::BITS
            .saturating_sub(remaining.leading_zeros())
            .saturating_sub(1);
        let span = 1u64 << level;
        if at.trailing_zeros() < level {
            return Err(Error::Internal("proof range is not aligned"));
        }
        parts.push(nodes.node(level, at >> level)?);
        at = at
            .checked_add(span)
            .ok_or(Error::Internal("range overflow"))?;
    }
    Ok(fold(&parts))
}

/// The largest power of two below `n`, `n >= 2` (RFC 9162 section 2.1.1's
/// `k`).
fn split(n: u64) -> u64 {
    let below = n.saturating_sub(1);
    1u64 << u64::BITS
        .saturating_sub(below.leading_zeros())
        .saturating_sub(1)
}

/// The root of the tree of `size` leaves (`MTH(D[0:size])`).
pub(crate) fn root(nodes: &impl Nodes, size: u64) -> Result<Hash, Error> {
    range_hash(nodes, 0, size)
}

/// `PATH(index, D[0:size])`, RFC 9162 section 2.1.3.1, deepest node first.
/// Requires `index < size`.
pub(crate) fn inclusion_proof(
    nodes: &impl Nodes,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, Error> {
    let mut top_down = Vec::new();
    let (mut lo, mut hi) = (0u64, size);
    // Walk down the recursion: each step keeps the half holding `index` and
    // records the other half's hash, which the path needs.
    while let Some(n) = hi.checked_sub(lo).filter(|n| *n > 1) {
        let mid = lo
            .checked_add(split(n))
            .ok_or(Error::Internal("range overflow"))?;
        if index < mid {
            top_down.push(range_hash(nodes, mid, hi)?);
            hi = mid;
        } else {
            top_down.push(range_hash(nodes, lo, mid)?);
            lo = mid;
        }
    }
    top_down.reverse();
    Ok(top_down)
}

/// `PROOF(size1, D[0:size2])`, RFC 9162 section 2.1.4.1, deepest node
/// first. Requires `0 < size1 <= size2`.
pub(crate) fn consistency_proof(
    nodes: &impl Nodes,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, Error> {
    let mut top_down = Vec::new();
    let (mut lo, mut hi) = (0u64, size2);
    // SUBPROOF's flag `b`: whether the current subtree is still a prefix of
    // the tree the old root was computed over (then its hash is known).
    let mut whole = true;
    loop {
        let n = hi
            .checked_sub(lo)
            .ok_or(Error::Internal("range underflow"))?;
        let m = size1
            .checked_sub(lo)
            .ok_or(Error::Internal("range underflow"))?;
        if m == n {
            if !whole {
                top_down.push(range_hash(nodes, lo, hi)?);
            }
            break;
        }
        let mid = lo
            .checked_add(split(n))
            .ok_or(Error::Internal("range overflow"))?;
        if size1 <= mid {
            top_down.push(range_hash(nodes, mid, hi)?);
            hi = mid;
        } else {
            top_down.push(range_hash(nodes, lo, mid)?);
            lo = mid;
            whole = false;
        }
    }
    top_down.reverse();
    Ok(top_down)
}

#[cfg(test)]
mod tests {
    // Test code: small sizes, a failed unwrap is a failed test.
    #![allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions
    )]
    use super::*;
    use provenix_verifier::{leaf_hash, verify_consistency, verify_inclusion};

    /// Stored hashes in memory, indexed by `stored_index`.
    struct Memory(Vec<Hash>);

    impl Nodes for Memory {
        fn node(&self, level: u32, index: u64) -> Result<Hash, Error> {
            let i = stored_index(level, index).unwrap();
            Ok(self.0[usize::try_from(i).unwrap()])
        }
    }

    fn build(n: u64) -> (Memory, Vec<Hash>, Vec<Hash>) {
        let mut border = Border {
            size: 0,
            nodes: Vec::new(),
        };
        let mut stored = Vec::new();
        let mut leaves = Vec::new();
        let mut roots = vec![border.root()];
        for i in 0..n {
            let leaf = leaf_hash(&i.to_le_bytes());
            leaves.push(leaf);
            border.push(leaf, &mut stored).unwrap();
            assert_eq!(stored.len() as u64, stored_count(i + 1).unwrap());
            roots.push(border.root());
        }
        (Memory(stored), leaves, roots)
    }

    #[test]
    fn stored_positions_match_the_append_order() {
        // Leaf 0, leaf 1, (1,0), leaf 2, leaf 3, (1,1), (2,0), leaf 4 ...
        let expected = [
            (0, 0, 0),
            (0, 1, 1),
            (1, 0, 2),
            (0, 2, 3),
            (0, 3, 4),
            (1, 1, 5),
            (2, 0, 6),
            (0, 4, 7),
        ];
        for (level, index, at) in expected {
            assert_eq!(stored_index(level, index), Some(at), "({level}, {index})");
        }
        assert_eq!(stored_count(0), Some(0));
        assert_eq!(stored_count(7), Some(11));
        assert_eq!(stored_count(u64::MAX), None);
    }

    #[test]
    fn roots_and_proofs_from_stored_hashes_verify() {
        let (mem, leaves, roots) = build(40);
        for size in 1..=40u64 {
            let border = Border::load(size, &mem).unwrap();
            assert_eq!(border.root(), roots[size as usize]);
            assert_eq!(root(&mem, size).unwrap(), roots[size as usize]);
            for index in 0..size {
                let proof = inclusion_proof(&mem, index, size).unwrap();
                verify_inclusion(
                    &leaves[index as usize],
                    index,
                    size,
                    &proof,
                    &roots[size as usize],
                )
                .unwrap();
            }
            for size1 in 1..=size {
                let proof = consistency_proof(&mem, size1, size).unwrap();
                verify_consistency(
                    size1,
                    size,
                    &proof,
                    &roots[size1 as usize],
                    &roots[size as usize],
                )
                .unwrap();
            }
        }
    }
}
