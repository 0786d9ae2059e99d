"""The scorer: small batches through Treelite's GTIL, large ones through XGBoost, the
same scores either way, and XGBoost whenever the fast path cannot serve.
"""

import logging
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from features import load_feature_set
from inference import scorer as scorer_module
from inference.model import load_model
from inference.scorer import SMALL_BATCH_ROWS, FastPathError, TreeScorer
from stack.warehouse import EmbeddedWarehouse

FEATURE_SET = load_feature_set("churn")
SCHEMA = FEATURE_SET.schema


@pytest.fixture(scope="module")
def demo_model(seeded_snowflake_dir: Path, tmp_path_factory):
    """A model trained as the pipeline trains it (default hyperparameters) on the demo
    data, loaded as the endpoint loads it, and the demo data's test split.
    """
    from processing.extract import query_features
    from processing.stream import assign_split
    from training.hyperparameters import DEFAULTS
    from training.train import save_model, train_model

    warehouse = EmbeddedWarehouse(seeded_snowflake_dir, "MLOPS", "CHURN")
    with warehouse.connect() as conn:
        frame = query_features(
            conn, FEATURE_SET.sql, {"as_of": "2026-03-31", "label_window_days": 90}
        )
    frame = SCHEMA.coerce(frame)
    split = assign_split(frame[SCHEMA.entity_id], 0.15, 0.15)
    splits = {s: frame[split == s].reset_index(drop=True) for s in ("train", "test")}
    validation = frame[split == "validation"].reset_index(drop=True)
    folder = tmp_path_factory.mktemp("scorer-model")
    save_model(
        train_model(splits["train"], validation, SCHEMA, DEFAULTS, threads=2), folder
    )
    return load_model(folder), SCHEMA.feature_matrix(splits["test"])


def test_demo_test_split_scores_equal_xgboost_in_every_batch_size(demo_model):
    model, test = demo_model
    assert len(test) > 200 and np.isnan(test).any()  # missing values included
    assert model.scorer.fast_path_status().active
    expected = model.booster.inplace_predict(test).astype(np.float64)
    alone = np.concatenate(
        [model.predict_raw(test[i : i + 1]) for i in range(len(test))]
    )
    for got in (
        alone,  # the Snowflake procedure's external function: one row per call
        np.concatenate(
            [model.predict_raw(test[i : i + 3]) for i in range(0, len(test), 3)]
        ),
        np.concatenate(
            [
                model.predict_raw(test[i : i + SMALL_BATCH_ROWS])
                for i in range(0, len(test), SMALL_BATCH_ROWS)
            ]
        ),
        model.predict_raw(test),  # the batch write-back: XGBoost
    ):
        assert np.max(np.abs(got - expected)) <= 1e-6  # the tolerance
        np.testing.assert_array_equal(got, expected)  # and in fact bit for bit
    # calibrated SCORE too: a row scored alone equals the same row in a batch
    np.testing.assert_array_equal(
        np.concatenate([model.predict(test[i : i + 1]) for i in range(50)]),
        model.predict(test)[:50],
    )


def test_batches_up_to_the_cut_over_take_the_fast_path_and_larger_ones_xgboost(
    demo_model,
):
    model, test = demo_model
    calls: list[int] = []

    def counting_build(booster):
        fast = scorer_module._GTILPredictor.build(booster)

        def call(matrix):
            calls.append(len(matrix))
            return fast(matrix)

        return call

    scorer = TreeScorer(model.booster, 4, counting_build)
    for rows in (1, 4, 5, 200):
        scorer.predict(test[:rows])
    assert calls == [1, 4]


def test_a_large_batch_does_not_build_the_fast_path(demo_model):
    model, test = demo_model
    built: list[object] = []
    scorer = TreeScorer(model.booster, build_fast_path=built.append)
    scorer.predict(test[:100])
    assert built == []


def test_without_treelite_xgboost_scores_and_a_warning_says_why(
    demo_model, monkeypatch, caplog
):
    model, test = demo_model
    monkeypatch.setitem(sys.modules, "treelite", None)  # import treelite fails
    scorer = TreeScorer(model.booster)
    with caplog.at_level(logging.WARNING, logger="inference.scorer"):
        got = np.concatenate([scorer.predict(test[i : i + 1]) for i in range(20)])
    status = scorer.fast_path_status()
    assert not status.active and "treelite cannot be imported" in status.detail
    assert "fast path is off" in caplog.text
    np.testing.assert_array_equal(got, model.booster.inplace_predict(test[:20]))


def test_a_fast_path_whose_scores_differ_is_not_used(demo_model, monkeypatch):
    model, test = demo_model
    real = scorer_module._xgboost_sigmoid

    def one_ulp_off(margins, expf):
        scores = real(margins, expf)
        return np.nextafter(scores.astype(np.float32), np.float32(1)).astype(float)

    monkeypatch.setattr(scorer_module, "_xgboost_sigmoid", one_ulp_off)
    scorer = TreeScorer(model.booster)
    status = scorer.fast_path_status()
    assert not status.active
    assert "differ from XGBoost's on 96 of 96 probe rows" in status.detail
    np.testing.assert_array_equal(
        scorer.predict(test[:1]), model.booster.inplace_predict(test[:1])
    )


