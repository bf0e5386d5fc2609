"""Tests for rlhf/ppo.py: one (or more) per item of docs/DESIGN.md's "PPO for language models" checklist,
a tiny-preset smoke run with resume, and a toy reward PPO must learn.

    python -m pytest tests/test_ppo.py -q
"""

import copy
import json
import math
import os
from dataclasses import replace

import pytest
import torch

from minigpt import GPT
from minigpt import checkpoint as ckpt_io
from minigpt.generate import generate
from rlhf import data as D
from rlhf import ppo
from rlhf import reward_model as R
from rlhf import rl_loop
from rlhf.gold import GoldEvaluator
from rlhf.losses import AdaptiveKLController, gae, masked_mean
from rlhf import rollout as rollout_lib
from rlhf.reward import RewardModel
from rlhf.rl_update import disable_dropout
from tests.tiny_rl import convs_of, prompts_of, tiny_gpt, tiny_rm  # and the `tok` fixture of conftest.py


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, tok):
    """An SFT run and a reward-model run of tiny random models, sharing the fixture tokenizer."""
    root = tmp_path_factory.mktemp("ppo_runs")
    sft, rm = str(root / "sft"), str(root / "rm")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size), tok)
    tiny_rm(tok.vocab_size).save(rm, tok)
    return sft, rm, root


def cfg_for(run_dirs, **kw):
    sft, rm, root = run_dirs
    base = dict(ppo.PRESETS["tiny"], sft_dir=sft, rm_dir=rm, out_dir=str(root / "ppo"), progress=False)
    base.update(kw)
    return replace(ppo.PPOConfig(), **base)


@pytest.fixture(scope="module")
def models(run_dirs):
    cfg = cfg_for(run_dirs)
    return ppo.build_models(cfg, torch.device("cpu"))


def collect(policy, ref, rm, value, tok, cfg, n=8, seed=0, kl_coef=0.1):
    """ppo.collect_rollout on the first n world prompts of tiny_rl, the RM judging each reply's text,
    sampled with a seeded generator."""
    return ppo.collect_rollout(policy, ref, value, rollout_lib.rm_reward(rm, tok), convs_of(n), prompts_of(tok, n),
                               cfg, kl_coef, D.stop_token_id(tok), D.pad_token_id(tok),
                               torch.Generator().manual_seed(seed))


def rollout(models, tok, cfg, n=8, seed=0, kl_coef=0.1):
    policy, ref, rm, value, _ = models
    return collect(policy, ref, rm, value, tok, cfg, n, seed, kl_coef)


# ---------------------------------------------------------------- 1. temperature everywhere

def test_temperature_is_applied_in_rollout_and_training(tok, models, run_dirs):
    policy = models[0]
    prompts = prompts_of(tok, 6)
    T = 0.7
    gen = generate(policy, prompts, 10, temperature=T, eos_token_id=D.stop_token_id(tok),
                   pad_token_id=D.pad_token_id(tok), generator=torch.Generator().manual_seed(0), return_logprobs=True)
    m = gen.response_mask
    recomputed = rollout_lib.response_logprobs(policy, gen.sequences, gen.attention_mask, gen.prompt_length, T) * m
    assert torch.allclose(recomputed, gen.logprobs, atol=1e-5)
    at_one = rollout_lib.response_logprobs(policy, gen.sequences, gen.attention_mask, gen.prompt_length, 1.0) * m
    assert (at_one - gen.logprobs).abs().max() > 1e-2          # forgetting the temperature is caught
    # the training forward (ActorCritic) divides by the same temperature
    ac = ppo.ActorCritic(policy, models[3], T)
    logits, values, _ = ac(gen.sequences, gen.attention_mask, gen.prompt_length)
    lp = torch.log_softmax(logits, -1).gather(-1, gen.response[..., None]).squeeze(-1) * m
    assert torch.allclose(lp, gen.logprobs, atol=1e-5)
    assert values.shape == gen.response.shape


# ---------------------------------------------------------------- 2. padding and positions

