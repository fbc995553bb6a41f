//! Merkle tree hashing and proof verification, RFC 9162 section 2.1.
//!
//! A worker's statements are the leaves of its append-only log (DESIGN.md,
//! "The binding", step 5); a bundle carries the inclusion proof of its
//! statement in a checkpointed tree, and a verifier that saw two checkpoints
//! of one log checks that the later one extends the earlier. RFC 9162 keeps
//! RFC 6962's tree: a leaf is `SHA-256(0x00 || data)`, an interior node
//! `SHA-256(0x01 || left || right)` (section 2.1.1), which is what C2SP
//! checkpoints and Go's sumdb commit to.
//!
//! The verifying algorithms are the RFC's own (sections 2.1.3.2 and
//! 2.1.4.2), step for step. Before them, the proof length is checked
//! against the exact length the sizes call for, so a wrong proof fails
//! with what was expected rather than a root mismatch, and no hash is
//! computed for a proof that could never verify.
//!
//! Subtree proofs, from draft-ietf-plants-merkle-tree-certs ("Subtrees",
//! "Subtree Inclusion Proofs", "Subtree Consistency Proofs"), prove a leaf
//! or an older subtree `[start, end)` against a larger tree; transparency-dev
//! ships vectors for them beside the RFC ones, and they are implemented here
//! so a verifier can check proofs against subtree signatures too.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions
)]

use core::fmt;

use ring::digest;

use crate::error::Error;

/// A SHA-256 hash: a leaf, an interior node or a root.
pub type Hash = [u8; 32];

/// Most nodes in an inclusion proof. A tree of at most `2^64 - 1` leaves
/// (sizes are `u64`) is at most 64 levels high, and an inclusion path
/// carries one sibling per level: each step of the RFC 9162 section 2.1.3.2
/// loop moves `sn` up at least one level, and `sn < 2^64`.
pub const MAX_INCLUSION_PROOF: usize = 64;

/// Most nodes in a consistency proof: the 64 of an inclusion path, plus
/// the root of the subtree the path starts from when the older size is not
/// a power of two (RFC 9162 section 2.1.4.2, step 2 prepends the older root
/// only when it is one). Sizes 3 and `2^63 + 1` reach it.
pub const MAX_CONSISTENCY_PROOF: usize = 65;

/// The root of the empty tree: the hash of the empty string (RFC 9162
/// section 2.1.1, `MTH({}) = HASH()`).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Domain separation prefixes, RFC 9162 section 2.1.1.
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

pub use crate::error::ProofFailure;

impl fmt::Display for ProofFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofFailure::IndexOutOfRange => f.write_str("leaf index is outside the tree"),
            ProofFailure::SizeOrder => f.write_str("the first tree is larger than the second"),
            ProofFailure::EmptyTree => {
                f.write_str("no consistency proof exists from the empty tree")
            }
            ProofFailure::InvalidSubtree => f.write_str("not a valid subtree"),
            ProofFailure::TooLong { found, max } => {
                write!(f, "{found} nodes, more than any tree needs ({max})")
            }
            ProofFailure::WrongLength { found, expected } => {
                write!(f, "{found} nodes, expected {expected}")
            }
            ProofFailure::FirstRootMismatch => f.write_str("does not lead back to the first root"),
            ProofFailure::RootMismatch => f.write_str("does not lead to the root given"),
            ProofFailure::EmptySubtreeHash => {
                f.write_str("an empty subtree's hash is not the empty tree's")
            }
        }
    }
}

/// The hash of a leaf: `SHA-256(0x00 || data)` (RFC 9162 section 2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)` (RFC 9162
/// section 2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish())
}

fn to_hash(d: digest::Digest) -> Hash {
    let mut h = [0; 32];
    // A SHA-256 digest is 32 bytes; zip copies what both sides have.
    for (dst, src) in h.iter_mut().zip(d.as_ref()) {
        *dst = *src;
    }
    h
}