def test_a_fast_path_that_fails_while_scoring_hands_over_to_xgboost(demo_model):
    model, test = demo_model
    calls: list[int] = []

    def broken(matrix):
        calls.append(len(matrix))
        raise RuntimeError("TreeliteGTILPredict: boom")

    scorer = TreeScorer(model.booster, build_fast_path=lambda booster: broken)
    first = scorer.predict(test[:1])
    second = scorer.predict(test[1:2])
    assert calls == [1]  # tried once, then off
    status = scorer.fast_path_status()
    assert not status.active and "failed while scoring: " in status.detail
    assert "boom" in status.detail
    expected = model.booster.inplace_predict(test[:2]).astype(np.float64)
    np.testing.assert_array_equal(np.concatenate([first, second]), expected)


def test_an_objective_it_does_not_reproduce_leaves_xgboost_to_score():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, label=x[:, 0] * 2),
        num_boost_round=5,
    )
    scorer = TreeScorer(booster)
    status = scorer.fast_path_status()
    assert not status.active and "'reg:squarederror'" in status.detail
    np.testing.assert_array_equal(scorer.predict(x[:1]), booster.inplace_predict(x[:1]))


def test_zero_small_batch_rows_turns_the_fast_path_off(demo_model):
    model, test = demo_model
    built: list[object] = []
    scorer = TreeScorer(model.booster, 0, built.append)
    scorer.predict(test[:1])
    assert built == [] and not scorer.fast_path_status().active
    assert "off" in scorer.fast_path_status().detail


def test_a_negative_cut_over_is_refused(demo_model):
    with pytest.raises(ValueError, match="small_batch_rows must be >= 0, got -1"):
        TreeScorer(demo_model[0].booster, -1)


def test_the_fast_path_error_names_a_model_with_several_outputs():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
        xgb.DMatrix(x, label=np.c_[x[:, 0] > 0, x[:, 1] > 0].astype(float)),
        num_boost_round=3,
    )
    with pytest.raises(FastPathError, match="more than one output"):
        scorer_module._GTILPredictor.build(booster)


def test_the_image_serves_small_batches_through_treelite(tmp_path):
    """The staged image (the Dockerfile and install_requires) holds treelite, and a
    scorer built there takes the fast path.
    """
    import subprocess

    from pipelines.image import DOCKERFILE, stage_image
    from pipelines.local_jobs import Container, Platform

    image = stage_image(tmp_path / "images", DOCKERFILE)
    code = (
        "import numpy as np, treelite, xgboost as xgb\n"
        "from inference.scorer import TreeScorer\n"
        "x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)\n"
        "b = xgb.train({'objective': 'binary:logistic', 'nthread': 1}, "
        "xgb.DMatrix(x, label=x[:, 0] > 0), num_boost_round=10)\n"
        "print(treelite.__file__, TreeScorer(b).fast_path_status().active)\n"
    )
    container = Container(image, Platform())
    instance = container.instance(tmp_path / "job", "algo-1")
    argv, env = container.command(["python", "-c", code], instance, {}, {})
    result = subprocess.run(
        argv, env=env, cwd=instance.workdir, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    location, active = result.stdout.split()
    assert location.startswith("/opt/venv/") and active == "True"


def test_the_servers_cut_over_reaches_its_workers_and_scores_do_not_change(model_dir):
    import psutil

    from tests.inference.servers import running_server

    body = b"0.3,1.5\n-2,\n"
    answers = {}
    for rows in ("0", "5"):
        extra = ("--small-batch-rows", rows)
        with running_server(model_dir, workers=1, extra=extra) as server:
            workers = psutil.Process(server.pid).children()
            assert [w.cmdline()[-2:] for w in workers] == [list(extra)]
            request = urllib.request.Request(
                f"{server.url}/invocations",
                data=body,
                headers={"Content-Type": "text/csv"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                answers[rows] = response.read()
    assert answers["0"] == answers["5"]


def test_a_negative_cut_over_is_a_usage_error(model_dir):
    import subprocess

    from tests.conftest import PROJECT_ROOT

    result = subprocess.run(
        [sys.executable, "-m", "inference.server", "--model-dir", str(model_dir)]
        + ["--small-batch-rows", "-1"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--small-batch-rows must be 0 or more" in result.stderr


def test_a_matrix_of_another_width_never_reaches_gtil(demo_model):
    model, test = demo_model
    calls: list[int] = []
    scorer = TreeScorer(model.booster, build_fast_path=lambda b: calls.append)
    with pytest.raises(xgb.core.XGBoostError):
        scorer.predict(test[:1, :-1])
    assert calls == [] and scorer._status is None
