"""A progress bar for a running network: slowest node's round, mean accuracy, bytes so far."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from mcepl.launcher.collector import CollectorState


class Progress:
    """rich progress on a terminal; a plain line per evaluation when output is not a terminal."""

    def __init__(self, rounds: int, nodes: int, enabled: bool = True) -> None:
        self.rounds, self.nodes, self.enabled = rounds, nodes, enabled
        self.tty = sys.stdout.isatty()
        self.bar: RichProgress | None = None
        self.task = None
        self.next_print = 1  # without a terminal: a line about every tenth of the run

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            self.bar = RichProgress(TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(),
                                    TextColumn("{task.fields[info]}"), TimeElapsedColumn())
            self.bar.__enter__()
            self.task = self.bar.add_task("rounds", total=self.rounds, info="starting nodes")
        return self

    def update(self, state: CollectorState) -> None:
        if not self.enabled:
            return
        rnd = max(state.min_round(), 0)
        acc = state.mean_latest_acc()
        info = (f"mean acc {acc:.3f}" if acc is not None else "mean acc -") + \
            f" | {state.total_bytes() / 1e6:.2f} MB sent"
        if self.bar is not None:
            self.bar.update(self.task, completed=rnd, info=info)
        elif rnd >= self.next_print:
            print(f"round {rnd}/{self.rounds}: {info}", flush=True)
            step = max(1, self.rounds // 10)
            self.next_print = self.rounds if rnd < self.rounds and rnd + step > self.rounds \
                else (rnd // step + 1) * step

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(et, ev, tb)
