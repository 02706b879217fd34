"""SafeHarbor audit-service: tamper-evident audit log (hash chain + RFC 6962 Merkle tree), signed
checkpoints, proofs, verification, auditor queries and SIEM export, and Stream webhooks."""
