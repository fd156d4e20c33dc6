"""Training, diagnostics and offline-scoring views depend on the toolkit's seed only.

Three entry points draw augmented views: the augment module itself (training: from the toolkit's
own generator for the images' device, ``rng.stream``, seeded by ``rng.seed_streams``, or from a
generator it is given), the diagnostics' fixed pairs (``diagnostics.embed_pairs``, a generator per
chunk) and offline scoring (``eval.label_free.embed_views``, ``ssl-toolkit diagnose`` and
``select``). For each: the same toolkit seed gives the same views whatever the global torch seed
is and after the module has been moved to another dtype and back (and the augmentation to the meta
device and back), and the global generators do not move.

``RandomDraws`` checks the stronger property behind it, the one that matters on a GPU: every
random aten op run by these calls is given an explicit generator that is not a global one. An op
without one draws from the global generator of its device: neither seeded by the toolkit nor
isolated from dropout, heads and evaluations.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from distributed_worker import tiny_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

from ssl_toolkit.augment import MultiCropAugment, SimCLRAugment
from ssl_toolkit.diagnostics import embed_pairs
from ssl_toolkit.eval.label_free import embed_views
from ssl_toolkit.module import SSLModule
from ssl_toolkit.rng import seed_streams

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def _module(augment: str, device: str) -> SSLModule:
    module = tiny_module().eval()
    if augment == "multicrop":
        module.augment = MultiCropAugment(size=32, local_size=16, num_local=2)
    else:
        assert isinstance(module.augment, SimCLRAugment)
    return module.to(device)


def _images() -> torch.Tensor:
    return torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _draws(module: SSLModule) -> dict[str, Callable[[], list[torch.Tensor]]]:
    """Entry point -> a call that returns its views or embeddings, from seed 5."""
    images = _images()
    on_device = images.to(module.device)
    # Its own generator, as eval/selection.py builds it (else iterating draws a worker seed globally).
    loader = DataLoader(TensorDataset(images, torch.zeros(6), torch.arange(6)), batch_size=3,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    return {
        "training": lambda: module.augment(on_device, generator=torch.Generator().manual_seed(5)),
        "training stream": lambda: (seed_streams(5), module.augment(on_device))[1],  # as fit's steps draw
        "diagnostics": lambda: list(embed_pairs(module, images, torch.arange(6), seed=5)),
        "offline": lambda: [embed_views(module, loader, 2, seed=5).feats],
    }


def _global_states() -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return states


def _reseed(seed: int) -> None:
    torch.manual_seed(seed)  # the CPU and every CUDA device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("augment", ["simclr", "multicrop"])
def test_views_depend_on_the_toolkit_seed_only(augment: str, device: str) -> None:
    module = _module(augment, device)
    for name, draw in _draws(module).items():
        _reseed(1)
        first = draw()
        _reseed(2)
        before = _global_states()
        second = draw()
        assert all(torch.equal(a, b) for a, b in zip(_global_states(), before)), f"{name}: a global generator moved"
        module.to(torch.float64).to(torch.float32)  # kornia's samplers followed the module's dtype
        module.augment.to("meta").to(device)  # the augmentation holds no tensor: nothing to lose
        _reseed(3)
        third = draw()
        for other in (second, third):
            assert len(other) == len(first) and all(torch.equal(a, b) for a, b in zip(first, other)), name


def _is_global(generator: torch.Generator) -> bool:
    # The dispatcher hands a new Python wrapper of the generator: compare states, not identity.
    if generator.device.type == "cuda":
        default = torch.cuda.default_generators[generator.device.index or 0]
    else:
        default = torch.default_generator
    return generator.device == default.device and torch.equal(generator.get_state(), default.get_state())


class RandomDraws(TorchDispatchMode):
    """Records every random aten op (``nondeterministic_seeded``) run without an explicit,
    non-global generator (``self.unseeded``: op names)."""

    def __init__(self) -> None:
        super().__init__()
        self.unseeded: list[str] = []
        self.seeded = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if torch.Tag.nondeterministic_seeded in func.tags:
            generator = kwargs.get("generator")
            if generator is None or _is_global(generator):
                self.unseeded.append(str(func))
            else:
                self.seeded += 1
        return func(*args, **kwargs)


def test_the_recorder_tells_seeded_from_global_draws() -> None:
    torch.manual_seed(1)
    with RandomDraws() as rec:
        torch.rand(3, generator=torch.Generator().manual_seed(0))
        torch.randperm(5, generator=torch.Generator().manual_seed(2))
        torch.rand(3)
        torch.empty(4).uniform_(generator=torch.default_generator)
    assert rec.seeded == 2 and rec.unseeded == ["aten.rand.default", "aten.uniform_.default"]


@pytest.mark.parametrize("augment", ["simclr", "multicrop"])
def test_every_random_draw_is_given_the_toolkits_generator(augment: str) -> None:
    module = _module(augment, "cpu")
    for name, draw in _draws(module).items():
        with RandomDraws() as rec:
            draw()
        assert rec.seeded > 0 and rec.unseeded == [], f"{name}: {sorted(set(rec.unseeded))}"
