"""A reward written outside latro_core, to show that a reward is one function and one record:
importing this file registers it, and ``latro --plugin tests/toy_reward.py train --reward
sqrt_probability`` then trains with it (tests/test_methods.py); its estimator is checked exact like
the others (tests/test_objective.py).

sqrt_probability: φ = √ in Proposition 1's family E_z[φ(πθ(y|x⊕z))], between LaTRO's log and
VeriFree's identity. With ℓ = log πθ(y|x⊕z): R = e^{ℓ/2}, and ∇R = ½e^{ℓ/2}·∇ℓ gives the direct
term's weight w = λ·½e^{ℓ/2}."""

from latro_core.objective import Reward, RewardInput, RewardOutput, register_reward


def sqrt_probability(inp: RewardInput) -> RewardOutput:
    # R = √πθ(y|x⊕z) = e^{ℓ/2}
    root = (inp.logp_y / 2).exp()
    # w = ∂R/∂ℓ = ½e^{ℓ/2}, times λ
    return RewardOutput(root, inp.direct_scale * root / 2)


SQRT_PROBABILITY = register_reward(Reward("sqrt_probability", sqrt_probability,
                                          objective="E_z[√πθ(y|x⊕z)] − β·KL  (φ = √, a toy member of the family)"))
