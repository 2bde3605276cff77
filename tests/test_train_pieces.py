"""The training loop's pieces against independent computations: every augmentation, each
loss (weighted CE, focal, label smoothing), both schedules, the stream's class weights,
and the architecture options `-m` passes. No Ray: each runs in milliseconds."""

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from raytasks.nets import create_model
from raytasks.training.settings import TrainSettings, stream_weights
from raytasks.training.train import augment, loss_fn, lr_lambda

BEAT, RR = 187, 4


def settings(**over) -> TrainSettings:
    return TrainSettings.from_dict({"arch": "cnn1d", **over})


def beats(n=64, rr=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, BEAT + (RR if rr else 0), generator=g) * 0.8 + 0.1


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_no_augmentation_is_the_identity():
    x = beats()
    assert torch.equal(augment(x, settings(), gen()), x)


def test_aug_scale_multiplies_each_beat_by_one_factor_in_range():
    x = beats()
    out = augment(x, settings(aug_scale=0.3), gen())
    ratio = out[:, :BEAT] / x[:, :BEAT]
    factor = ratio[:, :1]
    torch.testing.assert_close(ratio, factor.expand_as(ratio))  # one factor per beat
    assert factor.min() >= 0.7 - 1e-6
    assert factor.max() <= 1.3 + 1e-6
    assert factor.std() > 0.05  # beats get different factors
    assert torch.equal(out[:, BEAT:], x[:, BEAT:])  # RR features pass through


def test_aug_wander_adds_a_slow_sinusoid_per_beat():
    x = torch.zeros(64, BEAT + RR)
    x[:, BEAT:] = 1.0
    out = augment(x, settings(aug_wander=0.2), gen())
    added = out[:, :BEAT].double().numpy()
    amps = np.abs(added).max(axis=1)
    assert amps.max() <= 0.2 + 1e-6
    assert (amps > 0.05).sum() > 10
    t = np.arange(BEAT) / 125.0
    for row in added[amps > 0.05]:
        # a sinusoid obeys s[n+1] + s[n-1] = 2 cos(w) s[n]: estimate w, then fit it
        c = np.linalg.lstsq(row[1:-1, None], row[2:] + row[:-2], rcond=None)[0][0]
        freq = np.arccos(c / 2) * 125.0 / (2 * np.pi)
        assert 0.09 < freq < 0.51, freq
        basis = np.c_[np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)]
        fit = basis @ np.linalg.lstsq(basis, row, rcond=None)[0]
        assert np.abs(fit - row).max() < 1e-3 * np.abs(row).max()
    assert torch.equal(out[:, BEAT:], x[:, BEAT:])


def test_aug_noise_adds_gaussian_noise_of_sigma():
    x = beats(n=512)
    out = augment(x, settings(aug_noise=0.05), gen())
    noise = (out - x)[:, :BEAT].flatten().double()
    assert abs(noise.mean()) < 0.002
    assert noise.std() == pytest.approx(0.05, rel=0.02)
    assert torch.equal(out[:, BEAT:], x[:, BEAT:])


def test_aug_shift_rolls_every_beat_and_zero_fills():
    x = beats()
    for seed in range(6):
        out = augment(x, settings(aug_shift=10), gen(seed))
        beat, shifted = x[:, :BEAT], out[:, :BEAT]
        matches = [k for k in range(-10, 11) if torch.equal(shifted, _shift(beat, k))]
        assert len(matches) == 1, seed  # one shift, the same for the whole batch
        assert torch.equal(out[:, BEAT:], x[:, BEAT:])


