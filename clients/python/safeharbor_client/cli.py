"""`safeharbor`: the SDK on the command line.

    safeharbor login dr-chen                  password (and one-time code) prompted; TOTP enrolment guided
    safeharbor whoami                         user, role, session countdown, this device's key
    safeharbor keys init [--pq] | rotate | backup | restore | show [USER_ID ...] | monitor
    safeharbor channels list | open TYPE MEMBER [MEMBER ...] [--name NAME]   members by username or id
    safeharbor send CID "text"                (or "-" to read the text from stdin)
    safeharbor read CID [--limit N] [--follow]   decrypted, verified; --follow keeps reading, and warns before
                                              automatic logoff (Enter keeps the session alive)
    safeharbor admin users|push|break-glass ...   admins (see `safeharbor admin -h`, safeharbor_client.cli_admin)
    safeharbor audit verify                   auditors: server verification + signed checkpoint consistency
    safeharbor audit export FILE [--format]   auditors: export, refused (no file) without a valid trailer
    safeharbor compliance report [--html FILE]   auditors, admins: live HIPAA 164.312 report, signature checked
    safeharbor logout

Global options: --gateway (SAFEHARBOR_GATEWAY, default http://127.0.0.1:8080), --state-dir (SAFEHARBOR_HOME,
default ~/.safeharbor), --stream-url (STREAM_CHAT_URL), --json. Secrets for scripts: SAFEHARBOR_PASSWORD,
SAFEHARBOR_OTP, SAFEHARBOR_BACKUP_PASSWORD (otherwise prompted, never echoed).
Exit codes: 0 ok, 1 error, 2 usage, 3 log in again, 4 a message or log failed verification,
5 `keys monitor` found a key for this device that this device never made, 130 interrupted (Ctrl-C).
With --json every answer, and every error (on stderr), is one JSON document.
"""
from __future__ import annotations

import argparse
import getpass
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from . import cli_admin, cli_compliance
from .client import ALARM, OTHER_DEVICE, THIS_DEVICE, AuditVerificationFailed, KeyMonitorReport, SafeHarborClient
from .errors import (
    DirectoryError,
    LoginRequired,
    MfaRequired,
    SafeHarborClientError,
)
from .logoff import logoff_warning
from .state import default_state_dir

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LOGIN, EXIT_UNVERIFIED, EXIT_KEY_ALARM = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C
STATUS_LABELS = {THIS_DEVICE: "this device", OTHER_DEVICE: "other device: confirm",
                 ALARM: "ALARM: not made here"}


