"""A training method written outside latro_core, to show that a method is one record: importing
this file registers it, and ``latro answer-only ...`` then trains it (tests/test_methods.py).

answer-only: fine-tune log πθ(y|x), the gold answer right after the direct prompt, no rationale.
Its step sees only the :class:`~latro_core.methods.StepContext`."""

from latro_core.logprobs import pack
from latro_core.methods import Method, StepContext, register


def answer_only_step(ctx: StepContext, step: int) -> dict:
    """−(1/|y|) log πθ(y|x) averaged over the step's questions, one micro-batch, one backward."""
    tok = ctx.tokenizer
    _, questions = ctx.questions(step)
    prompts = [tok(ctx.task.prompt(q, tok, direct=True), add_special_tokens=False)["input_ids"] for q in questions]
    answers = [ctx.task.answer_ids(q, tok) for q in questions]
    batch = pack(prompts, [[] for _ in prompts], answers, tok.pad_token_id).to(ctx.acc.device)
    with ctx.sync(True):
        _, logp_y = ctx.scorer(batch.input_ids, batch.attention_mask, batch.z_mask, batch.y_mask)
        # the token-averaged NLL of y: −(1/|y|) log πθ(y|x)
        nll = (-logp_y / batch.y_mask.sum(1)).mean()
        ctx.acc.backward(nll)
    return {"answer_nll": nll.detach(), "samples": float(len(questions))}


ANSWER_ONLY = register(Method("answer_only", "Answer only", "answer-only", "fine-tune the answer after the direct prompt",
                              answer_only_step, samples=False))
