"""The tamper-evident log (docs/tamper-evident-log.md): pure Merkle/note/checkpoint/leaf modules
that a verifier can read alone, plus the sequencer, signer and publisher that run them against the
store."""