def test_left_padding_changes_no_logprob(tok, models):
    policy = models[0]
    short, long = [5, 6, 7], list(range(20, 40))
    pad = D.pad_token_id(tok)
    alone = generate(policy, [short], 8, temperature=0, pad_token_id=pad, return_logprobs=True)
    batched = generate(policy, [long, short], 8, temperature=0, pad_token_id=pad, return_logprobs=True)
    assert batched.attention_mask[1, :len(long) - len(short)].sum() == 0       # left padding
    assert torch.equal(alone.response[0], batched.response[1])
    assert torch.allclose(alone.logprobs[0], batched.logprobs[1], atol=1e-5)
    lp = rollout_lib.response_logprobs(policy, batched.sequences, batched.attention_mask, batched.prompt_length, 1.0)
    assert torch.allclose(lp[1] * batched.response_mask[1], alone.logprobs[0], atol=1e-5)


def test_no_padded_position_contributes_to_any_loss(tok, models, run_dirs):
    cfg = cfg_for(run_dirs, ptx_coef=0.0)
    # the first seed whose rollout has a response shorter than the others (the random model says <|end|> by
    # chance, so which seed that is depends on torch's sampling stream, which differs between versions)
    ro = next((r for r in (rollout(models, tok, cfg, seed=s) for s in range(50)) if (r.response_mask == 0).any()),
              None)
    assert ro is not None, "want some responses shorter than others"
    ac = ppo.ActorCritic(models[0], copy.deepcopy(models[3]), cfg.temperature)
    rows = torch.arange(len(ro.stopped))
    batch = {**ro.select(rows), "prompt_length": ro.prompt_length}
    ac.zero_grad(set_to_none=True)                   # the module's models may hold other tests' gradients
    loss, _ = ppo.ppo_loss(ac, batch, cfg)
    loss.backward()
    grads = [p.grad.clone() for p in ac.parameters() if p.grad is not None]
    ac.zero_grad()

    # garbage at every padded position: prompt padding tokens, tokens after the stop, and every per-token
    # quantity under mask 0
    g = torch.Generator().manual_seed(1)
    bad = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    pad_cols = bad["attention_mask"] == 0
    bad["sequences"][pad_cols] = torch.randint(0, tok.vocab_size, (int(pad_cols.sum()),), generator=g)
    off = ro.response_mask == 0
    for k in ("logprobs", "values", "advantages", "returns"):
        bad[k][off] = 1e3 * torch.randn(int(off.sum()), generator=g)
    loss2, _ = ppo.ppo_loss(ac, bad, cfg)
    loss2.backward()
    grads2 = [p.grad.clone() for p in ac.parameters() if p.grad is not None]
    assert torch.allclose(loss, loss2, atol=1e-6)
    for a, b in zip(grads, grads2):
        assert torch.allclose(a, b, atol=1e-6)


def test_used_columns_hand_example():
    am = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 0]])
    assert rollout_lib.used_columns(am, 4, am[:, 4:].float()) == (1, 2)


def test_trimmed_micro_batch_gives_the_same_loss_and_gradients(tok, models, run_dirs):
    cfg = cfg_for(run_dirs, ptx_coef=0.0)
    ro = rollout(models, tok, cfg)
    assert ro.response_mask[:, -1].any(), "the rollout keeps no all-padding response column"
    ac = ppo.ActorCritic(models[0], copy.deepcopy(models[3]), cfg.temperature)
    lengths = ro.attention_mask.sum(1)
    rows = lengths.argsort()[:3]                     # the shortest episodes: padding columns in every row
    full = {**ro.select(rows), "prompt_length": ro.prompt_length}
    trimmed = rollout_lib.trim_padding(full)
    assert trimmed["sequences"].shape[1] < full["sequences"].shape[1]
    out = []
    for batch in (full, trimmed):
        ac.zero_grad(set_to_none=True)               # the module's models may hold other tests' gradients
        loss, stats = ppo.ppo_loss(ac, batch, cfg)
        loss.backward()
        out.append((loss.detach(), stats, [p.grad.clone() for p in ac.parameters() if p.grad is not None]))
    (l1, s1, g1), (l2, s2, g2) = out
    assert torch.allclose(l1, l2, atol=1e-6)
    assert torch.allclose(s1["entropy"], s2["entropy"], atol=1e-6)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- 3. truncation and the no-stop penalty

