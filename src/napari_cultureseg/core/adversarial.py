"""Sadanandan et al.'s adversarial training step, for :func:`training.fine_tune`.

A discriminator (:func:`make_discriminator`) learns to tell the
ground truth from the segmenter's output, each shown multiplied with the
image; the segmenter is trained on its usual loss plus ``λ`` times the
discriminator's verdict that its output is real (Luc et al. 2016; Sadanandan et al. 2017,
eqs. 2-3)::

    segmenter:      L_s = L_seg + λ · BCE(D(I, s(I)), real)      λ: 8.3e-6 → 0.1, linear
    discriminator:  L_a = BCE(D(I, T), real) + BCE(D(I, s(I)), fake)

The two are updated alternately, each with its own Adam optimiser (Sadanandan et al. 2017:
learning rates 1e-4 and 1e-3, betas (0.5, 0.99)).

Sadanandan et al. (2017) raises λ "linearly from 8.3e-6 to 0.1 with every iteration" over its
12 000 iterations, i.e. by 8.3e-6 a step. With ``lambda_steps`` that rate is
kept, however short the run (a CPU run of ~220 steps ends at λ ≈ 0.002); without
it the rise is stretched over the run's progress, which for a short run makes it
steep (measured on synthetic wells: best validation Dice 0.49 against 0.92
without the adversarial term, λ 0.045 by step 100, where the paper is at 8e-4).

The discriminator is saved in the bundle beside the model
(``discriminator.safetensors``, the one of the best validated step), with the
step its λ schedule had reached (lineage ``adversarial.lambda_step``).
Fine-tuning that bundle adversarially goes on against it, λ continuing where the
parent left it (or held at its end value when there is no step count): a fresh
discriminator would need λ to start again near zero while it learns, which in
a user's 1-10 minute fine-tune would leave the adversarial term doing nothing.
A parent without a saved discriminator (or with one of another shape) gets a
fresh one and the schedule from its start.

torch is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

LAMBDA_START, LAMBDA_END = 8.3e-6, 0.1  # Sadanandan et al. 2017, section 2.4


def make_discriminator(in_channels: int, classes: int, *, base: int = 8, depth: int = 6):
    """Sadanandan et al.'s fully convolutional adversarial network.

    ``forward(image, seg)`` takes the image ``(B, C, H, W)`` and a segmentation
    ``(B, K, H, W)`` in [0, 1] (sigmoid probabilities, or the 0/1 ground truth)
    and returns a map of real/fake logits ``(B, 1, ⌈H/2^depth⌉, ⌈W/2^depth⌉)``,
    one per patch; ``score(image, seg)`` averages it to ``(B, 1)`` (the paper's
    average pooling).

    As in the paper the input is the image multiplied by the one-hot
    segmentation: for each class both ``image·p`` and ``image·(1 - p)``
    (2·C·K channels). Then ``depth`` = 6 × (3×3 convolution, dilation 2,
    stride 2 → 1×1 convolution), ``base`` = 8 feature maps doubling at each
    strided one, and a final 3×3 convolution. The paper reduces to two
    maps for a two-way softmax; one logit is the same model (the difference of
    the two), and fits BCE-with-logits.

    Guesses, since the paper does not say: LeakyReLU(0.2) after every
    convolution and no batch normalisation (the usual for such critics since
    Radford et al. 2016), and BCE on every patch logit of the map
    (:func:`discriminator_loss`) where the paper pools first and
    takes one BCE per image; both push all patches the same way.
    """
    import torch
    from torch import nn

    layers, cin = [], 2 * in_channels * classes
    for i in range(depth):
        cout = base * 2**i
        layers += [
            nn.Conv2d(cin, cout, 3, 2, 2, dilation=2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cout, cout, 1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        cin = cout
    layers.append(nn.Conv2d(cin, 1, 3, padding=1))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(*layers)

        def forward(self, image, seg):
            x = torch.cat(
                [image[:, None] * seg[:, :, None], image[:, None] * (1 - seg[:, :, None])], 1
            )
            return self.net(x.flatten(1, 2))

        def score(self, image, seg):
            return self.forward(image, seg).mean(dim=(2, 3))

    return Discriminator()


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
        Adam settings of the discriminator (Sadanandan et al. 2017: 1e-3, (0.5, 0.99)); its
        learning rate stays constant.
    lam
        ``(start, end)`` of the linear λ schedule over the run's progress.
    device
        Where the discriminator runs.
    disc_params
        Passed to :func:`make_discriminator` (``base``, ``depth``).
    state
        A discriminator's state dict to start from (a bundle's
        ``aux["discriminator"]``); :attr:`resumed` tells whether it loaded (if
        its shapes do not fit it is ignored).
    lambda_steps, step0
        With ``lambda_steps``, λ rises from ``lam[0]`` to ``lam[1]`` over that
        many steps, counted from ``step0`` (the parent's, when resumed).
        Without it λ follows the run's progress, or, resumed, stays at ``lam[1]``.

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
        lambda_steps: int | None = None,
        step0: int = 0,
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
        self.lambda_steps = int(lambda_steps) if lambda_steps else None
        self.step0 = int(step0) if self.resumed else 0
        self._last_lambda = self.lam[0]
        if self.resumed and self.lambda_steps is None:
            self.lam = (self.lam[1], self.lam[1])

    def lambda_for(self, progress: float, step: int | None = None) -> float:
        """λ at this step (with ``lambda_steps``) or at this progress of the run."""
        if self.lambda_steps and step is not None:
            progress = (self.step0 + step - 1) / self.lambda_steps
        return lambda_at(progress, *self.lam)

    def lineage(self, steps: int) -> dict:
        """What the bundle records of this discriminator after ``steps`` steps."""
        how = ("resumed from the parent" if self.resumed else "fresh") + (
            f", λ {self.lam[0]:g} → {self.lam[1]:g} over {self.lambda_steps} steps"
            if self.lambda_steps
            else f", λ held at {self.lam[1]:g}"
            if self.resumed
            else ", λ rising over the run"
        )
        return {
            "discriminator": how,
            "lambda_step": self.step0 + steps,
            "lambda_last": self._last_lambda,
        }

    def state_dict(self) -> dict:
        """The discriminator's weights, on the CPU (for the bundle)."""
        return {k: w.detach().cpu().clone() for k, w in self.disc.state_dict().items()}

    def generator_loss(self, image, logits, valid, progress: float, step: int | None = None):
        """``(λ · BCE(D(image, σ(logits)), real), λ)``: the segmenter's adversarial term.

        The discriminator's weights take no gradient from it.
        """
        import torch

        lam = self._last_lambda = self.lambda_for(progress, step)
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
