"""The scoring procedure is released as users release it: the installed package's code
in a zip on a versioned stage folder, the procedure importing exactly that, a
redeploy changing nothing, a new release replacing the procedure, a rollback being
the previous release deployed again.

fakesnow runs CREATE STAGE, PUT and LIST within one session (the first test runs our
statements there), but neither keeps a stage between sessions nor runs CREATE
PROCEDURE: the deploy tests put a small model of Snowflake's documented behaviour in
front of it (``SnowflakeModel``), as test_grants.py does for grants.
"""

import dataclasses
import hashlib
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from features import load_feature_set
from snowflake.sagemaker_predictions import procedure_code as code_module
from snowflake.sagemaker_predictions.deploy import _staged, deploy
from snowflake.sagemaker_predictions.procedure import ProcedureSettings
from snowflake.sagemaker_predictions.procedure_code import (
    PACKAGES,
    RUNTIME_VERSION,
    build_procedure_code,
)
from snowflake.sagemaker_predictions.templates import render
from stack.config import load_config
from tests.conftest import PROJECT_ROOT
from tests.snowflake_writeback.test_grants import (
    ACCOUNT,
    GrantModel,
    GrantTrackingWarehouse,
)

SETTINGS = ProcedureSettings.from_config(
    load_config("dev", environ={}), load_feature_set("churn")
)
_STAGE = re.compile(r"^CREATE STAGE IF NOT EXISTS (\w+)")
_PUT = re.compile(r"^PUT '(file://[^']+)' @(\w+)/(\S+/) AUTO_COMPRESS = FALSE")
_IMPORTS = re.compile(r"IMPORTS = \(([^)]*)\)")


class SnowflakeModel(GrantModel):
    """GrantModel plus internal stages: ``CREATE STAGE IF NOT EXISTS``, ``SHOW STAGES
    LIKE``, ``PUT`` (the file's bytes recorded under ``<stage>/<path>``), ``LIST``
    (names as Snowflake shows them, the stage in lower case); ``CREATE PROCEDURE``
    fails when a file it IMPORTS is not on its stage, as Snowflake's does.
    """

    def __init__(self):
        super().__init__()
        self.stages: set[str] = set()
        self.files: dict[str, str] = {}  # "<stage>/<path>" -> sha256 of the bytes
        self.procedures: dict[str, str] = {}  # name -> its CREATE statement

    def handles(self, sql):
        return super().handles(sql) or sql.startswith(
            ("CREATE STAGE", "SHOW STAGES", "PUT ", "LIST @")
        )

    def execute(self, sql, params):
        if match := _STAGE.match(sql):
            self.stages.add(match.group(1))
            self.log.append((sql, frozenset(self.grants)))
            return []
        if sql.startswith("SHOW STAGES"):
            return [(params[0],)] if params[0] in self.stages else []
        if match := _PUT.match(sql):
            uri, stage, folder = match.groups()
            assert stage in self.stages, f"stage {stage} does not exist"
            local = Path(uri.removeprefix("file://"))
            digest = hashlib.sha256(local.read_bytes()).hexdigest()
            self.files[f"{stage}/{folder}{local.name}"] = digest
            self.log.append((sql, frozenset(self.grants)))
            return [(local.name, local.name, 0, 0, "NONE", "NONE", "UPLOADED", "")]
        if sql.startswith("LIST @"):
            stage = sql.removeprefix("LIST @")
            assert stage in self.stages, f"stage {stage} does not exist"
            return [
                (f"{stage.lower()}/{name.split('/', 1)[1]}",)
                for name in sorted(self.files)
                if name.startswith(f"{stage}/")
            ]
        if sql.startswith("CREATE OR REPLACE PROCEDURE"):
            for staged in re.findall(r"'@([^']+)'", _IMPORTS.search(sql).group(1)):
                assert staged in self.files, f"{staged} is not on the stage"
            self.procedures[sql.split()[4].split("(")[0]] = sql
        return super().execute(sql, params)


class ModelWarehouse(GrantTrackingWarehouse):
    def __init__(self, embedded):
        super().__init__(embedded)
        self.model = SnowflakeModel()


def release(monkeypatch, tmp_path, version, settings=SETTINGS):
    monkeypatch.setattr(code_module, "release_version", lambda: version)
    directory = tmp_path / f"build-{version}-{len(list(tmp_path.iterdir()))}"
    directory.mkdir()
    return build_procedure_code(settings, directory)


def objects(code):
    config = load_config("dev", overrides=ACCOUNT)
    return render(config, load_feature_set("churn"), code)


