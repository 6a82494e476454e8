//! An independent RFC 9162 verifier, written from the RFC's own verification
//! algorithms (§2.1.3.2 and §2.1.4.2: the iterative, bit-shifting form), sharing
//! no code with `authlog::audit`. Tests check the server's proofs with it.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

fn node(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

pub fn leaf(body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(body);
    h.finalize().into()
}

/// MTH (RFC 9162 §2.1.1), straight from the definition: the largest power of
/// two smaller than n splits the leaves.
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

pub fn unhex(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// The stored body of an exported line: the line minus the `position`,
/// `revision` and `seq` members the store put in front.
pub fn body_of_line(line: &str) -> (u64, Vec<u8>) {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let seq = v["seq"].as_u64().unwrap();
    let prefix = format!(
        "{{\"position\":{},\"revision\":{},\"seq\":{},",
        serde_json::to_string(&v["position"]).unwrap(),
        v["revision"],
        seq
    );
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected line shape: {line}"));
    (seq, format!("{{{rest}").into_bytes())
}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf_index: u64,
    tree_size: u64,
    hash: Hash,
    path: &[Hash],
    root: &Hash,
) -> bool {
    if leaf_index >= tree_size {
        return false;
    }
    let (mut fnn, mut sn) = (leaf_index, tree_size - 1);
    let mut r = hash;
    for p in path {
        if sn == 0 {
            return false;
        }
        if fnn & 1 == 1 || fnn == sn {
            r = node(p, &r);
            if fnn & 1 == 0 {
                while fnn & 1 == 0 && fnn != 0 {
                    fnn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    sn == 0 && &r == root
}

/// RFC 9162 §2.1.4.2 (plus the trivial case of equal sizes).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_hash: &Hash,
    second_hash: &Hash,
    path: &[Hash],
) -> bool {
    if first == second {
        return path.is_empty() && first_hash == second_hash;
    }
    if first == 0 || first > second || path.is_empty() {
        return false;
    }
    let mut path = path.to_vec();
    if first.is_power_of_two() {
        path.insert(0, *first_hash);
    }
    let (mut fnn, mut sn) = (first - 1, second - 1);
    while fnn & 1 == 1 {
        fnn >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return false;
        }
        if fnn & 1 == 1 || fnn == sn {
            fr = node(c, &fr);
            sr = node(c, &sr);
            if fnn & 1 == 0 {
                while fnn & 1 == 0 && fnn != 0 {
                    fnn >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node(&sr, c);
        }
        fnn >>= 1;
        sn >>= 1;
    }
    &fr == first_hash && &sr == second_hash && sn == 0
}

/// Checks a checkpoint's Ed25519 signature over authlog's documented signed
/// text, with the public key given as base64.
pub fn checkpoint_signature_ok(cp: &serde_json::Value, public_key_b64: &str) -> bool {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(public_key_b64)
        .unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cp["signature"].as_str().unwrap())
        .unwrap();
    let text = format!(
        "authlog audit checkpoint v1\nsize {}\nroot {}\ntime {}\n",
        cp["tree_size"],
        cp["root_hash"].as_str().unwrap(),
        cp["time"].as_str().unwrap()
    );
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, key)
        .verify(text.as_bytes(), &sig)
        .is_ok()
}
