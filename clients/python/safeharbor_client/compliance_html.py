"""The compliance report as one self-contained HTML page (no script, no external resource) that prints to PDF.

Every value is escaped; statuses are words as well as colours (a black-and-white printout still reads).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

STATUS_LABEL = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "not_checked": "NOT CHECKED"}

_CSS = """
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font: 10.5pt/1.35 -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: #111; margin: 24px; }
h1 { font-size: 18pt; margin: 0 0 4px; }
h2 { font-size: 13pt; margin: 22px 0 8px; border-bottom: 2px solid #222; padding-bottom: 3px; }
.meta { color: #333; font-size: 9pt; }
.meta code, td code { font: 8.5pt/1.3 "DejaVu Sans Mono", Menlo, monospace; word-break: break-all; }
.summary { display: flex; gap: 10px; margin: 12px 0; }
.summary div { border: 1.5px solid #222; border-radius: 6px; padding: 6px 14px; text-align: center; min-width: 88px; }
.summary b { display: block; font-size: 16pt; }
table { width: 100%; border-collapse: collapse; table-layout: fixed; }
th, td { border: 1px solid #999; padding: 4px 6px; vertical-align: top; text-align: left; }
th { background: #eee; font-size: 9pt; }
tr { break-inside: avoid; page-break-inside: avoid; }
thead { display: table-header-group; }
.st { font-weight: 700; text-align: center; white-space: nowrap; }
.pass { background: #d9f2dd; color: #0b5d1e; }
.warn { background: #fff1c2; color: #6b4e00; }
.fail { background: #fbd5d5; color: #8a0000; }
.not_checked { background: #e6e6e6; color: #333; }
ul.ev { margin: 0; padding-left: 14px; font-size: 8.5pt; }
ul.ev ul.ev { padding-left: 12px; }
.verified { border: 2px solid #0b5d1e; padding: 8px 10px; border-radius: 6px; margin: 10px 0; font-size: 9.5pt; }
.note { font-size: 9pt; color: #333; }
@media print { body { margin: 0; } h2 { break-after: avoid; } }
"""


def _status(value: str) -> str:
    return f'<td class="st {escape(value)}">{escape(STATUS_LABEL.get(value, value.upper()))}</td>'


def _value(value: Any) -> str:
    if isinstance(value, Mapping) and value:
        return _evidence(value)  # nested evidence (e.g. per push slot) as a nested list, not one JSON line
    if isinstance(value, str | int | float | bool) or value is None:
        return escape(str(value).lower() if isinstance(value, bool) or value is None else str(value))
    return f"<code>{escape(json.dumps(value, sort_keys=True, separators=(', ', ': ')))}</code>"


def _evidence(evidence: Mapping[str, Any]) -> str:
    items = "".join(f"<li>{escape(str(k))}: {_value(v)}</li>" for k, v in evidence.items())
    return f'<ul class="ev">{items}</ul>'


def render(document: Mapping[str, Any], *, verifier_key: str) -> str:
    """`document` as the server signed it (already verified by the caller against `verifier_key`)."""
    report = document["report"]
    summary = report["summary"]
    entry = document.get("audit_entry") or {}
    boxes = "".join(
        f'<div class="{key}"><b>{int(summary.get(key, 0))}</b>{STATUS_LABEL[key]}</div>'
        for key in ("pass", "warn", "fail", "not_checked")
    )
    safeguards = "".join(
        f"<tr><td>§{escape(s['id'].removeprefix('164.312'))}</td><td>{escape(s['name'])}</td>{_status(s['status'])}"
        f"<td>{escape(', '.join(s['controls']))}</td></tr>"
        for s in report["safeguards"]
    )
    controls = "".join(
        f"<tr>{_status(c['status'])}<td><b>{escape(c['title'])}</b><br><code>{escape(c['id'])}</code></td>"
        f"<td>{escape(c['service'])}</td><td>{escape(', '.join(x.removeprefix('164.312') for x in c['safeguards']))}"
        f"</td><td>{_evidence(c['evidence'])}</td><td><code>{escape(c['measured_at'])}</code></td></tr>"
        for c in report["controls"]
    )
    organisational = "".join(
        f"<tr>{_status(o['status'])}<td>{escape(o['title'])}</td><td>{escape(o['reference'])}</td></tr>"
        for o in report["organisational"]
    )
    services = ", ".join(
        f"{escape(name)}: {'answered' if s['answered'] else 'DID NOT ANSWER (' + escape(str(s['error'])) + ')'}"
        for name, s in report["services"].items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>SafeHarbor HIPAA §164.312 compliance report {escape(report['report_id'])}</title>
<style>{_CSS}</style></head>
<body>
<h1>HIPAA §164.312 technical safeguards: compliance report</h1>
<div class="meta">Report <code>{escape(report['report_id'])}</code> · generated {escape(report['generated_at'])}
 ({escape(report['trigger'])}) · rule {escape(report['rule'])}<br>Services: {services}</div>
<div class="summary">{boxes}</div>
<div class="verified">Signature verified (Ed25519, C2SP signed note) with key <code>{escape(verifier_key)}</code>.<br>
SHA-256 of the report (RFC 8785 canonical JSON): <code>{escape(document['sha256'])}</code><br>
Recorded in the audit log: entry <code>{escape(str(entry.get('seq')))}</code>
 (action <code>compliance.report.signed</code>, event <code>{escape(str(entry.get('event_id')))}</code>).</div>
<h2>Safeguards</h2>
<table><colgroup><col style="width:12%"><col style="width:30%"><col style="width:11%"><col></colgroup>
<thead><tr><th>§164.312</th><th>Safeguard</th><th>Status</th><th>Live checks</th></tr></thead>
<tbody>{safeguards}</tbody></table>
<h2>Controls, as measured</h2>
<table><colgroup><col style="width:8%"><col style="width:24%"><col style="width:8%"><col style="width:11%">
<col><col style="width:13%"></colgroup>
<thead><tr><th>Status</th><th>Control</th><th>Service</th><th>§164.312</th><th>Evidence</th><th>Measured at</th>
</tr></thead><tbody>{controls}</tbody></table>
<h2>Organisational safeguards (not checked by SafeHarbor)</h2>
<p class="note">Software cannot see these; they are listed so that no one reads their absence as a pass.</p>
<table><colgroup><col style="width:13%"><col><col style="width:28%"></colgroup>
<thead><tr><th>Status</th><th>Safeguard</th><th>Reference</th></tr></thead><tbody>{organisational}</tbody></table>
</body></html>
"""