/// A hash from bytes received (a bundle, a JSON proof), which must be
/// exactly 32 bytes. `what` names the field for the error.
pub fn hash_from_slice(what: &'static str, bytes: &[u8]) -> Result<Hash, Error> {
    Hash::try_from(bytes).map_err(|_| Error::HashLength {
        what,
        len: bytes.len(),
    })
}

/// The root of the tree of `size` leaves that the inclusion `proof` for the
/// leaf `leaf_hash` at `index` leads to (RFC 9162 section 2.1.3.2, without
/// the final comparison).
pub fn root_from_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, Error> {
    chain_inclusion(leaf_hash, index, size, proof).map_err(|reason| Error::InclusionProof {
        index,
        size,
        reason,
    })
}

/// Verify that `proof` shows the leaf `leaf_hash` at `index` is in the tree
/// of `size` leaves whose root is `root` (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), Error> {
    let computed = root_from_inclusion(leaf_hash, index, size, proof)?;
    if computed != *root {
        return Err(Error::InclusionProof {
            index,
            size,
            reason: ProofFailure::RootMismatch,
        });
    }
    Ok(())
}

/// The root of the tree of `size2` leaves that the consistency `proof` from
/// the tree of `size1` leaves with root `root1` leads to, once it has led
/// back to `root1` (RFC 9162 section 2.1.4.2, without the final comparison
/// with the second root).
pub fn root_from_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
) -> Result<Hash, Error> {
    chain_consistency(size1, size2, proof, root1).map_err(|reason| Error::ConsistencyProof {
        size1,
        size2,
        reason,
    })
}

/// Verify that `proof` shows the tree of `size2` leaves with root `root2`
/// extends the tree of `size1` leaves with root `root1` (RFC 9162 section
/// 2.1.4.2). Equal sizes need an empty proof and equal roots; `size1 = 0`
/// is refused.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), Error> {
    let computed = root_from_consistency(size1, size2, proof, root1)?;
    if computed != *root2 {
        return Err(Error::ConsistencyProof {
            size1,
            size2,
            reason: ProofFailure::RootMismatch,
        });
    }
    Ok(())
}

/// Verify that `proof` shows the leaf `leaf_hash` at `index` is in the
/// subtree `[start, end)` whose hash is `subtree_root`
/// (draft-ietf-plants-merkle-tree-certs, "Subtree Inclusion Proofs"). The
/// proof is the inclusion proof of `index - start` in a tree of
/// `end - start` leaves.
pub fn verify_subtree_inclusion(
    leaf_hash: &Hash,
    index: u64,
    start: u64,
    end: u64,
    proof: &[Hash],
    subtree_root: &Hash,
) -> Result<(), Error> {
    let err = |reason| Error::SubtreeInclusionProof {
        index,
        start,
        end,
        reason,
    };
    // An empty range holds no leaf, and is no subtree to prove inclusion in.
    if start >= end || !is_subtree(start, end) {
        return Err(err(ProofFailure::InvalidSubtree));
    }
    let (Some(relative), Some(size)) = (index.checked_sub(start), end.checked_sub(start)) else {
        return Err(err(ProofFailure::IndexOutOfRange));
    };
    let computed = chain_inclusion(leaf_hash, relative, size, proof).map_err(err)?;
    if computed != *subtree_root {
        return Err(err(ProofFailure::RootMismatch));
    }
    Ok(())
}

