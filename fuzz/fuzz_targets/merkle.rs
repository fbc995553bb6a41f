//! Merkle proofs (RFC 9162 section 2.1, and the subtree proofs of
//! draft-ietf-plants-merkle-tree-certs): the verifiers never panic on any
//! index, sizes or proof; every proof of a reference tree built here
//! verifies; and one flipped bit in any node of such a proof makes it fail.
//!
//! The first byte picks what the rest is, by its low bit:
//!
//! ```text
//! 0  arbitrary: three little-endian u64 (index or start, size1 or end,
//!    size2 or size), two hashes (leaf or first root, root), then the
//!    proof, in 32-byte nodes (a shorter tail is ignored)
//! 1  a reference tree:
//!      0  u8  n: 1 + n % 64 leaves
//!      1  u8  m: the older tree for a consistency proof, 1 + m % n
//!      2  u8  the leaf to prove, modulo the tree's (or subtree's) size
//!      3  u8  the subtree's start, as one of its possible positions
//!      4  u8  the subtree's length, 1 + l % n
//!      5  u8  the proof node to flip, modulo the proof's length
//!      6  u8  the bit to flip in it
//!      7..    leaf data, cut into n equal parts
//! ```
//!
//! The reference proofs are the RFC's recursive definitions (MTH, PATH,
//! SUBPROOF) and the draft's subtree consistency proof, written here
//! independently of the verifier's iterative algorithms.

#![no_main]

use libfuzzer_sys::fuzz_target;
use provenix_verifier::{
    EMPTY_ROOT, Hash, hash_from_slice, leaf_hash, node_hash, root_from_consistency,
    root_from_inclusion, verify_consistency, verify_inclusion, verify_subtree_consistency,
    verify_subtree_inclusion,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        arbitrary(rest);
    } else {
        reference(rest);
    }
});

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(b)
}

fn hash_at(data: &[u8], at: usize) -> Hash {
    let mut h = [0; 32];
    h.copy_from_slice(&data[at..at + 32]);
    h
}

/// Whatever the numbers and nodes, the verifiers answer, and `verify_*`
/// accepts exactly when `root_from_*` leads to the root given.
fn arbitrary(data: &[u8]) {
    const HEADER: usize = 3 * 8 + 2 * 32;
    if data.len() < HEADER {
        return;
    }
    let (a, b, c) = (u64_at(data, 0), u64_at(data, 8), u64_at(data, 16));
    let (h1, h2) = (hash_at(data, 24), hash_at(data, 56));
    let proof: Vec<Hash> = data[HEADER..]
        .chunks_exact(32)
        .map(|n| hash_at(n, 0))
        .collect();
    let _ = hash_from_slice("fuzz", &data[HEADER..]);

    let inclusion = verify_inclusion(&h1, a, c, &proof, &h2);
    let root = root_from_inclusion(&h1, a, c, &proof);
    assert_eq!(
        inclusion.is_ok(),
        root.as_ref().ok() == Some(&h2),
        "{inclusion:?} {root:?}"
    );
    if let Err(e) = &inclusion {
        let _ = e.to_string();
    }

    let consistency = verify_consistency(b, c, &proof, &h1, &h2);
    let root = root_from_consistency(b, c, &proof, &h1);
    assert_eq!(
        consistency.is_ok(),
        root.as_ref().ok() == Some(&h2),
        "{consistency:?} {root:?}"
    );
    if let Err(e) = &consistency {
        let _ = e.to_string();
    }
    // A consistency proof from 0 is a subtree consistency proof of [0, b).
    if b > 0 {
        let subtree = verify_subtree_consistency(0, b, c, &proof, &h1, &h2);
        assert_eq!(subtree.is_ok(), consistency.is_ok(), "{subtree:?}");
    }

    if let Err(e) = verify_subtree_inclusion(&h1, a, b, c, &proof, &h2) {
        let _ = e.to_string();
    }
    if let Err(e) = verify_subtree_consistency(a, b, c, &proof, &h1, &h2) {
        let _ = e.to_string();
    }
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]), RFC 9162 section 2.1.1.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => EMPTY_ROOT,
        [leaf] => *leaf,
        _ => {
            let k = split_point(leaves.len());
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
    let k = split_point(n);
    let (mut p, sibling) = if m < k {
        (path(m, &leaves[..k]), mth(&leaves[k..]))
    } else {
        (path(m - k, &leaves[k..]), mth(&leaves[..k]))
    };
    p.push(sibling);
    p
}

/// The subtree consistency proof of `[start, end)` in `D[n]`, with
/// `known` telling whether the verifier knows the hash of the subtree
/// rooted where the recursion stands: SUBPROOF of RFC 9162 section 2.1.4.1
/// (which is the case `start = 0`), generalised to subtrees as
/// draft-ietf-plants-merkle-tree-certs does. `[start, end)` is a valid,
/// non-empty subtree of `leaves`.
fn subtree_proof(start: usize, end: usize, leaves: &[Hash], known: bool) -> Vec<Hash> {
    let n = leaves.len();
    if start == 0 && end == n {
        return if known { Vec::new() } else { vec![mth(leaves)] };
    }
    let k = split_point(n);
    let (mut p, sibling) = if end <= k {
        (
            subtree_proof(start, end, &leaves[..k], known),
            mth(&leaves[k..]),
        )
    } else if start >= k {
        (
            subtree_proof(start - k, end - k, &leaves[k..], known),
            mth(&leaves[..k]),
        )
    } else {
        // A subtree that straddles k starts at 0 (k is a power of two and
        // a subtree's start a multiple of the power of two above its size).
        assert_eq!(start, 0, "[{start}, {end}) of {n} is not a subtree");
        (
            subtree_proof(0, end - k, &leaves[k..], false),
            mth(&leaves[..k]),
        )
    };
    p.push(sibling);
    p
}