class Cli:
    def __init__(self, args: argparse.Namespace, out: Callable[[str], None]) -> None:
        self.args = args
        self.out = out
        self.client = SafeHarborClient(args.gateway, state_dir=args.state_dir, stream_url=args.stream_url)

    def emit(self, human: str, data: Any) -> None:
        self.out(json.dumps(data, indent=1, default=str) if self.args.json else human)

    # -- secrets ---------------------------------------------------------------------------------

    @staticmethod
    def secret(env_name: str, prompt: str, *, confirm: bool = False) -> str:
        value = os.environ.get(env_name)
        if value:
            return value
        value = getpass.getpass(prompt)
        if confirm and getpass.getpass("Again: ") != value:
            raise SafeHarborClientError("the two entries differ")
        return value

    @staticmethod
    def prompt(text: str) -> str:
        return input(text).strip()  # end of input (EOFError) is reported by main(), never a traceback

    @classmethod
    def otp(cls) -> str:
        return os.environ.get("SAFEHARBOR_OTP") or cls.prompt("One-time code: ")

    def say(self, text: str) -> None:
        """Instructions for the person: stdout, except with --json, where stdout is only the answer."""
        if self.args.json:
            self.note(text)
        else:
            self.out(text)

    def note(self, text: str) -> None:
        """Progress and warnings: stderr, so stdout stays the answer (and stays JSON with --json)."""
        print(text, file=sys.stderr, flush=True)

    # -- sessions --------------------------------------------------------------------------------

    def login(self) -> int:
        password = self.secret("SAFEHARBOR_PASSWORD", f"Password for {self.args.username}: ")
        try:
            info = self.client.login(self.args.username, password, otp=self.args.otp, otp_provider=self.otp)
        except MfaRequired:
            info = self.client.login(self.args.username, password, otp=self.otp())
        if info.needs_mfa_enrollment:
            enrolment = self.client.enroll_totp()
            self.say("Your role requires a second factor. Scan this code with your authenticator app:\n"
                     + qr_text(enrolment["otpauth_uri"])
                     + f"or enter the key by hand:\n  secret: {enrolment['secret']}\n"
                     + f"  uri:    {enrolment['otpauth_uri']}")
            codes = self.client.confirm_totp(self.otp())
            self.say("Recovery codes (store them offline; each works once):\n  " + "\n  ".join(codes))
            session = self.client.session
            if session is None or session.scope != "full":
                # A server that does not yet end enrolment with a session: log in with the next code.
                self.say("Now a new code from your app, to log in with it.")
                info = self.client.login(self.args.username, password, otp=self.otp())
            else:
                info = session
        countdown = self.client.countdown()
        self.emit(f"Logged in as {info.name or info.user_id} ({info.role}); automatic logoff in "
                  f"{countdown.idle_remaining_s} s unless active, session ends in {countdown.absolute_remaining_s} s.",
                  {"user_id": info.user_id, "role": info.role, "session_id": info.session_id,
                   "idle_remaining_s": countdown.idle_remaining_s,
                   "absolute_remaining_s": countdown.absolute_remaining_s})
        return EXIT_OK

    def logout(self) -> int:
        self.client.logout()
        self.emit("Logged out.", {"logged_out": True})
        return EXIT_OK

    def whoami(self) -> int:
        countdown = self.client.keep_alive()
        me = self.client.me()
        user = me.get("user", {})
        data: dict[str, Any] = {"user": user, "session": me.get("session"),
                                "idle_remaining_s": countdown.idle_remaining_s,
                                "absolute_remaining_s": countdown.absolute_remaining_s}
        lines = [f"{user.get('name')} ({user.get('role')}), user id {user.get('id')}",
                 f"session: logoff in {countdown.idle_remaining_s} s if idle, ends in "
                 f"{countdown.absolute_remaining_s} s"]
        ring = self.client.state.load_keyring(str(user.get("id")))
        if ring.device_id and ring.pairs:
            current = ring.current()
            data["device"] = {"device_id": current.device_id, "version": current.version}
            lines.append(f"this device: {current.device_id}, key version {current.version}")
        else:
            lines.append("this device: no keys yet (safeharbor keys init)")
        self.emit("\n".join(lines), data)
        return EXIT_OK

    # -- keys ------------------------------------------------------------------------------------

    def keys(self) -> int:
        action = self.args.keys_action
        if action == "init":
            return self._key_result("Registered", self.client.init_keys(with_pq=self.args.pq))
        if action == "rotate":
            result = self.client.rotate_keys()
            if result.note is None:
                result = replace(result, note="run `safeharbor keys backup` so a restored device gets this version")
            return self._key_result("Rotated to", result)
        if action == "backup":
            password = self.secret("SAFEHARBOR_BACKUP_PASSWORD", "Backup password: ", confirm=True)
            stored = self.client.backup_keys(password)
            self.emit(f"Backup stored (backup version {stored.get('backup_version')}, key version "
                      f"{stored.get('key_version')}). The directory cannot read it; keep the password safe.", stored)
            return EXIT_OK
        if action == "restore":
            password = self.secret("SAFEHARBOR_BACKUP_PASSWORD", "Backup password: ")
            restored = self.client.restore_keys(password, with_pq=self.args.pq)
            self.emit(f"Restored {restored['restored']} key(s); this device is {restored['device_id']}"
                      + (" (newly registered)." if restored["registered"] else "."), restored)
            return EXIT_OK
        if action == "monitor":
            return self._monitor(self.client.monitor_keys())
        users = self.args.users or [self.client.user_id]
        found = self.client.lookup_keys(users)
        own = self.client.show_keys() if users == [self.client.user_id] else None
        lines: list[str] = []
        data: dict[str, Any] = {}
        for user_id, user_keys in found.items():
            if user_keys.error:
                lines.append(f"{user_id}: {user_keys.error}")
                data[user_id] = {"error": user_keys.error}
                continue
            devices: list[dict[str, Any]] = []
            data[user_id] = devices
            lines.append(f"{user_id}:")
            for entry in user_keys.devices:
                mark = ""
                if own is not None:
                    mark = next((" (this device)" for o in own if o["device_id"] == entry.key.ref.device_id
                                 and o["this_device"]), "")
                pq = " +pq" if entry.key.pq_pub is not None else ""
                lines.append(f"  {entry.key.ref.device_id} v{entry.key.ref.version}{pq}  {entry.key.fingerprint}"
                             f"{mark}")
                devices.append({"device_id": entry.key.ref.device_id, "version": entry.key.ref.version,
                                      "fingerprint": entry.key.fingerprint, "leaf_index": entry.leaf_index})
        lines.append("(every key proven in the directory's signed, consistent log)")
        self.emit("\n".join(lines), data)
        return EXIT_OK

    def _monitor(self, report: KeyMonitorReport) -> int:
        header = ("device", "version", "fingerprint", "created", "status", "revoked")
        rows = [(k.device_id, str(k.version), k.fingerprint, k.key.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                 STATUS_LABELS[k.status],
                 f"{k.revoked_at:%Y-%m-%d %H:%M:%S} ({k.revocation_reason})" if k.revoked_at else "-")
                for k in report.keys]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                 for row in [header, *rows]]
        lines.append(f"({len(report.keys)} key record(s) ever published for you, every one proven in the "
                     f"directory's log of size {report.checkpoint_size}, consistent with what this client saw before)")
        if report.other_devices:
            lines.append("Other devices: check each is one of yours (compare fingerprints on that device); if one "
                         "is not, revoke it and change your password.")
        if report.alarms:
            lines.append(f"ALARM: {len(report.alarms)} key record(s) claim this device ({report.device_id}) with a "
                         "key it never made. Someone else holds a key in your name: revoke this device, change "
                         "your password, tell your security officer.")
        self.emit("\n".join(lines), {"user_id": report.user_id, "device_id": report.device_id,
                                     "checkpoint_size": report.checkpoint_size, "alarm": bool(report.alarms),
                                     "keys": [k.as_dict() for k in report.keys]})
        return EXIT_KEY_ALARM if report.alarms else EXIT_OK

    def _key_result(self, verb: str, result: Any) -> int:
        pair = result.pair
        text = f"{verb} device {pair.device_id} key version {pair.version}\nfingerprint: {result.fingerprint}"
        if result.note:
            text += f"\nnote: {result.note}"
        self.emit(text, {"device_id": pair.device_id, "version": pair.version, "fingerprint": result.fingerprint,
                         "post_quantum": result.pq_published, "note": result.note})
        return EXIT_OK

    # -- channels and messages -------------------------------------------------------------------

    def channels(self) -> int:
        if self.args.channels_action == "open":
            channel = self.client.open_channel(self.args.type, self.args.members, name=self.args.name)
            self.emit(f"{channel.cid}  members: {', '.join(channel.members)}", channel.__dict__)
            return EXIT_OK
        channels = self.client.list_channels()
        self.emit("\n".join(f"{c.cid}  {c.name or ''}  members: {', '.join(c.members)}" for c in channels)
                  or "(no channels)", [c.__dict__ for c in channels])
        return EXIT_OK

    def send(self) -> int:
        text = sys.stdin.read() if self.args.text == "-" else self.args.text
        sent = self.client.send(self.args.cid, text, allow_pq=not self.args.no_pq)
        self.emit(f"sent {sent.message_id} to {len(sent.recipients)} device(s), suite {sent.suite}, "
                  f"{sent.envelope_chars} characters on the wire",
                  {"message_id": sent.message_id, "suite": sent.suite, "envelope_chars": sent.envelope_chars,
                   "recipients": [r.as_list() for r in sent.recipients]})
        return EXIT_OK

    def read(self) -> int:
        if self.args.follow:
            return self._follow()
        lines, data, refused = self._messages(self.client.read(self.args.cid, limit=self.args.limit))
        self.emit("\n".join(lines) or "(no messages)", data)
        return EXIT_UNVERIFIED if refused else EXIT_OK

    def _follow(self) -> int:
        """Reads new messages until interrupted. Following is not activity: the session idles out as usual,
        with warnings before automatic logoff; Enter (the person acting) keeps it alive."""
        self.client.passive = True
        stay = threading.Event()
        threading.Thread(target=_wait_for_enter, args=(stay,), name="stay-logged-in", daemon=True).start()
        seen: set[str] = set()
        warned: set[int] = set()
        refused_total = 0
        polls = 0
        while True:
            if stay.is_set():
                stay.clear()
                countdown = self.client.keep_alive()
                warned.clear()
                self.note(f"Still logged in: automatic logoff in {countdown.idle_remaining_s} s if idle.")
            fresh = [m for m in self.client.read(self.args.cid, limit=self.args.limit)
                     if m.stream_message_id not in seen]
            seen.update(m.stream_message_id for m in fresh)
            lines, data, refused = self._messages(fresh)
            refused_total += refused
            for line, item in zip(lines, data, strict=True):
                self.out(json.dumps(item, default=str) if self.args.json else line)
            countdown = self.client.countdown()
            warning = logoff_warning(countdown.idle_remaining_s, countdown.absolute_remaining_s, warned=warned)
            if warning:
                self.note(json.dumps({"warning": "logoff", "remaining_s": min(countdown.idle_remaining_s,
                                                                             countdown.absolute_remaining_s)})
                          if self.args.json else f"safeharbor: {warning}")
            polls += 1
            if self.args.polls and polls >= self.args.polls:
                return EXIT_UNVERIFIED if refused_total else EXIT_OK
            time.sleep(self.args.interval)

    @staticmethod
    def _messages(messages: Sequence[Any]) -> tuple[list[str], list[dict[str, Any]], int]:
        lines: list[str] = []
        data: list[dict[str, Any]] = []
        refused = 0
        for m in messages:
            when = m.created_at.strftime("%Y-%m-%d %H:%M:%S") if m.created_at else "?"
            if m.verified and m.sender is not None:
                lines.append(f"{when}  [verified {m.sender.user_id}/{m.sender.device_id} v{m.sender.version} "
                             f"{m.sender_fingerprint}]  {m.text}")
                data.append({"id": m.stream_message_id, "verified": True, "text": m.text,
                             "sender": m.sender.as_list(), "fingerprint": m.sender_fingerprint, "suite": m.suite})
            else:
                refused += 1
                code = m.error.code if m.error else "unknown"
                message = m.error.message if m.error else ""
                lines.append(f"{when}  [REFUSED {code}] posted as {m.stream_user_id}: {message}")
                data.append({"id": m.stream_message_id, "verified": False, "error": code, "reason": message,
                             "posted_by": m.stream_user_id})
        return lines, data, refused

    def audit(self) -> int:
        if self.args.audit_action == "export":
            summary = self.client.audit_export(self.args.output, fmt=self.args.format, since=self.args.since,
                                               until=self.args.until)
            self.emit(f"audit export OK: {summary['count']} entries (last seq {summary['last_seq']}) in "
                      f"{summary['path']}, trailer valid, signed checkpoint of size {summary['checkpoint_size']}",
                      summary)
            return EXIT_OK
        report = self.client.audit_verify()
        self.emit(f"audit log OK: {report.get('size')} entries, root {report.get('root')}, signed checkpoint "
                  f"of size {report.get('client_checkpoint_size')} consistent with what this client saw before",
                  report)
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safeharbor", description="SafeHarbor end-to-end encrypted chat client")
    parser.add_argument("--gateway", default=os.environ.get("SAFEHARBOR_GATEWAY", "http://127.0.0.1:8080"))
    parser.add_argument("--state-dir", default=str(default_state_dir()))
    parser.add_argument("--stream-url", default=os.environ.get("STREAM_CHAT_URL"))
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="log in (password, then a one-time code when needed)")
    login.add_argument("username")
    login.add_argument("--otp", help="one-time code (else prompted when needed)")
    sub.add_parser("logout")
    sub.add_parser("whoami", help="who is logged in, session countdown, this device's key")
    keys = sub.add_parser("keys", help="this device's keys")
    keys_sub = keys.add_subparsers(dest="keys_action", required=True)
    init = keys_sub.add_parser("init", help="generate and register this device's keys")
    init.add_argument("--pq", action="store_true", help="also publish a hybrid ML-KEM-768 + X25519 key")
    keys_sub.add_parser("rotate", help="new key version (old versions kept for old messages)")
    keys_sub.add_parser("backup", help="password-encrypted backup of every key held, stored in the directory")
    restore = keys_sub.add_parser("restore", help="on a new device: restore the backup, register this device")
    restore.add_argument("--pq", action="store_true")
    show = keys_sub.add_parser("show", help="device keys with fingerprints (yours, or the users given)")
    show.add_argument("users", nargs="*")
    keys_sub.add_parser("monitor", help="every key ever published for you: this device, other devices, alarms")
    channels = sub.add_parser("channels")
    ch_sub = channels.add_subparsers(dest="channels_action", required=True)
    ch_sub.add_parser("list")
    open_ = ch_sub.add_parser("open", help="open (or find) a channel with peers")
    open_.add_argument("type", help="clinical, patient-care, billing ...")
    open_.add_argument("members", nargs="+", help="usernames or user ids (the server resolves names)")
    open_.add_argument("--name")
    send = sub.add_parser("send", help="encrypt, sign and send a message")
    send.add_argument("cid")
    send.add_argument("text", help='message text, or "-" for stdin')
    send.add_argument("--no-pq", action="store_true", help="never use the post-quantum suite")
    read = sub.add_parser("read", help="read, decrypt and verify a channel's messages")
    read.add_argument("cid")
    read.add_argument("--limit", type=int, default=50)
    read.add_argument("--follow", action="store_true", help="keep reading new messages (Ctrl-C ends)")
    read.add_argument("--interval", type=float, default=2.0, help="--follow: seconds between reads")
    read.add_argument("--polls", type=int, default=0, help="--follow: stop after this many reads (0: never)")
    audit = sub.add_parser("audit", help="auditors")
    audit_sub = audit.add_subparsers(dest="audit_action", required=True)
    audit_sub.add_parser("verify", help="verify the audit log and its signed checkpoint")
    export = audit_sub.add_parser("export", help="export entries; kept only with a valid trailer")
    export.add_argument("output", help="file to write (nothing is left there if the export is refused)")
    export.add_argument("--format", choices=("jsonl", "cef", "syslog"), default="jsonl")
    export.add_argument("--since", help="RFC 3339")
    export.add_argument("--until", help="RFC 3339 (exclusive)")
    cli_admin.add_parser(sub)
    cli_compliance.add_parser(sub)
    return parser


