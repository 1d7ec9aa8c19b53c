"""Mutant implementations: each is the reference with ONE mistake a learner actually makes.

``tests/test_checks.py`` runs the matching self-check on every mutant and asserts that it is
rejected with :class:`resnet_arcface.teach.checks.CheckFailed` whose message contains the phrases
registered with the mutant (so each mistake gets its own, specific message).

Register a mutant with the :func:`mutant` decorator::

    @mutant("ir_block", "SE applied after the residual addition")
    class IRSEAfterAddition(IRBlock): ...
"""
from dataclasses import dataclass
from typing import Any, Callable, List, Tuple


@dataclass(frozen=True)
class Mutant:
    """One wrong implementation and what its check must say about it.

    Attributes:
        id: The mutant's name (its class or function name), used as the pytest id.
        exercise: The exercise id, a key of ``resnet_arcface.teach.exercises.EXERCISES``.
        obj: The wrong class or function, passed to the check as a learner would.
        expect: Phrases the CheckFailed message must contain.
    """

    id: str
    exercise: str
    obj: Any
    expect: Tuple[str, ...]


MUTANTS: List[Mutant] = []


def mutant(exercise: str, *expect: str) -> Callable[[Any], Any]:
    """Register the decorated class or function as a mutant for ``exercise``."""
    def register(obj: Any) -> Any:
        MUTANTS.append(Mutant(obj.__name__, exercise, obj, expect))
        return obj
    return register


# Importing the modules registers their mutants, in chapter order.
from . import conv, basic, bottleneck, se, ir, model, functions  # noqa: E402,F401
