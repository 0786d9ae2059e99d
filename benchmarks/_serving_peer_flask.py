"""The gunicorn + Flask peer, written the way SageMaker's framework containers serve
XGBoost: Flask routes ``/ping`` and ``/invocations``, CSV decoded with ``np.loadtxt``,
JSON with ``json.loads``, a ``DMatrix`` and ``Booster.predict``, JSON encoded with
``json.dumps``. Only the benchmark imports this; gunicorn loads it as
``benchmarks._serving_peer_flask:app`` with the model folder in ``BENCH_MODEL_DIR``.
"""

from __future__ import annotations

import io
import json
import os

import flask
import numpy as np
import xgboost as xgb

app = flask.Flask(__name__)
_booster: xgb.Booster | None = None


def _model() -> xgb.Booster:
    global _booster
    if _booster is None:  # loaded once per worker, on first use
        booster = xgb.Booster()
        booster.load_model(os.path.join(os.environ["BENCH_MODEL_DIR"], "model.json"))
        booster.set_param({"nthread": 1})
        _booster = booster
    return _booster


@app.route("/ping", methods=["GET"])
def ping() -> flask.Response:
    _model()
    return flask.Response(status=200)


@app.route("/invocations", methods=["POST"])
def invocations() -> flask.Response:
    body = flask.request.get_data()
    if flask.request.content_type.startswith("text/csv"):
        matrix = np.loadtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2)
    else:
        matrix = np.array(json.loads(body)["instances"], dtype=float)
    scores = _model().predict(xgb.DMatrix(matrix))
    return flask.Response(
        json.dumps({"predictions": scores.tolist()}), mimetype="application/json"
    )
