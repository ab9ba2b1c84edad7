"""nerfacto's proposal sampler (``radistill.fields.nerfacto_proposals``) on cases with known
answers; its agreement with nerfstudio's own render is checked with the real nerfstudio
(``tests/nerfstudio_plugin``)."""

from __future__ import annotations

import math

import torch

from radistill.fields.nerfacto_proposals import ProposalSampler, SamplerSettings, ray_weights, resample


def test_weights_are_alpha_times_the_transmittance_before():
    sigma = torch.tensor([[0.0, 2.0, 1.0, 3.0]])
    deltas = torch.tensor([[0.5, 0.25, 1.0, 0.1]])
    tau = sigma * deltas
    expected = [(1 - math.exp(-tau[0, i])) * math.exp(-float(tau[0, :i].sum())) for i in range(4)]
    torch.testing.assert_close(ray_weights(sigma, deltas), torch.tensor([expected]))


def test_resampling_follows_the_weights():
    edges = torch.linspace(0.0, 1.0, 11)[None]  # ten bins in spacing units
    even = resample(edges, torch.ones(1, 10), 4)  # equal weights: the midpoints of five equal shares
    torch.testing.assert_close(even, torch.tensor([[0.1, 0.3, 0.5, 0.7, 0.9]]))
    heavy = torch.zeros(1, 10)
    heavy[0, 6] = 100.0  # nearly all the mass in bin 6, [0.6, 0.7]: the padding (0.01 a bin) keeps the rest
    out = resample(edges, heavy, 8)
    assert ((out >= 0.6) & (out <= 0.7)).all()
    assert bool((out[:, 1:] >= out[:, :-1]).all())


def test_spacing_is_linear_then_in_disparity():
    sampler = ProposalSampler([], SamplerSettings(proposal_samples=(), far=1000.0))
    s = torch.tensor([0.0, 0.25, 0.5, 0.75, 0.9995])
    # spacing(t) = t / 2 below 1, 1 - 1 / (2 t) above; from 0 to 1000
    torch.testing.assert_close(sampler.to_distance(s / 0.9995), torch.tensor([0.0, 0.5, 1.0, 2.0, 1000.0]),
                               rtol=1e-4, atol=1e-5)
