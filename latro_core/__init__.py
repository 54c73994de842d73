"""latro_core: a small, exact implementation of LaTent Reasoning Optimization (LaTRO).

Modules, one job each:

- ``tasks``      data sets, prompts, targets, answer extraction and checking
- ``models``     loading any causal LM (hub id, folder, GGUF, embedded SmolLM2), tiny test models
- ``logprobs``   log pi(z|x) and log pi(y|x+z) for a padded batch: one decoder call per length group
- ``rollout``    sampling K rationales per question with stop strings and a KV cache
- ``objective``  self-reward, truncation penalty, RLOO advantages, the Eq. 4 loss
- ``methods``    one optimizer step of LaTRO / SFT / RFT: samples, losses, backward
- ``trainer``    the loop they share (accelerate), metrics; ``checkpoint`` its I/O and run-folder rules;
  ``sharding`` FSDP2 across processes
- ``evaluate``   greedy and maj@k accuracy with intervals, self-evaluation AUROC, answer NLL
- ``results``    tables from run outputs;  ``plots`` figures;  ``stats`` intervals and AUROC
- ``profiles``   every notebook's settings per profile; ``runs`` what the notebooks share;
  ``reproduce`` runs them headless; ``cli`` the ``latro`` command (docs/architecture.md: all of them)
"""

__version__ = "0.1.0"

from .errors import CheckpointError, ConfigError, DataError, LatroError, ModelError, NumericalError  # noqa: F401
