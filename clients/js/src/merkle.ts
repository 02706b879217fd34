// RFC 6962 / RFC 9162 Merkle proofs, the same algorithm as safeharbor_protocol.merkle: leaf hash
// SHA-256(0x00 || data), node hash SHA-256(0x01 || left || right).
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equalBytes } from "./encoding.js";

export class ProofVerificationError extends Error {}

const HASH_SIZE = 32;

export function leafHash(data: Uint8Array): Uint8Array {
  return sha256(concat(new Uint8Array([0]), data));
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(new Uint8Array([1]), left, right));
}

// Sizes and indexes go up to 2^53: plain numbers, halved by division (>> would wrap at 2^31).
const odd = (n: number): boolean => n % 2 === 1;
const half = (n: number): number => Math.floor(n / 2);

export function rootFromInclusionProof(leaf: Uint8Array, index: number, size: number, proof: readonly Uint8Array[]): Uint8Array {
  if (!(index >= 0 && index < size)) throw new ProofVerificationError(`leaf index ${index} is outside a tree of size ${size}`);
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (p.length !== HASH_SIZE) throw new ProofVerificationError("proof hashes must be 32 bytes");
    if (sn === 0) throw new ProofVerificationError("inclusion proof is too long");
    if (odd(fn) || fn === sn) {
      r = nodeHash(p, r);
      if (!odd(fn)) {
        while (!(odd(fn) || fn === 0)) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw new ProofVerificationError("inclusion proof is too short");
  return r;
}

export function verifyInclusion(leaf: Uint8Array, index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array): void {
  if (root.length !== HASH_SIZE || leaf.length !== HASH_SIZE) throw new ProofVerificationError("hashes must be 32 bytes");
  if (!equalBytes(rootFromInclusionProof(leaf, index, size, proof), root)) {
    throw new ProofVerificationError("inclusion proof does not lead to the root");
  }
}

export function verifyConsistency(size1: number, size2: number, proof: readonly Uint8Array[], root1: Uint8Array, root2: Uint8Array): void {
  if (!(size1 >= 0 && size1 <= size2)) throw new ProofVerificationError(`size ${size2} cannot extend size ${size1}`);
  if (size1 === size2) {
    if (proof.length) throw new ProofVerificationError("equal sizes need an empty proof");
    if (!equalBytes(root1, root2)) throw new ProofVerificationError("equal sizes but different roots");
    return;
  }
  if (size1 === 0) {
    if (proof.length) throw new ProofVerificationError("a consistency proof from the empty tree is empty");
    return;
  }
  if (!proof.length) throw new ProofVerificationError("empty consistency proof");
  if (proof.some((p) => p.length !== HASH_SIZE) || root1.length !== HASH_SIZE || root2.length !== HASH_SIZE) {
    throw new ProofVerificationError("hashes must be 32 bytes");
  }
  const path = [...proof];
  if (Number.isInteger(Math.log2(size1))) path.unshift(root1); // a power of two: its root is implicit
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (odd(fn)) {
    fn = half(fn);
    sn = half(sn);
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) throw new ProofVerificationError("consistency proof is too long");
    if (odd(fn) || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (!odd(fn)) {
        while (!(odd(fn) || fn === 0)) {
          fn = half(fn);
          sn = half(sn);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = half(fn);
    sn = half(sn);
  }
  if (sn !== 0) throw new ProofVerificationError("consistency proof is too short");
  if (!equalBytes(fr, root1)) throw new ProofVerificationError("consistency proof does not lead to the old root");
  if (!equalBytes(sr, root2)) throw new ProofVerificationError("consistency proof does not lead to the new root");
}
