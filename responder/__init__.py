"""Intune compliance responder for Azure VMs: the core, in layers that its folders show.

- `decisions/`: pure (no I/O): rules, ownership proofs, plans, parsing of events and documents.
- `stages/`: one module per stage, reading and writing only through `ports`.
- `adapters/`: the only code that talks to Azure, Graph and Storage, each behind a port.
- `ports.py`: the protocols between them; `composition.py`: builds the adapters from the settings;
  `log_lines.py`: the JSON log lines every layer above the decisions writes.
"""
