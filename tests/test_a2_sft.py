"""Graded tests of assignment 2 (pretraining and SFT): exercises/a2_sft.md.

    python tools/grade.py --assignment a2
    python -m pytest tests/test_a2_sft.py -k sft_loss
"""

import math

import pytest
import torch

from tests import adapters
from tests.grading import case, expect, expect_close

f64 = torch.float64


# ---------------------------------------------------------------------------------------------------- §6


@pytest.mark.exercise("a2.masked_mean")
def test_masked_mean_hand_example_and_empty_mask():
    got = adapters.run_masked_mean(torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    expect_close(got, torch.tensor(1.5), "masked_mean([1, 2, pad 9])", "a2.masked_mean",
                 hint="divide by the number of valid positions (2), not by the number of entries (3)")
    empty = adapters.run_masked_mean(torch.ones(2, 3), torch.zeros(2, 3))
    expect(torch.isfinite(empty).item() and empty.item() == 0.0,
           f"a mean over no valid position must be 0, got {empty.item()} (clamp the count)", "a2.masked_mean")


@pytest.mark.exercise("a2.masked_mean")
@pytest.mark.parametrize("name", ["masked_mean/all", "masked_mean/rows"])
def test_masked_mean_stored_values(name):
    inputs, expected = case("a2", name)
    expect_close(adapters.run_masked_mean(**inputs), expected, f"masked mean ({name})", "a2.masked_mean",
                 hint="dim=None: one scalar over everything; dim=1: one mean per row")


@pytest.mark.exercise("a2.sft_loss")
def test_sft_loss_uniform_logits_is_log_vocab():
    loss = adapters.run_sft_loss(torch.zeros(2, 3, 5), torch.randint(0, 5, (2, 3)), torch.ones(2, 3))
    expect_close(loss, torch.tensor(math.log(5)), "the loss of all-zero logits over V = 5", "a2.sft_loss",
                 hint="uniform predictions cost ln V per token")


@pytest.mark.exercise("a2.sft_loss")
def test_sft_loss_stored_values_and_masked_positions():
    inputs, expected = case("a2", "sft_loss/padded")
    got = adapters.run_sft_loss(**inputs)
    expect_close(got, expected, "the SFT loss", "a2.sft_loss",
                 hint="the mean over loss_mask == 1 positions of -log softmax(logits)[target]; targets under the "
                      "mask may be -1, so never index with them unmasked")
    logits = inputs["logits"].clone().requires_grad_(True)
    adapters.run_sft_loss(logits, inputs["targets"], inputs["loss_mask"]).backward()
    leaked = logits.grad[inputs["loss_mask"] == 0].abs().max().item()
    expect(leaked == 0, f"positions with loss_mask 0 (prompt, padding) got gradient {leaked:.3g}; they must not "
           "contribute", "a2.sft_loss")


@pytest.mark.exercise("a2.sft_loss")
def test_sft_loss_gradcheck():
    logits = torch.randn(2, 3, 4, dtype=f64, requires_grad=True)
    targets = torch.randint(0, 4, (2, 3))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=f64)
    expect(torch.autograd.gradcheck(lambda z: adapters.run_sft_loss(z, targets, mask).to(f64), (logits,)),
           "the gradient of sft_loss is wrong", "a2.sft_loss")


# ---------------------------------------------------------------------------------------------------- §1


