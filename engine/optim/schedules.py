"""Learning-rate schedules: the rate as a function of the number of updates done so far."""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import positive_number

__all__ = ["Schedule", "ConstantSchedule", "StepDecay", "ExponentialDecay"]


class Schedule:
    """A learning rate as a function of the number of updates done so far."""

    def __call__(self, count: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    lr: float

    def __post_init__(self):
        positive_number(self.lr, "lr")

    def __call__(self, count):
        return self.lr


@dataclass(frozen=True)
class StepDecay(Schedule):
    """lr * factor^k after k of the ``boundaries`` (update counts) have been passed."""

    lr: float
    boundaries: tuple[int, ...]
    factor: float = 0.1

    def __post_init__(self):
        positive_number(self.lr, "lr")
        b = tuple(int(x) for x in self.boundaries)
        if list(b) != sorted(b) or any(x < 0 for x in b):
            raise ValueError(f"boundaries: expected increasing counts >= 0, got {self.boundaries}")
        object.__setattr__(self, "boundaries", b)

    def __call__(self, count):
        return self.lr * self.factor ** sum(count >= b for b in self.boundaries)


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """lr * rate^(count / steps), or rate^floor(count / steps) with ``staircase``."""

    lr: float
    rate: float
    steps: int
    staircase: bool = False

    def __post_init__(self):
        positive_number(self.lr, "lr")
        positive_number(self.rate, "rate")
        if self.steps < 1:
            raise ValueError(f"steps: expected >= 1, got {self.steps}")

    def __call__(self, count):
        p = count // self.steps if self.staircase else count / self.steps
        return self.lr * self.rate**p
