"""Pure decisions: what the responder concludes from facts already read.

No module here does I/O, imports an SDK or reaches a port: each takes values (events, VM and
device facts, ledger rows, settings) and returns values (findings, plans, marks to set or lift),
so every rule and every safety proof is tested without a network. Enforced by the `layers` and
`forbidden` contracts in pyproject.toml.
"""
