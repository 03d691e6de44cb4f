"""The one internal description of a dataset that every input layout is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, tied to the file (or dataset.json) where it was found."""

    path: str
    message: str
    severity: str = "error"  # "error" fails verification, "warning" is reported only

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


@dataclass(frozen=True)
class Case:
    """One case: its image channel files and, if it has one, its label file.

    ``images`` holds one path per channel file. A Decathlon multi-modal case stores all
    channels in one 4D file, so it has a single path and ``Dataset.channel_names`` says how
    many channels that file must hold.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None

    @property
    def labelled(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class Dataset:
    """A dataset in any supported layout.

    Attributes:
        name: short name (the dataset folder's name by default).
        layout: ``"msd"``, ``"nnunetv2"`` or ``"datalist"``.
        source: the JSON file the description was read from.
        channel_names: one modality name per image channel (``("MRI",)``, ``("CT",)``, ...).
        labels: label value -> name, background included; empty when the layout declares none.
        cases: labelled and unlabelled cases in the order the layout lists them.
        problems: structural problems found while reading the layout (duplicate ids, counts).
        root: folder that the layout's relative paths start from.
    """

    name: str
    layout: str
    source: Path
    channel_names: tuple[str, ...]
    labels: dict[int, str]
    cases: tuple[Case, ...]
    problems: tuple[Problem, ...] = field(default=())
    root: Path | None = None

    @property
    def labelled(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.labelled)

    @property
    def unlabelled(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if not c.labelled)

    @property
    def foreground_labels(self) -> dict[int, str]:
        return {v: n for v, n in self.labels.items() if v != 0}
