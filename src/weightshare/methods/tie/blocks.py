"""Repeated-block discovery: the stacks of structurally identical blocks in a model.

A *stack* is a maximal run of >= 2 consecutive children of an ``nn.ModuleList`` or
``nn.Sequential`` with the same class and the same parameter names, shapes and
dtypes: BERT/MiniLM ``encoder.layer``, GPT-2 ``h``, Llama ``layers``, the blocks of a
ResNet stage after its first (down-sampling) block, a Sequential of identical MLP
blocks. Parameterless children (activations) are not blocks and end a run.

Stacked recurrent layers (``nn.LSTM(num_layers=L)``) keep their layers inside one
module as ``weight_ih_l0, weight_ih_l1, ...``; each layer k becomes a virtual block
``<rnn>.l<k>`` whose relative parameter names drop the ``_l<k>`` (``weight_ih``,
``bias_hh_reverse``). Layer 0 usually differs (its input size), so the run starts at 1.

Every block is a map *relative name -> parameter fqn*, so the tying code never
needs to know which kind of stack it works on.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...errors import TieError


@dataclass(frozen=True)
class Block:
    """One block of a stack: ``params`` maps relative name -> parameter fqn."""

    name: str
    index: int  # position in its parent list (layer number for recurrent stacks)
    params: tuple[tuple[str, str], ...]

    def fqn(self, relative: str) -> str:
        return dict(self.params)[relative]

    @property
    def relative_names(self) -> tuple[str, ...]:
        return tuple(r for r, _ in self.params)


@dataclass(frozen=True)
class BlockStack:
    """A run of >= 2 structurally identical blocks.

    ``name`` is the parent list's fqn, with ``[start:stop]`` appended when the run
    does not cover the whole list (``layer2[1:4]``).
    """

    name: str
    parent: str
    kind: str  # "modules" or "rnn"
    block_class: str
    blocks: tuple[Block, ...]
    block_numel: int  # parameters per block

    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(b.index for b in self.blocks)

    def describe(self) -> str:
        return (f"{self.name}: {len(self)} x {self.block_class} "
                f"({self.block_numel:,} params each), blocks {self.indices[0]}..{self.indices[-1]}")


def find_blocks(model: nn.Module) -> list[BlockStack]:
    """Every stack of repeated blocks in ``model``, in module order.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 8), *[nn.Linear(8, 8) for _ in range(3)])
        >>> [(s.name, s.indices) for s in find_blocks(m)]
        [('[1:4]', (1, 2, 3))]
    """
    stacks: list[BlockStack] = []
    for mname, module in model.named_modules():
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            stacks.extend(_module_runs(mname, module))
        elif isinstance(module, nn.RNNBase) and module.num_layers > 1:
            stacks.extend(_rnn_runs(mname, module))
    return stacks


def select_stack(model: nn.Module, name: str | None = None) -> BlockStack:
    """The stack called ``name`` (or whose parent list is ``name``); default: the largest."""
    stacks = find_blocks(model)
    if not stacks:
        raise TieError(f"{type(model).__name__} has no repeated blocks (no ModuleList/Sequential "
                       "of >= 2 identical children); tie named parameters with groups=[...]")
    if name is None:
        return max(stacks, key=lambda s: (s.block_numel * len(s), -stacks.index(s)))
    exact = [s for s in stacks if s.name == name]
    if exact:
        return exact[0]
    by_parent = [s for s in stacks if s.parent == name]
    if by_parent:
        return max(by_parent, key=len)
    names = ", ".join(s.name or "<root>" for s in stacks)
    raise TieError(f"no stack of repeated blocks called {name!r}; found: {names}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _signature(module: nn.Module) -> tuple:
    params = tuple((n, tuple(p.shape), p.dtype)
                   for n, p in module.named_parameters(remove_duplicate=False))
    return (type(module), params)


def _module_runs(mname: str, container: nn.Module) -> list[BlockStack]:
    children = [(n, c) for n, c in container._modules.items() if c is not None]
    sigs: list[tuple] = [_signature(c) for _, c in children]
    runs: list[BlockStack] = []
    start = 0
    for end in range(1, len(children) + 1):
        if end < len(children) and sigs[end] == sigs[start] and sigs[start][1]:
            continue
        if end - start >= 2 and sigs[start][1]:
            blocks = []
            for i in range(start, end):
                cname, child = children[i]
                bname = _join(mname, cname)
                params = tuple((rel, _join(bname, rel))
                               for rel, _ in child.named_parameters(remove_duplicate=False))
                blocks.append(Block(bname, i, params))
            whole = start == 0 and end == len(children)
            name = mname if whole else f"{mname}[{start}:{end}]"
            numel = int(sum(p.numel() for p in children[start][1].parameters()))
            runs.append(BlockStack(name, mname, "modules", type(children[start][1]).__name__,
                                   tuple(blocks), numel))
        start = end
    return runs


def _rnn_runs(mname: str, rnn: nn.RNNBase) -> list[BlockStack]:
    layers = []
    for k in range(rnn.num_layers):
        rel = []
        for pname in rnn._flat_weights_names:
            base, _, rest = pname.rpartition(f"_l{k}")
            if base and rest in ("", "_reverse"):
                rel.append((base + rest, _join(mname, pname)))
        shapes = tuple((r, tuple(getattr(rnn, f.rpartition(".")[2]).shape)) for r, f in rel)
        layers.append((tuple(rel), shapes))
    runs: list[BlockStack] = []
    start = 0
    for end in range(1, len(layers) + 1):
        if end < len(layers) and layers[end][1] == layers[start][1]:
            continue
        if end - start >= 2:
            blocks = tuple(Block(f"{_join(mname, 'l')}{k}", k, layers[k][0])
                           for k in range(start, end))
            whole = start == 0 and end == len(layers)
            name = mname if whole else f"{mname}[{start}:{end}]"
            numel = sum(int(_numel(s)) for _, s in layers[start][1])
            runs.append(BlockStack(name, mname, "rnn", type(rnn).__name__, blocks, numel))
        start = end
    return runs


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
