import numpy as np
import torch

from genericssl.diffusion import Diffusion, respaced_timesteps


def test_respaced_timesteps_are_the_authors():
    assert respaced_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]


def test_schedule_is_linear_float64():
    d = Diffusion()
    betas = 1 - (d.sqrt_abar[1:] ** 2 / d.sqrt_abar[:-1] ** 2)
    assert np.allclose(betas[[0, -1]], [np.linspace(1e-4, 0.02, 1000)[1], 0.02])
    assert d.sqrt_abar.dtype == np.float64


def test_q_sample_endpoints():
    d = Diffusion()
    x0 = Diffusion.label_to_x0(torch.tensor([[0, 1, 2]]), 3)
    assert x0.shape == (1, 3, 3) and set(x0.unique().tolist()) == {-1.0, 1.0}
    # Seeded: at t=0 the noise is scaled by ~0.01, so an unseeded draw beyond ~2 sd would fail the bound.
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    early = d.q_sample(x0, torch.tensor([0]), noise)
    late = d.q_sample(x0, torch.tensor([999]), noise)
    # t=0 keeps x0 up to noise of sd ~0.011 (beta_1 ~ 1.2e-4); t=999 is nearly pure noise.
    assert d.sqrt_one_minus_abar[0] < 0.012 and d.sqrt_abar[-1] < 0.01
    assert torch.allclose(early, x0, atol=0.012 * float(noise.abs().max()) + 1e-6)
    assert torch.allclose(late, noise, atol=0.01 * float(x0.abs().max()) + 0.01 * float(noise.abs().max()))


def test_sampler_returns_a_constant_denoisers_x0_and_passes_original_steps():
    d = Diffusion()
    seen = []
    target = torch.tensor([0.3, -2.0]).view(1, 2, 1, 1, 1).expand(2, 2, 4, 4, 4)

    def denoiser(x_t, t, image):
        seen.append(t.tolist())
        return target

    out = d.sample(denoiser, torch.zeros(2, 1, 4, 4, 4), 2)
    assert seen == [[s, s] for s in reversed(d.timesteps)]
    assert torch.allclose(out, target.clamp(-1, 1))


def test_sampler_ddim_update_matches_closed_form():
    # A denoiser that returns 0 makes eps = x / sqrt(1 - abar), so each DDIM step
    # scales x by sqrt(1 - abar_prev) / sqrt(1 - abar).
    d = Diffusion()
    noise = torch.randn(1, 2, 3, 3, 3)
    xs = []

    def denoiser(x_t, t, image):
        xs.append(x_t.clone())
        return torch.zeros_like(x_t)

    d.sample(denoiser, torch.zeros(1, 1, 3, 3, 3), 2, noise=noise)
    ab = d.abar_respaced
    for k in range(1, len(xs)):
        i = len(ab) - k  # the step that produced xs[k]
        factor = np.sqrt(1 - ab[i - 1]) / np.sqrt(1 - ab[i])
        assert torch.allclose(xs[k], xs[k - 1] * factor, rtol=1e-5, atol=1e-6)
