"""Turn a feature matrix into the booster's scores, by the fastest path for its size.

``TreeScorer`` is what ``inference.model.LoadedModel`` scores with, so the endpoint's
workers, the batch write-back (through the endpoint) and the scoring procedure's
local stand-in all share it. Two evaluators compute the same numbers:

- **Small batches** (at most ``small_batch_rows`` rows): Treelite's GTIL (General
  Tree Inference Library), a tree walker in a prebuilt library: no compiler and no
  per-model build. XGBoost spends about 160 us of fixed cost per call (one thread)
  before it walks a tree; GTIL has almost none, and walks a tree more slowly, so it
  wins up to about a dozen rows (``SMALL_BATCH_ROWS``, measured). Not TL2cgen: its
  compiled model is faster still (33 against 61 us for one row), but it needs a C
  compiler where the model is trained (the image, python:3.11-slim, has none) and a
  build of about 12 s per model, and the server would load native code shipped in
  the model artifact.
- **Larger batches**: XGBoost's own predictor, called directly
  (``XGBoosterPredictFromDense`` with its arguments encoded once).

The scores are bit-for-bit XGBoost's, not merely close: a customer's score never
depends on the size of the batch it was sent in. GTIL returns each tree's leaf value,
which are XGBoost's float32 leaves; they are added one tree after the other in
float32 starting from the base margin, as XGBoost's CPU predictor adds them, and
turned into a probability with XGBoost's float32 sigmoid (libm's ``expf``). Both
rules are XGBoost's (xgboost-cpu 3.2.0, pinned), so they are checked, not trusted:
when the fast path is built it must reproduce ``Booster.inplace_predict`` exactly on
probe rows placed on, just below and just above the model's own split thresholds,
with missing values. Anything else (treelite not installed, an objective it does not
know, a check that fails, an error while scoring) leaves XGBoost to score every
batch, with a warning saying why.

The fast path is built on the first small batch (about 25 ms for 200 trees), so a
step that only scores large batches (Evaluate, the Baseline) never builds it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xgboost as xgb

log = logging.getLogger("inference.scorer")

# The largest batch that the fast path scores. Measured with ``python -m
# benchmarks.serving`` (its cut-over table: both paths on the same model, 200 trees of
# depth 6, 20 features, one thread, 9 alternating rounds): GTIL was faster up to 12
# rows and XGBoost from 16 in each run (GTIL/XGBoost per call 0.24 at 1 row, 0.83 at
# 12, 1.01-1.15 at 16); the runs are in docs/benchmarks.md ("Small batches"). Fewer
# or shallower trees move the cross-over up (XGBoost's fixed cost per call stays while
# both walks get shorter); the server takes ``--small-batch-rows``.
SMALL_BATCH_ROWS = 12
# Objectives whose prediction is sigmoid(margin) in XGBoost (src/common/math.h)
_LOGISTIC = frozenset({"binary:logistic", "reg:logistic"})
_PROBE_ROWS = 96


class FastPathError(Exception):
    """The fast path cannot be used for this model; the message says why."""


@dataclass(frozen=True)
class FastPathStatus:
    """Whether small batches take the fast path, and why not when they do not."""

    active: bool
    detail: str


class TreeScorer:
    """The booster's scores (float64 copies of its float32 outputs) for a float
    matrix in the booster's feature order, NaN for missing.

    Args:
        booster: the loaded model, with its ``nthread`` already set.
        small_batch_rows: batches of at most this many rows take the fast path;
            0 turns the fast path off.
        build_fast_path: builds the small-batch evaluator (tests replace it to
            make the build fail).
    """

    def __init__(
        self,
        booster: xgb.Booster,
        small_batch_rows: int = SMALL_BATCH_ROWS,
        build_fast_path: Callable[[xgb.Booster], Callable[[np.ndarray], np.ndarray]]
        | None = None,
    ) -> None:
        if small_batch_rows < 0:
            raise ValueError(f"small_batch_rows must be >= 0, got {small_batch_rows}")
        self.booster = booster
        self.small_batch_rows = small_batch_rows
        self._features = booster.num_features()
        self._direct = _DensePredictor.build(booster)
        self._build_fast_path = build_fast_path or _GTILPredictor.build
        self._fast: Callable[[np.ndarray], np.ndarray] | None = None
        self._status: FastPathStatus | None = (
            None
            if small_batch_rows
            else FastPathStatus(False, "off (small_batch_rows is 0)")
        )

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of ``matrix``'s rows (float64), whichever path computes them."""
        # GTIL reads as many columns as the model has: any other width goes to
        # XGBoost, which refuses it with its own error
        rows, columns = matrix.shape
        if 0 < rows <= self.small_batch_rows and columns == self._features:
            fast = self._fast_path()
            if fast is not None:
                try:
                    return fast(np.ascontiguousarray(matrix, dtype=np.float32))
                except Exception as exc:  # noqa: BLE001 - XGBoost scores instead
                    self._disable(f"it failed while scoring: {exc}")
        return self.predict_xgboost(matrix)

    def predict_xgboost(self, matrix: np.ndarray) -> np.ndarray:
        """Scores from XGBoost whatever the batch size (the reference)."""
        if self._direct is not None:
            return self._direct(np.ascontiguousarray(matrix, dtype=np.float32))
        return np.asarray(self.booster.inplace_predict(matrix), dtype=np.float64)

    def fast_path_status(self) -> FastPathStatus:
        """Build the fast path if it is not built yet, and say whether it serves."""
        self._fast_path()
        return self._status or FastPathStatus(False, "not built")

    def _fast_path(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The small-batch evaluator, built on first use; None when it cannot serve."""
        if self._status is None:
            try:
                self._fast = self._build_fast_path(self.booster)
            except Exception as exc:  # noqa: BLE001 - any failure: XGBoost only
                self._disable(str(exc))
            else:
                self._status = FastPathStatus(
                    True,
                    f"batches of up to {self.small_batch_rows} rows: treelite GTIL "
                    "(checked equal to XGBoost bit for bit); larger: XGBoost",
                )
                log.info("scoring %s", self._status.detail)
        return self._fast

    def _disable(self, reason: str) -> None:
        self._fast = None
        self._status = FastPathStatus(False, f"XGBoost scores every batch: {reason}")
        log.warning("the small-batch fast path is off: %s", self._status.detail)


class _GTILPredictor:
    """Treelite GTIL's per-tree leaf values, summed and transformed as XGBoost does.

    Called through treelite's C API with its configuration parsed once (the Python
    ``treelite.gtil.predict`` parses a JSON configuration and re-checks its
    arguments on every call: 167 against 56 us for one row).
    """

    def __init__(
        self,
        model: Any,
        config: Any,
        lib: Any,
        check: Any,
        trees: int,
        base_margin: np.float32,
        expf: Any,
    ) -> None:
        self._model, self._config = model, config  # kept alive with their handles
        self._check, self._trees = check, trees
        self._base_margin, self._expf = base_margin, expf
        self._model_handle, self._config_handle = model.handle, config.handle
        # A function object of our own, with its argument types declared once (the
        # library's shared one stays as treelite set it): ctypes converts plain ints.
        self._predict = ctypes.CDLL(lib._name).TreeliteGTILPredict
        self._predict.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_uint64,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self._predict.restype = ctypes.c_int

    @classmethod
    def build(cls, booster: xgb.Booster) -> _GTILPredictor:
        """Convert ``booster`` and check the result against XGBoost; raise
        FastPathError naming what stands in the way.
        """
        try:
            import treelite
            from treelite.core import _LIB, _check_call
            from treelite.gtil.gtil import GTILConfig
        except ImportError as exc:
            raise FastPathError(f"treelite cannot be imported ({exc})") from exc
        base_margin = _logistic_base_margin(booster)
        expf = _libm_expf()
        raw = booster.save_raw("json")
        try:
            model = treelite.frontend.from_xgboost_json(raw)
            config = GTILConfig(predict_type="score_per_tree", nthread=1)
            trees = int(model.num_tree)
        except Exception as exc:  # noqa: BLE001 - treelite refused the model
            raise FastPathError(f"treelite cannot convert the model: {exc}") from exc
        predictor = cls(model, config, _LIB, _check_call, trees, base_margin, expf)
        probe = _probe_rows(json.loads(raw), booster.num_features())
        expected = np.asarray(booster.inplace_predict(probe), dtype=np.float64)
        got = predictor(probe)
        if not np.array_equal(got, expected):
            worst = float(np.max(np.abs(got - expected)))
            raise FastPathError(
                f"its scores differ from XGBoost's on {int(np.sum(got != expected))} "
                f"of {len(probe)} probe rows (by up to {worst:.3g})"
            )
        return predictor

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        rows = matrix.shape[0]
        per_tree = np.empty((rows, self._trees), dtype=np.float32)
        self._check(
            self._predict(
                self._model_handle,
                matrix.ctypes.data,
                b"float32",
                rows,
                per_tree.ctypes.data,
                self._config_handle,
            )
        )
        # XGBoost starts from the base margin and adds one tree after the other in
        # float32: the first tree onto the base, then a running sum along the row
        per_tree[:, 0] += self._base_margin
        margins = per_tree.cumsum(axis=1, dtype=np.float32)[:, -1]
        return _xgboost_sigmoid(margins, self._expf)


_ONE, _CAP, _EPS = np.float32(1.0), float(np.float32(88.7)), np.float32(1e-16)


def _xgboost_sigmoid(margins: np.ndarray, expf: Any) -> np.ndarray:
    """XGBoost's float32 ``common::Sigmoid`` (1 / (expf(min(-x, 88.7)) + 1 + 1e-16)),
    with libm's ``expf`` itself: numpy's float32 exp differs from it in the last bit
    for some inputs, and a float64 exp rounded to float32 for about 3 in 10,000.
    The sum and the division are float32 numpy operations, each rounded as
    XGBoost's float arithmetic rounds it.
    """
    exps = np.array(
        [expf(min(-margin, _CAP)) for margin in margins.tolist()],
        dtype=np.float32,
    )
    return (_ONE / (exps + _ONE + _EPS)).astype(np.float64)


def _logistic_base_margin(booster: xgb.Booster) -> np.float32:
    """XGBoost's starting margin for a logistic objective: ``-logf(1/p - 1)`` of its
    base score ``p``, in float32 (ProbToMargin in src/objective/regression_loss.h).
    """
    config = json.loads(booster.save_config())["learner"]
    objective = config["objective"]["name"]
    if objective not in _LOGISTIC:
        raise FastPathError(
            f"objective {objective!r} is not one it reproduces ({sorted(_LOGISTIC)})"
        )
    params = config["learner_model_param"]
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) != 1:
        raise FastPathError("the model has more than one output")
    values = str(params["base_score"]).strip("[]").split(",")
    if len(values) != 1:
        raise FastPathError(f"unexpected base_score {params['base_score']!r}")
    base_score = np.float32(values[0])
    logf = _libm("logf")
    ratio = np.float32(np.float32(1.0) / base_score - np.float32(1.0))
    return np.float32(-np.float32(logf(float(ratio))))


def _libm_expf() -> Any:
    return _libm("expf")


def _libm(name: str) -> Any:
    path = ctypes.util.find_library("m")
    if path is None:
        raise FastPathError("libm cannot be found")
    function = getattr(ctypes.CDLL(path), name)
    function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float]
    return function


def _probe_rows(model: dict[str, Any], features: int) -> np.ndarray:
    """Rows on, just below and just above the model's split thresholds, some values
    missing, a row of zeros and a row with every value missing: every comparison the
    trees make, taken both ways.
    """
    thresholds: list[list[float]] = [[] for _ in range(features)]
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
        for left, feature, value in zip(
            tree["left_children"],
            tree["split_indices"],
            tree["split_conditions"],
            strict=True,
        ):
            if left != -1:
                thresholds[feature].append(value)
    rng = np.random.default_rng(0)
    probe = np.zeros((_PROBE_ROWS, features), dtype=np.float32)
    for column, values in enumerate(thresholds):
        cuts = np.asarray(values or [0.0], dtype=np.float32)
        picked = cuts[rng.integers(len(cuts), size=_PROBE_ROWS)]
        side = rng.integers(3, size=_PROBE_ROWS)
        picked = np.where(side == 1, np.nextafter(picked, np.float32(-np.inf)), picked)
        picked = np.where(side == 2, np.nextafter(picked, np.float32(np.inf)), picked)
        picked[rng.random(_PROBE_ROWS) < 0.1] = np.nan
        probe[:, column] = picked
    probe[0] = 0.0
    probe[1] = np.nan
    return probe


class _DensePredictor:
    """``Booster.inplace_predict`` for a float32 matrix, minus its Python layers.

    Measured with a 200-tree model on one thread: 1 row 321 -> 168 us, 10 rows
    390 -> 230 us, 1,000 rows 3.07 -> 2.88 ms; the predictions are bit-identical, since
    the same C function (``XGBoosterPredictFromDense``) computes them. Per call,
    ``inplace_predict`` re-dispatches on the input type, re-validates, and JSON-encodes
    its arguments; here the arguments are encoded once. It uses xgboost.core's private
    ``_LIB`` and ``make_jcargs`` (xgboost-cpu 3.2.0, pinned); if they move,
    ``build`` returns None and ``TreeScorer`` uses ``inplace_predict``.
    """

    def __init__(
        self, booster: xgb.Booster, lib: Any, check: Any, ulong: Any, args: bytes
    ) -> None:
        self._booster, self._lib, self._check = booster, lib, check
        self._ulong, self._args = ulong, args
        self._no_proxy = ctypes.c_void_p()

    @classmethod
    def build(cls, booster: xgb.Booster) -> _DensePredictor | None:
        try:
            from xgboost.core import _LIB, _check_call, c_bst_ulong, make_jcargs

            args = make_jcargs(
                type=0,
                training=False,
                iteration_begin=0,
                iteration_end=0,
                missing=np.nan,
                strict_shape=False,
                cache_id=0,
            )
            predictor = cls(booster, _LIB, _check_call, c_bst_ulong, args)
            probe = np.zeros((2, booster.num_features()), dtype=np.float32)
            probe[1, 0] = np.nan
            expected = booster.inplace_predict(probe)
            if not np.array_equal(predictor(probe), expected):
                return None
        except Exception:  # noqa: BLE001 - any surprise: fall back to the public API
            return None
        return predictor

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        rows, cols = matrix.shape
        interface = (
            b'{"data": [%d, true], "shape": [%d, %d], "strides": null, '
            b'"typestr": "<f4", "version": 3}' % (matrix.ctypes.data, rows, cols)
        )
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        self._check(
            self._lib.XGBoosterPredictFromDense(
                self._booster.handle,
                interface,
                self._args,
                self._no_proxy,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        if dims.value != 1 or shape[0] != rows:
            raise ValueError(f"unexpected prediction shape for {rows} rows")
        # a copy: the buffer belongs to the booster and is reused by the next call
        return np.ctypeslib.as_array(preds, shape=(rows,)).astype(np.float64)