def test_aug_rr_errors_gives_a_share_of_beats_a_detector_errors_rr_features():
    x = beats(n=4000)
    x[:, BEAT + 2] = 0.8  # local mean RR, s
    for share in (1.0, 0.1):
        out = augment(x, settings(aug_rr_errors=share), gen())
        assert torch.equal(out[:, :BEAT], x[:, :BEAT])  # the beat passes through
        assert torch.equal(out[:, BEAT + 2], x[:, BEAT + 2])  # so does the local mean
        pre, post = out[:, BEAT] / x[:, BEAT], out[:, BEAT + 1] / x[:, BEAT + 1]
        changed = (pre != 1) | (post != 1)
        assert not ((pre != 1) & (post != 1)).any()  # one interval per beat
        assert changed.float().mean() == pytest.approx(share, abs=0.02)
        # rr_record is the same interval as rr_pre over another mean: it follows it
        torch.testing.assert_close(out[:, BEAT + 3] / x[:, BEAT + 3], pre)
        added = torch.cat([out[:, BEAT] - x[:, BEAT], out[:, BEAT + 1] - x[:, BEAT + 1]])
        ratios = torch.cat([pre, post])
        split = ratios < 1  # an extra detection splits the interval
        merged = added > 0  # a missed beat adds its interval (x the local mean)
        assert 0.25 - 1e-5 <= ratios[split].min() < ratios[split].max() <= 0.75 + 1e-5
        assert 0.8 - 1e-5 <= added[merged].min() < added[merged].max() <= 1.2 + 1e-5
        if share == 1.0:  # the four errors, equally often
            kinds = [(pre < 1).sum(), (post < 1).sum(), (pre > 1).sum(), (post > 1).sum()]
            assert 850 < min(kinds) <= max(kinds) < 1150, kinds
    assert torch.equal(augment(x[:, :BEAT], settings(aug_rr_errors=1.0), gen()), x[:, :BEAT])
    # a template model's x: beat, RR, deviations; only the RR columns move
    dev = torch.rand(len(x), BEAT, generator=gen(5))
    out = augment(torch.cat([x, dev], 1), settings(aug_rr_errors=1.0), gen())
    assert torch.equal(out[:, BEAT + RR :], dev)
    assert torch.equal(out[:, : BEAT + RR], augment(x, settings(aug_rr_errors=1.0), gen()))


def _shift(x, k):
    out = torch.zeros_like(x)
    if k >= 0:
        out[:, k:] = x[:, : x.shape[1] - k]
    else:
        out[:, :k] = x[:, -k:]
    return out


# ---------------------------------------------------------------- losses


def logits_and_labels(n=32):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 5, generator=g) * 2, torch.randint(0, 5, (n,), generator=g)


def manual_ce(logits, y, smoothing=0.0):
    """Cross-entropy from its definition, per beat: -sum(target * log softmax)."""
    logp = logits.double().log_softmax(dim=1)
    target = torch.full_like(logp, smoothing / 5)
    target[torch.arange(len(y)), y] += 1 - smoothing
    return -(target * logp).sum(dim=1)


def test_ce_and_label_smoothing_match_their_definition():
    logits, y = logits_and_labels()
    plain = loss_fn(settings(), None)(logits, y)
    assert plain.item() == pytest.approx(manual_ce(logits, y).mean().item(), rel=1e-6)
    smooth = loss_fn(settings(label_smoothing=0.1), None)(logits, y)
    assert smooth.item() == pytest.approx(
        manual_ce(logits, y, smoothing=0.1).mean().item(), rel=1e-6
    )
    assert smooth.item() != pytest.approx(plain.item(), rel=1e-3)


def test_weighted_ce_weighs_each_beat_by_its_class():
    logits, y = logits_and_labels()
    w = [0.5, 2.0, 3.0, 1.0, 0.25]
    got = loss_fn(settings(loss="weighted_ce"), w)(logits, y)
    # reduction='none' then mean: each beat's CE times its class's weight, averaged
    expected = (manual_ce(logits, y) * torch.tensor(w, dtype=torch.float64)[y]).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss_matches_its_definition():
    logits, y = logits_and_labels()
    got = loss_fn(settings(loss="focal", focal_gamma=2.0), None)(logits, y)
    p_true = logits.double().softmax(dim=1)[torch.arange(len(y)), y]
    expected = ((1 - p_true) ** 2 * -p_true.log()).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() < loss_fn(settings(), None)(logits, y).item()  # easy beats count less


# ---------------------------------------------------------------- schedules and weights


@pytest.mark.parametrize(
    ("schedule", "warm", "start", "floor"),
    [("onecycle", 0.3, 1 / 25, 1e-4), ("cosine", 0.05, 0.1, 0.02)],
)
def test_schedules_warm_up_then_follow_a_cosine(schedule, warm, start, floor):
    f = lr_lambda(settings(schedule=schedule), 1000)
    assert f(0) == pytest.approx(start)
    assert f(round(warm * 1000)) == pytest.approx(1.0)
    assert f(1000) == pytest.approx(floor)  # clamped
    assert f(5000) == pytest.approx(floor)
    mid = warm + (1 - warm) / 2  # halfway down the cosine
    assert f(round(mid * 1000)) == pytest.approx(floor + (1 - floor) * 0.5, abs=1e-3)
    steps = [f(s) for s in range(round(warm * 1000), 1001)]
    assert all(a >= b for a, b in itertools.pairwise(steps))  # never rises after the warm-up


