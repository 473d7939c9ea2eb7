"""What produced a result: code version, package versions, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

from helpers import __version__
from helpers.core import paths

PACKAGES = ("torch", "mmcv", "mmengine", "mmsegmentation", "numpy", "opencv-python", "papermill")


def git_commit() -> str | None:
    """The repository's HEAD commit, with ``-dirty`` when tracked files changed; None outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=paths.REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def code_version() -> dict:
    """The package version and git commit."""
    return {"helpers": __version__, "git_commit": git_commit()}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that shape a result."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_info() -> dict:
    """CPU and, when present, GPU description."""
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info
