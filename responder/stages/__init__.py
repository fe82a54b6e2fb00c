"""Stages: what each trigger does, reading and writing only through `responder.ports`.

One module per stage: `creation`, `power`, `deletion`, `cleanup` (the queue worker), `device_check`
(its queue worker) and `reconciliation` (the timer). Their shared steps: `pipeline` (an event's way
through the ledger), `matching` (the candidate records, read in rounds), `executor` (a plan's writes),
`vm_checks`, `queue_worker` and `queue_watch`. A stage never imports an adapter: the composition root
hands it the ports (design §8).
"""
