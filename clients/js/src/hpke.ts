// The two HPKE suites of ENVELOPE.md on @hpke/core (RFC 9180 key schedule, base mode, single shot):
//   x25519          DHKEM(X25519, HKDF-SHA256) 0x0020 / HKDF-SHA256 / AES-256-GCM (@hpke/dhkem-x25519)
//   mlkem768x25519  the hybrid ML-KEM-768 + X25519 KEM 0x647a / HKDF-SHA256 / AES-256-GCM
// The hybrid KEM is the one `cryptography` ships as KEM.MLKEM768_X25519 (draft-ietf-hpke-pq's
// MLKEM768-X25519, the X-Wing combiner): pk = ML-KEM ek (1184) || X25519 pk (32); enc = ML-KEM ct (1088)
// || X25519 ephemeral pk (32); ss = SHA3-256(ss_mlkem || ss_x25519 || ct_x25519 || pk_x25519 || "\.//^\").
// @hpke/core has no such KEM for a private key kept as (ML-KEM seed, X25519 scalar), which is how the
// Python keyring stores it, so it is plugged in here from @noble primitives; the interop tests and the
// Python vectors hold it to the Python SDK byte for byte.
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256 as NativeDhkemX25519, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { x25519 } from "@noble/curves/ed25519.js";
import { sha3_256 } from "@noble/hashes/sha3.js";
import { ml_kem768 } from "@noble/post-quantum/ml-kem.js";
import { buf, concat, randomBytes } from "./encoding.js";

export const MLKEM768_PUBLIC_SIZE = 1184;
export const MLKEM768_CIPHERTEXT_SIZE = 1088;
export const X25519_SIZE = 32;
export const HYBRID_PUBLIC_SIZE = MLKEM768_PUBLIC_SIZE + X25519_SIZE;
export const HYBRID_ENC_SIZE = MLKEM768_CIPHERTEXT_SIZE + X25519_SIZE;
const XWING_LABEL = new Uint8Array([0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c]);
const KEM_ID_MLKEM768_X25519 = 0x647a;

/** The hybrid private key as the Python keyring keeps it: the 64-byte ML-KEM seed (d || z) and X25519. */
export interface HybridPrivateKey {
  readonly kind: "mlkem768x25519-private";
  readonly mlkemSeed: Uint8Array;
  readonly x25519Private: Uint8Array;
}

export interface HybridPublicKey {
  readonly kind: "mlkem768x25519-public";
  readonly raw: Uint8Array; // ML-KEM-768 ek || X25519 pk
}

export function hybridPublicBytes(key: HybridPrivateKey): Uint8Array {
  const { publicKey } = ml_kem768.keygen(key.mlkemSeed);
  return concat(publicKey, x25519.getPublicKey(key.x25519Private));
}

export function hybridPublicKey(raw: Uint8Array): HybridPublicKey {
  if (raw.length !== HYBRID_PUBLIC_SIZE) throw new RangeError("a hybrid ML-KEM-768 + X25519 public key is 1216 bytes");
  return { kind: "mlkem768x25519-public", raw: raw.slice() };
}

function combine(ssM: Uint8Array, ssX: Uint8Array, ctX: Uint8Array, pkX: Uint8Array): ArrayBuffer {
  return buf(sha3_256(concat(ssM, ssX, ctX, pkX, XWING_LABEL)));
}

/** A KemInterface for @hpke/core's CipherSuite; keys are the objects above, passed where it types CryptoKey. */
class MlKem768X25519 {
  readonly id = KEM_ID_MLKEM768_X25519;
  readonly secretSize = 32;
  readonly encSize = HYBRID_ENC_SIZE;
  readonly publicKeySize = HYBRID_PUBLIC_SIZE;
  readonly privateKeySize = 96;

  async encap(params: { recipientPublicKey: unknown; ekm?: ArrayBuffer }): Promise<{ sharedSecret: ArrayBuffer; enc: ArrayBuffer }> {
    const pk = params.recipientPublicKey as HybridPublicKey;
    if (pk?.kind !== "mlkem768x25519-public") throw new TypeError("not a hybrid public key");
    const pkM = pk.raw.subarray(0, MLKEM768_PUBLIC_SIZE);
    const pkX = pk.raw.subarray(MLKEM768_PUBLIC_SIZE);
    const { cipherText, sharedSecret } = ml_kem768.encapsulate(pkM);
    const ephemeral = randomBytes(32);
    const ctX = x25519.getPublicKey(ephemeral);
    const ssX = x25519.getSharedSecret(ephemeral, pkX);
    return { sharedSecret: combine(sharedSecret, ssX, ctX, pkX), enc: buf(concat(cipherText, ctX)) };
  }

