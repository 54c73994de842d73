"""latro_core: a small, exact implementation of LaTent Reasoning Optimization (LaTRO).

Modules in layers, one job each; a module imports only its own layer or lower ones
(``tests/test_architecture.py``; ``docs/architecture.md`` draws them):

- ground: ``errors``, ``stats`` (intervals, AUROC), ``provenance`` (commit, command line, flags),
  ``tasks`` (data, prompts, answer checking), ``models`` (any causal LM, tiny test models), ``cpu_kernels``
- algorithm: ``rollout`` (K rationales per question), ``logprobs`` (log π(z|x), log π(y|x⊕z)),
  ``objective`` (self-reward, truncation, RLOO, the Eq. 4 loss, the reward family), ``answers``
  (a model's answers, majority votes, the gold answer's log-probability)
- training: ``methods`` (one record per method: its step and needs), ``trainer`` (the loop),
  ``checkpoint`` (the run folder), ``sharding`` (FSDP2)
- evaluation: ``evaluate`` (``latro evaluate``), ``results`` (tables), ``plots`` (figures)
- orchestration: ``experiments`` (profiles, runs, reproduce, reward_signal, study)
- command line: ``cli`` (the ``latro`` command), imported by nothing
"""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DataError, LatroError, ModelError, NumericalError  # noqa: F401
from .versions import check as _check_versions

_check_versions()   # one line per installed dependency outside pyproject.toml's ranges (latro_core/versions.py)
