"""The scoring procedure's code as Snowflake imports it: the installed release's
packages in one zip archive, and the deployed settings beside it.

The deployer uploads both to a folder of the code stage named after the release
(``sagemaker_predictions/<version>/``) and creates the procedure with ``IMPORTS`` of
the two files, so the procedure runs exactly the code CD installed from Artifactory.
Rolling back is deploying the previous release: its folder is still there.

The archive holds the packages the handler imports (``ARCHIVED_PACKAGES``), read from
wherever Python finds them: the release in site-packages on a CD runner, the checkout
in an editable install. Snowflake provides only the standard library and the
procedure's ``PACKAGES`` from its Anaconda channel; a test imports the handler from
the archive alone, so an import of anything else fails here as it would there.
The archive is built byte for byte the same from the same files (sorted entries,
fixed timestamps), so redeploying a release changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from snowflake.sagemaker_predictions.procedure import SETTINGS_FILE, ProcedureSettings
from stack.identifiers import ConfigError

DISTRIBUTION = "snowflake-sagemaker-mlops"
HANDLER = "snowflake.sagemaker_predictions.handler.run"
# The Python the procedure runs on in Snowflake: the one the image and tests use
RUNTIME_VERSION = "3.11"
# From Snowflake's Anaconda channel, pinned to the version the procedure's tests run
# under (constraints.txt; a test keeps the two equal)
PACKAGES = ("snowflake-snowpark-python==1.56.0",)
# Our packages the handler's imports reach (stack for stack.identifiers)
ARCHIVED_PACKAGES = ("snowflake.sagemaker_predictions", "stack")
_FOLDER = "sagemaker_predictions"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


@dataclass(frozen=True)
class ProcedureCode:
    """The two files the procedure imports, built on this machine."""

    version: str  # the release, as installed (importlib.metadata)
    archive: Path
    archive_sha256: str
    settings: Path
    settings_sha256: str

    @property
    def folder(self) -> str:
        """The release's folder on the code stage."""
        return f"{_FOLDER}/{_path_safe(self.version)}"

    def staged(self, stage: str) -> tuple[str, str]:
        """Where the archive and the settings file are on ``stage`` (``@`` paths)."""
        base = f"@{stage}/{self.folder}"
        return f"{base}/{self.archive.name}", f"{base}/{self.settings.name}"

    @property
    def fingerprint(self) -> str:
        """What the deployment ledger records for the uploaded files."""
        return (
            f"{self.folder}/{self.archive.name} {self.archive_sha256}\n"
            f"{self.folder}/{self.settings.name} {self.settings_sha256}"
        )

    @property
    def description(self) -> str:
        """The procedure's COMMENT: which release and settings it runs."""
        return (
            f"{DISTRIBUTION} {self.version} (archive sha256 "
            f"{self.archive_sha256[:12]}, settings sha256 {self.settings_sha256[:12]})"
        )


def release_version() -> str:
    """The installed release's version (setuptools-scm's, from the git tag)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"{DISTRIBUTION} is not installed: install the release "
            f"(pip install {DISTRIBUTION}==VERSION) or the checkout (scripts/setup.sh)"
        ) from None


def build_procedure_code(settings: ProcedureSettings, directory: Path) -> ProcedureCode:
    """Write the archive and the settings file into ``directory``."""
    version = release_version()
    archive = directory / f"{DISTRIBUTION.replace('-', '_')}-{_path_safe(version)}.zip"
    files = dict(_package_files())
    # every folder as its own entry too, as `zip -r` writes them: Python's zipimport
    # finds a namespace package (snowflake/, with no __init__.py) only by its entry
    folders = {
        "/".join(name.split("/")[:depth]) + "/"
        for name in files
        for depth in range(1, name.count("/") + 1)
    }
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in sorted([*files, *folders]):
            entry = zipfile.ZipInfo(name, _EPOCH)
            if name in folders:
                entry.external_attr = (0o40755 << 16) | 0x10  # a directory
                zipped.writestr(entry, b"")
                continue
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            zipped.writestr(entry, files[name].read_bytes())
    settings_file = directory / SETTINGS_FILE
    settings_file.write_text(settings.to_json())
    return ProcedureCode(
        version, archive, _sha256(archive), settings_file, _sha256(settings_file)
    )


def _package_files() -> list[tuple[str, Path]]:
    """(name in the archive, file) for every file of ``ARCHIVED_PACKAGES``."""
    files = []
    for package in ARCHIVED_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"package {package} of {DISTRIBUTION} is not installed")
        prefix = package.replace(".", "/")
        for location in spec.submodule_search_locations:
            root = Path(location)
            for path in root.rglob("*"):
                relative = path.relative_to(root)
                if path.is_file() and "__pycache__" not in relative.parts:
                    files.append((f"{prefix}/{relative.as_posix()}", path))
    return files


def _path_safe(version: str) -> str:
    """A version as a stage folder or file name: a local version's ``+`` (and any
    other character a stage path would need quoted) becomes ``_``.
    """
    return re.sub(r"[^0-9A-Za-z._-]", "_", version)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
