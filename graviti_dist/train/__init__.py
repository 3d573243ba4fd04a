"""Stage 5: configs validated up front, the epoch loop, Ray Train + DDP, the run on disk.

``config`` parses and validates a TrainConfig (no torch needed); ``loop`` is the one epoch loop
(``fit_local`` in one process, the Ray Train worker in ``trainer``); ``run_dir`` owns the run
directory's files; ``metrics`` computes exact metrics across workers; ``plots`` draws a run;
``tune`` is ``graviti tune``, a search over settings with trials that are runs (Ray Tune);
``tracking`` sends a run to MLflow and TensorBoard.
Names resolve on first use (``runtime.faces``): parsing a config imports neither Ray nor torch.
"""

from graviti_dist.runtime.faces import lazy_face

__all__ = ["ModelConfig", "RunDir", "StudyDir", "TrainConfig", "TrainedRun", "build_model", "encoder_config", "fit",
           "fit_local", "load_run", "load_search_space", "load_train_config", "run_study"]
__getattr__, __dir__ = lazy_face(__name__, {
    "ModelConfig": "config", "TrainConfig": "config", "encoder_config": "config", "load_train_config": "config",
    "build_model": "loop", "RunDir": "run_dir", "TrainedRun": "run_dir",
    "load_run": "run_dir", "fit": "trainer", "fit_local": "loop",
    "StudyDir": "tune", "load_search_space": "tune", "run_study": "tune",
})
