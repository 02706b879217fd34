// Password-encrypted key backups (clients/python/safeharbor_client/backup.py): argon2id (hash-wasm,
// WebAssembly) derives an AES-256-GCM key; the AAD binds the header to the user id and key version.
import { argon2id } from "hash-wasm";
import { b64urlDecode, b64urlEncode, buf, concat, jcs, randomBytes, utf8 } from "./encoding.js";
import { BackupError, BackupPasswordInvalid, WeakBackupPassword } from "./errors.js";

const BACKUP_VERSION = 1;
const DOMAIN = utf8("safeharbor/key-backup/v1\0");
export const MIN_PASSWORD_CHARS = 12;

export interface KdfParams {
  memoryKib: number;
  timeCost: number;
  parallelism: number;
}

export const DEFAULT_KDF: KdfParams = { memoryKib: 65536, timeCost: 3, parallelism: 1 };
/** OWASP's argon2id floor (19 MiB, t=2, p=1): anything weaker is refused on restore. */
export const MIN_KDF: KdfParams = { memoryKib: 19456, timeCost: 2, parallelism: 1 };
const MAX_MEMORY_KIB = 1 << 20;
const MAX_TIME_COST = 16;
const MAX_PARALLELISM = 8;

export function checkPassword(password: string): void {
  if ([...password].length < MIN_PASSWORD_CHARS) throw new WeakBackupPassword(`a backup password has at least ${MIN_PASSWORD_CHARS} characters`);
  if (new Set(password).size < 5) throw new WeakBackupPassword("the backup password is too repetitive");
}

function checkParams(p: KdfParams): void {
  if (p.memoryKib < MIN_KDF.memoryKib || p.timeCost < MIN_KDF.timeCost || p.parallelism < 1) {
    throw new BackupError("the backup's key derivation is weaker than the minimum");
  }
  if (p.memoryKib > MAX_MEMORY_KIB || p.timeCost > MAX_TIME_COST || p.parallelism > MAX_PARALLELISM) {
    throw new BackupError("the backup's key derivation parameters are out of range");
  }
}

async function derive(password: string, salt: Uint8Array, p: KdfParams): Promise<CryptoKey> {
  const raw = await argon2id({
    password: utf8(password), salt, iterations: p.timeCost, memorySize: p.memoryKib, parallelism: p.parallelism,
    hashLength: 32, outputType: "binary",
  });
  return crypto.subtle.importKey("raw", buf(raw), "AES-GCM", false, ["encrypt", "decrypt"]);
}

function aad(header: Record<string, unknown>, userId: string, keyVersion: number): Uint8Array {
  return concat(DOMAIN, jcs({ ...header, user_id: userId, key_version: keyVersion }));
}

export async function sealBackup(plaintext: Uint8Array, o: { password: string; userId: string; keyVersion: number; params?: KdfParams }): Promise<string> {
  const p = o.params ?? DEFAULT_KDF;
  checkPassword(o.password);
  checkParams(p);
  const salt = randomBytes(16);
  const nonce = randomBytes(12);
  const header = { v: BACKUP_VERSION, kdf: "argon2id", m: p.memoryKib, t: p.timeCost, p: p.parallelism, salt: b64urlEncode(salt) };
  const key = await derive(o.password, salt, p);
  const ct = new Uint8Array(await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: buf(nonce), additionalData: buf(aad(header, o.userId, o.keyVersion)) }, key, buf(plaintext)));
  return b64urlEncode(jcs({ ...header, n: b64urlEncode(nonce), ct: b64urlEncode(ct) }));
}

export async function openBackup(blob: string, o: { password: string; userId: string; keyVersion: number }): Promise<Uint8Array> {
  let header: Record<string, unknown>;
  let salt: Uint8Array;
  let nonce: Uint8Array;
  let ct: Uint8Array;
  let params: KdfParams;
  try {
    const body = JSON.parse(new TextDecoder().decode(b64urlDecode(blob))) as Record<string, unknown>;
    header = { v: body["v"], kdf: body["kdf"], m: body["m"], t: body["t"], p: body["p"], salt: body["salt"] };
    for (const [k, v] of Object.entries(header)) if (v === undefined) throw new TypeError(k);
    salt = b64urlDecode(body["salt"] as string);
    nonce = b64urlDecode(body["n"] as string);
    ct = b64urlDecode(body["ct"] as string);
    params = { memoryKib: int(body["m"]), timeCost: int(body["t"]), parallelism: int(body["p"]) };
  } catch (cause) {
    throw new BackupError("the backup is not readable", { cause });
  }
  if (header["v"] !== BACKUP_VERSION || header["kdf"] !== "argon2id" || nonce.length !== 12 || salt.length < 16) {
    throw new BackupError("the backup format is not supported");
  }
  checkParams(params);
  const key = await derive(o.password, salt, params);
  try {
    return new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: buf(nonce), additionalData: buf(aad(header, o.userId, o.keyVersion)) }, key, buf(ct)));
  } catch (cause) {
    throw new BackupPasswordInvalid("wrong password, or the backup belongs to another user or key version", { cause });
  }
}

function int(value: unknown): number {
  const n = typeof value === "number" ? value : Number.NaN;
  if (!Number.isSafeInteger(n)) throw new TypeError("not an integer");
  return n;
}
