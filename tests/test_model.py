import json

import pytest
import torch

from genericssl import DiffVNet


def test_state_dict_matches_authors_layout(shared_dir):
    layout = json.loads((shared_dir / "reference" / "original_checkpoint_layout.json").read_text())
    for variant in layout["variants"]:
        ctor = variant["ctor"]
        dims = 2 if "2d" in variant["variant"] else 3
        model = DiffVNet(ctor["n_channels"], ctor["n_classes"], ctor["n_filters"], dims, has_dropout=True)
        ours = [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in model.state_dict().items()]
        assert ours == variant["keys"], variant["variant"]
        assert sum(p.numel() for p in model.parameters()) == variant["num_param_elements"]


def _grads_per_path(model, dims, C):
    x = torch.randn(2, 1, *([16] * dims))
    paths = {
        "D_xi_l": lambda: model.d_xi(torch.randn(2, C, *([16] * dims)), torch.tensor([3, 500]), x),
        "D_psi_l": lambda: model.d_psi(x),
        "D_theta_u": lambda: model.d_theta(x),
    }
    used = {}
    for name, fn in paths.items():
        model.zero_grad(set_to_none=True)
        fn().sum().backward()
        used[name] = {k for k, p in model.named_parameters() if p.grad is not None}
    return used


def test_paths_use_the_same_parameters_as_the_authors(shared_dir):
    layout = json.loads((shared_dir / "reference" / "original_checkpoint_layout.json").read_text())
    ref = layout["variants"][0]
    model = DiffVNet(1, 2, 4, 3, has_dropout=True)
    used = _grads_per_path(model, 3, 2)
    assert {k: len(v) for k, v in used.items()} == ref["num_params_with_grad_per_path"]
    unused = [k for k, _ in model.named_parameters() if not any(k in s for s in used.values())]
    assert unused == ref["params_unused_by_every_forward_path"]


def test_encoder_is_shared_by_every_path():
    model = DiffVNet(1, 3, 4, 3, has_dropout=False)
    used = _grads_per_path(model, 3, 3)
    enc = {k for k, _ in model.named_parameters() if k.startswith("denoise_model.encoder.block_two.ops.0.conv")}
    for s in used.values():
        assert enc <= s
    # D_theta and D_psi never touch D_xi's decoder, and vice versa.
    assert not any(k.startswith("denoise_model.decoder") for k in used["D_theta_u"] | used["D_psi_l"])
    assert not any(k.startswith("decoder_theta") for k in used["D_xi_l"])


def test_2d_variant_runs_all_paths_including_sampling():
    model = DiffVNet(1, 4, 4, spatial_dims=2).eval()
    x = torch.randn(2, 1, 32, 48)
    assert model(x).shape == (2, 4, 32, 48)
    assert model.d_xi(torch.randn(2, 4, 32, 48), torch.tensor([0, 999]), x).shape == (2, 4, 32, 48)
    s = model.sample(x)
    assert s.shape == (2, 4, 32, 48) and s.min() >= -1 and s.max() <= 1


def test_time_embedding_changes_only_the_denoising_path():
    torch.manual_seed(0)
    model = DiffVNet(1, 2, 4, 3).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    xt = torch.randn(1, 2, 16, 16, 16)
    a = model.d_xi(xt, torch.tensor([10]), x)
    b = model.d_xi(xt, torch.tensor([900]), x)
    assert not torch.allclose(a, b)
    assert torch.equal(model(x), model.d_theta(x))


def test_dropout_flag_does_not_change_eval_output_or_keys():
    torch.manual_seed(0)
    train_model = DiffVNet(1, 2, 4, 3, has_dropout=True)
    test_model = DiffVNet(1, 2, 4, 3, has_dropout=False)
    test_model.load_state_dict(train_model.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.allclose(train_model.eval()(x), test_model.eval()(x))


def test_rejects_sizes_not_divisible_by_16():
    model = DiffVNet(1, 2, 4, 3).eval()
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 1, 20, 16, 16))
