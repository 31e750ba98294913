"""Seed 003's adversarial training step, for :func:`training.fine_tune`.

A discriminator (:func:`spheroid.make_discriminator`) learns to tell the
ground truth from the segmenter's output, each shown multiplied with the
image; the segmenter is trained on its usual loss plus ``λ`` times the
discriminator's verdict that its output is real (Luc et al. 2016; seed 003,
eqs. 2-3)::

    segmenter:      L_s = L_seg + λ · BCE(D(I, s(I)), real)      λ: 8.3e-6 → 0.1, linear
    discriminator:  L_a = BCE(D(I, T), real) + BCE(D(I, s(I)), fake)

The two are updated alternately, each with its own Adam optimiser (seed 003:
learning rates 1e-4 and 1e-3, betas (0.5, 0.99)).

The discriminator is saved in the bundle beside the model
(``discriminator.safetensors``, the one of the best validated step). Fine-tuning
that bundle adversarially goes on against it with ``λ`` held at its end value
(0.1), where the parent's training left it: a fresh discriminator would need
``λ`` to start again near zero while it learns, which in a user's 1-10 minute
fine-tune would leave the adversarial term doing nothing. A parent without a
saved discriminator (or with one of another shape) gets a fresh one and the
rising schedule.

torch is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

from .spheroid import LAMBDA_END, LAMBDA_START, make_discriminator


def generator_term(disc, image, seg):
    """``BCE(D(image, seg), real)``: low when the discriminator takes ``seg`` for truth."""
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    out = disc(image, seg)
    return bce(out, torch.ones_like(out))


def discriminator_loss(disc, image, real, fake):
    """``BCE(D(image, real), real) + BCE(D(image, fake), fake)``; ``fake`` should be detached."""
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    r, f = disc(image, real), disc(image, fake)
    return bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f))


def lambda_at(progress: float, start: float = LAMBDA_START, end: float = LAMBDA_END) -> float:
    """The adversarial weight at ``progress`` ∈ [0, 1], linear from ``start`` to ``end``."""
    return start + (end - start) * min(max(progress, 0.0), 1.0)


class Adversary:
    """A discriminator with its optimiser, and the two halves of one adversarial step.

    Parameters
    ----------
    in_channels, classes
        Image channels and segmentation channels (all the model's outputs).
    lr, betas
        Adam settings of the discriminator (seed 003: 1e-3, (0.5, 0.99)); its
        learning rate stays constant.
    lam
        ``(start, end)`` of the linear λ schedule over the run's progress.
    device
        Where the discriminator runs.
    disc_params
        Passed to :func:`spheroid.make_discriminator` (``base``, ``depth``).
    state
        A discriminator's state dict to start from (a bundle's
        ``aux["discriminator"]``). If it loads, ``λ`` is held at ``lam[1]``
        (:attr:`resumed` is True); if its shapes do not fit it is ignored.

    Pixels whose target is unknown (``valid`` False) are zeroed in both the
    real and the fake segmentation, so the discriminator cannot tell them apart
    by what lies there.

    Examples
    --------
    ::

        adv = Adversary(1, 1, device="cpu")
        logits = net(x)
        g, lam = adv.generator_loss(x, logits, valid, progress)
        (seg_loss + g).backward(); opt.step()
        d = adv.step(x, logits, target, valid)
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.5, 0.99),
        lam: tuple[float, float] = (LAMBDA_START, LAMBDA_END),
        device: str = "cpu",
        state: dict | None = None,
        **disc_params,
    ):
        import torch

        self.disc = make_discriminator(in_channels, classes, **disc_params)
        self.resumed = False
        if state is not None:
            try:
                self.disc.load_state_dict({k: v.float() for k, v in state.items()})
                self.resumed = True
            except RuntimeError:  # another architecture: start afresh
                pass
        self.disc = self.disc.to(device).train()
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=tuple(betas))
        self.lam = (float(lam[0]), float(lam[1]))
        if self.resumed:
            self.lam = (self.lam[1], self.lam[1])

    def state_dict(self) -> dict:
        """The discriminator's weights, on the CPU (for the bundle)."""
        return {k: w.detach().cpu().clone() for k, w in self.disc.state_dict().items()}

    def generator_loss(self, image, logits, valid, progress: float):
        """``(λ · BCE(D(image, σ(logits)), real), λ)``: the segmenter's adversarial term.

        The discriminator's weights take no gradient from it.
        """
        import torch

        lam = lambda_at(progress, *self.lam)
        for p in self.disc.parameters():
            p.requires_grad_(False)
        try:
            term = generator_term(self.disc, image, torch.sigmoid(logits) * valid.float())
        finally:
            for p in self.disc.parameters():
                p.requires_grad_(True)
        return lam * term, lam

    def step(self, image, logits, target, valid) -> float:
        """One discriminator update on this batch (the segmentation detached); returns its loss."""
        import torch

        v = valid.float()
        fake = torch.sigmoid(logits.detach()) * v
        loss = discriminator_loss(self.disc, image, target.float() * v, fake)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())