/// Verify that `proof` shows the subtree `[start, end)` whose hash is
/// `subtree_root` is part of the tree of `size` leaves whose root is `root`
/// (draft-ietf-plants-merkle-tree-certs, "Subtree Consistency Proofs").
///
/// With `start = 0` this is an RFC 9162 consistency proof from `end` to
/// `size`. An empty subtree (`start = end`) is part of every tree: it needs
/// an empty proof and the empty tree's hash, and `root` is not consulted,
/// as transparency-dev's verifier and vectors have it.
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    subtree_root: &Hash,
    root: &Hash,
) -> Result<(), Error> {
    let err = |reason| Error::SubtreeConsistencyProof {
        start,
        end,
        size,
        reason,
    };
    if start > end || !is_subtree(start, end) {
        return Err(err(ProofFailure::InvalidSubtree));
    }
    if end > size {
        return Err(err(ProofFailure::SizeOrder));
    }
    if start == end {
        if !proof.is_empty() {
            return Err(err(ProofFailure::WrongLength {
                found: proof.len(),
                expected: 0,
            }));
        }
        if *subtree_root != EMPTY_ROOT {
            return Err(err(ProofFailure::EmptySubtreeHash));
        }
        return Ok(());
    }
    let computed = chain_subtree_consistency(start, end, size, proof, subtree_root).map_err(err)?;
    if computed != *root {
        return Err(err(ProofFailure::RootMismatch));
    }
    Ok(())
}

/// Whether `[start, end)`, `start <= end`, is a subtree: `start` is a
/// multiple of `BIT_CEIL(end - start)` (draft-ietf-plants-merkle-tree-certs,
/// "Subtrees"). Empty ranges pass; callers decide what they mean.
fn is_subtree(start: u64, end: u64) -> bool {
    let Some(len) = end.checked_sub(start) else {
        return false;
    };
    if start == 0 || len == 0 {
        return true;
    }
    // BIT_CEIL(len) > 2^63 does not fit a u64, and no nonzero start is a
    // multiple of 2^64.
    match len.checked_next_power_of_two() {
        Some(ceil) => start.trailing_zeros() >= ceil.trailing_zeros(),
        None => false,
    }
}

/// One step up both the paths of RFC 9162's verifying loops: shift `fn`
/// and `sn` right once.
fn up(fn_: &mut u64, sn: &mut u64) {
    *fn_ >>= 1u32;
    *sn >>= 1u32;
}

/// The number of nodes an inclusion proof for `index` in a tree of `size`
/// leaves has: the RFC 9162 section 2.1.3.2 loop, run without hashing.
/// Requires `index < size`. At most [`MAX_INCLUSION_PROOF`].
fn inclusion_len(index: u64, size: u64) -> usize {
    let mut fn_ = index;
    let mut sn = size.saturating_sub(1);
    let mut n = 0usize;
    while sn != 0 {
        if fn_ & 1 == 0 && fn_ == sn {
            while fn_ & 1 == 0 && fn_ != 0 {
                up(&mut fn_, &mut sn);
            }
        }
        up(&mut fn_, &mut sn);
        n = n.saturating_add(1);
    }
    n
}

