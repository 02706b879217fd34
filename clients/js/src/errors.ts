// Every error the SDK raises derives from SafeHarborClientError and carries the same `code` as the
// Python SDK's class of the same name (ENVELOPE.md's table), so both sides report a refusal alike.

export class SafeHarborClientError extends Error {
  static code = "client_error";
  readonly code: string;
  readonly messageId: string | undefined;

  constructor(message: string, options: { messageId?: string | undefined; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = (this.constructor as typeof SafeHarborClientError).code;
    this.messageId = options.messageId;
    this.name = this.constructor.name;
  }
}

export class EnvelopeError extends SafeHarborClientError {
  static override code = "envelope_error";
}
export class EnvelopeMalformed extends EnvelopeError {
  static override code = "envelope_malformed";
}
export class UnsupportedEnvelope extends EnvelopeError {
  static override code = "envelope_unsupported";
}
export class EnvelopeTampered extends EnvelopeError {
  static override code = "envelope_tampered";
}
export class SignatureMissing extends EnvelopeError {
  static override code = "signature_missing";
}
export class SignatureInvalid extends EnvelopeError {
  static override code = "signature_invalid";
}
export class SenderKeyNotValid extends SignatureInvalid {
  static override code = "sender_key_not_valid";
}
export class SenderMismatch extends EnvelopeError {
  static override code = "sender_mismatch";
}
export class ReplayDetected extends EnvelopeError {
  static override code = "replay_detected";
}
export class MisaddressedMessage extends EnvelopeError {
  static override code = "misaddressed_message";
}
export class NotARecipient extends EnvelopeError {
  static override code = "not_a_recipient";
}
export class EnvelopeTooLarge extends EnvelopeError {
  static override code = "envelope_too_large";
}

export class DirectoryError extends SafeHarborClientError {
  static override code = "directory_error";
}
export class DirectoryProofInvalid extends DirectoryError {
  static override code = "directory_proof_invalid";
}
export class DirectoryInconsistent extends DirectoryError {
  static override code = "directory_inconsistent";
}
export class KeyRecordInvalid extends DirectoryError {
  static override code = "key_record_invalid";
}

export class KeysNotInitialized extends SafeHarborClientError {
  static override code = "keys_not_initialized";
}
/** JS only: the private key is a non-extractable WebCrypto key (the web app's IndexedDB form), so its bytes
 *  cannot be exported, e.g. into a backup. */
export class KeyNotExtractable extends SafeHarborClientError {
  static override code = "key_not_extractable";
}
export class BackupError extends SafeHarborClientError {
  static override code = "backup_error";
}
export class BackupPasswordInvalid extends BackupError {
  static override code = "backup_password_invalid";
}
export class WeakBackupPassword extends BackupError {
  static override code = "weak_backup_password";
}

/** What an HTTP layer's error looks like to code that only needs its API error code. */
export interface ApiErrorLike {
  code?: string;
}
