"""Low-rank adapters (LoRA) for the linear layers of a frozen encoder.

A :class:`LoRALinear` computes ``y = x W^T + b + (alpha / r) * dropout(x) A^T B^T`` with the pretrained
``W`` (out, in) and ``b`` frozen and only ``A`` (r, in) and ``B`` (out, r) trained. ``B`` starts at zero,
so a freshly adapted model gives exactly the outputs of the model it was made from.

The wrapped layer's ``weight`` and ``bias`` become the adapter's own ``weight`` and ``bias`` (the same
``Parameter`` objects), so the state-dict keys of the base weights do not change (``attn.qkv.weight``)
and only ``lora_A`` / ``lora_B`` are added next to them: the released LiteMedSAM weights still match key
for key, and a checkpoint only has to carry the adapters.

:func:`apply_lora` replaces matching ``nn.Linear`` submodules in place; :func:`merge_lora` folds the
adapters back into plain ``nn.Linear`` layers for deployment. Defaults for the TinyViT image encoder:
:data:`TINYVIT_LORA_TARGETS` (the attention ``qkv`` and ``proj`` projections of every attention block of
stages 1-3; add ``"mlp.fc1"``, ``"mlp.fc2"`` to adapt the MLPs too).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "LoRALinear",
    "apply_lora",
    "merge_lora",
    "lora_modules",
    "lora_parameters",
    "is_lora_parameter",
    "LORA_PARAMETER_NAMES",
    "TINYVIT_LORA_TARGETS",
    "TINYVIT_LINEAR_NAMES",
]

LORA_PARAMETER_NAMES: tuple[str, ...] = ("lora_A", "lora_B")
"""Names of the trainable adapter tensors (last component of their state-dict keys)."""

TINYVIT_LORA_TARGETS: tuple[str, ...] = ("attn.qkv", "attn.proj")
"""Default adapter targets in the TinyViT encoder: attention input and output projections."""

TINYVIT_LINEAR_NAMES: tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
"""Every linear-layer name suffix of a TinyViT attention block (valid ``lora_targets``)."""


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Args:
        base: the layer to adapt; its ``weight`` (out, in) and ``bias`` (out,) are taken over (not copied)
            and frozen.
        rank: r, the rank of the update (>= 1).
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout on the adapter's input (training mode only).

    Attributes:
        weight: (out, in) frozen base weight.
        bias: (out,) frozen base bias, or None.
        lora_A: (r, in), Kaiming-uniform initialised.
        lora_B: (out, r), zero initialised.
        scaling: ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {rank!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out)."""
        y = F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return y + self.scaling * update

    def delta_weight(self) -> torch.Tensor:
        """(out, in) the low-rank update ``scaling * B @ A`` in the base weight's dtype."""
        return (self.scaling * (self.lora_B.float() @ self.lora_A.float())).to(self.weight.dtype)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the update folded in (``W + scaling * B A``), on the same device/dtype.

        The returned layer owns new tensors (this module is left unchanged); its ``requires_grad`` follows
        the base weight's (frozen).
        """
        w = self.weight
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=w.device, dtype=w.dtype)
        out.weight.copy_(w + self.delta_weight())
        if self.bias is not None:
            out.bias.copy_(self.bias)
        out.requires_grad_(self.weight.requires_grad)
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, alpha={self.alpha:g}"
        )


def _matches(name: str, targets: tuple[str, ...]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(
    module: nn.Module,
    rank: int,
    alpha: float,
    target_names: tuple[str, ...] = TINYVIT_LORA_TARGETS,
    dropout: float = 0.0,
) -> list[str]:
    """Replace the matching ``nn.Linear`` submodules of ``module`` by :class:`LoRALinear`, in place.

    A linear layer matches a target when its qualified name equals it or ends with ``"." + target``
    (``"attn.qkv"`` matches ``layers.1.blocks.0.attn.qkv``). Layers that already are adapters are left alone.

    Args:
        module: the network to adapt (e.g. ``core.image_encoder``).
        rank: adapter rank r (>= 1).
        alpha: adapter scale numerator (update scaled by ``alpha / rank``).
        target_names: name suffixes of the layers to adapt.
        dropout: dropout on the adapters' inputs.

    Returns:
        The qualified names of the replaced layers, in module order.

    Raises:
        ValueError: no target given, or a target matches no ``nn.Linear`` (the linear layers are listed).
    """
    targets = tuple(str(t) for t in target_names)
    if not targets:
        raise ValueError(
            f"apply_lora: target_names is empty; name the linear layers to adapt, e.g. {TINYVIT_LORA_TARGETS}"
        )
    linears = [(n, m) for n, m in module.named_modules() if isinstance(m, (nn.Linear, LoRALinear))]
    unmatched = [t for t in targets if not any(_matches(n, (t,)) for n, _ in linears)]
    if unmatched:
        suffixes = sorted({".".join(n.split(".")[-2:]) for n, _ in linears})
        raise ValueError(
            f"apply_lora: target(s) {unmatched} match no nn.Linear of {type(module).__name__}; "
            f"its linear layers end in: {', '.join(suffixes[:20]) or '(none)'}"
        )
    replaced: list[str] = []
    for name, lin in linears:
        if isinstance(lin, LoRALinear) or not _matches(name, targets):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, LoRALinear(lin, rank, alpha, dropout))
        replaced.append(name)
    added = sum(p.numel() for n, p in module.named_parameters() if is_lora_parameter(n))
    logger.info(
        "LoRA rank %d (alpha %g) on %d linear layers of %s: %d adapter parameters",
        rank,
        alpha,
        len(replaced),
        type(module).__name__,
        added,
    )
    return replaced


def merge_lora(module: nn.Module) -> list[str]:
    """Fold every :class:`LoRALinear` in ``module`` into a plain ``nn.Linear``, in place.

    Afterwards the state dict has the original layout again (no ``lora_A``/``lora_B``), with the updated
    weights.

    Returns:
        The qualified names of the merged layers.
    """
    merged = []
    for name, m in list(module.named_modules()):
        if isinstance(m, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, child, m.merge())
            merged.append(name)
    return merged


def lora_modules(module: nn.Module) -> list[LoRALinear]:
    """The :class:`LoRALinear` layers inside ``module``."""
    return [m for m in module.modules() if isinstance(m, LoRALinear)]


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter or state-dict key names an adapter tensor (``...lora_A`` / ``...lora_B``)."""
    return name.rpartition(".")[2] in LORA_PARAMETER_NAMES


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The adapter tensors (``lora_A``, ``lora_B``) of every :class:`LoRALinear` in ``module``."""
    return [p for n, p in module.named_parameters() if is_lora_parameter(n)]
