"""Our image, staged on this machine from the Dockerfile: the local runner's only code.

SageMaker runs every job of the definition in our image. The local runner runs them from
a staged copy of what that image holds, derived from the Dockerfile itself (parsed with
dockerfile-parse), never from the checkout:

- the files its ``COPY`` lines bring from the build context (``.dockerignore``
  applied), followed through ``COPY --from=<stage>`` into the final stage;
- the virtual environment its ``RUN`` lines make (``python -m venv DIR``) and the
  project they install into it (``DIR/bin/pip install -c constraints.txt .``): the
  staged tree is installed by pip into a venv of this machine's Python, exactly as the
  image's pip installs it, without its dependencies;
- the dependencies: the closure of what that installed project requires, as resolved
  in this runner's own environment from the same ``constraints.txt`` (each version is
  checked against the pin), linked into the staged venv distribution by distribution,
  so a module outside that closure cannot be imported there either;
- the final stage's ``ENV`` (over the base image's), ``USER``, ``WORKDIR``,
  ``ENTRYPOINT`` and ``CMD``.

Other ``RUN`` commands (creating users, folders) are listed in the staged image's
``image.json`` as not run here. The stage is built once per content digest (the
Dockerfile, every copied file, the dependency versions, this Python) under
``<state>/images/<digest>/``, into a temporary folder renamed into place when complete.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
# What the official python:<version>-slim images set (docker inspect), the base our
# Dockerfile's ENV builds on ($PATH in ``ENV PATH=/opt/venv/bin:$PATH``).
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
_PYTHON_BASE = re.compile(r"^(?:[\w.-]+/)*python:(\d+)\.(\d+)")


class ImageError(Exception):
    """The Dockerfile cannot be staged here, or asks for what this machine lacks."""


@dataclass(frozen=True)
class ProjectInstall:
    """``<venv>/bin/pip install -c <constraints> <source>`` in a RUN line."""

    venv: str  # image path of the venv
    source: str  # image path of the project tree
    constraints: str | None  # image path of the constraints file
    # the tree's files when the RUN ran: path inside it -> path in the build context
    tree: tuple[tuple[str, str], ...] = ()


@dataclass
class _Stage:
    name: str
    base: str
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    # image path -> context path (a file or a folder of the build context)
    files: dict[str, str] = field(default_factory=dict)
    venvs: list[str] = field(default_factory=list)
    installs: list[ProjectInstall] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImageSpec:
    """What the final stage of the Dockerfile holds and how it starts."""

    dockerfile: Path
    context: Path
    base: str
    files: dict[str, str]  # image path -> context path
    installs: list[ProjectInstall]
    env: dict[str, str]
    user: str | None
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    not_run: list[str]

    @property
    def python_version(self) -> tuple[int, int] | None:
        match = _PYTHON_BASE.match(self.base)
        return (int(match[1]), int(match[2])) if match else None


def read_dockerfile(
    dockerfile: Path = DOCKERFILE, context: Path | None = None
) -> ImageSpec:
    """Parse ``dockerfile`` (context: its folder) into what the final image holds."""
    from dockerfile_parse import DockerfileParser
    from dockerfile_parse.util import WordSplitter

    if not dockerfile.is_file():
        raise ImageError(f"no Dockerfile at {dockerfile}")
    context = (context or dockerfile.parent).resolve()
    parser = DockerfileParser(path=str(dockerfile), env_replace=False)
    stages: dict[str, _Stage] = {}
    stage: _Stage | None = None
    global_args: dict[str, str] = {}  # ARG before the first FROM: FROM lines see them
    for instruction in parser.structure:
        kind, value = instruction["instruction"], instruction["value"]
        if kind == "COMMENT":
            continue
        if kind == "FROM":
            stage = _from(_substitute(value, global_args), stages, len(stages))
            stages[stage.name] = stage
            continue
        if stage is None:
            if kind == "ARG":
                name, _, default = value.strip().partition("=")
                global_args[name.strip()] = WordSplitter(default).dequote()
                continue
            raise ImageError(f"{dockerfile}: {kind} before FROM")
        _apply(stage, kind, value, stages)
    if stage is None:
        raise ImageError(f"{dockerfile} has no FROM")
    return ImageSpec(
        dockerfile=dockerfile.resolve(),
        context=context,
        base=stage.base,
        files={k: v for k, v in stage.files.items() if not _under_any(k, stage.venvs)},
        installs=list(stage.installs),
        env=dict(stage.env),
        user=stage.user,
        workdir=stage.workdir,
        entrypoint=list(stage.entrypoint),
        cmd=list(stage.cmd),
        not_run=list(stage.not_run),
    )


def _substitute(value: str, args: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` in a FROM line, from the ARG defaults before it (the
    build's --build-arg values are not known here: the defaults are what we stage).
    """

    def value_of(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in args:
            raise ImageError(
                f"FROM {value}: ${name} is not an ARG before the first FROM"
            )
        return args[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value_of, value)


def _from(value: str, stages: dict[str, _Stage], index: int) -> _Stage:
    words = [w for w in value.split() if not w.startswith("--platform")]
    base = words[0]
    name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(index)
    if base in stages:  # FROM an earlier stage: start from its content
        parent = stages[base]
        return _Stage(
            name=name,
            base=parent.base,
            workdir=parent.workdir,
            env=dict(parent.env),
            user=parent.user,
            files=dict(parent.files),
            venvs=list(parent.venvs),
            installs=list(parent.installs),
        )
    env = dict(BASE_IMAGE_ENV) if _PYTHON_BASE.match(base) else {}
    return _Stage(name=name, base=base, env=env)


def _apply(stage: _Stage, kind: str, value: str, stages: dict[str, _Stage]) -> None:
    from dockerfile_parse.util import WordSplitter, extract_key_values

    if kind == "ENV":
        for key, val in extract_key_values(True, {}, dict(stage.env), value):
            stage.env[key] = val
    elif kind == "WORKDIR":
        stage.workdir = _absolute(stage.workdir, WordSplitter(value).dequote())
    elif kind == "USER":
        stage.user = value.strip()
    elif kind in ("ENTRYPOINT", "CMD"):
        argv = _exec_form(value)
        if kind == "ENTRYPOINT":
            stage.entrypoint, stage.cmd = argv, []
        else:
            stage.cmd = argv
    elif kind in ("COPY", "ADD"):
        _copy(stage, value, stages)
    elif kind == "RUN":
        _run(stage, value)


def _exec_form(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("["):
        try:
            argv = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImageError(f"cannot read {text!r}: {exc}") from None
        return [str(a) for a in argv]
    return ["/bin/sh", "-c", text]


def _copy(stage: _Stage, value: str, stages: dict[str, _Stage]) -> None:
    words = shlex.split(value)
    options = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    if len(paths) < 2:
        raise ImageError(f"COPY {value!r} needs a source and a destination")
    *sources, dest = paths
    source_stage = next(
        (o.split("=", 1)[1] for o in options if o.startswith("--from=")), None
    )
    into_dir = dest.endswith("/") or len(sources) > 1
    dest = _absolute(stage.workdir, dest)
    for source in sources:
        if source_stage is None:
            source = source.rstrip("/") or "."
            target = _join(dest, PurePosixPath(source).name) if into_dir else dest
            stage.files[target] = source
            continue
        origin = stages.get(source_stage)
        if origin is None:
            raise ImageError(f"COPY --from={source_stage}: no such stage")
        _copy_from(stage, origin, _absolute(origin.workdir, source), dest)


def _copy_from(stage: _Stage, origin: _Stage, source: str, dest: str) -> None:
    """Bring what ``origin`` holds under ``source`` to ``dest`` of ``stage``."""
    for path, context_path in origin.files.items():
        if path == source or path.startswith(source.rstrip("/") + "/"):
            stage.files[dest + path[len(source) :]] = context_path
    for venv in origin.venvs:
        if venv == source:
            if dest != source:
                raise ImageError(
                    f"COPY --from moves the venv {source} to {dest}: a venv does not "
                    "work at another path"
                )
            stage.venvs.append(dest)
            stage.installs.extend(i for i in origin.installs if i.venv == source)


def _run(stage: _Stage, value: str) -> None:
    for command in re.split(r"\s*(?:&&|;)\s*", value.strip()):
        if not command:
            continue
        words = shlex.split(command)
        if words[:3] in (["python", "-m", "venv"], ["python3", "-m", "venv"]):
            paths = [w for w in words[3:] if not w.startswith("-")]
            stage.venvs.extend(_absolute(stage.workdir, p) for p in paths)
        elif (
            len(words) >= 2 and words[0].endswith("/bin/pip") and words[1] == "install"
        ):
            stage.installs.append(_pip_install(stage, words))
        else:
            stage.not_run.append(command)


def _pip_install(stage: _Stage, words: list[str]) -> ProjectInstall:
    venv = words[0].removesuffix("/bin/pip")
    if venv not in stage.venvs:
        raise ImageError(f"{' '.join(words)}: {venv} is not a venv made by the image")
    constraints, sources, skip = None, [], False
    for index, word in enumerate(words[2:], start=2):
        if skip:
            skip = False
        elif word in ("-c", "--constraint"):
            constraints, skip = _absolute(stage.workdir, words[index + 1]), True
        elif word.startswith("-"):
            continue  # --no-cache-dir and the like change nothing that runs
        else:
            sources.append(word)
    if len(sources) != 1 or not (sources[0].startswith((".", "/"))):
        raise ImageError(
            f"{' '.join(words)}: the local runner stages a RUN that pip-installs one "
            "project folder (pip install [-c constraints.txt] .)"
        )
    source = _absolute(stage.workdir, sources[0])
    root = source.rstrip("/") or "/"
    tree = tuple(
        sorted(
            (path[len(root) :].lstrip("/"), context_path)
            for path, context_path in stage.files.items()
            if path.startswith(root + "/")
        )
    )
    return ProjectInstall(venv, source, constraints, tree)


def _under_any(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _absolute(workdir: str, path: str) -> str:
    return str(PurePosixPath(workdir, path)) if not path.startswith("/") else path


def _join(directory: str, name: str) -> str:
    return str(PurePosixPath(directory, name))


# --- staging --------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedImage:
    """A staged image: ``rootfs`` holds the image's own paths (``rootfs/opt/venv``)."""

    root: Path
    digest: str
    env: dict[str, str]
    user: str | None
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    venvs: list[str]
    # host folders the staged venvs point into (this Python, the dependencies):
    # what an isolated job must see, read-only, at the same paths
    host_dependencies: list[str]
    not_run: list[str]
    # the image paths the stage provides: each copied file or folder, each venv
    paths: list[str]

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    def host_path(self, image_path: str) -> Path:
        """Where an image path lives on this machine (the staged copy, if any)."""
        return self.rootfs / image_path.lstrip("/")

    def staged_paths(self) -> list[str]:
        """The image paths the stage provides: each copied file or folder, each venv."""
        return list(self.paths)

    @property
    def user_ids(self) -> tuple[int, int] | None:
        """The numeric uid and gid of ``USER``; None for root or no USER."""
        if not self.user:
            return None
        user, _, group = self.user.partition(":")
        if not user.isdigit() or (group and not group.isdigit()):
            raise ImageError(
                f"USER {self.user}: use numeric ids (the local runner has no "
                "/etc/passwd of the image to look names up in)"
            )
        uid, gid = int(user), int(group or user)
        return None if uid == 0 else (uid, gid)

    @classmethod
    def load(cls, root: Path) -> StagedImage:
        data = json.loads((root / "image.json").read_text())
        return cls(
            root=root,
            digest=data["digest"],
            env=data["env"],
            user=data["user"],
            workdir=data["workdir"],
            entrypoint=data["entrypoint"],
            cmd=data["cmd"],
            venvs=data["venvs"],
            host_dependencies=data["host_dependencies"],
            not_run=data["not_run"],
            paths=data["paths"],
        )


def stage_image(
    images_dir: Path, dockerfile: Path = DOCKERFILE, context: Path | None = None
) -> StagedImage:
    """The staged image for ``dockerfile``, built once per content digest."""
    spec = read_dockerfile(dockerfile, context)
    _check_python(spec)
    ignore = _DockerIgnore.read(spec.context)
    installed = _installed()  # read once: the closure and the linking both need it
    closure_by_install = [
        _dependency_closure(spec, i, installed) for i in spec.installs
    ]
    digest = _digest(spec, ignore, closure_by_install)
    root = images_dir / digest[:16]
    if (root / "image.json").is_file():
        return StagedImage.load(root)
    images_dir.mkdir(parents=True, exist_ok=True)
    partial = images_dir / f".{digest[:16]}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        paths = _build(spec, ignore, closure_by_install, installed, partial / "rootfs")
        manifest = {
            "digest": digest,
            "dockerfile": str(spec.dockerfile),
            "base": spec.base,
            "env": spec.env,
            "user": spec.user,
            "workdir": spec.workdir,
            "entrypoint": spec.entrypoint,
            "cmd": spec.cmd,
            "venvs": [i.venv for i in spec.installs],
            "paths": paths,
            "host_dependencies": sorted(
                {sys.base_prefix, *(_site_packages() for _ in spec.installs)}
            ),
            "not_run": spec.not_run,
            "dependencies": {
                i.venv: sorted(f"{d.name}=={d.version}" for d in closure)
                for i, closure in zip(spec.installs, closure_by_install, strict=True)
            },
        }
        (partial / "image.json").write_text(json.dumps(manifest, indent=2))
        try:
            partial.rename(root)
        except OSError:  # another runner staged the same digest first
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return StagedImage.load(root)


def _check_python(spec: ImageSpec) -> None:
    wanted = spec.python_version
    if wanted is not None and wanted != sys.version_info[:2]:
        raise ImageError(
            f"the image's base {spec.base} is Python {wanted[0]}.{wanted[1]}, this "
            f"runner's is {sys.version_info[0]}.{sys.version_info[1]}: run the local "
            "runner with the image's Python version"
        )


def _digest(spec: ImageSpec, ignore: _DockerIgnore, closures: list[list[_Dist]]) -> str:
    digest = hashlib.sha256()
    digest.update(spec.dockerfile.read_bytes())
    digest.update(sys.version.encode())
    sources = {*spec.files.values()}
    for install in spec.installs:
        sources.update(source for _, source in install.tree)
    for source in sorted(sources):
        for path in _context_files(spec.context, source, ignore):
            digest.update(path.relative_to(spec.context).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    for closure in closures:
        for dist in sorted(closure, key=lambda d: d.name.lower()):
            digest.update(f"{dist.name}=={dist.version}\n".encode())
    return digest.hexdigest()


def _build(
    spec: ImageSpec,
    ignore: _DockerIgnore,
    closures: list[list[_Dist]],
    installed: dict[str, _Dist],
    rootfs: Path,
) -> list[str]:
    paths = []
    for image_path, source in sorted(spec.files.items()):
        _copy_context(spec.context, source, rootfs / image_path.lstrip("/"), ignore)
        paths.append(image_path)
    for install, closure in zip(spec.installs, closures, strict=True):
        build_tree = rootfs.parent / "build" / install.source.lstrip("/")
        for inside, source in install.tree:
            _copy_context(spec.context, source, build_tree / inside, ignore)
        venv = rootfs / install.venv.lstrip("/")
        _make_venv(venv)
        _pip_install_project(build_tree, venv)
        _link_dependencies(closure, _venv_site_packages(venv), installed)
        _point_scripts_at(venv, install.venv)
        paths.append(install.venv)
    shutil.rmtree(rootfs.parent / "build", ignore_errors=True)
    return paths


def _make_venv(venv: Path) -> None:
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run(
        [str(base), "-m", "venv", "--without-pip", str(venv)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _pip_install_project(tree: Path, venv: Path) -> None:
    """The image's ``pip install .``: no index, no dependencies (linked next)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--prefix",
            str(venv),
            str(tree),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**_clean_build_env(), "SETUPTOOLS_SCM_PRETEND_VERSION": "0.0.0"},
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise ImageError(f"pip could not install the image's project tree: {tail}")


def _clean_build_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _point_scripts_at(venv: Path, image_venv: str) -> None:
    """pip wrote console scripts for this runner's Python; in the image they run the
    image's venv (``#!/opt/venv/bin/python``).
    """
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        head = script.read_bytes()[:256]
        if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
            body = script.read_bytes().split(b"\n", 1)[1]
            script.write_bytes(f"#!{image_venv}/bin/python\n".encode() + body)


def _venv_site_packages(venv: Path) -> Path:
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return venv / "lib" / version / "site-packages"


def _site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def _requirements(spec: ImageSpec, install: ProjectInstall) -> list[str]:
    """The project's requirements, from the setup.cfg the image's tree holds."""
    import configparser

    source = dict(install.tree).get("setup.cfg")
    if source is None:
        raise ImageError("the image's project tree has no setup.cfg")
    parser = configparser.ConfigParser()
    parser.read(spec.context / source)
    raw = parser.get("options", "install_requires", fallback="")
    return [
        line.split("#", 1)[0].strip()
        for line in raw.splitlines()
        if line.split("#", 1)[0].strip()
    ]


def _dependency_closure(
    spec: ImageSpec, install: ProjectInstall, installed: dict[str, _Dist]
) -> list[_Dist]:
    """Every distribution ``pip install -c constraints .`` puts in the image, as
    installed here; each checked against the requirement and the constraints pin.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _pins(spec, install)
    found: dict[str, _Dist] = {}
    extras_seen: dict[str, set[str]] = {}
    queue = [Requirement(r) for r in _requirements(spec, install)]
    while queue:
        requirement = queue.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        dist = installed.get(name)
        if dist is None:
            raise ImageError(
                f"the image installs {requirement}, which this environment lacks "
                "(run scripts/setup.sh to install the locked dependencies)"
            )
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise ImageError(
                f"the image needs {requirement}; this environment has {dist.version} "
                "(run scripts/setup.sh)"
            )
        if name in pins and pins[name] != dist.version:
            raise ImageError(
                f"constraints.txt pins {name}=={pins[name]}; this environment has "
                f"{dist.version} (run scripts/setup.sh)"
            )
        seen = extras_seen.setdefault(name, set())
        new_extras = set(requirement.extras) - seen
        if name in found and not new_extras:
            continue
        found[name] = dist
        seen.update(requirement.extras)
        for line in dist.requires or []:
            child = Requirement(line)
            if child.marker is None or any(
                child.marker.evaluate({"extra": e}) for e in ["", *sorted(seen)]
            ):
                child.marker = None
                queue.append(child)
    return list(found.values())


def _pins(spec: ImageSpec, install: ProjectInstall) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    if install.constraints is None:
        return {}
    inside = install.constraints[len(install.source.rstrip("/")) + 1 :]
    source = dict(install.tree).get(inside)
    if source is None:
        raise ImageError(f"{install.constraints} is not in the image's project tree")
    pins: dict[str, str] = {}
    for line in (spec.context / source).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            key = str(canonicalize_name(name.split("[")[0].strip()))
            pins[key] = version.split(";")[0].strip()
    return pins


@dataclass(frozen=True)
class _Dist:
    """One installed distribution, its metadata read once.

    ``importlib.metadata`` parses a distribution's METADATA with the email package on
    every ``.metadata``, ``.version`` or ``.requires`` (about 1 ms each, thousands of
    times a stage: 2.5 s); the headers staging uses are read here in one pass.
    """

    key: str  # the canonical name
    name: str
    version: str
    requires: tuple[str, ...]
    source: metadata.Distribution

    @classmethod
    def read(cls, dist: metadata.Distribution) -> _Dist | None:
        from packaging.utils import canonicalize_name

        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
        if text is None:
            return None
        headers = _headers(text)
        if not headers.get("Name") or not headers.get("Version"):
            return None
        name = headers["Name"][0]
        return cls(
            key=str(canonicalize_name(name)),
            name=name,
            version=headers["Version"][0],
            requires=tuple(headers.get("Requires-Dist", ())),
            source=dist,
        )

    def files(self) -> list[str]:
        """The paths it installed, relative to site-packages (its RECORD)."""
        record = self.source.read_text("RECORD")
        if record is None:
            return [str(f) for f in self.source.files or []]
        return [row[0] for row in csv.reader(record.splitlines()) if row]


def _headers(text: str) -> dict[str, list[str]]:
    """The header fields of a core-metadata file (RFC 822 style; folded lines
    joined), up to the first blank line where the description begins.
    """
    fields: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in text.splitlines():
        if not line:
            break
        if line[0] in " \t":  # folded: a whitespace-only line continues it too
            if last:
                last[-1] = f"{last[-1]} {line.strip()}".rstrip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        last = fields.setdefault(name.strip(), [])
        last.append(value.strip())
    return fields


def _installed() -> dict[str, _Dist]:
    """The distributions of this runner's own site-packages, by canonical name."""
    site = Path(_site_packages())
    found: dict[str, _Dist] = {}
    for dist in metadata.distributions(path=[str(site)]):
        read = _Dist.read(dist)
        if read is not None:
            found.setdefault(read.key, read)
    return found


def _link_dependencies(
    closure: list[_Dist], target: Path, installed: dict[str, _Dist]
) -> None:
    """Link each distribution of ``closure`` into ``target`` (a site-packages).

    A top-level name only closure distributions own is linked whole; one shared with
    distributions outside the image (a namespace package such as ``snowflake``) is
    made a folder and linked entry by entry, so nothing outside the closure shows.
    """
    site = Path(_site_packages())
    inside = {d.key for d in closure}
    paths: list[tuple[bool, tuple[str, ...]]] = []
    owners: dict[tuple[str, ...], set[bool]] = {}
    for dist in installed.values():
        in_image = dist.key in inside
        for file in dist.files():
            parts = tuple(p for p in file.split("/") if p and p != ".")
            if (
                not parts
                or parts[0] in ("..", "__pycache__")
                or parts[0].startswith("__editable__")
            ):
                continue
            paths.append((in_image, parts))
            owners.setdefault(parts[:1], set()).add(in_image)
    # below the top only where the top is shared (a namespace package): elsewhere
    # the top decides alone, and most of the 100,000 files are never walked into
    shared = {top for top, marks in owners.items() if len(marks) > 1}
    for in_image, parts in paths:
        if parts[:1] in shared:
            for depth in range(2, len(parts) + 1):
                owners.setdefault(parts[:depth], set()).add(in_image)
    target.mkdir(parents=True, exist_ok=True)
    for key in _linked(owners):
        _merge_link(site.joinpath(*key), target.joinpath(*key))


def _merge_link(source: Path, destination: Path) -> None:
    """Link ``source`` at ``destination``; into a folder the project's own install
    made there (the ``snowflake`` namespace), entry by entry.
    """
    if not source.exists():
        return
    if destination.is_dir() and not destination.is_symlink() and source.is_dir():
        for child in source.iterdir():
            _merge_link(child, destination / child.name)
        return
    if destination.exists() or destination.is_symlink():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.symlink_to(source, target_is_directory=source.is_dir())


def _linked(owners: dict[tuple[str, ...], set[bool]]) -> Iterator[tuple[str, ...]]:
    """The paths to link: each one only the image's distributions own, under a
    folder shared with others (walked into) or at the top.
    """
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for key in owners:
        children.setdefault(key[:-1], []).append(key)

    def walk(prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for child in sorted(children.get(prefix, ())):
            mark = owners[child]
            if mark == {True}:
                yield child
            elif mark == {True, False}:
                yield from walk(child)

    return walk(())


# --- the build context ----------------------------------------------------------------


@dataclass(frozen=True)
class _DockerIgnore:
    patterns: tuple[str, ...]

    @classmethod
    def read(cls, context: Path) -> _DockerIgnore:
        path = context / ".dockerignore"
        lines = path.read_text().splitlines() if path.is_file() else []
        return cls(
            tuple(ln.strip() for ln in lines if ln.strip() and not ln.startswith("#"))
        )

    def excludes(self, relative: str) -> bool:
        excluded = False
        for pattern in self.patterns:
            negate = pattern.startswith("!")
            body = pattern.lstrip("!").strip("/")
            if _matches(relative, body):
                excluded = not negate
        return excluded


def _matches(relative: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        name = pattern[3:]
        parts = relative.split("/")
        return any(
            fnmatch.fnmatchcase("/".join(parts[i : i + name.count("/") + 1]), name)
            for i in range(len(parts))
        )
    return fnmatch.fnmatchcase(relative, pattern) or relative.startswith(pattern + "/")


def _context_files(context: Path, source: str, ignore: _DockerIgnore) -> list[Path]:
    start = (context / source).resolve()
    if not start.is_relative_to(context):
        raise ImageError(f"COPY {source}: outside the build context {context}")
    if not start.exists():
        raise ImageError(f"COPY {source}: no such file in the build context {context}")
    candidates = [start] if start.is_file() else sorted(start.rglob("*"))
    return [
        p
        for p in candidates
        if p.is_file() and not ignore.excludes(p.relative_to(context).as_posix())
    ]


def _copy_context(
    context: Path, source: str, target: Path, ignore: _DockerIgnore
) -> None:
    start = (context / source).resolve()
    for path in _context_files(context, source, ignore):
        destination = target if start.is_file() else target / path.relative_to(start)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
