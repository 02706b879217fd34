// C2SP signed notes carrying tlog-checkpoint bodies, Ed25519 only: the same parsing and checks as
// safeharbor_protocol.checkpoint (key id = SHA-256(name || 0x0A || 0x01 || public key)[:4]).
import { ed25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { b64Decode, concat, equalBytes, fromHex, utf8 } from "./encoding.js";

export class NoteError extends Error {}

const SIGNATURE_PREFIX = "\u2014 ";
const MAX_SIGNATURES = 100;

export interface Checkpoint {
  readonly origin: string;
  readonly size: number;
  readonly root: Uint8Array;
  readonly extensions: readonly string[];
}

export interface Verifier {
  readonly name: string;
  readonly keyId: Uint8Array;
  readonly publicKey: Uint8Array;
}

function checkKeyName(name: string): void {
  if (!name || /\s/.test(name) || name.includes("+")) throw new NoteError("a key name is non-empty, without spaces or '+'");
}

export function keyId(name: string, publicKey: Uint8Array): Uint8Array {
  return sha256(concat(utf8(name), new Uint8Array([0x0a, 0x01]), publicKey)).subarray(0, 4);
}

export function parseVerifierKey(text: string): Verifier {
  const trimmed = text.trim();
  const first = trimmed.indexOf("+");
  const second = first < 0 ? -1 : trimmed.indexOf("+", first + 1);
  if (first < 0 || second < 0) throw new NoteError("verifier key is not name+keyid+key");
  const name = trimmed.slice(0, first);
  const idHex = trimmed.slice(first + 1, second);
  checkKeyName(name);
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw new NoteError("verifier key id must be 8 lowercase hex digits");
  let material: Uint8Array;
  try {
    material = b64Decode(trimmed.slice(second + 1));
  } catch {
    throw new NoteError("verifier key material is not base64");
  }
  if (material.length !== 33 || material[0] !== 0x01) throw new NoteError("only Ed25519 verifier keys (type 0x01, 32 bytes) are supported");
  const publicKey = material.subarray(1);
  if (!equalBytes(keyId(name, publicKey), fromHex(idHex))) throw new NoteError("verifier key id does not match the key");
  return { name, keyId: fromHex(idHex), publicKey };
}

/** Check a note against trusted keys: returns its text. Unknown signers are skipped, a bad known one fails. */
export function openNote(note: string, verifiers: readonly Verifier[]): string {
  if (note.length > 1 << 20) throw new NoteError("note is too large");
  const separator = note.lastIndexOf("\n\n");
  if (separator < 0) throw new NoteError("note has no blank line before its signatures");
  const text = note.slice(0, separator + 1);
  const block = note.slice(separator + 2);
  if (!block.endsWith("\n")) throw new NoteError("note signatures must end with a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw new NoteError("too many signatures");
  let verified = 0;
  for (const line of lines) {
    if (!line.startsWith(SIGNATURE_PREFIX)) throw new NoteError("malformed signature line");
    const parts = line.slice(SIGNATURE_PREFIX.length).split(" ");
    if (parts.length !== 2) throw new NoteError("malformed signature line");
    const [name, blobB64] = parts as [string, string];
    checkKeyName(name);
    let blob: Uint8Array;
    try {
      blob = b64Decode(blobB64);
    } catch {
      throw new NoteError("malformed signature line");
    }
    if (blob.length < 5) throw new NoteError("signature too short");
    const verifier = verifiers.find((v) => v.name === name && equalBytes(v.keyId, blob.subarray(0, 4)));
    if (!verifier) continue;
    let ok = false;
    try {
      ok = ed25519.verify(blob.subarray(4), utf8(text), verifier.publicKey);
    } catch {
      ok = false;
    }
    if (!ok) throw new NoteError(`bad signature from ${name}`);
    verified++;
  }
  if (!verified) throw new NoteError("note is not signed by a trusted key");
  return text;
}

export function parseCheckpointBody(text: string): Checkpoint {
  if (!text.endsWith("\n")) throw new NoteError("checkpoint body must end with a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw new NoteError("checkpoint needs origin, size and root lines");
  const [origin, sizeText, rootB64, ...extensions] = lines as [string, string, string, ...string[]];
  if (!origin) throw new NoteError("checkpoint origin is empty");
  if (!/^(0|[1-9][0-9]*)$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) {
    throw new NoteError("checkpoint size is not a canonical decimal");
  }
  let root: Uint8Array;
  try {
    root = b64Decode(rootB64);
  } catch {
    throw new NoteError("checkpoint root is not base64");
  }
  if (root.length !== 32) throw new NoteError("checkpoint root is not 32 bytes");
  return { origin, size: Number(sizeText), root, extensions };
}

export function verifyCheckpoint(note: string, verifierKeys: string | readonly string[], origin?: string): Checkpoint {
  const keys = typeof verifierKeys === "string" ? [verifierKeys] : verifierKeys;
  const checkpoint = parseCheckpointBody(openNote(note, keys.map(parseVerifierKey)));
  if (origin !== undefined && checkpoint.origin !== origin) throw new NoteError("checkpoint origin is not the expected log");
  return checkpoint;
}
