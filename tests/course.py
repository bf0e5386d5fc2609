"""The course's exercise register: every graded exercise, its points and where its handout explains it.

An exercise is real code of the project between two markers that name it,

        # BEGIN SOLUTION a4.gae
        ... the reference code ...
        # END SOLUTION

and its graded tests carry `@pytest.mark.exercise("a4.gae")`. `tools/make_exercises.py` blanks the
marked code in the student copy (it becomes `raise NotImplementedError("exercise a4.gae — see
exercises/a4_ppo.md §4")`), `tools/grade.py` runs the graded tests exercise by exercise, and
`tests/conftest.py` reports a test that merely *uses* an unwritten exercise as skipped ("blocked by
exercise a2.masked_mean"), not as a failure. `tools/make_exercises.py --check` and
tests/test_course.py keep this register, the markers and the tests in agreement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# assignment -> (handout, title)
ASSIGNMENTS = {
    "a1": ("exercises/a1_gpt.md", "The GPT and its tokenizer"),
    "a2": ("exercises/a2_sft.md", "Pretraining and supervised fine-tuning"),
    "a3": ("exercises/a3_reward.md", "The reward model"),
    "a4": ("exercises/a4_ppo.md", "PPO"),
    "a5": ("exercises/a5_beyond.md", "Beyond PPO: DPO, GRPO, best-of-N"),
}


@dataclass(frozen=True)
class Exercise:
    id: str          # "a4.gae": assignment, dot, name; the BEGIN SOLUTION marker names it
    title: str       # what the student writes, in a few words
    points: int      # earned when every graded test of the exercise passes
    section: int     # the handout section (§) that explains it
    where: str       # file::function the marked code lives in

    @property
    def assignment(self) -> str:
        return self.id.split(".")[0]

    @property
    def handout(self) -> str:
        return ASSIGNMENTS[self.assignment][0]

    @property
    def pointer(self) -> str:
        """'exercises/a4_ppo.md §4': where a student reads about it."""
        return f"{self.handout} §{self.section}"


E = Exercise
EXERCISES = [
    # ---- A1: the GPT and its tokenizer
    E("a1.count_pairs", "count adjacent token pairs", 2, 1, "minigpt/bpe.py::count_pairs"),
    E("a1.merge_pair", "replace every occurrence of a pair by its new token", 2, 1, "minigpt/bpe.py::merge_pair"),
    E("a1.learn_merges", "the BPE training loop", 4, 2, "minigpt/bpe.py::learn_merges"),
    E("a1.bpe_encode", "encode one pre-token with learned merges", 3, 3, "minigpt/tokenizer.py::Tokenizer._bpe"),
    E("a1.attention", "causal self-attention written out (scores, scale, mask, softmax)", 5, 4,
      "minigpt/model.py::attention"),
    E("a1.mlp", "the feed-forward network", 1, 5, "minigpt/model.py::MLP.forward"),
    E("a1.block", "the pre-LayerNorm residual block", 2, 5, "minigpt/model.py::Block.forward"),
    E("a1.gpt_forward", "embeddings, blocks, final LayerNorm, LM head and the LM loss", 4, 6,
      "minigpt/model.py::GPT.hidden_states, GPT.forward"),
    E("a1.filter_logits", "top-k and top-p (nucleus) filtering", 4, 7, "minigpt/generate.py::filter_logits"),
    E("a1.sample_next", "one decoding step: greedy, or a sample at a temperature", 2, 7,
      "minigpt/generate.py::sample_next"),
    E("a1.kv_cache", "store and return a layer's keys and values", 3, 8, "minigpt/model.py::KVCache.update"),
    # ---- A2: pretraining and SFT
    E("a2.optimizer_groups", "AdamW with no weight decay on biases and norms", 2, 1,
      "minigpt/model.py::GPT.configure_optimizers, minigpt/trainer.py::configure_optimizer"),
    E("a2.lr_schedule", "linear warmup, then cosine decay to min_lr", 3, 2, "minigpt/trainer.py::lr_at"),
    E("a2.train_step", "gradient accumulation and clipping", 4, 3, "minigpt/trainer.py::forward_backward, optimizer_step"),
    E("a2.render", "chat template to (ids, loss_mask): assistant tokens and their <|end|>", 4, 4,
      "rlhf/data.py::_blocks"),
    E("a2.padding", "left and right padding with an attention mask", 2, 5, "rlhf/data.py::_pad"),
    E("a2.sft_targets", "shift ids and mask into next-token targets", 2, 5, "rlhf/data.py::sft_targets"),
    E("a2.masked_mean", "a mean over the valid positions", 1, 6, "rlhf/losses.py::masked_mean"),
    E("a2.sft_loss", "next-token cross-entropy on assistant tokens only", 3, 6, "rlhf/losses.py::sft_loss"),
    # ---- A3: the reward model
    E("a3.labeler", "a labeler's Bradley-Terry choice: noisy utilities", 2, 6,
      "rlhf/world/labelers.py::noisy_utilities"),
    E("a3.last_token_values", "read the reward at each row's last real token", 3, 1,
      "rlhf/reward.py::last_token_values"),
    E("a3.pairwise_loss", "the Bradley-Terry pairwise loss (with a margin)", 2, 2,
      "rlhf/losses.py::pairwise_reward_loss"),
    E("a3.ranked_loss", "InstructGPT eq. 1: K-choose-2 pairs per prompt in one batch element", 5, 3,
      "rlhf/losses.py::ranked_reward_loss"),
    E("a3.pair_mask", "which pairs of a ranking carry loss (ties, padding)", 3, 4,
      "rlhf/reward_model.py::pair_mask"),
    E("a3.rm_loss", "one forward pass per response, rewards (P, K), pairwise accuracy", 3, 5,
      "rlhf/reward_model.py::rm_loss"),
    # ---- A4: PPO
    E("a4.token_logprobs", "log-probabilities of the chosen tokens", 2, 1, "rlhf/losses.py::token_logprobs"),
    E("a4.response_logprobs", "per-token log-probs of the response at a temperature", 3, 1,
      "rlhf/rollout.py::shift_to_response"),
    E("a4.entropy", "entropy of the next-token distribution", 1, 1, "rlhf/losses.py::entropy_from_logits"),
    E("a4.truncate_after_stop", "cut each sampled response after its first <|end|>", 2, 1,
      "rlhf/rollout.py::truncate_after_stop"),
    E("a4.kl_shaped_rewards", "KL penalty per token, RM score on the last token", 3, 2,
      "rlhf/losses.py::kl_shaped_rewards"),
    E("a4.gae", "generalised advantage estimation", 4, 3, "rlhf/losses.py::gae"),
    E("a4.whiten", "advantage whitening over valid tokens", 2, 3, "rlhf/losses.py::masked_whiten"),
    E("a4.policy_loss", "the clipped surrogate loss and its statistics", 4, 4, "rlhf/losses.py::ppo_policy_loss"),
    E("a4.value_loss", "the clipped value loss and explained variance", 3, 4, "rlhf/losses.py::ppo_value_loss"),
    E("a4.adaptive_kl", "the adaptive KL controller", 2, 5, "rlhf/losses.py::AdaptiveKLController.update"),
    E("a4.minibatches", "epochs x shuffled minibatches over a rollout", 3, 6,
      "rlhf/rl_update.py::minibatch_updates"),
    # ---- A5: beyond PPO
    E("a5.sequence_logprobs", "summed response log-probs under policy and reference", 3, 1,
      "rlhf/rollout.py::sequence_logprobs"),
    E("a5.dpo_loss", "the DPO loss on implicit rewards", 3, 2, "rlhf/losses.py::dpo_loss"),
    E("a5.group_advantages", "GRPO's group-normalised advantages", 3, 3, "rlhf/losses.py::group_advantages"),
    E("a5.kl_k3", "the k3 estimator of KL", 1, 3, "rlhf/losses.py::kl_k3"),
    E("a5.best_of_n", "pick the RM's best of N samples per prompt", 2, 4, "rlhf/best_of_n.py::pick_best"),
    E("a5.best_of_n_kl", "the KL bound of best-of-N", 1, 4, "rlhf/best_of_n.py::best_of_n_kl"),
]
del E

BY_ID = {e.id: e for e in EXERCISES}


def not_implemented_message(exercise_id: str) -> str:
    """What a blank raises: 'exercise a4.gae — see exercises/a4_ppo.md §3'."""
    return f"exercise {exercise_id} — see {BY_ID[exercise_id].pointer}"


_BLANK = re.compile(r"exercise (a\d\.\w+) — see ")  # not_implemented_message, found anywhere in a text


def find_blank(text: str) -> str | None:
    """The registered exercise whose blank's message (not_implemented_message) appears in `text`, else None."""
    return next((m.group(1) for m in _BLANK.finditer(text) if m.group(1) in BY_ID), None)


def blocked_reason(exercise_id: str) -> str:
    """Why a test that needs an unwritten exercise is skipped (tests/conftest.py; tools/grade.py reads it)."""
    return f"blocked by exercise {exercise_id}: write it first ({BY_ID[exercise_id].pointer})"
