"""Redundancy analysis: how alike are the blocks of a stack, part by part?

Three measures, all (N, N) over the blocks of one stack:

* ``weight_cosine[scope][i, j]``: cosine of the weights of blocks i and j (matrices
  only; numel-weighted mean over the parameters in the scope). Needs no data.
  Pretrained layers are nearly orthogonal by this measure, so it mostly tells
  apart models trained with sharing from models without.
* ``output_cka[i, j]``: linear CKA (Kornblith et al. 2019) of the outputs of blocks
  i and j on calibration inputs. High along a residual stream by construction.
* ``tie_loss[scope][i, j]``: what tying costs, measured end to end: 1 - cosine of
  the model's output (mean-pooled over real tokens when the batch has an attention
  mask) when block j runs with block i's weights in ``scope``, everything else
  untouched. It includes how the error compounds through later blocks, so the
  planner (``suggest.py``) uses it. N(N-1) forwards of the model per scope per
  batch; ``window`` limits the pairs to blocks at most that far apart.

Scopes are the whole block (``"block"``) and each direct child of the block that
holds parameters (BERT: attention, intermediate, output).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..core.batches import (
    as_batches,
    eval_mode,
    first_tensor,
    mean_pool,
    model_device,
    rows,
    run_batch,
    split_batch,
    to_device,
    token_mask,
)
from ..core.names import get_param
from ..methods.tie.blocks import BlockStack, select_stack
from ..methods.tie.tiesets import child_scope, scope_matches

WHOLE = "block"


@dataclass
class SimilarityReport:
    """Similarity matrices between the blocks of one stack (see the module docstring)."""

    stack: str
    blocks: list[str]
    indices: list[int]
    scopes: dict[str, list[str]]  # scope -> block-relative parameter names
    scope_numel: dict[str, int]  # parameters per block in each scope
    weight_cosine: dict[str, torch.Tensor]
    output_cka: torch.Tensor | None = None
    tie_loss: dict[str, torch.Tensor] | None = None
    fqns: list[dict[str, str]] = field(default_factory=list)  # per block: relative -> fqn

    def to_dict(self) -> dict[str, Any]:
        def m(t: torch.Tensor | None) -> list | None:
            return None if t is None else [[round(float(v), 4) for v in r] for r in t]
        return {"stack": self.stack, "blocks": self.blocks, "indices": self.indices,
                "scopes": self.scopes, "scope_numel": self.scope_numel,
                "weight_cosine": {k: m(v) for k, v in self.weight_cosine.items()},
                "output_cka": m(self.output_cka),
                "tie_loss": None if self.tie_loss is None
                else {k: m(v) for k, v in self.tie_loss.items()}}

    def table(self, scope: str = WHOLE) -> str:
        """A printable matrix: tie loss when measured, otherwise weight cosine."""
        if self.tie_loss is not None:
            title = f"tie loss ({scope}): 1 - output cosine when the column block uses the " \
                    "row block's weights"
            mat = self.tie_loss[scope]
        else:
            title, mat = f"weight cosine ({scope})", self.weight_cosine[scope]
        head = "      " + "".join(f"{i:>7}" for i in self.indices)
        lines = [f"{self.stack}: {title}", head]
        for i, r in zip(self.indices, mat):
            lines.append(f"{i:>5} " + "".join(f"{float(v):7.3f}" for v in r))
        return "\n".join(lines)


def block_scopes(model: nn.Module, stack: BlockStack) -> dict[str, list[str]]:
    """``block`` plus each direct child of the blocks that holds parameters."""
    rels = list(stack.blocks[0].relative_names)
    scopes = {WHOLE: rels}
    if stack.kind == "modules":
        for rel in rels:
            head = rel.split(".")[0]
            if "." in rel and head not in scopes:
                scopes[head] = [r for r in rels if scope_matches(child_scope(head), r)]
    return scopes


@torch.no_grad()
def block_similarity(model: nn.Module, inputs: Any = None, stack: str | None = None,
                     scopes: dict[str, str] | None = None, tokenizer: Any = None,
                     max_batches: int = 1, loss_scopes: Any = (WHOLE,),
                     window: int | None = None, progress: bool | None = None
                     ) -> SimilarityReport:
    """Similarity between the blocks of ``stack`` (default: the largest stack).

    ``inputs`` (optional): calibration batches (see ``batches.as_batches``), never the
    evaluation data; with them the report also holds output CKA and tie loss. A few
    sentences are enough: tie loss costs about N(N-1)/2 forwards of the model per
    scope. ``scopes`` maps a name to a block-relative pattern (default: see
    ``block_scopes``); ``loss_scopes`` names the scopes whose tie loss is measured
    (``"all"`` for every scope). ``window``: measure only blocks at most this far
    apart (default: all pairs up to 12 blocks, 3 beyond). ``progress``: a bar on stderr
    over the tie-loss forwards (default: when stderr is a terminal).

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(3)])
        >>> r = block_similarity(m, inputs=torch.randn(16, 8))
        >>> r.tie_loss["block"].shape
        torch.Size([3, 3])
    """
    st = select_stack(model, stack)
    if scopes is None:
        scope_rels = block_scopes(model, st)
    else:
        rels = st.blocks[0].relative_names
        scope_rels = {name: [r for r in rels if scope_matches(pat, r)]
                      for name, pat in scopes.items()}
    numel = {s: sum(get_param(model, st.blocks[0].fqn(r)).numel() for r in rs)
             for s, rs in scope_rels.items()}
    cos = {s: _weight_cosine(model, st, rs) for s, rs in scope_rels.items()}
    report = SimilarityReport(st.name, [b.name for b in st.blocks], list(st.indices),
                              scope_rels, numel, cos, fqns=[dict(b.params) for b in st.blocks])
    if inputs is None or st.kind != "modules":
        return report
    probe = OutputProbe(model, st, as_batches(inputs, tokenizer)[:max_batches])
    if probe.block_outputs is not None:
        report.output_cka = _cka_matrix(
            [torch.cat([rows(o.float(), mk) for o, mk in zip(per_batch, probe.masks)])
             for per_batch in probe.block_outputs])
    wanted = list(scope_rels) if loss_scopes == "all" else [s for s in loss_scopes
                                                             if s in scope_rels]
    if window is None and len(st.blocks) > 12:
        window = 3
    n = len(st.blocks)
    pairs = [(j, i) for j in range(n) for i in range(n)
             if i != j and (window is None or abs(i - j) <= window)]
    show = progress if progress is not None else sys.stderr.isatty()
    report.tie_loss = {}
    with tqdm(total=len(pairs) * len(wanted), desc="tie loss", unit="pair", disable=not show,
              file=sys.stderr) as bar:
        for s in wanted:
            loss = torch.full((n, n), float("nan"))
            loss.fill_diagonal_(0.0)
            for j, i in pairs:
                loss[i, j] = probe.loss(probe.override([(s, j, i)], scope_rels), first=j)
                bar.update()
            report.tie_loss[s] = loss
    return report


def _weight_cosine(model: nn.Module, st: BlockStack, rels: list[str]) -> torch.Tensor:
    n = len(st.blocks)
    mats = [r for r in rels if get_param(model, st.blocks[0].fqn(r)).dim() >= 2] or rels
    total = torch.zeros(n, n, dtype=torch.float64)
    weight = 0
    for rel in mats:
        w = torch.stack([get_param(model, b.fqn(rel)).detach().reshape(-1).double()
                         for b in st.blocks])  # (N, numel)
        w = w / w.norm(dim=1, keepdim=True).clamp(min=1e-30)
        total += (w @ w.T) * w.shape[1]
        weight += w.shape[1]
    return (total / max(weight, 1)).float()


class OutputProbe:
    """Measures the end-to-end loss of weight overrides on a few calibration batches.

    The reference run records each block's output; a probe whose first changed block
    is j replays the recorded outputs of blocks before j instead of computing them
    (their weights are untouched), which halves the cost on average.
    """

    def __init__(self, model: nn.Module, st: BlockStack, batches: list) -> None:
        self.model, self.stack = model, st
        self.blocks = [model.get_submodule(b.name) for b in st.blocks]
        device = model_device(model)
        self.batches = [to_device(b, device) for b in batches]
        self.masks = [token_mask(b) for b in self.batches]
        self.names = {id(p): n for n, p in model.named_parameters()}
        raw: list[list[Any]] = [[] for _ in self.blocks]
        hooks = [blk.register_forward_hook(lambda mod, args, out, k=k: raw[k].append(out))
                 for k, blk in enumerate(self.blocks)]
        with eval_mode(model, inference=False):
            try:
                self.refs = [first_tensor(run_batch(model, b)).float() for b in self.batches]
            finally:
                for h in hooks:
                    h.remove()
        once = all(len(r) == len(self.batches) for r in raw)  # each block ran once per batch
        self.raw_outputs = raw if once else None
        self.block_outputs = [[first_tensor(o).detach() for o in r] for r in raw] \
            if once else None

    def override(self, ties: list[tuple[str, int, int]],
                 scope_rels: dict[str, list[str]]) -> dict[str, torch.Tensor]:
        """Parameter overrides for ties (scope, alias block, source block)."""
        out: dict[str, torch.Tensor] = {}
        for s, j, i in ties:
            for r in scope_rels[s]:
                alias = get_param(self.model, self.stack.blocks[j].fqn(r))
                out[self.names[id(alias)]] = get_param(self.model, self.stack.blocks[i].fqn(r))
        return out

    @torch.no_grad()
    def loss(self, override: dict[str, torch.Tensor], first: int = 0) -> float:
        """Mean ``output_loss`` over the batches with ``override`` applied."""
        total = 0.0
        with eval_mode(self.model, inference=False):
            for b, batch in enumerate(self.batches):
                replayed = []
                if self.raw_outputs is not None:
                    for k in range(first):
                        blk = self.blocks[k]
                        blk.forward = (lambda *a, _o=self.raw_outputs[k][b], **kw: _o)
                        replayed.append(blk)
                try:
                    got = functional_call(self.model, override, *split_batch(batch))
                finally:
                    for blk in replayed:
                        del blk.forward
                total += output_loss(self.refs[b], first_tensor(got).float(), self.masks[b])
        return total / max(len(self.batches), 1)


def output_loss(ref: torch.Tensor, got: torch.Tensor, mask: torch.Tensor | None) -> float:
    """1 - mean cosine of the outputs: of mean-pooled real tokens when there is a token mask
    (what sentence-embedding users measure), of each output row otherwise."""
    if mask is not None and ref.dim() == 3 and ref.shape[:2] == mask.shape:
        ref, got = mean_pool(ref, mask), mean_pool(got, mask)
    ref, got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    return float(1 - torch.nn.functional.cosine_similarity(ref, got, dim=-1).mean())


def _cka_matrix(outs: list[torch.Tensor]) -> torch.Tensor:
    # linear CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), on centred features
    feats = [(o - o.mean(0, keepdim=True)).double() for o in outs]
    n = len(feats)
    self_norm = [torch.linalg.matrix_norm(f.T @ f) for f in feats]
    cka = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            v = torch.linalg.matrix_norm(feats[j].T @ feats[i]) ** 2
            cka[i, j] = cka[j, i] = v / (self_norm[i] * self_norm[j]).clamp(min=1e-30)
    return cka.float()


def plot_similarity(report: SimilarityReport, path: str, scope: str = WHOLE) -> str:
    """Save a heatmap PNG of the report's matrices (``plot`` extra: matplotlib); returns path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # optional dependency
        raise ImportError("plotting needs matplotlib: pip install 'weightshare[plot]'") from e
    panels = [(f"weight cosine ({scope})", report.weight_cosine[scope], "viridis")]
    if report.output_cka is not None:
        panels.append(("output CKA", report.output_cka, "viridis"))
    if report.tie_loss is not None:
        panels.append((f"tie loss ({scope})", report.tie_loss[scope], "magma_r"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, mat, cmap) in zip(axes[0], panels):
        im = ax.imshow(mat.numpy(), cmap=cmap)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(report.indices)), report.indices)
        ax.set_yticks(range(len(report.indices)), report.indices)
        ax.set_xlabel("block (uses the weights)")
        ax.set_ylabel("block (source)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{report.stack}: block similarity", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
