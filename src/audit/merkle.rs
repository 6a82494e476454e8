//! RFC 9162 §2.1 Merkle tree hashes, inclusion and consistency proofs.
//!
//! Leaves are the event bodies exactly as stored, in `seq` order:
//! `leaf = SHA-256(0x00 || body)`, `node = SHA-256(0x01 || left || right)`. The
//! algorithms read leaf hashes through [`Leaves`], so the same code runs over an
//! in-memory list (tests) or the store's on-disk leaf index.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf_hash(body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(body);
    h.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Leaf hashes by index.
pub trait Leaves {
    fn leaf(&self, index: u64) -> Hash;

    /// The hash of the complete, aligned subtree over leaves `lo..hi` (a power
    /// of two long, `lo` a multiple of it), if stored: lets a tree on disk
    /// answer roots and proofs in O(log n) reads instead of reading every leaf.
    fn complete_subtree(&self, _lo: u64, _hi: u64) -> Option<Hash> {
        None
    }
}

impl Leaves for [Hash] {
    fn leaf(&self, index: u64) -> Hash {
        self[index as usize]
    }
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: u64) -> u64 {
    let mut k = 1u64;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH(D[lo..hi]).
pub fn root(leaves: &(impl Leaves + ?Sized), lo: u64, hi: u64) -> Hash {
    match hi - lo {
        0 => Sha256::digest([]).into(),
        1 => leaves.leaf(lo),
        n => {
            if n.is_power_of_two()
                && lo.is_multiple_of(n)
                && let Some(h) = leaves.complete_subtree(lo, hi)
            {
                return h;
            }
            let k = split(n);
            node_hash(&root(leaves, lo, lo + k), &root(leaves, lo + k, hi))
        }
    }
}

/// PATH(m, D[lo..hi]): the inclusion proof of leaf `m` (relative to `lo`).
pub fn inclusion_proof(leaves: &(impl Leaves + ?Sized), m: u64, lo: u64, hi: u64) -> Vec<Hash> {
    let n = hi - lo;
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = inclusion_proof(leaves, m, lo, lo + k);
        p.push(root(leaves, lo + k, hi));
        p
    } else {
        let mut p = inclusion_proof(leaves, m - k, lo + k, hi);
        p.push(root(leaves, lo, lo + k));
        p
    }
}

/// PROOF(m, D[0..n]): the consistency proof between tree sizes `m` and `n`.
pub fn consistency_proof(leaves: &(impl Leaves + ?Sized), m: u64, n: u64) -> Vec<Hash> {
    fn subproof(
        leaves: &(impl Leaves + ?Sized),
        m: u64,
        lo: u64,
        hi: u64,
        complete: bool,
    ) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if complete {
                Vec::new()
            } else {
                vec![root(leaves, lo, hi)]
            };
        }
        let k = split(n);
        if m <= k {
            let mut p = subproof(leaves, m, lo, lo + k, complete);
            p.push(root(leaves, lo + k, hi));
            p
        } else {
            let mut p = subproof(leaves, m - k, lo + k, hi, false);
            p.push(root(leaves, lo, lo + k));
            p
        }
    }
    if m == 0 || m >= n {
        return Vec::new();
    }
    subproof(leaves, m, 0, n, true)
}

/// RFC 9162 §2.1.3.2: does `proof` show leaf `index` with hash `leaf` in the tree
/// of `size` leaves with root `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `proof` show the tree of `size1` leaves (root
/// `root1`) is a prefix of the tree of `size2` leaves (root `root2`)?
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> bool {
    if size1 > size2 {
        return false;
    }
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if size1 == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = proof.to_vec();
    if size1.is_power_of_two() {
        path.insert(0, *root1);
    }
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && fr == *root1 && sr == *root2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("{{\"seq\":{i}}}").as_bytes()))
            .collect()
    }

    #[test]
    fn the_empty_and_single_leaf_trees_are_as_rfc_9162_defines() {
        let empty: Vec<Hash> = vec![];
        assert_eq!(
            hex::encode(root(empty.as_slice(), 0, 0)),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // MTH({d0}) = SHA-256(0x00 || d0): for the empty leaf, the well-known value.
        assert_eq!(
            hex::encode(leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let one = leaves(1);
        assert_eq!(root(one.as_slice(), 0, 1), one[0]);
    }

    #[test]
    fn the_root_of_three_leaves_is_built_left_heavy() {
        let l = leaves(3);
        let expected = node_hash(&node_hash(&l[0], &l[1]), &l[2]);
        assert_eq!(root(l.as_slice(), 0, 3), expected);
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        let l = leaves(40);
        for n in 1..=40u64 {
            let r = root(l.as_slice(), 0, n);
            for m in 0..n {
                let proof = inclusion_proof(l.as_slice(), m, 0, n);
                assert!(
                    verify_inclusion(&l[m as usize], m, n, &proof, &r),
                    "leaf {m} of {n}"
                );
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(&l[m as usize], m, n, &bad, &r));
                }
                assert!(!verify_inclusion(&leaf_hash(b"forged"), m, n, &proof, &r));
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_a_rewritten_history_fails() {
        let l = leaves(40);
        for n in 1..=40u64 {
            let rn = root(l.as_slice(), 0, n);
            for m in 1..=n {
                let rm = root(l.as_slice(), 0, m);
                let proof = consistency_proof(l.as_slice(), m, n);
                assert!(verify_consistency(m, n, &proof, &rm, &rn), "{m} → {n}");
            }
        }
        // Rewrite one old event: the old checkpoint no longer fits the new tree.
        let mut forged = l.clone();
        forged[3] = leaf_hash(b"rewritten");
        let old_root = root(l.as_slice(), 0, 10);
        let new_root = root(forged.as_slice(), 0, 20);
        let proof = consistency_proof(forged.as_slice(), 10, 20);
        assert!(!verify_consistency(10, 20, &proof, &old_root, &new_root));
    }
}
