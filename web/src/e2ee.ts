// End-to-end encryption in the page, with the SDK in clients/js: this device's keys, the proven key
// directory, sealing to every device of every channel member, opening with every check.
import {
  buildRecord, DeviceKeyPair, fingerprint, type DeviceRef, DirectoryInconsistent, DirectoryVerifier, KeyNotExtractable, Keyring, keyValidAt,
  type KeyMonitorReport,
  monitorKeys, openBackup, openEnvelope, type OpenedMessage, recipientFromKey, seal, sealBackup, SenderKeyNotValid, utf8,
  verifyChain, type VerifiedKey,
} from "@safeharbor/client";
import { api } from "./api";
import { loadDirectoryMemory, loadKeyring, rememberSeen, saveDirectoryMemory, saveKeyring } from "./vault";

export class E2ee {
  private history = new Map<string, VerifiedKey[]>();
  // The key bytes of the versions created or restored in this page's lifetime, in memory only: what a
  // backup can carry. What IndexedDB holds is non-extractable, so after a reload (a logoff) no backup can
  // be made of it: the backup is made in the session that created or restored the keys.
  private exportable: Keyring | null = null;

  private constructor(readonly userId: string, public ring: Keyring | null, private directory: DirectoryVerifier) {}

  static async load(userId: string): Promise<E2ee> {
    const memory = await loadDirectoryMemory(userId);
    const directory = new DirectoryVerifier({
      memory,
      save: (m) => saveDirectoryMemory(userId, m),
      fetchVerifierKey: () => api<string>("GET", "/v1/keys/checkpoint/key"),
      fetchConsistency: async (from, to) => (await api<{ proof: string[] }>("GET", `/v1/keys/proof/consistency?from=${from}&to=${to}`)).proof,
    });
    return new E2ee(userId, await loadKeyring(userId), directory);
  }

  get ready(): boolean {
    return !!this.ring && this.ring.deviceId !== null && [...this.ring.pairs.values()].some((p) => p.deviceId === this.ring!.deviceId && p.record);
  }

  get deviceId(): string | null {
    return this.ring?.deviceId ?? null;
  }

  fingerprint(): string | null {
    if (!this.ready) return null;
    return fingerprint(this.ring!.current().record!);
  }

  /** New device keys (X25519 + Ed25519, and the ML-KEM-768 hybrid when asked), registered in the directory. */
  async initKeys(withPq = false): Promise<void> {
    const ring = this.ring ?? new Keyring(this.userId);
    ring.deviceId = ring.deviceId ?? `web-${crypto.randomUUID().slice(0, 12)}`;
    const pair = DeviceKeyPair.generate({ userId: this.userId, deviceId: ring.deviceId, version: 1, withPq });
    pair.record = buildRecord(pair);
    const answer = await api<{ checkpoint: string; leaf_index: number; inclusion_proof: string[]; record: Record<string, unknown> }>(
      "POST", "/v1/keys", pair.record);
    const checkpoint = await this.directory.verifyCheckpoint(answer.checkpoint);
    this.directory.verifyDevice({ record: answer.record, leaf_index: answer.leaf_index, inclusion_proof: answer.inclusion_proof }, this.userId, checkpoint);
    ring.add(pair);
    this.keepExportable([pair], ring.deviceId);
    this.ring = await saveKeyring(ring);
  }

  private keepExportable(pairs: Iterable<DeviceKeyPair>, deviceId: string | null): void {
    this.exportable ??= new Keyring(this.userId);
    this.exportable.deviceId = deviceId;
    this.exportable.merge(pairs);
  }

  /** True while every key version this device holds was created or restored in this session. */
  get canBackUp(): boolean {
    const ring = this.ring;
    return this.ready && !!this.exportable && [...ring!.pairs.keys()].every((ref) => this.exportable!.pairs.has(ref));
  }

  async backup(password: string): Promise<void> {
    const ring = this.requireRing();
    if (!this.canBackUp) {
      // A backup of fewer keys than the device holds would replace a complete one on the server.
      throw new KeyNotExtractable("this device's private keys are non-extractable once stored: a backup is made in the session that created or restored them");
    }
    const keyVersion = Math.max(ring.maxVersion, 1);
    const blob = await sealBackup(utf8(JSON.stringify(this.exportable!.toJson())), { password, userId: this.userId, keyVersion });
    await api("PUT", "/v1/keys/backup", { blob, key_version: keyVersion });
  }