def test_stream_weights_even_out_the_stream_s_class_shares():
    counts = np.array([9000, 300, 700, 80, 0])
    for balance, power in ((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 0.7)):
        w = np.array(
            stream_weights(
                counts, settings(loss="weighted_ce", balance=balance, class_weight_power=power)
            )
        )
        # the stream's class shares, from the balance's definition p_c ~ n_c^(1 - balance)
        present = counts > 0
        share = np.where(present, counts.astype(float) ** (1 - balance), 0.0)
        share /= share.sum()
        expected = np.ones(5)
        expected[present] = share[present] ** -power
        expected /= (expected * share).sum()  # loss scale of unweighted CE kept
        np.testing.assert_allclose(w[present], expected[present], rtol=1e-9)
    assert stream_weights(counts, settings(loss="ce")) is None
    assert stream_weights(counts, settings(loss="focal", class_weight_power=0.0)) is None


# ---------------------------------------------------------------- architecture options


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_recurrent_options_take_effect(arch):
    torch.manual_seed(0)
    x = torch.rand(4, BEAT)
    for pooling in ("mean", "last"):
        m = create_model(
            arch, hidden=8, pooling=pooling, stem_channels=0, bidirectional=False, layers=2
        ).eval()
        assert m.stem is None
        assert m.rnn.input_size == 1
        assert m.rnn.num_layers == 2
        assert not m.rnn.bidirectional
        assert m.head[1].in_features == 8
        h, _ = m.rnn(x.unsqueeze(-1))
        z = h.mean(dim=1) if pooling == "mean" else h[:, -1]
        torch.testing.assert_close(m(x), m.head(z))


def test_convolutional_options_take_effect():
    x = torch.rand(2, BEAT)
    m = create_model("cnn1d", channels=[4, 8, 8, 16], kernel=5)
    assert [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv1d)] == [4, 8, 8, 16]
    assert {c.kernel_size for c in m.modules() if isinstance(c, torch.nn.Conv1d)} == {(5,)}
    from raytasks.nets.resnet1d import SqueezeExcite

    plain = create_model("resnet1d", se=False, blocks_per_stage=2, channels=[8, 16])
    assert count(plain, SqueezeExcite) == 0
    assert len(plain.stages) == 4
    assert count(create_model("resnet1d", channels=[8, 16]), SqueezeExcite) == 2
    t = create_model("transformer", d_model=16, heads=2, layers=3, ff=32)
    assert count(t, torch.nn.TransformerEncoderLayer) == 3
    assert t.encoder.layers[0].self_attn.num_heads == 2
    deep = create_model("inception1d", filters=4, depth=6, depth_per_residual=2)
    assert len(deep.modules_) == 6
    assert len(deep.shortcuts) == 3
    for m in (plain, t, deep, create_model("cnn2d", height=8, channels=[4, 8])):
        assert m(x).shape == (2, 5)
        assert math.isfinite(m(x).sum().item())
    with pytest.raises(ValueError, match="divisible"):
        create_model("transformer", d_model=10, heads=3)


def test_settings_own_their_model_table():
    """from_dict copies the `model` table: the caller changing its dict afterwards (a tune
    trial reusing a base config) does not change settings already made from it."""
    table = {"channels": [8, 16]}
    s = TrainSettings.from_dict({"arch": "cnn1d", "model": table})
    table["channels"].append(32)
    table["kernel"] = 3
    assert s.model == {"channels": [8, 16]}


EXIT_IN_GC = """
import sys
from raytasks.core.ray_connect import quiet_sigterm_exit

class Exits:  # what Ray's SIGTERM handler does when it lands in a GC callback
    def __del__(self):
        raise SystemExit(1)

class Breaks:
    def __del__(self):
        raise ValueError("a real error")

if sys.argv[1] == "quiet":
    quiet_sigterm_exit()
Exits()
Breaks()
print("still running")
"""


def test_an_asked_for_exit_in_a_gc_callback_prints_nothing_other_errors_still_do():
    def run(mode):
        return subprocess.run(
            [sys.executable, "-c", EXIT_IN_GC, mode], capture_output=True, text=True, check=True
        )

    loud, quiet = run("loud"), run("quiet")
    assert "SystemExit" in loud.stderr  # Python's default
    assert "a real error" in loud.stderr
    assert "SystemExit" not in quiet.stderr
    assert "Exception ignored" in quiet.stderr
    assert "a real error" in quiet.stderr
    assert loud.stdout == quiet.stdout == "still running\n"
