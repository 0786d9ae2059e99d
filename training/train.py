"""Train step: an XGBoost churn classifier with early stopping on the validation split.

``train_model`` is pure (frames and hyperparameters in, a booster and its record out);
``main`` is the entry point the training container runs (``docker run IMAGE train``
reaches it through the image's entrypoint). The model folder it writes holds everything
serving needs: the booster, its calibration (what makes its score a churn
probability, ``inference.calibration``), the feature schema and the training summary.

With several instances (``TrainingInstanceCount``) every host runs ``main``: each
reads its share of the rows and trains with the others through XGBoost's collective
(``training.distributed``); only the leader logs the metrics, tracks the run and writes
the model, and every host notes its share in ``/opt/ml/output/data``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from features import FeatureSchema, SchemaError, load_feature_set
from features.channels import data_window, parquet_files
from inference.calibration import CalibrationError
from pipelines.process_gc import run_process
from training import checkpoints, distributed, metric_lines
from training.calibration import fit_platt
from training.contract import TrainingContract
from training.hyperparameters import (
    HyperparameterError,
    parse_hyperparameters,
)
from training.model import TrainedModel, save_model
from training.tracking import log_training_run

log = logging.getLogger("training.train")


def read_channel(
    directory: Path, entity_id: str | None = None, rank: int = 0, hosts: int = 1
) -> pd.DataFrame:
    """The rows of a channel's Parquet files; with ``hosts`` > 1, only host
    ``rank``'s share of them (``distributed.share``), kept file by file.
    """
    frames = [pd.read_parquet(f) for f in parquet_files(directory)]
    if hosts > 1 and entity_id is not None:
        frames = [distributed.share(f, entity_id, rank, hosts) for f in frames]
    return pd.concat(frames, ignore_index=True)


def train_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    schema: FeatureSchema,
    hyperparameters: Mapping[str, Any],
    threads: int = 0,
    checkpoint_dir: Path | None = None,
    calibration_data: pd.DataFrame | None = None,
) -> TrainedModel:
    """Fit the classifier, then its calibration on the validation split.

    Class imbalance is offset with ``scale_pos_weight``, which inflates the booster's
    scores; the calibration turns them back into churn probabilities. Rows are ordered
    by entity id first, so the model does not depend on how the extract step happened
    to shard or order its files.

    Inside ``distributed.communicator`` each host passes its share of ``train`` and
    ``validation``: row and label counts, metrics and statistics are then over all
    hosts, and the calibration is fitted on ``calibration_data`` (the whole
    validation split; ``validation`` when not given).
    """
    schema.check_frame(train)
    schema.check_frame(validation)
    train = train.sort_values(schema.entity_id, kind="stable", ignore_index=True)
    validation = validation.sort_values(
        schema.entity_id, kind="stable", ignore_index=True
    )
    labels = train[schema.label].astype(int).to_numpy()
    rank, hosts = distributed.world()
    # this host's rows in its own slot, so the sum is every host's count
    per_host = np.zeros((2, hosts))
    per_host[:, rank] = (len(labels), len(validation))
    per_host = distributed.allreduce_sum(per_host.ravel()).reshape(2, hosts)
    train_rows, validation_rows = (int(n) for n in per_host.sum(axis=1))
    positives = int(distributed.allreduce_sum(np.array([float(labels.sum())]))[0])
    if positives == 0 or positives == train_rows:
        raise SchemaError("the training split has only one class; cannot train")
    dtrain = xgb.DMatrix(
        schema.feature_matrix(train), label=labels, feature_names=schema.feature_names
    )
    dvalid = xgb.DMatrix(
        schema.feature_matrix(validation),
        label=validation[schema.label].astype(int).to_numpy(),
        feature_names=schema.feature_names,
    )
    hp = dict(hyperparameters)
    params = {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "max_depth": hp["max_depth"],
        "eta": hp["eta"],
        "subsample": hp["subsample"],
        "colsample_bytree": hp["colsample_bytree"],
        "min_child_weight": hp["min_child_weight"],
        "lambda": hp["reg_lambda"],
        "scale_pos_weight": (train_rows - positives) / positives,
        "tree_method": "hist",
        "seed": hp["seed"],
        "nthread": threads,
    }
    history: dict[str, dict[str, list[float]]] = {}
    resume, done = None, 0
    callbacks: list[xgb.callback.TrainingCallback] = []
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        found = checkpoints.latest(checkpoint_dir)
        if found:
            resume, done = xgb.Booster(model_file=str(found[0])), found[1]
            log.info("resuming from %s (%d rounds done)", found[0].name, done)
        callbacks.append(
            xgb.callback.TrainingCheckPoint(
                checkpoint_dir, name="model", interval=checkpoints.INTERVAL
            )
        )
    if rank == 0:  # the leader's log carries the job's metrics
        callbacks.append(_RoundMetrics())
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=max(hp["num_round"] - done, 1),
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=hp["early_stopping_rounds"],
        evals_result=history,
        verbose_eval=False,
        xgb_model=resume,
        callbacks=callbacks,
    )
    best = int(booster.best_iteration)
    if calibration_data is None:
        dcalibrate = dvalid
    else:
        schema.check_frame(calibration_data)
        dcalibrate = xgb.DMatrix(
            schema.feature_matrix(calibration_data),
            label=calibration_data[schema.label].astype(int).to_numpy(),
            feature_names=schema.feature_names,
        )
    # history covers only the rounds of this job when it resumed a checkpoint
    best_auc = float(history["validation"]["auc"][max(best - done, 0)])
    if rank == 0:
        metric_lines.log.info("%s", metric_lines.kept_line(best_auc))
    calibration = fit_platt(
        booster[: best + 1].predict(dcalibrate), dcalibrate.get_label(), "validation"
    )
    metadata = {
        "best_iteration": best,
        "best_validation_auc": best_auc,
        "resumed_from_round": done,
        "train_rows": train_rows,
        "validation_rows": validation_rows,
        "train_positive_rate": positives / train_rows,
        "score": calibration.describe(),
        "feature_statistics": _statistics(train, schema),
        "versions": {
            "python": platform.python_version(),
            "xgboost": xgb.__version__,
            "pandas": pd.__version__,
        },
        "hyperparameters": hp,
    }
    if hosts > 1:
        metadata["hosts"] = {
            "count": hosts,
            "train_rows": [int(n) for n in per_host[0]],
            "validation_rows": [int(n) for n in per_host[1]],
        }
    return TrainedModel(booster, schema, hp, history, best, calibration, metadata)


class _RoundMetrics(xgb.callback.TrainingCallback):
    """Logs each round's metrics as a metric line (training.metric_lines)."""

    def after_iteration(
        self,
        model: Any,
        epoch: int,
        evals_log: xgb.callback.TrainingCallback.EvalsLog,
    ) -> bool:
        # xgb.train logs floats; the log's type also allows xgb.cv's (mean, std)
        latest = {
            split: {
                name: float(
                    values[-1][0] if isinstance(values[-1], tuple) else values[-1]
                )
                for name, values in by_name.items()
            }
            for split, by_name in evals_log.items()
        }
        metric_lines.log.info("%s", metric_lines.round_line(epoch, latest))
        return False  # never stops training