def qr_text(data: str) -> str:
    """`data` as a QR code for the terminal (segno: two rows per line, quiet zone included)."""
    import segno

    buffer = io.StringIO()
    segno.make(data, error="m").terminal(out=buffer, compact=True)
    return buffer.getvalue()


def _wait_for_enter(stay: threading.Event) -> None:
    """Each line on stdin is the person saying "I am here"; end of input just stops listening."""
    try:
        for _ in sys.stdin:
            stay.set()
    except (OSError, ValueError):
        return


def _fail(args: argparse.Namespace | None, code: str, text: str, status: int) -> int:
    if args is not None and args.json:
        print(json.dumps({"error": {"code": code, "message": text}}), file=sys.stderr)
    else:
        print(f"safeharbor: {text}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        cli = Cli(args, out)
        handler: Callable[[], int] = {
            "login": cli.login, "logout": cli.logout, "whoami": cli.whoami, "keys": cli.keys,
            "channels": cli.channels, "send": cli.send, "read": cli.read, "audit": cli.audit,
            "admin": lambda: cli_admin.run(cli), "compliance": lambda: cli_compliance.run(cli),
        }[args.command]
        return handler()
    except LoginRequired as exc:
        return _fail(args, exc.code, f"{exc.message.rstrip('.')}. Run `safeharbor login <username>`.", EXIT_LOGIN)
    except (AuditVerificationFailed, DirectoryError) as exc:
        return _fail(args, exc.code, f"VERIFICATION FAILED ({exc.code}): {exc.message}", EXIT_UNVERIFIED)
    except SafeHarborClientError as exc:
        return _fail(args, getattr(exc, "code", "client_error"), str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        # Ctrl-C: a clean stop, never a traceback. A request already answered by the server stays done.
        return _fail(args, "interrupted", "interrupted; stopped.", EXIT_INTERRUPTED)
    except EOFError:
        return _fail(args, "end_of_input", "input ended before an answer was given; nothing was done.", EXIT_ERROR)


if __name__ == "__main__":
    sys.exit(main())
