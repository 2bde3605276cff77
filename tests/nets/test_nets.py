import numpy as np
import pytest
import torch

from raytasks.data.stream import load_split, split_files
from raytasks.nets import config_fields, create_model, list_models

ARCHS = ["cnn1d", "cnn2d", "gru", "inception1d", "lstm", "resnet1d", "transformer"]


@pytest.fixture(scope="module")
def real_beats(processed):
    x, y = load_split(split_files(processed / "intra", "train"))
    # 256 beats with every class the slice has, rare ones first
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:60] for c in range(5)])
    idx = np.concatenate([idx, rng.permutation(np.flatnonzero(y == 0))])[:256]
    return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])


def test_registry_lists_every_family():
    assert list_models() == ARCHS


FAST = {"cnn1d", "cnn2d"}  # the others take 5-20 s to overfit on 2 cores


@pytest.mark.parametrize(
    "arch", [a if a in FAST else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS]
)
def test_shape_backward_and_overfit(arch, real_beats):
    torch.manual_seed(0)
    x, y = real_beats
    model = create_model(arch)
    out = model(x[:8])
    assert out.shape == (8, 5)
    # recurrent nets fit more slowly: larger steps, more of them
    rnn = arch in ("gru", "lstm")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if rnn else 3e-3)
    losses = []
    for _ in range(80 if rnn else 40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0], losses[::8]


def test_config_fields_and_unknown_field():
    assert config_fields("gru")["pooling"] == "attention"
    with pytest.raises(ValueError, match="unknown config field"):
        create_model("gru", hiden=3)
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("vgg")
    m = create_model("cnn2d", height=4)  # the hackathon's 4x48 variant
    assert m(torch.zeros(2, 187)).shape == (2, 5)


def test_rr_wrapper_reads_rr_and_beat_dropout_only_in_training():
    torch.manual_seed(0)
    model = create_model("cnn1d", rr=True, rr_beat_dropout=0.5, channels=[8, 16])
    x = torch.rand(64, 187 + 4) + 0.1
    model.eval()
    full = model(x)
    assert full.shape == (64, 5)
    assert torch.equal(full, model(x))
    # eval: the beat's logits always count; another beat (same RR) changes the output
    other = torch.cat([torch.rand(64, 187), x[:, 187:]], dim=1)
    assert not torch.allclose(model(other), full)
    model.train()
    out = model(x)
    beat = model.net(x[:, :187])
    rr_only = model.rr(torch.cat([torch.log(x[:, 187:]), torch.zeros_like(beat)], dim=1))
    dropped = torch.isclose(out, rr_only, atol=1e-6).all(dim=1)
    assert 10 < dropped.sum() < 54  # about half the beats were classified from RR alone