def _statistics(
    frame: pd.DataFrame, schema: FeatureSchema
) -> dict[str, dict[str, float | None]]:
    """Each feature's mean, sample std, range and null fraction over every host's
    rows (two passes: the mean first, then the squared deviations from it).
    """
    values = frame[schema.feature_names].astype("float64").to_numpy()
    present = ~np.isnan(values)
    rows = distributed.allreduce_sum(np.array([float(len(values))]))[0]
    counts = distributed.allreduce_sum(present.sum(axis=0).astype("float64"))
    sums = distributed.allreduce_sum(np.nansum(values, axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
        squares = distributed.allreduce_sum(np.nansum((values - means) ** 2, axis=0))
        stds = np.sqrt(squares / (counts - 1))
    # an empty share (or column) takes no part in the range
    lows = distributed.allreduce_min(
        np.where(present, values, np.inf).min(axis=0, initial=np.inf)
    )
    highs = distributed.allreduce_max(
        np.where(present, values, -np.inf).max(axis=0, initial=-np.inf)
    )
    return {
        name: {
            "mean": _finite(means[i]),
            "std": _finite(stds[i]),
            "min": _finite(lows[i]),
            "max": _finite(highs[i]),
            "null_fraction": float(1 - counts[i] / rows) if rows else 0.0,
        }
        for i, name in enumerate(schema.feature_names)
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(
        prog="python -m training.train",
        description="The Train step (docker run IMAGE train): reads SageMaker's "
        "training contract (/opt/ml/input/config/*.json, the train and validation "
        "channels) and writes the model to /opt/ml/model; it takes no arguments. "
        "With several hosts, each trains on its share of the rows with the others "
        "and the first writes the model.",
    ).parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    contract = TrainingContract.from_environment()
    try:
        cluster = distributed.Cluster.of(contract.hosts, contract.current_host)
        hp = parse_hyperparameters(contract.hyperparameters)
        schema = load_feature_set(hp["feature_set"]).schema
        for required in ("train", "validation"):
            if required not in contract.channels:
                raise SchemaError(f"the {required} channel is missing")
        leader_address = contract.address_of(cluster.leader) if cluster.size > 1 else ""
        with distributed.communicator(cluster, leader_address):
            model = _train_on_share(contract, cluster, hp, schema)
        if not cluster.is_leader:
            log.info(
                "%s: trained with the other hosts; %s writes the model",
                cluster.current_host,
                cluster.leader,
            )
            return 0
        git_commit = os.environ.get("GIT_COMMIT") or "unknown"
        window = data_window(contract.channels["train"])
        run_id = log_training_run(model, {"git_commit": git_commit, **window})
        # the run id and commit travel with the model: Evaluate logs to the same
        # run and the registered package carries both
        model.metadata.update(
            mlflow_run_id=run_id, git_commit=git_commit, data_window=window
        )
        # SageMaker packs every host's /opt/ml/model into one archive: only the
        # leader writes there, so no two hosts' files can clash
        save_model(model, contract.model_dir)
    except (
        HyperparameterError,
        SchemaError,
        CalibrationError,
        distributed.ClusterError,
    ) as exc:
        contract.fail(str(exc))
        log.error("%s", exc)
        return 1
    except Exception as exc:
        contract.fail(f"{type(exc).__name__}: {exc}")
        log.exception("training failed")
        return 1
    log.info(
        "trained %d rounds (best %d), validation AUC %.4f; score: %s",
        len(model.history["validation"]["auc"]),
        model.best_iteration,
        model.metadata["best_validation_auc"],
        model.calibration.describe(),
    )
    return 0


def _train_on_share(
    contract: TrainingContract,
    cluster: distributed.Cluster,
    hp: dict[str, Any],
    schema: FeatureSchema,
) -> TrainedModel:
    """Read this host's share of the channels and train (with the other hosts when
    there are several); every host notes the rows it read.
    """

    def rows_of(channel: str) -> pd.DataFrame:
        # a ShardedByS3Key channel holds this host's files already
        sharded = contract.distribution.get(channel) == "ShardedByS3Key"
        return read_channel(
            contract.channels[channel],
            schema.entity_id,
            cluster.rank,
            1 if sharded else cluster.size,
        )

    train = rows_of("train")
    # the calibration is fitted on the whole validation split (the leader's is the
    # one kept); each host evaluates its share of it while training
    whole_validation = read_channel(contract.channels["validation"])
    validation = (
        whole_validation
        if contract.distribution.get("validation") == "ShardedByS3Key"
        else distributed.share(
            whole_validation, schema.entity_id, cluster.rank, cluster.size
        )
    )
    if cluster.size > 1:
        _note_share(contract, cluster, schema, train, validation)
    checkpoint_dir = None
    checkpoint_root = contract.root / "checkpoints"  # exists when SageMaker syncs it
    if checkpoint_root.is_dir():
        checkpoint_dir = checkpoint_root / checkpoints.fingerprint(
            hp, [contract.channels["train"], contract.channels["validation"]]
        )
    return train_model(
        train,
        validation,
        schema,
        hp,
        contract.num_cpus,
        checkpoint_dir,
        calibration_data=whole_validation,
    )


def _note_share(
    contract: TrainingContract,
    cluster: distributed.Cluster,
    schema: FeatureSchema,
    train: pd.DataFrame,
    validation: pd.DataFrame,
) -> None:
    """Log and record (``/opt/ml/output/data/share-<host>.json``, a name no other
    host writes) how many rows this host trains on, with a checksum of their entity
    ids: the hosts' counts and checksums add up to the whole channel's when the
    shares are disjoint and complete.
    """
    note = {
        "host": cluster.current_host,
        "rank": cluster.rank,
        "hosts": list(cluster.hosts),
        **{
            f"{name}_{key}": value
            for name, frame in (("train", train), ("validation", validation))
            for key, value in share_summary(frame, schema.entity_id).items()
        },
    }
    log.info(
        "%s (rank %d of %d) trains on its share: %d train rows, %d validation rows",
        cluster.current_host,
        cluster.rank,
        cluster.size,
        len(train),
        len(validation),
    )
    contract.output_data_dir.mkdir(parents=True, exist_ok=True)
    path = contract.output_data_dir / f"share-{cluster.current_host}.json"
    path.write_text(json.dumps(note, indent=2))


def share_summary(frame: pd.DataFrame, entity_id: str) -> dict[str, int]:
    """Rows and the sum modulo 2**64 of the entity ids' hashes: disjoint shares'
    summaries add up to their union's.
    """
    hashes = pd.util.hash_pandas_object(frame[entity_id], index=False).to_numpy()
    return {"rows": len(frame), "checksum": int(hashes.sum(dtype=np.uint64))}


if __name__ == "__main__":
    run_process(main)
