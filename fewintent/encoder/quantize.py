"""int8 quantisation of an exported encoder graph: onnxruntime's dynamic quantisation (int8 weights, activations
quantised per call), with a recipe saying which nodes stay fp32.

A transformer loses most of its agreement with fp32 in a few places (the feed-forward output, whose input is the
skewed GELU activation, quantised per tensor; the first and last layers; the embeddings). An :class:`Int8Recipe`
names those places by node type and name, so one recipe fits every base whose graph comes from ``export_encoder``
(node names follow the module path, ``/model/encoder/layer.3/output/dense/MatMul``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_LAYER = re.compile(r"/layer\.(\d+)/")
FFN_IN = r"/intermediate/dense/"
"""The feed-forward input projection of every layer (its input: the attention block's LayerNorm output)."""
FFN_OUT = r"/layer\.\d+/output/dense/"
"""The feed-forward output projection of every layer (its input: the GELU output). Not BERT's attention output,
``attention/output/dense``."""


@dataclass(frozen=True)
class Int8Recipe:
    """Which nodes of the fp32 graph become int8, and how.

    - ``per_channel``: one scale per output column of a weight (else one per tensor).
    - ``reduce_range``: 7-bit weights (headroom for CPUs whose u8·s8 products can saturate, those without VNNI).
    - ``weight_type``: ``"qint8"`` (u8 activations x s8 weights) or ``"quint8"`` (u8 x u8: no saturation on
      any CPU, so full 8-bit weights are safe without ``reduce_range``).
    - ``embeddings``: quantise the embedding tables (``Gather``) too; else they stay fp32 (most of a small
      model's bytes).
    - ``keep``: regular expressions searched in node names; matching nodes stay fp32. ``{last}`` stands for the
      last layer's index.
    - ``blockwise``: regular expressions for MatMuls written instead as onnxruntime's ``MatMulNBits`` (8-bit
      weights, one scale per ``block_size`` inputs of a column; at run time the activations are quantised per
      block of each row, not per tensor, so a skewed activation such as GELU's output keeps its precision).
    """

    per_channel: bool = True
    reduce_range: bool = True
    weight_type: str = "qint8"
    embeddings: bool = True
    keep: tuple[str, ...] = ()
    blockwise: tuple[str, ...] = ()
    block_size: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "keep": list(self.keep), "blockwise": list(self.blockwise)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Int8Recipe:
        return cls(**{**data, "keep": tuple(data.get("keep", ())), "blockwise": tuple(data.get("blockwise", ()))})


INT8 = Int8Recipe(blockwise=(FFN_IN, FFN_OUT))
"""The recipe ``export --quantize int8`` uses on a base that names none of its own (``BaseSpec.int8``), and on
mpnet: the feed-forward projections blockwise, the attention dynamic int8 (chosen on ``valid``:
scripts/valid_int8.py)."""


def _patterns(model: Any, patterns: tuple[str, ...]) -> list[re.Pattern[str]]:
    layers = [int(m.group(1)) for n in model.graph.node if (m := _LAYER.search(n.name))]
    last = str(max(layers)) if layers else "-1"
    return [re.compile(p.replace("{last}", last)) for p in patterns]


def fp32_nodes(model: Any, recipe: Int8Recipe) -> list[str]:
    """Names of the quantisable nodes of ``model`` (an ``onnx.ModelProto``) that ``recipe`` keeps fp32."""
    constants = {i.name for i in model.graph.initializer}
    keep = _patterns(model, recipe.keep)
    kept = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gather"):
            continue
        if not any(i in constants for i in node.input):
            continue  # shape arithmetic, or a product of two activations (dynamic mode leaves those fp32)
        if (node.op_type == "Gather" and not recipe.embeddings) or any(p.search(node.name) for p in keep):
            kept.append(node.name)
    return kept


def quantize_int8(src: Path, dst: Path, recipe: Int8Recipe = INT8) -> None:
    """Write the fp32 graph ``src`` as an int8 graph ``dst`` following ``recipe``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if recipe.weight_type not in ("qint8", "quint8"):
        raise ValueError(f"weight_type is qint8 or quint8, not {recipe.weight_type!r}")
    model = onnx.load(str(src))
    exclude = fp32_nodes(model, recipe)
    if recipe.blockwise:
        _blockwise(model, _patterns(model, recipe.blockwise), recipe.block_size, set(exclude))
        onnx.save(model, str(dst))
        src = dst
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice goes to the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8 if recipe.weight_type == "qint8" else QuantType.QUInt8,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_exclude=exclude,
        )
    finally:
        root.setLevel(level)


def _blockwise(model: Any, patterns: list[re.Pattern[str]], block: int, skip: set[str]) -> None:
    """Rewrite the MatMuls of ``model`` named by ``patterns`` (a constant 2-D weight, not in ``skip``) as
    ``MatMulNBits``: symmetric 8-bit weights, one fp32 scale per column and block of ``block`` inputs."""
    import numpy as np
    from onnx import helper, numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes = []
    for node in model.graph.node:
        w = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if w is None or len(w.dims) != 2 or node.name in skip or not any(p.search(node.name) for p in patterns):
            nodes.append(node)
            continue
        k, n = w.dims
        blocks = -(-k // block)
        padded = np.zeros((blocks * block, n), dtype=np.float32)
        padded[:k] = numpy_helper.to_array(w).astype(np.float32)
        cols = padded.T.reshape(n, blocks, block)  # MatMulNBits reads B as [N, blocks, block]
        scale = np.abs(cols).max(axis=-1) / 127
        scale[scale == 0] = 1.0
        q = (np.clip(np.round(cols / scale[..., None]), -127, 127) + 128).astype(np.uint8)  # zero point 128
        prefix = node.name.strip("/").replace("/", "_")
        model.graph.initializer.extend(
            [numpy_helper.from_array(q, f"{prefix}_B8"), numpy_helper.from_array(scale.reshape(-1), f"{prefix}_S")]
        )
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], f"{prefix}_B8", f"{prefix}_S"],
                list(node.output),
                name=node.name + "NBits",
                domain="com.microsoft",
                K=k,
                N=n,
                bits=8,
                block_size=block,
                accuracy_level=4,  # int8 arithmetic, activations quantised per block
            )
        )
        uses[w.name] -= 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    unused = [i for i in model.graph.initializer if i.name in uses and uses[i.name] == 0]
    for i in unused:
        model.graph.initializer.remove(i)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
