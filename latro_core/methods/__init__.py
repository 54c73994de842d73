"""Training methods, each one record in :data:`METHODS` (:mod:`.registry`): LaTRO (:mod:`.latro`) and
the SFT and RFT baselines (:mod:`.baselines`). A step is a function of :class:`StepInputs` that
returns a :class:`StepOutput` (:mod:`.step_io`); the Trainer then clips, steps AdamW and records."""

from .baselines import fine_tune, rft_step, sft_step
from .latro import latro_step
from .registry import METHODS, Method, get_method, register_method
from .step_io import StepInputs, StepOutput

__all__ = ["METHODS", "Method", "StepInputs", "StepOutput", "fine_tune", "get_method", "latro_step",
           "register_method", "rft_step", "sft_step"]

# in the tables' order (after the untrained model): the baselines, then LaTRO
register_method(Method("sft", "SFT", "sft", "supervised fine-tuning baseline", sft_step, draws_rationales=False,
                       direct_prompt=True))
register_method(Method("rft", "RFT", "rft", "rejection-sampling fine-tuning baseline (STaR/RFT)", rft_step,
                       draws_rationales=True, shardable=False))
register_method(Method("latro", "LaTRO", "train", "LaTRO training", latro_step, draws_rationales=True, min_k=2,
                       reference=True, tempered_scoring=True, whole_questions=True, reward=True))