  /** On a new device: the backup's keys (to read history), then this device's own keys. */
  async restore(password: string): Promise<number> {
    const body = await api<{ blob: string; key_version: number }>("GET", "/v1/keys/backup");
    const plain = await openBackup(body.blob, { password, userId: this.userId, keyVersion: body.key_version });
    const restored = Keyring.fromJson(JSON.parse(new TextDecoder().decode(plain)) as Record<string, unknown>);
    const ring = this.ring ?? new Keyring(this.userId);
    const added = ring.merge(restored.pairs.values());
    this.keepExportable(restored.pairs.values(), ring.deviceId);
    this.ring = await saveKeyring(ring);
    if (!this.ready) {
      await this.initKeys();
      await this.backup(password);
    }
    return added;
  }

  private requireRing(): Keyring {
    if (!this.ring || !this.ready) throw new Error("set up this device's keys first");
    return this.ring;
  }

  async lookup(userIds: string[]): Promise<VerifiedKey[]> {
    const wanted = [...new Set(userIds)];
    const body = await api<Record<string, unknown>>("GET", `/v1/keys?users=${wanted.map(encodeURIComponent).join(",")}`);
    const found = await this.directory.verifyLookup(body, wanted);
    return [...found.values()].flatMap((u) => u.devices.map((d) => d.key));
  }

  private async senderHistory(userId: string): Promise<VerifiedKey[]> {
    const body = await api<{ checkpoint: string; history: Record<string, unknown>[] }>("GET", `/v1/keys/${encodeURIComponent(userId)}/history`);
    const checkpoint = await this.directory.verifyCheckpoint(body.checkpoint);
    const keys = body.history.map((item) => this.directory.verifyDevice(item, userId, checkpoint).key);
    verifyChain(keys);
    this.history.set(userId, keys);
    return keys;
  }

  private async senderKey(ref: DeviceRef, atMs: number): Promise<VerifiedKey> {
    let keys = this.history.get(ref.userId);
    if (!keys || !keys.some((k) => k.ref.deviceId === ref.deviceId && k.ref.version === ref.version)) keys = await this.senderHistory(ref.userId);
    if (!keys.length) throw new SenderKeyNotValid("the sender has no keys in the directory");
    return keyValidAt(ref, atMs, keys);
  }

  /** Seal `text` for every device of every member (this user's other devices too). */
  async seal(cid: string, members: string[], text: string): Promise<{ id: string; envelope: string; suite: string; devices: number }> {
    const ring = this.requireRing();
    const keys = await this.lookup([...members, this.userId]);
    const missing = members.filter((m) => !keys.some((k) => k.ref.userId === m));
    if (missing.length) throw new Error(`${missing.length} member(s) have no keys yet and could not read it`);
    const mine = keys.find((k) => k.ref.userId === this.userId && k.ref.deviceId === ring.deviceId);
    const current = ring.current();
    if (!mine || mine.record["sig_pub"] !== current.sigPub) throw new DirectoryInconsistent("the directory lists another key for this very device");
    const sealed = await seal({ text, sender: current, recipients: keys.map(recipientFromKey), channelCid: cid });
    return { id: sealed.mid, envelope: sealed.toText(), suite: sealed.suite, devices: keys.length };
  }

  async open(o: { cid: string; text: string; messageId: string; userId: string | undefined; createdAt: string | Date | undefined }): Promise<OpenedMessage> {
    const ring = this.requireRing();
    const created = o.createdAt === undefined ? undefined : new Date(o.createdAt).getTime();
    return openEnvelope(o.text, {
      keyring: ring,
      channelCid: o.cid,
      senderKey: (ref, at) => this.senderKey(ref, at),
      ...(o.userId !== undefined ? { streamUserId: o.userId } : {}),
      streamMessageId: o.messageId,
      ...(created !== undefined ? { streamCreatedAtMs: created } : {}),
      seen: { remember: (s) => rememberSeen(this.userId, s) },
    });
  }

  async monitor(): Promise<KeyMonitorReport> {
    return monitorKeys({
      ring: this.ring ?? new Keyring(this.userId),
      directory: this.directory,
      fetchPage: (cursor) => api("GET", `/v1/keys/${encodeURIComponent(this.userId)}/audit${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ""}`),
    });
  }
}
