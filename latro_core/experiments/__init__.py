"""Orchestration for the notebooks and the studies, on top of the library: the settings profiles
(:mod:`.profiles`), training and evaluating runs as child processes (:mod:`.runs`), running the
notebooks headless (:mod:`.reproduce`), the base model's learning-signal study
(:mod:`.reward_signal`) and the resume-safe study machinery (:mod:`.study`). Nothing in
``latro_core`` below this package imports it; only :mod:`latro_core.cli` does."""