/// `proof` with bit `bit` of node `node` (both modulo) flipped; `None` for
/// an empty proof.
fn flipped(proof: &[Hash], node: u8, bit: u8) -> Option<Vec<Hash>> {
    if proof.is_empty() {
        return None;
    }
    let mut bad = proof.to_vec();
    let i = usize::from(node) % bad.len();
    bad[i][usize::from(bit / 8)] ^= 1 << (bit % 8);
    Some(bad)
}

fn flip(h: &Hash, bit: u8) -> Hash {
    let mut h = *h;
    h[usize::from(bit / 8)] ^= 1 << (bit % 8);
    h
}

fn reference(data: &[u8]) {
    let Some((&[n, m, leaf, start, len, node, bit], material)) = data.split_first_chunk::<7>()
    else {
        return;
    };
    let n = 1 + usize::from(n) % 64;
    let part = material.len() / n;
    let leaves: Vec<Hash> = (0..n)
        .map(|i| leaf_hash(&material[i * part..(i + 1) * part]))
        .collect();
    let root = mth(&leaves);
    let size = n as u64;

    // Inclusion of one leaf.
    let index = usize::from(leaf) % n;
    let proof = path(index, &leaves);
    let at = index as u64;
    if let Err(e) = verify_inclusion(&leaves[index], at, size, &proof, &root) {
        panic!("leaf {index} of {n}: {e}");
    }
    assert_eq!(
        root_from_inclusion(&leaves[index], at, size, &proof).ok(),
        Some(root)
    );
    if let Some(bad) = flipped(&proof, node, bit) {
        assert!(verify_inclusion(&leaves[index], at, size, &bad, &root).is_err());
    }
    assert!(verify_inclusion(&flip(&leaves[index], bit), at, size, &proof, &root).is_err());
    assert!(verify_inclusion(&leaves[index], at, size, &proof, &flip(&root, bit)).is_err());

    // Consistency of the first m leaves with all n.
    let m = 1 + usize::from(m) % n;
    let proof = subtree_proof(0, m, &leaves, true);
    let old_root = mth(&leaves[..m]);
    let old = m as u64;
    if let Err(e) = verify_consistency(old, size, &proof, &old_root, &root) {
        panic!("{m} to {n}: {e}");
    }
    assert_eq!(
        root_from_consistency(old, size, &proof, &old_root).ok(),
        Some(root)
    );
    if let Err(e) = verify_subtree_consistency(0, old, size, &proof, &old_root, &root) {
        panic!("[0, {m}) in {n}: {e}");
    }
    if let Some(bad) = flipped(&proof, node, bit) {
        assert!(verify_consistency(old, size, &bad, &old_root, &root).is_err());
        assert!(verify_subtree_consistency(0, old, size, &bad, &old_root, &root).is_err());
    }
    let bad_old = flip(&old_root, bit);
    assert!(verify_consistency(old, size, &proof, &bad_old, &root).is_err());
    assert!(verify_consistency(old, size, &proof, &old_root, &flip(&root, bit)).is_err());

    // A subtree [start, end): start is a multiple of the power of two at or
    // above its length.
    let len = 1 + usize::from(len) % n;
    let align = len.next_power_of_two();
    let start = align * (usize::from(start) % ((n - len) / align + 1));
    let end = start + len;
    let sub = &leaves[start..end];
    let sub_root = mth(sub);
    let (first, last) = (start as u64, end as u64);

    let index = start + usize::from(leaf) % len;
    let proof = path(index - start, sub);
    let at = index as u64;
    if let Err(e) = verify_subtree_inclusion(&leaves[index], at, first, last, &proof, &sub_root) {
        panic!("leaf {index} of [{start}, {end}): {e}");
    }
    if let Some(bad) = flipped(&proof, node, bit) {
        assert!(
            verify_subtree_inclusion(&leaves[index], at, first, last, &bad, &sub_root).is_err()
        );
    }

    let proof = subtree_proof(start, end, &leaves, true);
    if let Err(e) = verify_subtree_consistency(first, last, size, &proof, &sub_root, &root) {
        panic!("[{start}, {end}) in {n}: {e}");
    }
    if let Some(bad) = flipped(&proof, node, bit) {
        let got = verify_subtree_consistency(first, last, size, &bad, &sub_root, &root);
        assert!(
            got.is_err(),
            "[{start}, {end}) in {n}, node {node} bit {bit}"
        );
    }
    assert!(
        verify_subtree_consistency(first, last, size, &proof, &flip(&sub_root, bit), &root)
            .is_err()
    );
    // The empty subtree at start is part of every tree.
    if let Err(e) = verify_subtree_consistency(first, first, size, &[], &EMPTY_ROOT, &root) {
        panic!("[{start}, {start}) in {n}: {e}");
    }
}