def test_truncate_after_first_stop_hand_example():
    E, PAD = 9, 0
    resp = torch.tensor([[4, E, 5, E], [4, 5, 6, 7], [E, 3, 3, 3]])
    out, mask, stopped = rollout_lib.truncate_after_stop(resp, E, PAD)
    assert out.tolist() == [[4, E, PAD, PAD], [4, 5, 6, 7], [E, PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert stopped.tolist() == [True, False, True]


def _constant_policy(vocab_size, favourite, strength):
    """A GPT whose next-token logits are the same everywhere: strength on `favourite`, 0 elsewhere."""
    m = tiny_gpt(vocab_size)
    with torch.no_grad():
        u = torch.zeros(m.config.n_embd)
        u[0] = 1.0
        m.transformer.ln_f.weight.zero_()
        m.transformer.ln_f.bias.copy_(u)             # every hidden state is u
        m.transformer.wte.weight.zero_()             # tied head: logit_v = wte[v] . u
        m.transformer.wte.weight[favourite, 0] = strength
    return m


def test_rm_scores_truncated_text_and_no_stop_gets_fixed_penalty(tok, models, run_dirs):
    cfg = cfg_for(run_dirs, no_stop_reward=-7.5, max_new_tokens=6)
    _, _, rm, value, _ = models
    stop = D.stop_token_id(tok)
    prompts = prompts_of(tok, 8)
    for strength, expect_stopped in ((12.0, True), (-30.0, False)):
        policy = _constant_policy(tok.vocab_size, stop, strength)
        ro = collect(policy, policy, rm, value, tok, cfg)
        assert ro.stopped.all() if expect_stopped else (~ro.stopped).all()
        if expect_stopped:
            # RM score of the truncated reply == the RM reading prompt + reply + <|end|> alone, at its last token
            for b in range(len(prompts)):
                L = int(ro.response_mask[b].sum())
                ids = torch.tensor([prompts[b] + ro.sequences[b, ro.prompt_length:ro.prompt_length + L].tolist()])
                assert ids[0, -1] == stop
                alone = rm.score(ids, torch.ones_like(ids))
                assert torch.allclose(alone, ro.rm_scores[b:b + 1], atol=1e-5)
            assert torch.equal(ro.scores, ro.rm_scores)
        else:
            assert torch.all(ro.scores == -7.5)
            assert ro.response_mask.sum(1).eq(6).all()


def _reply_texts(ro, tok):
    """(text without <|end|>, stopped) of each response of a Rollout."""
    out = []
    for b in range(ro.sequences.shape[0]):
        n = int(ro.response_mask[b].sum())
        ids = ro.sequences[b, ro.prompt_length:ro.prompt_length + n].tolist()
        stopped = bool(ro.stopped[b])
        out.append((tok.decode(ids[:-1] if stopped else ids, skip_special=True), stopped))   # as the RL stages read it
    return out


def test_the_reward_of_a_reply_is_the_same_in_rm_training_and_in_ppo(tok, models, run_dirs):
    """One RM scoring path: the reward PPO gives a sampled reply equals the score the reward-model stage's
    own encoding of its training comparisons (to_items -> collate_items -> last real token) gives the same
    (conversation, reply text)."""
    cfg = cfg_for(run_dirs, no_stop_reward=None)
    policy, ref, rm, value, _ = models
    ro = collect(policy, ref, rm, value, tok, cfg, n=8)
    records = [D.Ranking(conv, [text, "(a placeholder second reply)"], [0, 1], {"stopped": [stopped, True]})
               for conv, (text, stopped) in zip(convs_of(8), _reply_texts(ro, tok))]
    items = R.to_items(records, tok, rm.config.block_size)
    train_time = [r[0] for r in R.score_items(rm, items, D.pad_token_id(tok))]
    assert train_time == pytest.approx(ro.rm_scores.tolist(), abs=1e-5), \
        "PPO's reward must be the score the RM was trained to give: the same text, encoded the same way"


def test_a_non_canonical_tokenisation_gets_the_reward_of_its_text(tok, models):
    """The RM judges text: a reply sampled as single bytes scores exactly like the same text in canonical
    tokens (scoring the sampled ids would give it a score the RM never learned to give)."""
    _, _, rm, _, _ = models
    conv = [{"role": "user", "content": "Reverse the word cat."}]
    canonical = tok.encode("tac.")
    as_bytes = list("tac.".encode())
    assert canonical != as_bytes, "the fixture tokenizer should merge some of these bytes"
    prompt, end = D.render_prompt(conv, tok), D.stop_token_id(tok)
    resp = torch.tensor([as_bytes + [end]])
    s = rollout_lib.Samples(sequences=torch.cat([torch.tensor([prompt]), resp], 1),
                            attention_mask=torch.ones(1, len(prompt) + resp.shape[1], dtype=torch.long),
                            prompt_length=len(prompt), response=resp, response_mask=torch.ones(resp.shape),
                            stopped=torch.tensor([True]), gen_logprobs=None)
    text_score = rollout_lib.score_responses(rm, tok, [conv], ["tac."], [True])[0]
    assert rollout_lib.score_samples(rm, tok, [conv], s).item() == pytest.approx(text_score, abs=1e-6)
    ids_score = rm.score(s.sequences, s.attention_mask).item()
    assert ids_score != pytest.approx(text_score, abs=1e-6)     # what scoring the sampled ids would have said


def test_a_special_token_sampled_mid_reply_is_not_part_of_its_text(tok, models):
    """A policy can sample <|user|> before <|end|>. The reply's text (saved, shown, judged by the RM) is
    what it says without it: no literal "<|user|>" in rm_train.jsonl, and the RM scores that text."""
    _, _, rm, _, _ = models
    conv = [{"role": "user", "content": "Reverse the word cat."}]
    prompt, end, user = D.render_prompt(conv, tok), D.stop_token_id(tok), tok.special_id("<|user|>")
    resp = torch.tensor([tok.encode("ta") + [user] + tok.encode("c.") + [end]])
    s = rollout_lib.Samples(sequences=torch.cat([torch.tensor([prompt]), resp], 1),
                            attention_mask=torch.ones(1, len(prompt) + resp.shape[1], dtype=torch.long),
                            prompt_length=len(prompt), response=resp, response_mask=torch.ones(resp.shape),
                            stopped=torch.tensor([True]), gen_logprobs=None)
    assert s.texts(tok) == [("tac.", True, resp.shape[1])]
    text_score = rollout_lib.score_responses(rm, tok, [conv], ["tac."], [True])[0]
    assert rollout_lib.score_samples(rm, tok, [conv], s).item() == pytest.approx(text_score, abs=1e-6)


# ---------------------------------------------------------------- 4 + 6. shaped rewards, GAE, whitening

def test_rewards_advantages_and_returns(tok, models, run_dirs):
    cfg = cfg_for(run_dirs)
    beta = 0.3
    ro = rollout(models, tok, cfg, kl_coef=beta)
    m = ro.response_mask
    # per token: -β (log π - log π_ref); the score on the last token only
    assert torch.allclose(ro.rewards.sum(1), ro.scores - beta * ro.kl.sum(1), atol=1e-5)
    last = m.sum(1).long() - 1
    body = ro.rewards.clone()
    body[torch.arange(len(last)), last] -= ro.scores
    assert torch.allclose(body, -beta * ro.kl, atol=1e-6)
    assert torch.all(ro.rewards[m == 0] == 0)
    # returns = GAE advantages + values, computed before whitening; advantages whitened over valid tokens
    adv, ret = gae(ro.rewards, ro.values, m, cfg.gamma, cfg.lam)
    assert torch.allclose(ro.returns, ret, atol=1e-6)
    assert abs(masked_mean(ro.advantages, m).item()) < 1e-5
    assert abs(masked_mean(ro.advantages ** 2, m).item() - 1.0) < 1e-3
    corr = torch.corrcoef(torch.stack([ro.advantages[m > 0], adv[m > 0]]))[0, 1]
    assert corr > 0.999                                         # whitening is an affine map


# ---------------------------------------------------------------- 5. adaptive β

def test_adaptive_kl_controller_moves_beta_towards_target():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(12.0, 1000)
    assert math.isclose(ctl.value, 0.102)               # Ziegler: e = clip(12/6 - 1) = 0.2
    ctl.update(0.0, 1000)
    assert ctl.value < 0.102                            # KL below target -> β falls
    fixed = AdaptiveKLController(0.1, target=None, horizon=10000)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.1


# ---------------------------------------------------------------- 7 + 8. first minibatch, dropout off

def test_first_minibatch_ratio_is_exactly_one(tok, models, run_dirs):
    cfg = cfg_for(run_dirs, ptx_coef=0.0, ppo_epochs=2, n_minibatches=2, micro_batch_size=3)
    policy, ref, rm, value, _ = [copy.deepcopy(m) for m in models[:4]] + [None]
    ro = collect(policy, ref, rm, value, tok, cfg)
    ac = ppo.ActorCritic(policy, value, cfg.temperature)
    opt = torch.optim.AdamW(ac.parameters(), lr=1e-3)
    stats = ppo.ppo_update(ac, opt, ro, cfg, torch.Generator().manual_seed(0))
    assert abs(stats["first_ratio_mean"] - 1.0) < 1e-6
    assert abs(stats["first_approx_kl"]) < 1e-7
    assert stats["first_clipfrac"] == 0.0
    assert stats["approx_kl"] > 0                        # later minibatches do move the policy
    for key in ("pg_loss", "vf_loss", "entropy", "clipfrac", "vf_clipfrac", "grad_norm"):
        assert math.isfinite(stats[key])


def test_dropout_is_off_in_every_model(run_dirs, tok, tmp_path):
    sft = str(tmp_path / "sft_dropout")
    ckpt_io.save_model(sft, tiny_gpt(tok.vocab_size, dropout=0.3), tok)
    cfg = cfg_for(run_dirs, sft_dir=sft)
    policy, ref, rm, value, _ = ppo.build_models(cfg, torch.device("cpu"))
    x = torch.randint(0, tok.vocab_size, (2, 10))
    for m in (policy, ref, rm, value):
        assert not any(mod.training for mod in m.modules())
        assert all(mod.p == 0.0 for mod in m.modules() if isinstance(mod, torch.nn.Dropout))
    m = disable_dropout(tiny_gpt(tok.vocab_size, dropout=0.5).train())
    m.train()  # even if someone switches training mode back on, p = 0 keeps forwards deterministic
    assert torch.equal(m(x)[0], m(x)[0])


# ---------------------------------------------------------------- 9 + 10. value model from the RM; RM normalisation

def test_value_model_is_initialised_from_the_reward_model(run_dirs):
    cfg = cfg_for(run_dirs)
    policy, _, rm, value, _ = ppo.build_models(cfg, torch.device("cpu"))
    assert isinstance(value, RewardModel) and value is not rm
    for (k, a), (_, b) in zip(rm.state_dict().items(), value.state_dict().items()):
        assert torch.equal(a, b), k
    assert value.head.weight.data_ptr() != rm.head.weight.data_ptr()   # a copy: training V leaves r alone
    assert not any(p.requires_grad for p in rm.parameters())
    assert all(p.requires_grad for p in value.parameters()), "the value model is trained (only r is frozen)"
    _, _, rm2, shared, _ = ppo.build_models(replace(cfg, value_model="shared"), torch.device("cpu"))
    assert isinstance(shared, ppo.SharedValueHead) and all(p.requires_grad for p in shared.parameters())
    assert torch.equal(shared.head.weight, rm2.head.weight) and torch.equal(shared.head.bias, rm2.head.bias)


def test_init_dir_starts_the_policy_and_sft_stays_the_reference(run_dirs, tok, tmp_path):
    """PPOConfig.init_dir (e.g. an earlier round's PPO model) starts the policy; π_ref is sft_dir's model."""
    sft = ckpt_io.load_model(run_dirs[0])[0]
    earlier = tiny_gpt(tok.vocab_size, seed=7)
    ckpt_io.save_model(str(tmp_path / "earlier"), earlier, tok)
    policy, ref, _, _, _ = ppo.build_models(cfg_for(run_dirs, init_dir=str(tmp_path / "earlier")), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), earlier.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), sft.state_dict().values()))
    default_policy = ppo.build_models(cfg_for(run_dirs), torch.device("cpu"))[0]   # init_dir="": the SFT model
    assert all(torch.equal(a, b) for a, b in zip(default_policy.state_dict().values(), sft.state_dict().values()))
    with pytest.raises(SystemExit, match="missing"):
        ppo.build_models(cfg_for(run_dirs, init_dir=str(tmp_path / "missing")), torch.device("cpu"))