/// RFC 9162 section 2.1.3.2, steps 1 to 5, returning `r` instead of
/// comparing it.
fn chain_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofFailure> {
    // Step 1.
    if index >= size {
        return Err(ProofFailure::IndexOutOfRange);
    }
    if proof.len() > MAX_INCLUSION_PROOF {
        return Err(ProofFailure::TooLong {
            found: proof.len(),
            max: MAX_INCLUSION_PROOF,
        });
    }
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(ProofFailure::WrongLength {
            found: proof.len(),
            expected,
        });
    }
    // Steps 2 and 3; `size > index >= 0`, so `size - 1` does not wrap.
    let mut fn_ = index;
    let mut sn = size.saturating_sub(1);
    let mut r = *leaf_hash;
    // Step 4.
    for p in proof {
        if sn == 0 {
            // Unreachable after the length check; kept as the RFC says.
            return Err(ProofFailure::WrongLength {
                found: proof.len(),
                expected,
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    up(&mut fn_, &mut sn);
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        up(&mut fn_, &mut sn);
    }
    // Step 5, the part about `sn`.
    if sn != 0 {
        return Err(ProofFailure::WrongLength {
            found: proof.len(),
            expected,
        });
    }
    Ok(r)
}

/// The number of nodes a consistency proof from `size1` to `size2` has,
/// `0 < size1 < size2`: the RFC 9162 section 2.1.4.2 loop run without
/// hashing, plus the first node when step 2 does not supply it. At most
/// [`MAX_CONSISTENCY_PROOF`].
fn consistency_len(size1: u64, size2: u64) -> usize {
    let mut fn_ = size1.saturating_sub(1);
    let mut sn = size2.saturating_sub(1);
    while fn_ & 1 == 1 {
        up(&mut fn_, &mut sn);
    }
    let mut n = usize::from(!size1.is_power_of_two());
    while sn != 0 {
        // Only the branch of step 6 that hashes a left sibling with an
        // even `fn` moves more than one level.
        if fn_ & 1 == 0 && fn_ == sn {
            while fn_ & 1 == 0 && fn_ != 0 {
                up(&mut fn_, &mut sn);
            }
        }
        up(&mut fn_, &mut sn);
        n = n.saturating_add(1);
    }
    n
}

/// RFC 9162 section 2.1.4.2, returning `sr` once `fr` matched `root1`.
/// Equal sizes follow section 2.1.4.1: `PROOF(m, D[m])` is empty.
fn chain_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
) -> Result<Hash, ProofFailure> {
    if size1 > size2 {
        return Err(ProofFailure::SizeOrder);
    }
    if size1 == 0 {
        return Err(ProofFailure::EmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofFailure::WrongLength {
                found: proof.len(),
                expected: 0,
            });
        }
        return Ok(*root1);
    }
    if proof.len() > MAX_CONSISTENCY_PROOF {
        return Err(ProofFailure::TooLong {
            found: proof.len(),
            max: MAX_CONSISTENCY_PROOF,
        });
    }
    // Step 1 (an empty proof) is covered here: every expected length is at
    // least 1 when size1 < size2.
    let expected = consistency_len(size1, size2);
    if proof.len() != expected {
        return Err(ProofFailure::WrongLength {
            found: proof.len(),
            expected,
        });
    }
    // Step 2: a power-of-two first tree is itself the first node.
    let (seed, rest) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => {
                return Err(ProofFailure::WrongLength { found: 0, expected });
            }
        }
    };
    // Steps 3 and 4; `size2 > size1 > 0`.
    let mut fn_ = size1.saturating_sub(1);
    let mut sn = size2.saturating_sub(1);
    while fn_ & 1 == 1 {
        up(&mut fn_, &mut sn);
    }
    // Step 5.
    let mut fr = *seed;
    let mut sr = *seed;
    // Step 6.
    for c in rest {
        if sn == 0 {
            return Err(ProofFailure::WrongLength {
                found: proof.len(),
                expected,
            });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    up(&mut fn_, &mut sn);
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        up(&mut fn_, &mut sn);
    }
    // Step 7.
    if sn != 0 {
        return Err(ProofFailure::WrongLength {
            found: proof.len(),
            expected,
        });
    }
    if fr != *root1 {
        return Err(ProofFailure::FirstRootMismatch);
    }
    Ok(sr)
}

/// Bits needed to write `x`: 0 for 0, else one more than the index of the
/// highest set bit.
fn bit_len(x: u64) -> u32 {
    u64::BITS.saturating_sub(x.leading_zeros())
}

/// `x >> n`, 0 once every bit is shifted out (`n >= 64`).
fn shr(x: u64, n: u32) -> u64 {
    x.checked_shr(n).unwrap_or(0)
}

