"""Carry out a plan against Microsoft Graph, or in audit mode only describe it.

Every action is idempotent at the adapter (False: already so), so a retried
event repeats a plan safely. A plan's writes go to Graph together (one `$batch`), each
answered on its own. A refusal (RequestRefused) becomes a finding and a
`Refusal` naming the action and the Graph app role it needs (the caller writes
its line, which the access-denied alert reads), and the remaining actions still
run; a TransientError escapes so the event is retried later.
"""

from __future__ import annotations

from dataclasses import dataclass

from responder.decisions.errors import IDENTITY_MISSING, AccessDenied, RequestRefused
from responder.decisions.model import Finding, FindingSource, Severity
from responder.decisions.settings import Mode
from responder.decisions.suppression import Action, Plan
from responder.ports import DeviceDirectory


@dataclass(frozen=True, slots=True)
class Refusal:
    """One action Graph refused: what, and Graph's answer (an access denial names the action's app role)."""

    action: str
    problem: RequestRefused

    def finding(self) -> Finding:
        return Finding(
            "action-refused",
            Severity.WARNING,
            f"Graph refused to {self.action}",
            str(self.problem),
            phase=FindingSource.POWER,
        )


@dataclass(frozen=True, slots=True)
class Execution:
    done: tuple[str, ...]  # what was carried out (enforce) or would have been (audit)
    refusals: tuple[Refusal, ...] = ()

    @property
    def refused(self) -> tuple[Finding, ...]:
        return tuple(refusal.finding() for refusal in self.refusals)


async def execute(plan: Plan, directory: DeviceDirectory, mode: Mode) -> Execution:
    if mode is Mode.AUDIT:
        return Execution(tuple(f"audit: would {action.describe()}" for action in plan.actions))
    done: list[str] = []
    refusals: list[Refusal] = []
    outcomes = await directory.apply(plan.actions) if plan.actions else []
    for action, outcome in zip(plan.actions, outcomes, strict=True):
        if isinstance(outcome, RequestRefused):
            refusals.append(Refusal(action.describe(), _naming_the_role(outcome, action)))
            continue
        done.append(action.describe() + ("" if outcome else " (already so)"))
    return Execution(tuple(done), tuple(refusals))


def _naming_the_role(problem: RequestRefused, action: Action) -> RequestRefused:
    """An access denial named after this write's own app role, not Graph's roles in general (no token
    at all stays as it is: the identity, not a role, is what's missing)."""
    if not isinstance(problem, AccessDenied) or problem.role == IDENTITY_MISSING:
        return problem
    needs = f"{problem.message}; this write needs {action.role}"
    return AccessDenied(problem.status, needs, problem.service, problem.resource, action.role)