def test_rm_normalisation_offset_reaches_the_ppo_score(tok, models, run_dirs):
    cfg = cfg_for(run_dirs)
    policy, ref, rm, value, _ = models
    rm2 = copy.deepcopy(rm)
    rm2.normalize_(1.25)                       # what the RM stage does so demonstrations average 0
    a = collect(policy, ref, rm, value, tok, cfg, n=6)
    b = collect(policy, ref, rm2, value, tok, cfg, n=6)
    assert torch.allclose(a.rm_scores - 1.25, b.rm_scores, atol=1e-5)


# ---------------------------------------------------------------- 11. PPO-ptx

def test_ptx_adds_gamma_times_the_lm_loss(tok, models, run_dirs):
    cfg = cfg_for(run_dirs, ptx_coef=0.5, ptx_batch_size=3, ptx_block_size=8)
    ro = rollout(models, tok, cfg)
    ac = ppo.ActorCritic(models[0], models[3], cfg.temperature)
    tokens = torch.arange(100)
    x, y = ppo.ptx_batch(tokens, cfg, torch.Generator().manual_seed(0))
    assert x.shape == (3, 8) and torch.equal(y, x + 1)                 # next-token targets
    batch = {**ro.select(torch.arange(4)), "prompt_length": ro.prompt_length}
    with torch.no_grad():
        plain, _ = ppo.ppo_loss(ac, batch, replace(cfg, ptx_coef=0.0))
        with_ptx, stats = ppo.ppo_loss(ac, {**batch, "ptx_x": x, "ptx_y": y}, cfg)
        lm = models[0](x, targets=y)[1]
    assert torch.allclose(with_ptx - plain, 0.5 * lm, atol=1e-5)
    assert math.isclose(stats["ptx_loss"].item(), lm.item(), rel_tol=1e-5)