/// A subtree consistency proof for a valid, non-empty `[start, end)` in a
/// tree of `size >= end` leaves: the root of that tree, once the proof led
/// back to `subtree_root`.
///
/// The proof has two parts. The first rebuilds the subtree twice from the
/// root of its rightmost perfect subtree (the proof's first node, unless the
/// subtree is itself perfect and that node is `subtree_root`): once as it is,
/// with the left siblings only, and once grown to the larger tree, with the
/// right siblings below the level where the paths to `end - 1` and
/// `size - 1` part. The second part is an RFC 9162 inclusion proof of the
/// grown subtree's node in the larger tree, one level per subtree height
/// shifted down so the node is a leaf.
fn chain_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    subtree_root: &Hash,
) -> Result<Hash, ProofFailure> {
    if start == 0 && end == size {
        if !proof.is_empty() {
            return Err(ProofFailure::WrongLength {
                found: proof.len(),
                expected: 0,
            });
        }
        return Ok(*subtree_root);
    }
    if proof.is_empty() {
        return Err(ProofFailure::WrongLength {
            found: 0,
            expected: 1,
        });
    }
    if proof.len() > MAX_CONSISTENCY_PROOF {
        return Err(ProofFailure::TooLong {
            found: proof.len(),
            max: MAX_CONSISTENCY_PROOF,
        });
    }
    // end > start >= 0 and size >= end > 0 here.
    let last = end.saturating_sub(1);
    // Height of the subtree's node: where the paths to `start` and
    // `end - 1` meet.
    let height = bit_len(last ^ start);
    let index = shr(start, height);

    if end == size {
        // The subtree's node is on the larger tree's right edge: above it,
        // one left sibling for each level where it is a right child.
        let expected = usize::try_from(index.count_ones()).unwrap_or(usize::MAX);
        if proof.len() != expected {
            return Err(ProofFailure::WrongLength {
                found: proof.len(),
                expected,
            });
        }
        return Ok(proof.iter().fold(*subtree_root, |r, p| node_hash(p, &r)));
    }

    let len = end.saturating_sub(start);
    // Level of the rightmost perfect subtree inside [start, end): the proof
    // starts there.
    let shift = len.trailing_zeros();
    // Level where the paths to `end - 1` and `size - 1` part; above it,
    // nothing lies right of the subtree that it does not already cover.
    let fork = bit_len(last ^ size.saturating_sub(1));
    let (seed, rest) = if len.is_power_of_two() {
        (subtree_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => {
                return Err(ProofFailure::WrongLength {
                    found: 0,
                    expected: 1,
                });
            }
        }
    };
    let expected = usize::from(!len.is_power_of_two())
        .saturating_add(usize::try_from(fork.saturating_sub(shift)).unwrap_or(usize::MAX))
        .saturating_add(usize::try_from(shr(last, fork).count_ones()).unwrap_or(usize::MAX));
    if proof.len() != expected {
        return Err(ProofFailure::WrongLength {
            found: proof.len(),
            expected,
        });
    }

    let mut nodes = rest.iter();
    let mut sub = *seed;
    let mut grown = *seed;
    for level in shift..height {
        if shr(last, level) & 1 == 1 {
            // A left sibling, part of both versions.
            let Some(p) = nodes.next() else {
                return Err(ProofFailure::WrongLength {
                    found: proof.len(),
                    expected,
                });
            };
            sub = node_hash(p, &sub);
            grown = node_hash(p, &grown);
        } else if level < fork {
            // A right sibling, which only the grown version has.
            let Some(p) = nodes.next() else {
                return Err(ProofFailure::WrongLength {
                    found: proof.len(),
                    expected,
                });
            };
            grown = node_hash(&grown, p);
        }
    }
    if sub != *subtree_root {
        return Err(ProofFailure::FirstRootMismatch);
    }
    let remaining = nodes.as_slice();
    // The grown node, as a leaf of the tree shifted down `height` levels.
    let shifted_size = shr(size.saturating_sub(1), height).saturating_add(1);
    chain_inclusion(&grown, index, shifted_size, remaining).map_err(|e| match e {
        // The length was checked as a whole above; a part that does not fit
        // is still a wrong length for the whole proof.
        ProofFailure::WrongLength { .. } | ProofFailure::TooLong { .. } => {
            ProofFailure::WrongLength {
                found: proof.len(),
                expected,
            }
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test; sizes here are small.
    #![allow(
        clippy::unwrap_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::as_conversions
    )]
    use super::*;

    /// MTH(D[lo:hi]) by the RFC's recursive definition (section 2.1.1).
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = largest_power_below(n);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// PATH(m, D[n]), RFC 9162 section 2.1.3.1.
    fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = largest_power_below(n);
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// SUBPROOF(m, D[n], b), RFC 9162 section 2.1.4.1.
    fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { Vec::new() } else { vec![mth(leaves)] };
        }
        let k = largest_power_below(n);
        if m <= k {
            let mut p = subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn largest_power_below(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, to_hash(digest::digest(&digest::SHA256, b"")));
    }

    #[test]
    fn mth_matches_rfc_recursion() {
        // The 7-leaf example tree of RFC 9162 section 2.1.5 shape.
        let l = leaves(7);
        let ab = node_hash(&l[0], &l[1]);
        let cd = node_hash(&l[2], &l[3]);
        let ef = node_hash(&l[4], &l[5]);
        let expected = node_hash(&node_hash(&ab, &cd), &node_hash(&ef, &l[6]));
        assert_eq!(mth(&l), expected);
    }

    #[test]
    fn every_inclusion_proof_up_to_64_verifies_and_has_the_computed_length() {
        let all = leaves(64);
        for size in 1..=64 {
            let root = mth(&all[..size]);
            for index in 0..size {
                let proof = path(index, &all[..size]);
                assert_eq!(
                    proof.len(),
                    inclusion_len(index as u64, size as u64),
                    "{index}/{size}"
                );
                verify_inclusion(&all[index], index as u64, size as u64, &proof, &root).unwrap();
            }
        }
    }

    #[test]
    fn every_consistency_proof_up_to_64_verifies() {
        let all = leaves(64);
        for size2 in 1..=64 {
            let root2 = mth(&all[..size2]);
            for size1 in 1..=size2 {
                let proof = subproof(size1, &all[..size2], true);
                if size1 < size2 {
                    assert_eq!(proof.len(), consistency_len(size1 as u64, size2 as u64));
                }
                let root1 = mth(&all[..size1]);
                verify_consistency(size1 as u64, size2 as u64, &proof, &root1, &root2).unwrap();
                // A consistency proof from 0 is a subtree consistency proof
                // of [0, size1).
                verify_subtree_consistency(0, size1 as u64, size2 as u64, &proof, &root1, &root2)
                    .unwrap();
            }
        }
    }

    #[test]
    fn every_subtree_consistency_proof_up_to_32_verifies() {
        // Subtree proofs built from their definition over the RFC's MTH;
        // each verifies, and each with a flipped bit in its first node does
        // not.
        let all = leaves(32);
        for size in 1..=32u64 {
            let root = mth(&all[..size as usize]);
            for start in 0..size {
                for end in start + 1..=size {
                    if !is_subtree(start, end) {
                        continue;
                    }
                    let sub = mth(&all[start as usize..end as usize]);
                    let proof = subtree_consistency_proof(&all[..size as usize], start, end);
                    verify_subtree_consistency(start, end, size, &proof, &sub, &root)
                        .unwrap_or_else(|e| panic!("[{start}, {end}) in {size}: {e}"));
                    if !proof.is_empty() {
                        let mut bad = proof.clone();
                        bad[0][0] ^= 1;
                        assert!(
                            verify_subtree_consistency(start, end, size, &bad, &sub, &root)
                                .is_err()
                        );
                    }
                }
            }
        }
    }

    /// The proof `chain_subtree_consistency` expects, by definition: the
    /// rightmost perfect subtree's root (unless the subtree is perfect), the
    /// siblings on the way up to the subtree's node (left ones for both
    /// versions, right ones below the fork), then the inclusion path of the
    /// grown node.
    fn subtree_consistency_proof(tree: &[Hash], start: u64, end: u64) -> Vec<Hash> {
        let size = tree.len() as u64;
        if start == 0 && end == size {
            return Vec::new();
        }
        let last = end - 1;
        let height = bit_len(last ^ start);
        let index = start >> height;
        let node = |level: u32, i: u64| -> Hash {
            let lo = (i << level).min(size);
            let hi = ((i + 1) << level).min(size);
            mth(&tree[lo as usize..hi as usize])
        };
        let mut proof = Vec::new();
        if end == size {
            let mut i = index;
            let mut level = height;
            while (size - 1) >> level > 0 {
                if i & 1 == 1 {
                    proof.push(node(level, i - 1));
                }
                i >>= 1;
                level += 1;
            }
            return proof;
        }
        let len = end - start;
        let shift = len.trailing_zeros();
        let fork = bit_len(last ^ (size - 1));
        if !len.is_power_of_two() {
            proof.push(node(shift, last >> shift));
        }
        for level in shift..height {
            let i = last >> level;
            if i & 1 == 1 {
                proof.push(node(level, i - 1));
            } else if level < fork {
                proof.push(node(level, i + 1));
            }
        }
        // Inclusion path of node (height, index) in the tree shifted down.
        let shifted: Vec<Hash> = (0..=((size - 1) >> height))
            .map(|i| node(height, i))
            .collect();
        proof.extend(path(index as usize, &shifted));
        proof
    }

    #[test]
    fn proof_length_bounds_are_reached() {
        assert_eq!(inclusion_len(0, u64::MAX), MAX_INCLUSION_PROOF);
        assert_eq!(consistency_len(3, (1 << 63) + 1), MAX_CONSISTENCY_PROOF);
        assert_eq!(
            chain_inclusion(&EMPTY_ROOT, 0, 2, &[EMPTY_ROOT; 65]),
            Err(ProofFailure::TooLong {
                found: 65,
                max: MAX_INCLUSION_PROOF
            })
        );
        assert_eq!(
            chain_consistency(1, 2, &[EMPTY_ROOT; 66], &EMPTY_ROOT),
            Err(ProofFailure::TooLong {
                found: 66,
                max: MAX_CONSISTENCY_PROOF
            })
        );
    }

    #[test]
    fn subtree_validity() {
        let cases = [
            (0, 0, true),
            (0, 7, true),
            (4, 8, true),
            (4, 7, true),
            (8, 13, true),
            (1, 3, false),
            (2, 5, false),
            (2, 6, false),
            (1, 15, false),
            (3, 3, true),
            (1, u64::MAX, false),
            (5, 4, false),
        ];
        for (start, end, valid) in cases {
            assert_eq!(is_subtree(start, end), valid, "[{start}, {end})");
        }
    }

    #[test]
    fn inclusion_failures_name_the_reason() {
        let all = leaves(5);
        let root = mth(&all);
        let proof = path(2, &all);
        let reason = |r: Result<(), Error>| match r {
            Err(Error::InclusionProof { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(verify_inclusion(&all[2], 5, 5, &proof, &root)),
            ProofFailure::IndexOutOfRange
        );
        assert_eq!(
            reason(verify_inclusion(&all[2], 2, 5, &proof[..2], &root)),
            ProofFailure::WrongLength {
                found: 2,
                expected: 3
            }
        );
        assert_eq!(
            reason(verify_inclusion(&all[3], 2, 5, &proof, &root)),
            ProofFailure::RootMismatch
        );
    }

    #[test]
    fn consistency_failures_name_the_reason() {
        let all = leaves(7);
        let proof = subproof(3, &all, true);
        let (r3, r7) = (mth(&all[..3]), mth(&all));
        let reason = |r: Result<(), Error>| match r {
            Err(Error::ConsistencyProof { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason(verify_consistency(7, 3, &proof, &r7, &r3)),
            ProofFailure::SizeOrder
        );
        assert_eq!(
            reason(verify_consistency(0, 7, &proof, &EMPTY_ROOT, &r7)),
            ProofFailure::EmptyTree
        );
        assert_eq!(
            reason(verify_consistency(3, 7, &proof, &r7, &r7)),
            ProofFailure::FirstRootMismatch
        );
        assert_eq!(
            reason(verify_consistency(3, 7, &proof, &r3, &r3)),
            ProofFailure::RootMismatch
        );
        assert_eq!(
            reason(verify_consistency(3, 3, &proof, &r3, &r3)),
            ProofFailure::WrongLength {
                found: 4,
                expected: 0
            }
        );
    }
}
