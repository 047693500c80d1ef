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
        self.last_line = ""

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
        else:
            line = f"round {rnd}/{self.rounds}: {info}"
            if acc is not None and line.split(":")[0] != self.last_line.split(":")[0] and \
                    all(s.round >= rnd for s in state.nodes.values()):
                if rnd % max(1, self.rounds // 20) == 0 or rnd == self.rounds:
                    print(line, flush=True)
                    self.last_line = line

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(et, ev, tb)