  async decap(params: { recipientKey: unknown; enc: ArrayBuffer }): Promise<ArrayBuffer> {
    const key = params.recipientKey as HybridPrivateKey;
    if (key?.kind !== "mlkem768x25519-private") throw new TypeError("not a hybrid private key");
    const enc = new Uint8Array(params.enc);
    if (enc.length !== HYBRID_ENC_SIZE) throw new RangeError("hybrid enc has a wrong size");
    const ctM = enc.subarray(0, MLKEM768_CIPHERTEXT_SIZE);
    const ctX = enc.subarray(MLKEM768_CIPHERTEXT_SIZE);
    const { secretKey } = ml_kem768.keygen(key.mlkemSeed);
    const ssM = ml_kem768.decapsulate(ctM, secretKey);
    const pkX = x25519.getPublicKey(key.x25519Private);
    const ssX = x25519.getSharedSecret(key.x25519Private, ctX);
    return combine(ssM, ssX, ctX, pkX);
  }

  // The rest of KemInterface is never reached by single-shot seal/open with keys passed in.
  serializePublicKey(): Promise<ArrayBuffer> { return Promise.reject(new Error("unsupported")); }
  deserializePublicKey(): Promise<CryptoKey> { return Promise.reject(new Error("unsupported")); }
  serializePrivateKey(): Promise<ArrayBuffer> { return Promise.reject(new Error("unsupported")); }
  deserializePrivateKey(): Promise<CryptoKey> { return Promise.reject(new Error("unsupported")); }
  importKey(): Promise<CryptoKey> { return Promise.reject(new Error("unsupported")); }
  generateKeyPair(): Promise<CryptoKeyPair> { return Promise.reject(new Error("unsupported")); }
  deriveKeyPair(): Promise<CryptoKeyPair> { return Promise.reject(new Error("unsupported")); }
}

const x25519Kem = new DhkemX25519HkdfSha256();
const SUITE_X25519 = new CipherSuite({ kem: x25519Kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() });
// WebCrypto's X25519 (Chromium, Node): the suite that accepts non-extractable CryptoKeys.
const SUITE_X25519_NATIVE = new CipherSuite({ kem: new NativeDhkemX25519(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
const SUITE_PQ = new CipherSuite({
  kem: new MlKem768X25519() as unknown as DhkemX25519HkdfSha256,
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});

/** `enc || ciphertext` of a single-shot base-mode seal to an X25519 public key. */
export async function sealX25519(publicKey: Uint8Array, info: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const recipientPublicKey = await x25519Kem.importKey("raw", buf(publicKey), true);
  const { ct, enc } = await SUITE_X25519.seal({ recipientPublicKey, info: buf(info) }, buf(plaintext));
  return concat(new Uint8Array(enc), new Uint8Array(ct));
}

/** Open with the private key as bytes, or as a WebCrypto key pair (non-extractable private key: the
 *  browser's held form), through @hpke/core's DHKEM on WebCrypto's own X25519. */
export async function openX25519(privateKey: Uint8Array | CryptoKeyPair, info: Uint8Array, wrapped: Uint8Array): Promise<Uint8Array> {
  const enc = buf(wrapped.subarray(0, X25519_SIZE));
  const ct = buf(wrapped.subarray(X25519_SIZE));
  if (!(privateKey instanceof Uint8Array)) {
    return new Uint8Array(await SUITE_X25519_NATIVE.open({ recipientKey: privateKey, enc, info: buf(info) }, ct));
  }
  const recipientKey = await x25519Kem.importKey("raw", buf(privateKey), false);
  return new Uint8Array(await SUITE_X25519.open({ recipientKey, enc, info: buf(info) }, ct));
}

export async function sealHybrid(publicKey: HybridPublicKey, info: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const params = { recipientPublicKey: publicKey as unknown as CryptoKey, info: buf(info) };
  const { ct, enc } = await SUITE_PQ.seal(params, buf(plaintext));
  return concat(new Uint8Array(enc), new Uint8Array(ct));
}

export async function openHybrid(privateKey: HybridPrivateKey, info: Uint8Array, wrapped: Uint8Array): Promise<Uint8Array> {
  const params = {
    recipientKey: privateKey as unknown as CryptoKey,
    enc: buf(wrapped.subarray(0, HYBRID_ENC_SIZE)),
    info: buf(info),
  };
  return new Uint8Array(await SUITE_PQ.open(params, buf(wrapped.subarray(HYBRID_ENC_SIZE))));
}