# ---------------------------------------------------------------- 12. epochs x minibatches x accumulation; KL >= 0

def test_update_schedule_and_kl_is_nonnegative(tok, models, run_dirs):
    cfg = cfg_for(run_dirs, ptx_coef=0.0, ppo_epochs=3, n_minibatches=2, micro_batch_size=3)
    policy, ref, rm, value = [copy.deepcopy(m) for m in models[:4]]
    ac = ppo.ActorCritic(policy, value, cfg.temperature)
    opt = torch.optim.AdamW(ac.parameters(), lr=3e-3)
    steps = []
    orig = opt.step
    opt.step = lambda *a, **k: (steps.append(1), orig(*a, **k))[1]
    ro = collect(policy, ref, rm, value, tok, cfg)
    assert ro.kl.abs().max() < 1e-5 and ro.kl_exact.abs().max() < 1e-6     # policy == reference at the start
    ppo.ppo_update(ac, opt, ro, cfg, torch.Generator().manual_seed(0))
    assert len(steps) == 3 * 2                                             # ppo_epochs x n_minibatches
    ro2 = collect(policy, ref, rm, value, tok, cfg, seed=1)
    assert (ro2.kl_exact >= -1e-6).all() and ro2.kl_exact.sum() > 0          # exact KL per token >= 0
    st = ppo.rollout_stats(ro2)
    assert st["kl_exact"] > 0 and st["logprob_drift"] < 1e-5


