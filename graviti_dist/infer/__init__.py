"""Stage 6: a trained run over its partitions -> predictions (batch to Parquet, online over HTTP).

``layerwise`` computes full-neighbourhood results layer by layer; ``batch`` is ``graviti infer``
(its output owned by ``predictions``), ``recommend`` ranks link-task destinations,
``predictor`` answers per-id requests and ``serve`` is its HTTP face.
Names resolve on first use (``runtime.faces``): batch inference never imports FastAPI.
"""

from graviti_dist.runtime.faces import lazy_face

__all__ = ["Predictions", "Predictor", "create_app", "run_inference", "run_server"]
__getattr__, __dir__ = lazy_face(__name__, {
    "Predictions": "predictions", "Predictor": "predictor", "create_app": "serve", "run_inference": "batch",
    "run_server": "serve",
})
