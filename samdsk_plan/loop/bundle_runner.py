"""Run an emitted bundle's configs with ``python -m monai.bundle run`` in a child process, and
training in ``N`` processes through ``torchrun`` (``torch.distributed.run``) and the bundle's
``multi_gpu_train.json``: one process per GPU (NCCL) or, on the CPU, ``N`` gloo processes.
Single-process CPU runs start warm (:mod:`samdsk_plan.loop.warm_start`): forked from a process
that imported MONAI once, instead of paying its 8-12 s import per run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from samdsk_plan.bundle import ids
from samdsk_plan.errors import SamdskError
from samdsk_plan.io.parallel import die_with_parent
from samdsk_plan.loop.warm_start import WarmStarter

# causes worth naming in the error's first line when the child's log shows them
_KNOWN_CAUSES = ("No space left on device", "Disk quota exceeded", "CUDA out of memory", "Permission denied")


def bundle_command(configs: Sequence[str], args: Mapping[str, object] | None = None) -> list[str]:
    """``python -m monai.bundle run`` of ``configs`` (file names in the bundle's ``configs/``, the
    later ones overriding the first), with ``--KEY VALUE`` for each of ``args``; run it with the
    bundle folder as working directory."""
    files = [f"configs/{c}" for c in configs]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files[0] if len(files) == 1 else str(files)]
    for key, value in (args or {}).items():
        cmd += [f"--{key}", str(value)]
    return cmd


class BundleRunner:
    """Runs ``configs/*.json`` of ``bundle_dir`` (the working directory of each run).

    Args:
        bundle_dir: the bundle folder (``configs/train.json`` ...).
        dataset_dir: data root the datalists' relative paths start from.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        overrides: extra ``--KEY VALUE`` pairs for every run (e.g. ``network_def#filters``).
        threads: torch / OpenMP threads of the child, of each process with ``nproc > 1`` (None:
            the library default).
        nproc: processes that train (``train.json`` runs): above 1, ``torchrun`` starts them on
            this machine with ``multi_gpu_train.json`` (DDP; ``batch_size`` is per process, so
            each iteration sees ``nproc * batch_size`` patches). With ``device="cuda"`` each
            takes the GPU of its ``LOCAL_RANK``; on the CPU they talk over gloo.

    On the CPU, runs in one process are forked from a warm-start server that the first such run
    starts (see :mod:`samdsk_plan.loop.warm_start`); :meth:`close` ends it, and it ends with this
    process in any case.
    """

    def __init__(
        self,
        bundle_dir: str | Path,
        dataset_dir: str | Path,
        device: str = "cpu",
        overrides: Mapping[str, str] | None = None,
        threads: int | None = None,
        nproc: int = 1,
    ) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        if not (self.bundle_dir / "configs" / "train.json").is_file():
            raise SamdskError(f"{self.bundle_dir}: not a samdsk-plan bundle (no configs/train.json)")
        self.dataset_dir = Path(dataset_dir).resolve()
        self.device = device
        self.overrides = dict(overrides or {})
        self.threads = threads
        if nproc < 1:
            raise SamdskError(f"--nproc must be positive, got {nproc}")
        self.nproc = nproc
        self._warm: WarmStarter | None = None

    def command(self, configs: Sequence[str], args: Mapping[str, object]) -> list[str]:
        """The ``monai.bundle run`` command line for ``configs`` with ``args`` as overrides; a
        ``train.json`` run with ``nproc > 1`` goes through ``torchrun`` (see the class)."""
        common = {ids.DATASET_DIR: self.dataset_dir, **self.overrides, **args}
        if self.nproc == 1 or tuple(configs) != ("train.json",):
            return bundle_command(configs, {ids.DEVICE: self.device, **common})
        on_gpu = self.device.startswith("cuda")
        # on GPUs the overlay's device is the process's LOCAL_RANK one
        placement = {ids.DIST_BACKEND: "nccl"} if on_gpu else {ids.DEVICE: "cpu", ids.DIST_BACKEND: "gloo"}
        cmd = bundle_command(["train.json", "multi_gpu_train.json"], {**placement, **common})
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={self.nproc}"]
        return [cmd[0], *launcher, *cmd[1:]]

    def run(self, configs: Sequence[str], log_file: str | Path, **args: object) -> None:
        """Run and write the child's output to ``log_file``; a failure raises
        :class:`SamdskError` naming the log and quoting its end."""
        log_file = Path(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        cmd = self.command(configs, args)
        if self.device == "cpu" and cmd[1:3] == ["-m", "monai.bundle"]:
            if self._warm is None:
                self._warm = WarmStarter(env, str(log_file.parent))
            returncode = self._warm.run(cmd[3:], self.bundle_dir, log_file, env)
        else:
            with open(log_file, "w") as log:
                returncode = subprocess.run(
                    cmd, cwd=self.bundle_dir, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
                ).returncode
        if returncode != 0:
            text = log_file.read_text(errors="replace")
            tail = "\n".join(text.splitlines()[-15:])
            cause = next((c for c in _KNOWN_CAUSES if c in text), None)
            raise SamdskError(
                f"bundle run {' + '.join(configs)} failed (exit {returncode})"
                + (f": {cause.lower()}" if cause else "")
                + f"; full log: {log_file}\n{tail}"
            )

    def close(self) -> None:
        """End the warm-start server, if one was started (the next CPU run starts another)."""
        if self._warm is not None:
            self._warm.close()
            self._warm = None