class _Net(torch.nn.Module):
    """Weights of every kind a GPT has: a matrix with a bias, a LayerNorm, an embedding."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(5, 4)
        self.lin = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)


@pytest.mark.exercise("a2.optimizer_groups")
@pytest.mark.parametrize("model_kind", ["gpt", "other"])
def test_optimizer_groups_decay_only_matrices(model_kind):
    from minigpt.config import GPTConfig
    from minigpt.model import GPT
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)) if model_kind == "gpt" else _Net()
    opt = adapters.run_configure_optimizer(model, weight_decay=0.1, learning_rate=1e-3)
    decay_of = {}
    for group in opt.param_groups:
        for p in group["params"]:
            expect(id(p) not in decay_of, "a parameter is listed twice (a tied weight must appear once)",
                   "a2.optimizer_groups")
            decay_of[id(p)] = group["weight_decay"]
    names = dict(model.named_parameters())
    expect(len(decay_of) == len(names), f"{len(decay_of)} parameters in the optimizer, the model has {len(names)}",
           "a2.optimizer_groups")
    for name, p in names.items():
        want = 0.1 if p.dim() >= 2 else 0.0
        expect(decay_of.get(id(p)) == want, f"{name} ({p.dim()}-D) has weight decay {decay_of.get(id(p))}, expected "
               f"{want}: decay matrices and embeddings, never biases or LayerNorm parameters", "a2.optimizer_groups")
    expect(all(g["lr"] == 1e-3 for g in opt.param_groups), "every group starts at the learning rate",
           "a2.optimizer_groups")


# ---------------------------------------------------------------------------------------------------- §2


@pytest.mark.exercise("a2.lr_schedule")
def test_lr_schedule_handout_points():
    cfg = dict(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    for step, want in ((0, 1e-4), (9, 1e-3), (60, 5.5e-4), (110, 1e-4), (500, 1e-4)):
        got = adapters.run_lr_at(step, **cfg)
        expect(abs(got - want) < 1e-12, f"lr at step {step}: got {got:.6g}, expected {want:.6g} (warmup 10 steps "
               "to 1e-3, reached AT step 9; cosine to 1e-4 at step 110; min_lr after)", "a2.lr_schedule")
    got = adapters.run_lr_at(10, learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=10)
    expect(got == 1e-4, f"with no room for a cosine (decay end == warmup) the lr after warmup is min_lr, got {got}",
           "a2.lr_schedule")


@pytest.mark.exercise("a2.lr_schedule")
@pytest.mark.parametrize("name", ["lr_at", "lr_at/decay_iters"])
def test_lr_schedule_stored_curve(name):
    inputs, expected = case("a2", name)
    got = torch.tensor([adapters.run_lr_at(s, **inputs) for s in range(len(expected))], dtype=f64)
    expect_close(got, expected, f"the learning rate curve ({name})", "a2.lr_schedule", atol=1e-12, dims="step",
                 hint="lr_decay_iters, when given, is where the cosine ends (else max_iters)")


# ---------------------------------------------------------------------------------------------------- §3


def _regression_setup():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    xs, ys = torch.randn(8, 3), torch.randn(8, 1)

    def loss_fn(m, batch):
        x, y = batch
        loss = ((m(x) - y) ** 2).mean()
        return loss, {"mse": loss.detach()}
    return model, xs, ys, loss_fn


@pytest.mark.exercise("a2.train_step")
def test_accumulated_gradient_equals_the_full_batch_gradient():
    model, xs, ys, loss_fn = _regression_setup()
    loss_fn(model, (xs, ys))[0].backward()
    full = [p.grad.clone() for p in model.parameters()]
    full_loss = loss_fn(model, (xs, ys))[0].item()
    model.zero_grad()
    loss, stats = adapters.run_forward_backward(model, loss_fn, [(xs[i:i + 2], ys[i:i + 2]) for i in range(0, 8, 2)])
    for p, g in zip(model.parameters(), full):
        expect_close(p.grad, g, "the accumulated gradient over 4 micro-batches", "a2.train_step", atol=1e-6,
                     hint="backward(loss_i / k) for each of the k micro-batches, so the sum is the gradient of "
                          "the mean")
    expect(abs(loss - full_loss) < 1e-6, f"the returned loss must be the mean over micro-batches: got {loss:.6g}, "
           f"expected {full_loss:.6g}", "a2.train_step")
    expect(isinstance(loss, float) and abs(stats["mse"] - full_loss) < 1e-6,
           "return (mean loss as a float, mean of each stat)", "a2.train_step")


@pytest.mark.exercise("a2.train_step")
def test_optimizer_step_clips_and_reports_the_norm_before_clipping():
    model, xs, ys, loss_fn = _regression_setup()
    (100 * loss_fn(model, (xs, ys))[0]).backward()
    norm_before = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    got = adapters.run_optimizer_step(model, opt, grad_clip=1.0)
    expect(abs(got - norm_before) < 1e-4 * norm_before, f"returned norm {got:.6g}; expected the norm BEFORE "
           f"clipping, {norm_before:.6g}", "a2.train_step")
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))).item()
    expect(abs(moved - 1.0) < 1e-5, f"with SGD lr 1 and grad_clip 1 the parameters must move by exactly 1 "
           f"(the clipped norm), moved {moved:.6g}", "a2.train_step")
    expect(all(p.grad is None or not p.grad.any() for p in model.parameters()),
           "the gradients must be zeroed after the step", "a2.train_step")
    (100 * loss_fn(model, (xs, ys))[0]).backward()
    norm_before = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()
    before = [p.detach().clone() for p in model.parameters()]
    got = adapters.run_optimizer_step(model, opt, grad_clip=0.0)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))).item()
    expect(abs(got - norm_before) < 1e-4 * norm_before and abs(moved - norm_before) < 1e-4 * norm_before,
           f"grad_clip = 0 means no clipping: the step must move the parameters by the full norm {norm_before:.4g} "
           f"(moved {moved:.4g}) and return it (returned {got:.4g})", "a2.train_step")


# ---------------------------------------------------------------------------------------------------- §4


def _byte_tokenizer():
    """Bytes only (no merges), so these tests do not depend on your BPE (assignment 1)."""
    from minigpt.tokenizer import SPECIAL_TOKENS, Tokenizer
    return Tokenizer([], {s: 256 + i for i, s in enumerate(SPECIAL_TOKENS)})


@pytest.mark.exercise("a2.render")
def test_render_ids_and_mask_of_a_two_turn_chat():
    tok = _byte_tokenizer()
    u, a, e = tok.special_id("<|user|>"), tok.special_id("<|assistant|>"), tok.special_id("<|end|>")
    ids, mask = adapters.run_render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tok)
    want_ids = [u, ord("h"), ord("i"), e, a, ord("y"), ord("o"), e]
    expect(list(ids) == want_ids, f"ids {list(ids)}; expected {want_ids}: each message is [role token] + content + "
           "[<|end|>]", "a2.render")
    expect(list(mask) == [0, 0, 0, 0, 0, 1, 1, 1], f"loss mask {list(mask)}; expected [0, 0, 0, 0, 0, 1, 1, 1]: "
           "1 on the assistant's content AND its <|end|> (so the model learns to stop), 0 on its role token "
           "and on everything the user wrote", "a2.render")


@pytest.mark.exercise("a2.render")
def test_render_train_on_last_and_special_strings_stay_text():
    tok = _byte_tokenizer()
    conv = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "dd"}]
    _, mask_all = adapters.run_render(conv, tok, train_on="all")
    _, mask_last = adapters.run_render(conv, tok, train_on="last")
    expect(sum(mask_all) == 5 and sum(mask_last) == 3 and mask_last[-1] == 1, f"train_on='all' supervises both "
           f"replies (5 tokens, got {sum(mask_all)}); 'last' only the final one (3 tokens, got {sum(mask_last)})",
           "a2.render")
    ids, _ = adapters.run_render([{"role": "user", "content": "<|end|>"}, {"role": "assistant", "content": "x"}], tok)
    specials = [t for t in ids if t >= 256]
    expect(len(specials) == 4, f"a user typing '<|end|>' must not forge a special token: {len(specials)} special "
           "ids instead of 4 (encode content as ordinary text)", "a2.render")


# ---------------------------------------------------------------------------------------------------- §5


@pytest.mark.exercise("a2.sft_targets")
def test_sft_targets_shift_by_one():
    x, y = adapters.run_sft_targets([10, 11, 12, 13, 14, 15], [0, 0, 0, 0, 1, 1])
    expect(list(x) == [10, 11, 12, 13, 14], f"inputs {list(x)}; expected ids[:-1] = [10, 11, 12, 13, 14]",
           "a2.sft_targets")
    expect(list(y) == [-1, -1, -1, 14, 15], f"targets {list(y)}; expected [-1, -1, -1, 14, 15]: position t predicts "
           "ids[t+1], kept where loss_mask[t+1] = 1, else -1", "a2.sft_targets")


@pytest.mark.exercise("a2.padding")
def test_left_and_right_padding_with_their_masks():
    ids, mask = adapters.run_pad([[5, 6], [7]], 0, left=True)
    expect(ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]],
           f"left padding of [[5, 6], [7]] gave ids {ids.tolist()}, mask {mask.tolist()}; expected [[5, 6], [0, 7]] "
           "and [[1, 1], [0, 1]]: prompts are padded on the LEFT so every row's next token is in the last column",
           "a2.padding")
    ids, mask = adapters.run_pad([[5, 6], [], [7]], 9, left=False)
    expect(ids.tolist() == [[5, 6], [9, 9], [7, 9]] and mask.tolist() == [[1, 1], [0, 0], [1, 0]],
           f"right padding of [[5, 6], [], [7]] with pad 9 gave ids {ids.tolist()}, mask {mask.tolist()} (an empty "
           "sequence is a row of padding; the rows after it are padded too)", "a2.padding")
    expect(ids.dtype == torch.long and mask.dtype == torch.long, "ids and mask must be LongTensors", "a2.padding")
