"""The approval-events Lambda's code archive (``python -m pipelines.approval_events
package``): the same bytes from the same sources, and enough on its own to run, as the
Lambda runtime has it (the archive, the standard library and boto3).

The handler's decisions and dispatches are tested against moto in test_promotion.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from pipelines import approval_events
from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> approval_events.Archive:
    return approval_events.build_archive(tmp_path_factory.mktemp("lambda"))


def test_the_archive_holds_the_function_s_files_in_a_fixed_form(archive):
    with zipfile.ZipFile(archive.path) as opened:
        entries = opened.infolist()
    names = [e.filename for e in entries]
    assert names == sorted(approval_events.ARCHIVE_FILES)
    for entry in entries:
        assert entry.date_time == (1980, 1, 1, 0, 0, 0)
        assert entry.external_attr >> 16 == 0o100644  # the runtime must read them
        source = (PROJECT_ROOT / entry.filename).read_bytes()
        assert zipfile.ZipFile(archive.path).read(entry) == source
    assert archive.sha256 == hashlib.sha256(archive.path.read_bytes()).hexdigest()


def test_the_same_sources_give_the_same_bytes(archive, tmp_path):
    again = approval_events.build_archive(tmp_path)
    assert again.sha256 == archive.sha256
    assert again.path.read_bytes() == archive.path.read_bytes()


def test_a_changed_source_gives_another_digest(archive, tmp_path):
    root = tmp_path / "src"
    for name in approval_events.ARCHIVE_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((PROJECT_ROOT / name).read_bytes())
    same = approval_events.build_archive(tmp_path / "same", root)
    (root / "stack/registry.py").write_text(
        (root / "stack/registry.py").read_text() + "\n# changed\n"
    )
    changed = approval_events.build_archive(tmp_path / "changed", root)
    assert same.sha256 == archive.sha256  # where it is built does not matter
    assert changed.sha256 != archive.sha256


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(approval_events.EventError, match="stack/registry.py not found"):
        approval_events.build_archive(tmp_path / "out", tmp_path)


def test_the_cli_prints_the_archive_and_its_digest(archive, tmp_path, capsys):
    assert approval_events.main(["package", "--output", str(tmp_path)]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert printed == {
        "archive": str(tmp_path / "approval-events.zip"),
        "sha256": archive.sha256,
    }


def test_the_cli_reports_an_output_it_cannot_write(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert approval_events.main(["package", "--output", str(blocker / "x")]) == 1
    assert capsys.readouterr().err.startswith("error: ")


# The handler imported as the Lambda runtime imports it: from the archive, with the
# standard library and boto3 (the runtime's), and no site (so not this checkout, nor
# its editable install). Then the handler runs until it needs its settings: the
# boto3 clients are built, and the missing secret name is reported.
_IMPORT_CHECK = """
import json, sys
archive, site_packages = sys.argv[1:3]
sys.path.insert(0, archive)
sys.path.append(site_packages)
before = set(sys.modules)
from pipelines.approval_events import EventError, handle
imported = sorted(set(sys.modules) - before)
try:
    handle({}, None)
except EventError as exc:
    error = str(exc)
print(json.dumps({"file": sys.modules["pipelines.approval_events"].__file__,
                  "imported": imported, "error": error}))
"""


def run_from_archive(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", _IMPORT_CHECK, str(path),
         sysconfig.get_paths()["purelib"]],
        cwd="/",
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_the_archive_alone_runs_the_handler_beside_the_stdlib_and_boto3(archive):
    result = run_from_archive(archive.path)

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["file"].startswith(str(archive.path))
    assert found["error"].startswith("DISPATCH_SECRET_NAME is not set")
    # importing the handler takes the standard library and the archive's modules only
    foreign = [
        name
        for name in found["imported"]
        if name.split(".")[0] not in sys.stdlib_module_names
        and name.split(".")[0] not in {"pipelines", "stack"}
    ]
    assert foreign == []


def test_an_archive_without_a_module_the_handler_needs_fails_here_too(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(
        approval_events,
        "ARCHIVE_FILES",
        ("pipelines/__init__.py", "pipelines/approval_events.py"),
    )
    result = run_from_archive(approval_events.build_archive(tmp_path).path)
    assert result.returncode != 0
    assert "No module named 'stack'" in result.stderr


def test_the_template_runs_this_handler_with_the_settings_it_reads():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # !Ref/!Sub kept as their text, to compare the policy's secret resource
    Loader.add_multi_constructor("!", lambda loader, suffix, node: node.value)
    template = yaml.load(
        (PROJECT_ROOT / "infra" / "approval-deploy.yaml").read_text(), Loader
    )
    function = template["Resources"]["Function"]["Properties"]
    module, name = function["Handler"].rsplit(".", 1)
    assert module == approval_events.__name__
    assert callable(getattr(approval_events, name))
    assert set(function["Environment"]["Variables"]) == {
        "DISPATCH_TARGET", "DISPATCH_SECRET_NAME", "GITHUB_REPOSITORY", "GITHUB_API_URL"
    }  # fmt: skip
    assert function["Code"] == {"S3Bucket": "BucketName", "S3Key": "FunctionCodeKey"}
    policy = template["Resources"]["FunctionRole"]["Properties"]["Policies"][0]
    (secret,) = [
        s for s in policy["PolicyDocument"]["Statement"]
        if s["Action"] == "secretsmanager:GetSecretValue"
    ]  # fmt: skip
    assert secret["Resource"].endswith(":secret:${DispatchSecretName}-??????")