def statuses(outcomes):
    return {o.obj.kind: o.status for o in outcomes}


def test_the_upload_statements_run_on_the_embedded_snowflake(warehouse, procedure_code):
    """Our CREATE STAGE, PUT and the deployer's LIST check, executed by fakesnow in
    one session (it keeps no stage beyond one).
    """
    rendered = {o.kind: o for o in objects(procedure_code)}
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        for kind in ("stage", "stage_files"):
            for statement in rendered[kind].statements:
                cursor.execute(statement)
        assert _staged(cursor, rendered["stage_files"])
        cursor.execute("LIST @SAGEMAKER_PREDICTIONS_CODE")
        sizes = {row[0].rsplit("/", 1)[1]: row[1] for row in cursor.fetchall()}
    assert sizes == {
        procedure_code.archive.name: procedure_code.archive.stat().st_size,
        procedure_code.settings.name: procedure_code.settings.stat().st_size,
    }
    missing = dataclasses.replace(
        rendered["stage_files"],
        fingerprint=rendered["stage_files"].fingerprint.replace(".zip", "-other.zip"),
    )
    with warehouse.connect() as conn:
        cursor = conn.cursor()
        cursor.execute(rendered["stage"].statements[0])
        assert not _staged(cursor, missing)


def test_a_release_deploys_once_a_new_one_replaces_it_and_rollback_redeploys_the_old(
    warehouse, monkeypatch, tmp_path
):
    snowflake = ModelWarehouse(warehouse)
    model = snowflake.model
    v1 = release(monkeypatch, tmp_path, "1.2.3")
    first = statuses(deploy(snowflake, objects(v1)))
    assert [first[k] for k in ("stage", "stage_files", "procedure", "task")] == [
        "created"
    ] * 4
    assert sorted(model.files) == [
        "SAGEMAKER_PREDICTIONS_CODE/sagemaker_predictions/1.2.3/"
        "sagemaker_predictions_procedure.json",
        "SAGEMAKER_PREDICTIONS_CODE/sagemaker_predictions/1.2.3/"
        "snowflake_sagemaker_mlops-1.2.3.zip",
    ]
    # an operator's grant on the procedure (ours grant nothing on it)
    model.grants.add(("USAGE", "SCORE_NEW_PREDICTIONS", "OPERATOR"))

    # the same release again, its archive built again from the same files: nothing
    model.log.clear()
    again = statuses(
        deploy(snowflake, objects(release(monkeypatch, tmp_path, "1.2.3")))
    )
    assert set(again.values()) == {"unchanged"}, again
    assert not [sql for sql, _ in model.log if not sql.startswith(("SHOW", "LIST"))]

    v2 = release(monkeypatch, tmp_path, "1.2.4")
    upgrade = statuses(deploy(snowflake, objects(v2)))
    assert upgrade["stage"] == "unchanged" and upgrade["stage_files"] == "created"
    assert upgrade["procedure"] == "changed" and upgrade["task"] == "unchanged"
    assert (
        "/1.2.4/snowflake_sagemaker_mlops-1.2.4.zip'"
        in model.procedures["SCORE_NEW_PREDICTIONS"]
    )
    assert ("USAGE", "SCORE_NEW_PREDICTIONS", "OPERATOR") in model.grants  # COPY GRANTS

    model.log.clear()
    rollback = statuses(deploy(snowflake, objects(v1)))
    assert rollback["stage_files"] == "unchanged"  # 1.2.3's folder is still there
    assert rollback["procedure"] == "changed"
    assert (
        "/1.2.3/snowflake_sagemaker_mlops-1.2.3.zip'"
        in model.procedures["SCORE_NEW_PREDICTIONS"]
    )
    assert not [sql for sql, _ in model.log if sql.startswith("PUT")]


def test_new_settings_replace_the_procedure_and_lost_files_are_uploaded_again(
    warehouse, monkeypatch, tmp_path
):
    snowflake = ModelWarehouse(warehouse)
    deploy(snowflake, objects(release(monkeypatch, tmp_path, "1.2.3")))
    wider = dataclasses.replace(SETTINGS, label_window_days=120)
    changed = statuses(
        deploy(snowflake, objects(release(monkeypatch, tmp_path, "1.2.3", wider)))
    )
    # same release, new settings: uploaded over the folder's file, procedure replaced
    assert changed["stage_files"] == "changed" and changed["procedure"] == "changed"
    snowflake.model.files.clear()  # someone emptied the stage
    lost = statuses(deploy(snowflake, objects(release(monkeypatch, tmp_path, "1.2.3"))))
    assert lost["stage_files"] == "created"
    assert len(snowflake.model.files) == 2


