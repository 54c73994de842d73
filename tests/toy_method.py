"""A training method written outside latro_core, to show that a method is one record: importing
this file registers it, and ``latro --plugin tests/toy_method.py answer-only ...`` then trains it
(tests/test_methods.py).

answer-only: fine-tune log πθ(y|x), the gold answer right after the direct prompt, no rationale.
Its step sees only its :class:`~latro_core.methods.StepInputs`."""

from latro_core.methods import Method, StepInputs, StepOutput, register_method


def answer_only_step(inp: StepInputs) -> StepOutput:
    """−(1/|y|) log πθ(y|x) averaged over the step's questions, one micro-batch, one backward."""
    tok, task = inp.policy.tokenizer, inp.task
    prompts = [tok(task.prompt(q, tok, direct=True), add_special_tokens=False)["input_ids"] for q in inp.questions]
    answers = [task.answer_ids(q, tok) for q in inp.questions]
    batch = inp.policy.pack(prompts, [[] for _ in prompts], answers)       # (Q, T) x⊕y
    with inp.processes.sync(True):
        _, logp_y = inp.policy.score(batch)                                  # (Q,)
        # the token-averaged NLL of y: −(1/|y|) log πθ(y|x)
        nll = (-logp_y / batch.y_mask.sum(1)).mean()
        inp.processes.backward(nll, step=inp.step)
    return StepOutput({"answer_nll": nll.detach(), "samples": float(len(inp.questions))})


ANSWER_ONLY = register_method(Method("answer_only", "Answer only", "answer-only",
                                     "fine-tune the answer after the direct prompt", answer_only_step,
                                     draws_rationales=False))