# ---------------------------------------------------------------- 13. generation == recompute

def test_generation_logprobs_equal_forward_recompute(tok, models, run_dirs):
    cfg = cfg_for(run_dirs, temperature=0.9)
    ro = rollout(models, tok, cfg)
    lengths = {len(p) for p in prompts_of(tok, 8)}
    assert len(lengths) > 1                                                   # really left-padded
    assert (ro.gen_logprobs - ro.logprobs).abs().max() < 1e-5
    assert ppo.rollout_stats(ro)["logprob_drift"] < 1e-5


# ---------------------------------------------------------------- 14. stop token vs padding

def test_stop_token_is_never_padding_and_is_supervised(tok):
    stop, pad = D.stop_token_id(tok), D.pad_token_id(tok)
    assert stop != pad
    ids, mask = D.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tok)
    assert ids[-1] == stop and mask[-1] == 1                                  # SFT learns to stop
    out, m, _ = rollout_lib.truncate_after_stop(torch.tensor([[5, stop, 6]]), stop, pad)
    assert out[0, 2] == pad and m[0, 1] == 1                                  # the stop token is kept in the loss


# ---------------------------------------------------------------- the stage: smoke run, resume, adaptive β

def test_tiny_preset_smoke_run(run_dirs):
    cfg = cfg_for(run_dirs, max_iters=3, kl_target=100.0, eval_interval=2)
    result = ppo.train_ppo(cfg, ppo.gold_evaluator(cfg, GoldEvaluator))   # as `python -m rlhf.ppo` does
    out = cfg.out_dir
    for name in ("model.pt", "tokenizer.bpe", "ckpt.pt", "summary.json", "metrics.jsonl", "dashboard.png", "config.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert result["iters"] == 3 and 0.0 <= result["gold_score"] <= 1.0
    traj = result["kl_coef_trajectory"]
    assert traj[0] == cfg.init_kl_coef and result["kl_coef"] < traj[-1] < traj[0]   # KL far below target: β falls
    records = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"), encoding="utf-8")]
    train = [r for r in records if "rm_score" in r]
    assert [r["iter"] for r in train] == [0, 1, 2]
    for key in ("rm_score", "kl", "kl_coef", "pg_loss", "vf_loss", "entropy", "approx_kl", "clipfrac",
                "explained_variance", "response_length", "stop_rate", "ptx_loss"):
        assert all(math.isfinite(r[key]) for r in train), key
    assert "gold" in records[0] and "gold_greedy" in records[0] and "gold" in records[-1]
    policy, _ = ckpt_io.load_model(out)
    assert isinstance(policy, GPT)


def test_resume_reproduces_the_uninterrupted_run(run_dirs, tmp_path, monkeypatch):
    cfg = cfg_for(run_dirs, max_iters=3, eval_interval=2, out_dir=str(tmp_path / "straight"))
    evaluator = ppo.gold_evaluator(cfg, GoldEvaluator)
    ppo.train_ppo(cfg, evaluator)
    straight = [json.loads(l) for l in open(tmp_path / "straight" / "metrics.jsonl", encoding="utf-8")]

    crashed = replace(cfg, out_dir=str(tmp_path / "crashed"))
    real, calls = ppo.collect_rollout, []

    def crash_at_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:                          # the rollout of iteration 2
            raise RuntimeError("simulated crash in iteration 2")
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo, "collect_rollout", crash_at_2)
    with pytest.raises(RuntimeError):
        ppo.train_ppo(crashed, evaluator)            # ckpt.pt was saved at the start of iteration 2
    monkeypatch.setattr(ppo, "collect_rollout", real)
    result = ppo.train_ppo(replace(crashed, resume=True), evaluator)
    assert result["iters"] == 3
    resumed = [json.loads(l) for l in open(tmp_path / "crashed" / "metrics.jsonl", encoding="utf-8")]
    assert [r["iter"] for r in resumed] == [r["iter"] for r in straight]
    for a, b in zip(straight, resumed):
        for key in ("rm_score", "kl", "pg_loss", "gold"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), (a["iter"], key)
    wa, _ = ckpt_io.load_model(tmp_path / "straight")
    wb, _ = ckpt_io.load_model(tmp_path / "crashed")
    for (k, x), (_, y) in zip(wa.state_dict().items(), wb.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k


def test_ctrl_c_saves_a_checkpoint_says_how_to_go_on_and_stops(run_dirs, tmp_path, monkeypatch, capsys):
    """A first Ctrl-C finishes the iteration, saves ckpt.pt, says how to go on and stops with KeyboardInterrupt
    (the command exits 130, the pipeline does not go on). It once returned as if finished: status 0 and the
    final summary line (found by probing). --resume then finishes the run. (A stand-in for the SIGINT
    handler reports a Ctrl-C at once.)"""
    class CtrlCAtOnce:
        requested = True

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(rl_loop, "StopOnInterrupt", lambda verbose: CtrlCAtOnce())
    cfg = cfg_for(run_dirs, max_iters=3, eval_interval=2, out_dir=str(tmp_path / "ppo"))
    with pytest.raises(KeyboardInterrupt):
        ppo.train_ppo(cfg, None)
    out = capsys.readouterr().out
    assert f"interrupted: saved {cfg.out_dir}/ckpt.pt at iteration 1; continue with --resume" in out, out
    assert (tmp_path / "ppo" / "ckpt.pt").exists() and not ckpt_io.is_finished(tmp_path / "ppo")
    monkeypatch.undo()
    assert ppo.train_ppo(replace(cfg, resume=True), None)["iters"] == 3


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        ppo.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for f in ("--kl_target", "--ptx_coef", "--value_model", "--no_stop_reward", "--n_minibatches"):
        assert f in text


# ---------------------------------------------------------------- PPO learns a trivially learnable reward

class CountTokenReward(torch.nn.Module):
    """A stand-in reward model: the share of response tokens equal to `token` (positions after P)."""

    def __init__(self, token, prompt_length):
        super().__init__()
        self.token, self.P = token, prompt_length

    def score(self, idx, attention_mask):
        resp, m = idx[:, self.P:], attention_mask[:, self.P:].float()
        return ((resp == self.token).float() * m).sum(1) / m.sum(1).clamp(min=1)


def test_ppo_increases_a_toy_reward():
    V, X, STOP, PAD = 16, 3, 1, 0
    policy = tiny_gpt(V, seed=5, sharpen=1.0)
    ref = copy.deepcopy(policy)
    value = tiny_rm(V, seed=6)
    prompts = [[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 4], [6, 7, 8, 9]] * 6   # all length 4: P = 4
    reward = CountTokenReward(X, prompt_length=4)
    cfg = replace(ppo.PPOConfig(), max_new_tokens=8, micro_batch_size=24, n_minibatches=2, ppo_epochs=4,
                  init_kl_coef=0.01, kl_target=None, no_stop_reward=None)   # the toy reward counts every response
    ac = ppo.ActorCritic(policy, value, cfg.temperature)
    opt = torch.optim.AdamW(ac.parameters(), lr=3e-3)
    means = []
    for it in range(8):
        ro = ppo.collect_rollout(policy, ref, value, lambda convs, s: reward.score(s.sequences, s.attention_mask),
                                 [None] * len(prompts), prompts, cfg, cfg.init_kl_coef, STOP, PAD,
                                 torch.Generator().manual_seed(100 + it))
        means.append(reward.score(ro.sequences, ro.attention_mask).mean().item())
        ppo.ppo_update(ac, opt, ro, cfg, torch.Generator().manual_seed(it))
    assert means[-1] > means[0] + 0.2, means


@pytest.mark.slow
def test_ddp_two_processes_smoke(run_dirs, tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank rolls out its half of the prompts; rank 0 writes."""
    import subprocess
    import sys
    sft, rm, _ = run_dirs
    out = str(tmp_path / "ppo_ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlhf.ppo",
           "--preset", "tiny", f"--sft_dir={sft}", f"--rm_dir={rm}", f"--out_dir={out}", "--progress=false",
           "--max_iters=2"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, encoding="utf-8", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(os.path.join(out, "summary.json"), encoding="utf-8"))
    assert summary["iters"] == 2
    records = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"), encoding="utf-8")]
    assert [r["iter"] for r in records if "rm_score" in r] == [0, 1]


def test_bench_ppo_needs_a_finished_run(tmp_path, capsys):
    from bench import ppo as bench_ppo
    with pytest.raises(SystemExit) as e:
        bench_ppo.main(["--help"])
    assert e.value.code == 0 and "--run" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="model.pt not found"):
        bench_ppo.main([f"--run={tmp_path}"])