def test_the_archive_is_the_same_bytes_from_the_same_files(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = build_procedure_code(SETTINGS, tmp_path / "a")
    again = build_procedure_code(SETTINGS, tmp_path / "b")
    assert again.archive_sha256 == first.archive_sha256
    import zipfile

    names = zipfile.ZipFile(again.archive).namelist()
    assert names == sorted(names)
    assert "snowflake/sagemaker_predictions/handler.py" in names
    assert "stack/identifiers.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "snowflake/__init__.py" not in names  # snowflake stays a namespace


# The handler imported as Snowflake imports it: from the archive, beside Snowpark and
# the standard library, with no site (so not this checkout, nor its editable install).
_IMPORT_CHECK = """
import json, sys
from pathlib import Path
archive, site_packages, settings_dir = sys.argv[1:4]
sys.path.insert(0, archive)
sys.path.append(site_packages)
import snowflake.snowpark  # provided by Snowflake (PACKAGES)
before = set(sys.modules)
from snowflake.sagemaker_predictions import handler
from snowflake.sagemaker_predictions.procedure import load_settings
settings = load_settings(Path(settings_dir))
added = sorted(set(sys.modules) - before)
print(json.dumps({"file": handler.__file__, "added": added, "table": settings.table}))
"""


def import_from_archive(code):
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", _IMPORT_CHECK, str(code.archive),
         sysconfig.get_paths()["purelib"], str(code.settings.parent)],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def test_the_handler_imports_from_the_archive_with_only_what_snowflake_provides(
    procedure_code,
):
    import json

    result = import_from_archive(procedure_code)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["file"].startswith(str(procedure_code.archive))
    assert found["table"] == "PREDICTIONS"
    # beside Snowpark: only the standard library and our archived packages
    ours = ("snowflake.sagemaker_predictions", "stack")
    assert {"snowflake.sagemaker_predictions.handler", "stack.identifiers"} <= set(
        found["added"]
    )
    foreign = [
        name
        for name in found["added"]
        if name.split(".")[0] not in sys.stdlib_module_names
        and not name.startswith(ours)
        and name.split(".")[:2] != ["snowflake", "snowpark"]
    ]
    assert foreign == []


def test_an_archive_without_a_module_the_handler_needs_fails_here_too(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(
        code_module, "ARCHIVED_PACKAGES", ("snowflake.sagemaker_predictions",)
    )
    result = import_from_archive(build_procedure_code(SETTINGS, tmp_path))
    assert result.returncode != 0
    assert "No module named 'stack'" in result.stderr


def test_the_procedures_snowpark_and_python_are_the_ones_its_tests_run_under():
    import snowflake.snowpark

    constraints = (PROJECT_ROOT / "constraints.txt").read_text().splitlines()
    pinned = [line for line in constraints if line.startswith("snowflake-snowpark")]
    installed = f"snowflake-snowpark-python=={snowflake.snowpark.__version__}"
    assert list(PACKAGES) == pinned == [installed]
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == RUNTIME_VERSION


@pytest.mark.parametrize("version", ["1.2.3", "1.2.4.dev5+g1a2b3c4.d20261204"])
def test_the_stage_folder_needs_no_quoting(monkeypatch, tmp_path, version):
    code = release(monkeypatch, tmp_path, version)
    assert re.fullmatch(r"sagemaker_predictions/[0-9A-Za-z._-]+", code.folder)
    assert code.version == version and version in code.description


def test_the_package_command_writes_what_deploy_uploads(tmp_path):
    from tests.snowflake_writeback.test_deploy import cli

    first = cli("package", "--env", "dev", "--output", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    listed = {}
    for line in first.stdout.splitlines():
        digest, _, path = line.partition("  ")
        if len(digest) == 64 and path:
            listed[Path(path).name] = digest
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert "sagemaker_predictions_procedure.json" in listed
    (archive,) = [name for name in listed if name.endswith(".zip")]
    assert "deploy puts them in @SAGEMAKER_PREDICTIONS_CODE/sagemaker_predictions/" in (
        first.stdout
    )
    again = cli("package", "--env", "dev", "--output", str(tmp_path / "b"))
    assert again.returncode == 0, again.stderr
    assert (
        hashlib.sha256((tmp_path / "b" / archive).read_bytes()).hexdigest()
        == (listed[archive])
    )
    (tmp_path / "file").write_text("")
    refused = cli("package", "--env", "dev", "--output", str(tmp_path / "file"))
    assert refused.returncode == 2 and "is not a folder" in refused.stderr
